import pytest

from plugins.artifacts import ModelLoadError, check_model_dir


def test_pickle_only_directory_is_refused_with_the_reason(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(
        ModelLoadError, match="only pickle weights .*pytorch_model.bin.*convert them to safetensors"
    ):
        check_model_dir(tmp_path)


def test_missing_config_and_weights(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no \\*.safetensors"):
        check_model_dir(tmp_path)
    with pytest.raises(ModelLoadError, match="not a directory"):
        check_model_dir(tmp_path / "missing")
