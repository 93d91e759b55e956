import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plugins.artifacts import load_pretrained, save_model
from plugins.base import Context, Example, TechniqueError
from plugins.prune import (
    FfnPruning,
    HeadPruning,
    LayerDropping,
    MagnitudePruning,
    VocabularyPruning,
    apply_pruned_shapes,
    layers_to_keep,
    pruned_shapes,
)
from tests.tiny import LABELS, tiny_texts

TASK = "sequence-classification"
TEXTS = ["rain cloud wind", "goal team score player", "the oven and the flour", "a big new match today"]
TECHNIQUES = (MagnitudePruning, HeadPruning, FfnPruning, LayerDropping, VocabularyPruning)


class HeldOut(list):
    """Evaluation data that fails the test if a technique reads it."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("a pruning technique read ctx.eval")

    __iter__ = __len__ = __getitem__ = __bool__ = _refuse


def _tokenizer(model_dir: Path, replace: dict[str, str] | None = None):
    # Built from vocab.txt: in transformers 5, BertTokenizerFast(vocab_file=...) (as tests/tiny.py calls it)
    # ignores the file, so the saved tiny tokenizer knows only the five special tokens.
    from transformers import BertTokenizerFast

    words = (model_dir / "vocab.txt").read_text().split()
    words = [(replace or {}).get(w, w) for w in words]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    assert len(tokenizer) == len(words)
    return tokenizer


def _train(rows=None):
    return [Example(text, label) for text, label in (rows or tiny_texts())]


def _setup(model_dir: Path, *, train=None, tokenizer=None):
    model, _ = load_pretrained(model_dir, TASK)
    teacher, _ = load_pretrained(model_dir, TASK)
    tokenizer = tokenizer or _tokenizer(model_dir)
    ctx = Context(
        task=TASK,
        device="cpu",
        seed=0,
        tokenizer=tokenizer,
        teacher=teacher,
        train=train if train is not None else _train(),
        eval=HeldOut(),
        labels=LABELS,
    )
    return model, ctx


def _logits(model, tokenizer, texts=TEXTS):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def _size(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _round_trip(model, tokenizer, path: Path):
    save_model(model, tokenizer, path, card="# test\n")
    reloaded, reloaded_tokenizer = load_pretrained(path, TASK)
    assert torch.equal(_logits(model, tokenizer), _logits(reloaded, reloaded_tokenizer))
    return reloaded


def test_metadata_and_light_import():
    for cls in TECHNIQUES:
        assert cls.name.startswith("prune.") and cls.family == "prune"
        assert set(cls.devices) == {"cpu", "cuda"}
        lm = "causal-lm" in cls.tasks
        assert cls.tasks == ("sequence-classification", "causal-lm")[: 1 + lm], cls.name
        assert lm == (cls not in (HeadPruning, VocabularyPruning)), cls.name
        assert "Source: " in cls.description() and "et al. 20" in cls.description()
        assert all(p.help for p in cls.params)
        cls.clean_params({})
    assert "neither smaller nor faster" in MagnitudePruning.speedup_caveat
    code = (
        "import plugins.prune, sys; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_magnitude_reaches_sparsity_and_round_trips(tiny_model_dir, tmp_path):
    model, ctx = _setup(tiny_model_dir)
    pruned = MagnitudePruning().apply(model, ctx, MagnitudePruning.clean_params({"amount": 0.6}))
    linears = [m for m in pruned.bert.encoder.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((m.weight == 0).sum()) for m in linears) / sum(m.weight.numel() for m in linears)
    assert zeros == pytest.approx(0.6, abs=0.01)
    assert ctx.notes["sparsity of pruned weights"] == pytest.approx(0.6, abs=0.01)
    assert 0 < ctx.notes["overall sparsity"] < ctx.notes["sparsity of pruned weights"]
    assert not any(name.endswith("_orig") for name, _ in pruned.named_parameters())  # made permanent
    assert int((pruned.classifier.weight == 0).sum()) == 0  # only the encoder is pruned
    _round_trip(pruned, ctx.tokenizer, tmp_path / "magnitude")


def test_heads_removes_the_least_important_and_round_trips(tiny_model_dir, tmp_path):
    model, ctx = _setup(tiny_model_dir)
    width = 8  # hidden 32 / 4 heads
    dead = {0: [1, 3], 1: [0, 2]}  # heads whose output is zero: importance 0
    with torch.no_grad():
        for layer, heads in dead.items():
            value = model.bert.encoder.layer[layer].attention.self.value
            for h in heads:
                value.weight[h * width : (h + 1) * width] = 0
                value.bias[h * width : (h + 1) * width] = 0
    before = _size(model)
    pruned = HeadPruning().apply(
        model, ctx, HeadPruning.clean_params({"amount": 0.5, "importance_batches": 2})
    )

    assert ctx.notes["heads removed"] == "4 of 8"
    assert ctx.notes["removed heads (layer: heads)"] == "0: 1,3; 1: 0,2"
    for layer in pruned.bert.encoder.layer:
        attention = layer.attention.self
        assert attention.query.weight.shape == attention.value.weight.shape == (16, 32)
        assert layer.attention.output.dense.weight.shape == (32, 16)
        assert attention.num_attention_heads == 2 and attention.all_head_size == 16
        assert bool((attention.value.weight != 0).any(dim=1).all())  # the dead heads are the ones gone
    assert _size(pruned) < before
    logits = _logits(pruned, ctx.tokenizer)
    assert logits.shape == (len(TEXTS), 3) and torch.isfinite(logits).all()

    # transformers 5 cannot rebuild these shapes from the config: pruned_shapes describes them, and a model
    # built from the config takes the saved weights once apply_pruned_shapes has rebuilt those layers.
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    shapes = json.loads(json.dumps(pruned_shapes(pruned)))
    assert shapes["linear"]["bert.encoder.layer.0.attention.self.query"] == {
        "in_features": 32,
        "out_features": 16,
        "bias": True,
    }
    assert shapes["attention"]["bert.encoder.layer.1.attention.self"] == {
        "num_attention_heads": 2,
        "all_head_size": 16,
    }
    path = tmp_path / "heads"
    save_model(pruned, ctx.tokenizer, path, card="")
    fresh = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path))
    apply_pruned_shapes(fresh, shapes)
    missing, unexpected = fresh.load_state_dict(load_file(str(path / "model.safetensors")), strict=False)
    assert not unexpected and not missing
    assert pruned_shapes(fresh) == shapes
    assert torch.equal(_logits(fresh.eval(), ctx.tokenizer), logits)
    # The saved model's manifest holds the shapes (head pruning's layout), so the loader rebuilds them.
    reloaded, tokenizer = load_pretrained(path, TASK)
    assert torch.equal(_logits(reloaded, tokenizer), logits)


def test_pruned_shapes_survive_dynamic_quantization(tiny_model_dir):
    from plugins.quantize import quantize_linear_dynamic

    model, ctx = _setup(tiny_model_dir)
    assert pruned_shapes(model) is None
    pruned = HeadPruning().apply(
        model, ctx, HeadPruning.clean_params({"amount": 0.25, "importance_batches": 1})
    )
    shapes = pruned_shapes(pruned)
    assert shapes is not None and pruned_shapes(quantize_linear_dynamic(pruned)) == shapes


def test_ffn_removes_the_least_important_neurons_and_round_trips(tiny_model_dir, tmp_path):
    model, ctx = _setup(tiny_model_dir)
    dead = {0: [3, 10, 20, 40], 1: [0, 63]}  # neurons with zero activation: importance 0
    with torch.no_grad():
        for layer, neurons in dead.items():
            dense = model.bert.encoder.layer[layer].intermediate.dense
            dense.weight[neurons] = 0
            dense.bias[neurons] = 0
    before = _size(model)
    pruned = FfnPruning().apply(
        model, ctx, FfnPruning.clean_params({"amount": 0.25, "importance_batches": 2})
    )

    assert pruned.config.intermediate_size == 48
    assert ctx.notes["feed-forward neurons per layer"] == "48 of 64"
    for layer in pruned.bert.encoder.layer:
        assert layer.intermediate.dense.weight.shape == (48, 32)
        assert layer.output.dense.weight.shape == (32, 48)
        assert bool((layer.intermediate.dense.weight != 0).any(dim=1).all())  # the dead ones are gone
    assert _size(pruned) < before
    assert pruned_shapes(pruned) is None  # the config describes the result: no custom format needed
    _round_trip(pruned, ctx.tokenizer, tmp_path / "ffn")


def test_layer_pattern_keeps_exactly_those_layers(tiny_model_dir, tmp_path):
    model, ctx = _setup(tiny_model_dir)
    original = copy.deepcopy(model.bert.encoder.layer[1].state_dict())
    params = LayerDropping.clean_params({"strategy": "pattern", "pattern": "1"})
    pruned = LayerDropping().apply(model, ctx, params)
    assert pruned.config.num_hidden_layers == 1 and len(pruned.bert.encoder.layer) == 1
    kept = pruned.bert.encoder.layer[0].state_dict()
    assert all(torch.equal(kept[k], original[k]) for k in original)
    assert ctx.notes["layers kept"].startswith("1 ")
    reloaded = _round_trip(pruned, ctx.tokenizer, tmp_path / "layers")
    assert reloaded.config.num_hidden_layers == 1


def test_layer_importance_drops_the_layer_that_changes_least(tiny_model_dir):
    model, ctx = _setup(tiny_model_dir)
    with torch.no_grad():
        # The random tiny model's predictions are nearly uniform: sharpen them, so that layers matter.
        model.classifier.weight *= 300
        # Layer 0 adds nothing to its input: close to the identity.
        for dense in (
            model.bert.encoder.layer[0].attention.output.dense,
            model.bert.encoder.layer[0].output.dense,
        ):
            dense.weight.zero_()
            dense.bias.zero_()
    ctx.teacher = copy.deepcopy(model)
    original = copy.deepcopy(model.bert.encoder.layer[1].state_dict())
    params = LayerDropping.clean_params({"keep": 1, "importance_batches": 1})
    pruned = LayerDropping().apply(model, ctx, params)
    kept = pruned.bert.encoder.layer[0].state_dict()
    assert all(torch.equal(kept[k], original[k]) for k in original)
    assert ctx.notes["drop order"].startswith("0 ")


def test_layer_strategies_and_refusals(tiny_model_dir):
    assert layers_to_keep("top", 6, 3) == [0, 1, 2]
    assert layers_to_keep("bottom", 6, 3) == [3, 4, 5]
    assert layers_to_keep("alternate", 6, 3) == [1, 3, 5]
    assert layers_to_keep("alternate", 6, 5) == [0, 1, 2, 3, 5]
    assert layers_to_keep("alternate", 6, 2) == [1, 3]

    def check(**raw):
        return LayerDropping.check(LayerDropping.clean_params(raw), device="cpu", task=TASK)

    assert check() is None and check(strategy="pattern", pattern="0, 2") is None
    assert "needs a pattern" in check(strategy="pattern")
    assert "comma-separated" in check(strategy="pattern", pattern="one,two")
    assert "twice" in check(strategy="pattern", pattern="1,1")
    assert "only used with strategy=pattern" in check(strategy="top", pattern="1")

    model, ctx = _setup(tiny_model_dir)
    refusals = {
        "keep every layer: the model has 2": {"keep": 2},
        "keeps all 2 layers": {"strategy": "pattern", "pattern": "0,1"},
        "numbered 0 to 1": {"strategy": "pattern", "pattern": "0,5"},
    }
    for message, raw in refusals.items():
        with pytest.raises(TechniqueError, match=message):
            LayerDropping().apply(model, ctx, LayerDropping.clean_params(raw))
    assert len(model.bert.encoder.layer) == 2


def test_structured_pruning_refuses_without_training_texts(tiny_model_dir):
    model, ctx = _setup(tiny_model_dir, train=[])
    with pytest.raises(TechniqueError, match="needs training texts"):
        HeadPruning().apply(model, ctx, HeadPruning.clean_params({}))


def test_vocabulary_keeps_training_tokens_only_with_identical_logits(tiny_model_dir, tmp_path):
    # "with" becomes the suffix "##s", so that "goals" is split in two pieces, as WordPiece does.
    original_tokenizer = _tokenizer(tiny_model_dir, {"with": "##s"})
    unseen = {"snow", "butter", "coach"}  # words only the held-out data would have
    rows = [(t, label) for t, label in tiny_texts() if not unseen & set(t.split())]
    rows.append(("goals and the rain", "sports"))
    model, ctx = _setup(tiny_model_dir, train=_train(rows), tokenizer=original_tokenizer)
    teacher = ctx.teacher
    pruned = VocabularyPruning().apply(model, ctx, VocabularyPruning.clean_params({}))

    tokenizer = ctx.tokenizer
    assert tokenizer is not original_tokenizer
    vocab = tokenizer.get_vocab()
    assert not unseen & set(vocab)
    assert {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "rain", "goal", "##s"} <= set(vocab)
    used = {w for t, _ in rows for w in t.split()} - {"goals", "with"}  # "with" is now [UNK]
    assert len(vocab) == 5 + len(used) + 1 < len(original_tokenizer)
    assert pruned.config.vocab_size == len(vocab) == pruned.get_input_embeddings().num_embeddings
    assert ctx.notes["vocabulary kept"] == len(vocab) and ctx.notes["vocabulary original"] == 47
    assert _size(pruned) < _size(teacher)

    seen = [t for t, _ in rows[:8]] + ["goals and the rain"]
    assert tokenizer.tokenize("goals") == ["goal", "##s"]
    assert torch.equal(_logits(pruned, tokenizer, seen), _logits(teacher, original_tokenizer, seen))

    # An unseen word reads as [UNK], as the original model would read [UNK] there.
    assert tokenizer.tokenize("snow and rain") == ["[UNK]", "and", "rain"]
    unk_text = original_tokenizer(["[UNK] and rain"], return_tensors="pt")
    with torch.no_grad():
        expected = teacher(**unk_text).logits
    assert torch.equal(_logits(pruned, tokenizer, ["snow and rain"]), expected)

    reloaded = _round_trip(pruned, tokenizer, tmp_path / "vocabulary")
    _, reloaded_tokenizer = load_pretrained(tmp_path / "vocabulary", TASK)
    assert reloaded_tokenizer.get_vocab() == vocab
    assert reloaded_tokenizer(seen)["input_ids"] == tokenizer(seen)["input_ids"]
    assert reloaded.config.vocab_size == len(vocab)


def test_vocabulary_min_count_drops_rare_tokens(tiny_model_dir):
    rows = [("rain rain sky", "weather"), ("rain goal", "sports")]
    model, ctx = _setup(tiny_model_dir, train=_train(rows))
    VocabularyPruning().apply(model, ctx, VocabularyPruning.clean_params({"min_count": 2}))
    assert set(ctx.tokenizer.get_vocab()) == {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "rain"}


@pytest.mark.parametrize(
    ("technique", "raw"),
    [
        (HeadPruning, {"amount": 0.25, "importance_batches": 1}),
        (FfnPruning, {"amount": 0.25, "importance_batches": 1}),
        (LayerDropping, {"keep": 1, "strategy": "top"}),
    ],
)
def test_recovery_fine_tune_runs(tiny_model_dir, technique, raw):
    model, ctx = _setup(tiny_model_dir)
    pruned = technique().apply(model, ctx, technique.clean_params({**raw, "recovery_steps": 2}))
    assert ctx.notes["recovery steps"] == 2
    assert not pruned.training
    assert torch.isfinite(_logits(pruned, ctx.tokenizer)).all()
