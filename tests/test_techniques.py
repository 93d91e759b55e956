"""Meta-tests: every registered technique runs on a tiny model (a classifier, and a causal LM where the
technique supports one), round-trips through its saved format, and has a section in the plugin guide (a
technique nobody can find or run is not done)."""

import re
from pathlib import Path

import pytest
import torch

from plugins import registry
from plugins.artifacts import load_pretrained, save_model
from plugins.base import Context, Example
from tests.tiny import LABELS, tiny_lm_texts, tiny_texts

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
# Keep training techniques to a few steps: this checks that they run, not how well.
FAST = {"distill.kd": {"student_layers": 1, "max_steps": 3, "batch_size": 8}, "prune.layers": {"keep": 1}}
TECHNIQUES = sorted(registry.techniques())


def _context(model, tokenizer):
    examples = [Example(text, label) for text, label in tiny_texts(per_label=8)]
    return Context(
        task="sequence-classification",
        device="cpu",
        seed=0,
        tokenizer=tokenizer,
        teacher=model,
        train=examples[:18],
        eval=examples[18:],
        labels=LABELS,
        max_length=32,
    )


@pytest.mark.parametrize("name", TECHNIQUES)
def test_every_technique_runs_on_a_tiny_model_and_round_trips(name, tiny_model_dir, tmp_path):
    cls = registry.get(name)
    if "cpu" not in cls.devices or "sequence-classification" not in cls.tasks:
        pytest.skip(f"{name} does not run on CPU for classification")
    teacher, tokenizer = load_pretrained(tiny_model_dir, "sequence-classification")
    student, _ = load_pretrained(tiny_model_dir, "sequence-classification")
    ctx = _context(teacher, tokenizer)
    params = cls.clean_params(FAST.get(name, {}))
    assert cls.check(params, device="cpu", task="sequence-classification") is None
    out = cls().apply(student, ctx, params)

    save_model(out, ctx.tokenizer, tmp_path / "out", card="# test\n")
    assert not [p for p in (tmp_path / "out").iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    reloaded, reloaded_tokenizer = load_pretrained(tmp_path / "out", "sequence-classification")
    batch = reloaded_tokenizer(["goal team rain", "flour sugar bake"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = out(**batch).logits
        actual = reloaded(**batch).logits
    assert actual.shape == (2, len(LABELS))
    assert torch.allclose(actual.float(), expected.float(), atol=1e-3), f"{name} does not round-trip"


@pytest.mark.parametrize("name", TECHNIQUES)
def test_every_causal_lm_technique_runs_on_a_tiny_llama_and_round_trips(name, tiny_llama_dir, tmp_path):
    cls = registry.get(name)
    if "cpu" not in cls.devices or "causal-lm" not in cls.tasks:
        pytest.skip(f"{name} does not run on CPU for causal LMs")
    teacher, tokenizer = load_pretrained(tiny_llama_dir, "causal-lm")
    student, _ = load_pretrained(tiny_llama_dir, "causal-lm")
    texts = tiny_lm_texts(24)
    ctx = Context(
        task="causal-lm",
        device="cpu",
        seed=0,
        tokenizer=tokenizer,
        teacher=teacher,
        train=[Example(text) for text in texts[:18]],
        eval=[Example(text) for text in texts[18:]],
        labels=[],
        max_length=32,
    )
    params = cls.clean_params(FAST.get(name, {}))
    assert cls.check(params, device="cpu", task="causal-lm") is None
    out = cls().apply(student, ctx, params)

    save_model(out, ctx.tokenizer, tmp_path / "out", card="# test\n")
    assert not [p for p in (tmp_path / "out").iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    reloaded, reloaded_tokenizer = load_pretrained(tmp_path / "out", "causal-lm")
    batch = reloaded_tokenizer(
        ["goal team rain", "flour sugar bake today"], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        expected = out(**batch).logits
        actual = reloaded(**batch).logits
        prompt = reloaded_tokenizer(["goal team rain"], return_tensors="pt")
        generated = reloaded.generate(**prompt, max_new_tokens=2, min_new_tokens=2, do_sample=False)
    assert actual.shape == (2, batch["input_ids"].shape[1], teacher.config.vocab_size)
    mask = batch["attention_mask"].bool()
    assert torch.allclose(actual[mask].float(), expected[mask].float(), atol=1e-3), (
        f"{name} does not round-trip"
    )
    assert generated.shape == (1, prompt["input_ids"].shape[1] + 2)


@pytest.mark.parametrize("name", TECHNIQUES)
def test_every_technique_is_documented(name):
    cls = registry.get(name)
    assert re.search(rf"^### `{re.escape(name)}`$", GUIDE.read_text(), re.MULTILINE), f"no section for {name}"
    assert cls.title and cls.family in ("distill", "prune", "quantize", "runtime")
    assert cls.summary(), f"{name} has no docstring"
    for param in cls.params:
        assert param.help, f"{name}.{param.name} has no help text"
        assert param.clean(None) == param.default


def test_metadata_imports_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; from plugins import registry; registry.techniques();"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
