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


def _tiny(tiny_model_dir):
    from plugins.artifacts import load_pretrained

    model, tokenizer = load_pretrained(tiny_model_dir, "sequence-classification")
    batch = tokenizer(["rain cloud wind", "goal team score player"], padding=True, return_tensors="pt")
    return model, tokenizer, batch


def _ctx():
    from plugins.base import Context

    return Context(
        task="sequence-classification",
        device="cpu",
        seed=0,
        tokenizer=None,
        teacher=None,
        train=[],
        eval=[],
        labels=[],
    )


@pytest.mark.parametrize("with_format_key", [True, False])
def test_dynamic_int8_manifests_written_before_int8_embeddings_still_load(
    tiny_model_dir, tmp_path, with_format_key
):
    import json

    import torch

    from plugins.artifacts import MANIFEST, load_pretrained, save_model
    from plugins.quantize import DynamicInt8

    model, tokenizer, batch = _tiny(tiny_model_dir)
    quantized = DynamicInt8().apply(model, _ctx(), {"per_channel": True, "embeddings": False})
    save_model(quantized, tokenizer, tmp_path, card="")
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    old = {"format": "roi-planner/dynamic-int8"} if with_format_key else {}
    (tmp_path / MANIFEST).write_text(json.dumps({**old, "quantized_linear": manifest["quantized_linear"]}))
    reloaded, _ = load_pretrained(tmp_path, "sequence-classification")
    with torch.inference_mode():
        assert torch.equal(reloaded(**batch).logits, quantized(**batch).logits)


def test_an_unknown_format_is_refused_with_the_reason(tiny_model_dir, tmp_path):
    import json
    import shutil

    from plugins.artifacts import MANIFEST, load_pretrained

    shutil.copytree(tiny_model_dir, tmp_path / "m")
    (tmp_path / "m" / MANIFEST).write_text(json.dumps({"format": "someone-else/int3"}))
    with pytest.raises(
        ModelLoadError, match="names the format 'someone-else/int3', which this version cannot"
    ):
        load_pretrained(tmp_path / "m", "sequence-classification")


def test_plain_models_are_saved_by_transformers_without_a_manifest(tiny_model_dir, tmp_path):
    from plugins.artifacts import MANIFEST, TRANSFORMERS, format_of, save_model

    model, tokenizer, _ = _tiny(tiny_model_dir)
    assert format_of(model) == format_of(model.bfloat16()) == TRANSFORMERS
    save_model(model, tokenizer, tmp_path, card="")
    assert not (tmp_path / MANIFEST).exists()


def test_transformers_alone_loads_the_torchao_format(tiny_model_dir, tmp_path):
    # The torchao format is torchao's safetensors layout plus a TorchAoConfig in config.json, as
    # transformers writes it: from_pretrained (with torchao installed) reads it without this tool.
    import torch
    from torchao.quantization import Int8Tensor
    from transformers import AutoModelForSequenceClassification

    from plugins.artifacts import save_model
    from plugins.quantize import WeightOnlyQuantization

    model, tokenizer, batch = _tiny(tiny_model_dir)
    quantized = WeightOnlyQuantization().apply(model, _ctx(), {"bits": 8, "group_size": 128})
    save_model(quantized, tokenizer, tmp_path, card="")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.bert.encoder.layer[1].output.dense.weight, Int8Tensor)
    with torch.inference_mode():
        assert torch.equal(loaded(**batch).logits, quantized(**batch).logits)
