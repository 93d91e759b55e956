"""Save formats come with the techniques that need them: a technique registered with its own format is
saved and loaded in it by plugins.artifacts, which knows nothing of it."""

import json
import logging

import pytest
import torch

from plugins import formats, registry
from plugins.artifacts import (
    MANIFEST,
    WEIGHTS,
    ModelLoadError,
    empty_model,
    format_of,
    load_pretrained,
    load_weights,
    safetensors_ready,
    save_model,
)
from plugins.base import Context, Technique
from plugins.formats import Format, Layout

TASK = "sequence-classification"
SCALED = "test/scaled-head"


class ScaledLinear(torch.nn.Linear):
    """A Linear layer whose output is multiplied by a plain float, which transformers does not save."""

    scale = 1.0

    def forward(self, x):
        return super().forward(x) * self.scale


def _scale_head(model, name, scale):
    old = model.get_submodule(name)
    new = ScaledLinear(old.in_features, old.out_features, bias=old.bias is not None)
    new.load_state_dict(old.state_dict())
    new.scale = float(scale)
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def _save_scaled(model, path):
    from safetensors.torch import save_file

    model.config.save_pretrained(path)
    save_file(safetensors_ready(model.state_dict()), str(path / WEIGHTS))
    return {"scales": {n: m.scale for n, m in model.named_modules() if isinstance(m, ScaledLinear)}}


def _load_scaled(path, task, manifest, device):
    from safetensors.torch import load_file

    model = empty_model(path, task, manifest)
    load_weights(model, load_file(str(path / WEIGHTS)), path)
    for name, scale in manifest["scales"].items():
        _scale_head(model, name, scale)
    return model


def _scaled_tensors(module):
    if not isinstance(module, ScaledLinear):
        return None
    return [
        (id(module.weight), module.weight.detach() * module.scale),
        (id(module.bias), module.bias.detach()),
    ]


SCALED_FORMAT = Format(
    SCALED,
    detects=lambda model: any(isinstance(m, ScaledLinear) for m in model.modules()),
    save=_save_scaled,
    load=_load_scaled,
    dense_tensors=_scaled_tensors,
)


class ScaleHead(Technique):
    """Multiplies the classifier's output by a constant. Source: this test."""

    name = "test.scale-head"
    title = "Scale the head"
    family = "quantize"
    formats = (SCALED_FORMAT,)

    def apply(self, model, ctx, params):
        _scale_head(model, "classifier", 3.0)
        return model


@pytest.fixture
def registered():
    registry.register(ScaleHead)
    yield
    registry.unregister(ScaleHead.name)


def _ctx():
    return Context(
        task=TASK, device="cpu", seed=0, tokenizer=None, teacher=None, train=[], eval=[], labels=[]
    )


def _logits(model, tokenizer):
    batch = tokenizer(["rain cloud wind", "goal team score"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(**batch).logits


def test_a_format_registered_by_a_technique_is_used_to_save_and_load(registered, tiny_model_dir, tmp_path):
    model, tokenizer = load_pretrained(tiny_model_dir, TASK)
    scaled = ScaleHead().apply(model, _ctx(), {})
    assert format_of(scaled) == SCALED

    save_model(scaled, tokenizer, tmp_path, card="")
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest == {"format": SCALED, "scales": {"classifier": 3.0}}
    reloaded, reloaded_tokenizer = load_pretrained(tmp_path, TASK)
    assert isinstance(reloaded.classifier, ScaledLinear) and reloaded.classifier.scale == 3.0
    assert torch.equal(_logits(reloaded, reloaded_tokenizer), _logits(scaled, tokenizer))

    # Its parameter-count hook is the one the measurement counts through.
    counted = dict(formats.dense_tensors(reloaded))
    assert torch.equal(counted[id(reloaded.classifier.weight)], reloaded.classifier.weight * 3.0)


def test_without_the_technique_its_format_is_neither_detected_nor_loaded(tiny_model_dir, tmp_path):
    registry.register(ScaleHead)
    try:
        model, tokenizer = load_pretrained(tiny_model_dir, TASK)
        save_model(ScaleHead().apply(model, _ctx(), {}), tokenizer, tmp_path, card="")
    finally:
        registry.unregister(ScaleHead.name)

    assert SCALED not in formats.registered().formats
    assert format_of(model) == "transformers"
    with pytest.raises(
        ModelLoadError, match="names the format 'test/scaled-head', which this version cannot load"
    ):
        load_pretrained(tmp_path, TASK)


def test_the_built_in_formats_come_with_the_built_in_techniques():
    found = formats.registered()
    assert list(found.formats) == [
        "roi-planner/dynamic-int8",
        "roi-planner/torchao-weight-only",
        "roi-planner/onnx",
        "roi-planner/openvino",
        "roi-planner/vllm",
    ]
    assert [layout.key for layout in found.layouts] == ["pruned_shapes"]
    owners = {
        item.name if isinstance(item, Format) else item.key: name
        for name, cls in registry.techniques().items()
        for item in cls.formats
    }
    assert owners == {
        "roi-planner/dynamic-int8": "quantize.dynamic-int8",
        "roi-planner/torchao-weight-only": "quantize.weight-only",
        "pruned_shapes": "prune.heads",
        "roi-planner/onnx": "runtime.onnxruntime",
        "roi-planner/openvino": "runtime.openvino",
        "roi-planner/vllm": "runtime.vllm",
    }


def test_a_format_that_writes_pickle_is_refused(tiny_model_dir, tmp_path):
    def save_pickle(model, path):
        torch.save(model.state_dict(), path / "pytorch_model.bin")
        return {}

    class Pickler(ScaleHead):
        name = "test.pickler"
        formats = (Format("test/pickle", detects=SCALED_FORMAT.detects, save=save_pickle, load=_load_scaled),)

    registry.register(Pickler)
    try:
        model, tokenizer = load_pretrained(tiny_model_dir, TASK)
        with pytest.raises(
            ModelLoadError, match=r"test/pickle format wrote pickle files \(pytorch_model.bin\)"
        ):
            save_model(Pickler().apply(model, _ctx(), {}), tokenizer, tmp_path, card="")
    finally:
        registry.unregister(Pickler.name)


def test_conflicting_declarations_are_logged_and_the_first_one_kept(caplog):
    other = Format(SCALED, detects=lambda model: False, save=_save_scaled, load=_load_scaled)
    layout = Layout("scales", describe=lambda model: None, rebuild=lambda model, shapes: None)

    class Second(ScaleHead):
        name = "test.second"
        formats = (other, layout, "not a format")

    class Third(ScaleHead):
        name = "test.third"
        formats = (SCALED_FORMAT, Format("transformers", SCALED_FORMAT.detects, _save_scaled, _load_scaled))

    for technique in (ScaleHead, Second, Third):
        registry.register(technique)
    try:
        with caplog.at_level(logging.WARNING, logger="plugins.formats"):
            found = formats.registered()
        assert found.formats[SCALED] is SCALED_FORMAT  # test.scale-head sorts before test.second
        assert "transformers" not in found.formats
        assert layout in found.layouts
        messages = " ".join(r.getMessage() for r in caplog.records)
        assert "test.second declares another 'test/scaled-head'" in messages
        assert "'not a format'" in messages and "test.third declares another 'transformers'" in messages
        assert "test.third declares another 'test/scaled-head'" not in messages  # the same one twice is fine
    finally:
        for technique in (ScaleHead, Second, Third):
            registry.unregister(technique.name)
