"""The techniques on a causal LM: a tiny Llama (grouped-query attention, tied embeddings, like SmolLM2) and
unlabeled texts. Each result is saved, reloaded and made to generate, as the worker does."""

import warnings

import pytest
import torch

from plugins import registry, training
from plugins.artifacts import load_pretrained, save_model
from plugins.base import Context, Example, ParamError, TechniqueError
from plugins.distill import KnowledgeDistillation
from plugins.formats import dense_tensors
from plugins.layers import keep_layers, layer_count
from plugins.prune import (
    FfnPruning,
    HeadPruning,
    LayerDropping,
    MagnitudePruning,
    VocabularyPruning,
    pruned_shapes,
)
from plugins.prune.importance import Scored
from plugins.quantize import TORCHAO, DynamicInt8, HalfPrecision, WeightOnlyQuantization
from plugins.training import encode_causal_lm, kd_finetune
from tests.tiny import tiny_lm_texts

LM = "causal-lm"
TEXTS = tiny_lm_texts()
PROMPTS = ["rain cloud wind", "the team and the coach"]


class HeldOut(list):
    """Evaluation data that fails the test if a technique reads it."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("a technique read ctx.eval")

    __iter__ = __len__ = __getitem__ = __bool__ = _refuse


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and spare threads spin when the machine is busy."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _sharpen(model, factor=20.0):
    """The random tiny Llama predicts nearly uniform next tokens; a larger final norm makes its predictions
    confident and input-dependent, so that distillation and layer importance have something to match."""
    with torch.no_grad():
        model.model.norm.weight.mul_(factor)
    return model


def _setup(model_dir, *, sharpen=False, tokenizer=None, train=None):
    model, loaded_tokenizer = load_pretrained(model_dir, LM)
    teacher, _ = load_pretrained(model_dir, LM)
    if sharpen:
        _sharpen(model), _sharpen(teacher)
    ctx = Context(
        task=LM,
        device="cpu",
        seed=0,
        tokenizer=tokenizer or loaded_tokenizer,
        teacher=teacher,
        train=[Example(t) for t in TEXTS[:48]] if train is None else train,
        eval=HeldOut(),
        labels=[],
        max_length=32,
    )
    return model, ctx


def _logits(model, tokenizer, texts=PROMPTS):
    batch = encode_causal_lm(tokenizer, texts, max_length=32, device="cpu")
    with torch.inference_mode():
        return model(**batch).logits.float(), batch["attention_mask"].bool()


def _token_kl(student, teacher, tokenizer, texts=TEXTS[:48], temperature=2.0):
    """Per-token KL(teacher ‖ student) of the softened next-token distributions, padding left out."""
    s, mask = _logits(student, tokenizer, texts)
    t, _ = _logits(teacher, tokenizer, texts)
    return torch.nn.functional.kl_div(
        torch.log_softmax(s[mask] / temperature, -1),
        torch.log_softmax(t[mask] / temperature, -1),
        log_target=True,
        reduction="batchmean",
    ).item()


def _generates(model, tokenizer, *, kv_atol=1e-4):
    """Greedy generation of 4 tokens, and one cached decoding step that matches a full forward."""
    ids = tokenizer(["rain cloud"], return_tensors="pt")
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' notes on generation settings and cache names
        out = model.generate(**ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        assert out.shape == (1, ids["input_ids"].shape[1] + 4)
        first = model(**ids, use_cache=True)
        token = first.logits[:, -1:].argmax(-1)
        step = model(input_ids=token, past_key_values=first.past_key_values, use_cache=True)
        full = model(input_ids=torch.cat([ids["input_ids"], token], dim=1))
    cached, expected = step.logits[:, -1].float(), full.logits[:, -1].float()
    assert torch.isfinite(cached).all()
    assert torch.allclose(cached, expected, atol=kv_atol), (cached - expected).abs().max()
    return out


def _round_trip(model, tokenizer, path, *, kv_atol=1e-4):
    save_model(model, tokenizer, path, card="# test\n")
    assert not [p for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]
    reloaded, reloaded_tokenizer = load_pretrained(path, LM)
    expected, mask = _logits(model, tokenizer)
    actual, _ = _logits(reloaded, reloaded_tokenizer)
    assert torch.equal(actual[mask], expected[mask])
    _generates(reloaded, reloaded_tokenizer, kv_atol=kv_atol)
    return reloaded, reloaded_tokenizer


def _tokenizer_without_pad(model_dir):
    """The tiny tokenizer as many Llama tokenizers come: no pad token."""
    from transformers import PreTrainedTokenizerFast

    _, tokenizer = load_pretrained(model_dir, LM)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


# --- metadata, plan and refusals -----------------------------------------------------------------------


def test_which_techniques_support_causal_lms():
    for cls in (KnowledgeDistillation, FfnPruning, LayerDropping, MagnitudePruning):
        assert cls.refusal(device="cpu", task=LM) is None, cls.name
    for cls in (DynamicInt8, HalfPrecision, WeightOnlyQuantization):
        assert LM in cls.tasks
    for cls in (HeadPruning, VocabularyPruning):
        message = cls.refusal(device="cpu", task=LM)
        assert f"{cls.name} supports sequence-classification, not causal-lm" in message
        assert "for a causal LM use prune.layers, prune.ffn or distill.kd" in message
        with pytest.raises(ParamError, match="supports sequence-classification, not causal-lm"):
            registry.validate_pipeline([{"technique": cls.name}], device="cpu", task=LM)
        assert cls.refusal(device="cpu", task="sequence-classification") is None
    assert "change the next-token distribution" in VocabularyPruning.description()
    problem = WeightOnlyQuantization.check({"bits": 4, "group_size": 128}, device="cpu", task=LM)
    assert "int4 weight-only needs a CUDA device" in problem


def test_heads_and_vocabulary_refuse_a_causal_lm_when_applied(tiny_llama_dir):
    model, ctx = _setup(tiny_llama_dir)
    for cls in (HeadPruning, VocabularyPruning):
        with pytest.raises(TechniqueError, match="not causal-lm: .* use prune.layers"):
            cls().apply(model, ctx, cls.clean_params({}))
    assert model.config.vocab_size == ctx.teacher.config.vocab_size  # untouched


def test_default_plan_for_causal_lms():
    cpu = [" → ".join(steps) for steps in registry.default_plan(device="cpu", task=LM)]
    singles = [name for name in cpu if "→" not in name]
    assert {
        "distill.kd",
        "prune.ffn",
        "prune.layers",
        "prune.magnitude",
        "quantize.dynamic-int8",
        "quantize.half",
        "quantize.weight-only",
    } <= set(singles)
    assert not {"prune.heads", "prune.vocabulary"} & set(singles)
    assert [name for name in cpu if "→" in name] == [
        "distill.kd → prune.ffn → quantize.weight-only",
        "distill.kd → quantize.weight-only",
        "prune.layers → quantize.weight-only",
        "distill.kd → quantize.dynamic-int8",
        "distill.kd → runtime.openvino",
    ]
    cuda = [" → ".join(steps) for steps in registry.default_plan(device="cuda", task=LM)]
    assert "distill.kd → quantize.dynamic-int8" not in cuda and "quantize.dynamic-int8" not in cuda
    assert "distill.kd → runtime.openvino" not in cuda  # OpenVINO serves on the CPU
    classification = registry.default_plan(device="cpu", task="sequence-classification")
    assert [steps for steps in classification if len(steps) > 1] == [
        ["distill.kd", "prune.ffn", "prune.vocabulary", "quantize.dynamic-int8"],
        ["distill.kd", "quantize.dynamic-int8"],
        ["distill.kd", "prune.ffn", "quantize.half"],
        ["prune.layers", "quantize.dynamic-int8"],
        ["distill.kd", "prune.ffn", "runtime.openvino"],
    ]


# --- batches -------------------------------------------------------------------------------------------


def test_batches_pad_on_the_right_without_touching_a_tokenizer_that_has_no_pad_token(tiny_llama_dir):
    tokenizer = _tokenizer_without_pad(tiny_llama_dir)
    assert tokenizer.pad_token is None
    batch = encode_causal_lm(tokenizer, ["rain cloud wind sky", "goal", ""], max_length=3, device="cpu")
    eos = tokenizer.eos_token_id
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 0, 0]]  # truncated to 3
    assert batch["input_ids"][1].tolist()[1:] == [eos, eos]  # eos pads when there is no pad token
    assert batch["input_ids"][2].tolist() == [eos, eos, eos]  # an empty text still attends to one token
    assert tokenizer.pad_token is None
    assert training.next_token_labels(batch).tolist() == [
        batch["input_ids"][0, 1:].tolist(),
        [-100, -100],
        [-100, -100],
    ]


# --- distill.kd ----------------------------------------------------------------------------------------


def test_distillation_lowers_the_per_token_kl_and_runs_the_teacher_per_batch(tiny_llama_dir, monkeypatch):
    _, ctx = _setup(tiny_llama_dir, sharpen=True)
    teacher = ctx.teacher
    monkeypatch.setattr(training, "LM_LOGITS_BUDGET", 2 * 32 * teacher.config.vocab_size)  # 2 rows at most
    student = keep_layers(teacher, [0])
    before = _token_kl(student, teacher, ctx.tokenizer)
    calls = []
    teacher.register_forward_hook(lambda module, args, output: calls.append(output.logits.shape[0]))
    stats = {}
    student = kd_finetune(
        student, ctx, steps=30, epochs=0, learning_rate=3e-3, batch_size=8, alpha=1.0, stats=stats
    )
    # Nothing cached per example: the teacher reads every micro-batch of 2 texts (8 per step, 30 steps).
    assert calls == [2] * 4 * 30
    after = _token_kl(student, teacher, ctx.tokenizer)
    assert after < 0.5 * before, (before, after)
    assert stats["final_loss"] < stats["first_loss"]
    assert not student.training and layer_count(student) == 1


def test_hard_loss_is_next_token_prediction_on_the_text(tiny_llama_dir):
    _, ctx = _setup(tiny_llama_dir)

    def first_loss(alpha):
        stats = {}
        kd_finetune(keep_layers(ctx.teacher, [0, 3]), ctx, steps=1, batch_size=8, alpha=alpha, stats=stats)
        return stats["first_loss"]

    # The random tiny Llama is close to uniform over 46 tokens: cross-entropy about ln 46, KL near 0.
    assert first_loss(0.0) == pytest.approx(torch.log(torch.tensor(46.0)).item(), rel=0.1)
    assert first_loss(1.0) < 0.05
    assert first_loss(0.5) == pytest.approx(0.5 * first_loss(0.0), rel=0.1)


def test_distilled_student_saves_reloads_and_generates(tiny_llama_dir, tmp_path):
    model, ctx = _setup(tiny_llama_dir, tokenizer=_tokenizer_without_pad(tiny_llama_dir))
    ctx.teacher_tokenizer = ctx.tokenizer
    params = KnowledgeDistillation.clean_params(
        {"student_layers": 2, "max_steps": 3, "batch_size": 8, "hidden_weight": 1.0}
    )
    student = KnowledgeDistillation().apply(model, ctx, params)
    assert layer_count(student) == 2 and student.config.num_hidden_layers == 2
    assert layer_count(model) == 4  # the input is left intact
    assert ctx.notes["kept layers"] == [0, 3] and ctx.notes["training steps"] == 3
    assert student.lm_head.weight is student.model.embed_tokens.weight  # still tied
    assert ctx.tokenizer.pad_token is None
    reloaded, _ = _round_trip(student, ctx.tokenizer, tmp_path / "kd")
    assert reloaded.config.num_hidden_layers == 2


def test_distillation_refuses_a_teacher_that_reads_other_tokens(tiny_llama_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model, ctx = _setup(tiny_llama_dir)
    backend = ctx.tokenizer.backend_tokenizer
    vocab = {w: (i + 1) % backend.get_vocab_size() for w, i in backend.get_vocab().items()}  # shifted ids
    shifted = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    shifted.pre_tokenizer = pre_tokenizers.Whitespace()
    ctx.teacher_tokenizer = PreTrainedTokenizerFast(tokenizer_object=shifted, pad_token="<pad>")
    with pytest.raises(TechniqueError, match="same tokens"):
        kd_finetune(keep_layers(model, [0]), ctx, steps=1, batch_size=4)


# --- prune.layers ----------------------------------------------------------------------------------------


def test_layer_importance_drops_the_layer_that_changes_least(tiny_llama_dir, tmp_path):
    model, ctx = _setup(tiny_llama_dir, sharpen=True)
    with torch.no_grad():  # layer 2 adds nothing to its input: the identity
        ctx.teacher.model.layers[2].self_attn.o_proj.weight.zero_()
        ctx.teacher.model.layers[2].mlp.down_proj.weight.zero_()
    model.load_state_dict(ctx.teacher.state_dict())
    kept = model.model.layers[3].state_dict()
    pruned = LayerDropping().apply(
        model, ctx, LayerDropping.clean_params({"keep": 3, "importance_batches": 1})
    )
    assert ctx.notes["drop order"].startswith("2 (KL 0)")
    assert ctx.notes["layers kept"].startswith("0, 1, 3 ") and pruned.config.num_hidden_layers == 3
    assert all(torch.equal(pruned.model.layers[2].state_dict()[k], v) for k, v in kept.items())
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1, 2]
    _round_trip(pruned, ctx.tokenizer, tmp_path / "layers")


def test_layer_importance_averages_the_kl_over_tokens(tiny_llama_dir):
    model, ctx = _setup(tiny_llama_dir)
    batches = [[Example("rain cloud wind sky snow"), Example("goal")]]
    scored = Scored(model, ctx, batches, reference=True)
    [reference], [mask] = scored.reference, scored.masks
    assert mask.sum() == 6 and reference.shape == (6, model.config.vocab_size)  # tokens, not texts
    assert scored.targets[0].tolist() == [scored.inputs[0]["input_ids"][0, 1:].tolist(), [-100] * 4]
    assert Scored(model, ctx, batches, reference=False).reference == []


def test_layer_dropping_with_recovery(tiny_llama_dir, tmp_path):
    model, ctx = _setup(tiny_llama_dir)
    params = LayerDropping.clean_params({"keep": 2, "strategy": "top", "recovery_steps": 2})
    pruned = LayerDropping().apply(model, ctx, params)
    assert ctx.notes["recovery steps"] == 2 and not pruned.training
    assert layer_count(pruned) == 2
    _round_trip(pruned, ctx.tokenizer, tmp_path / "recovered")


# --- prune.ffn -------------------------------------------------------------------------------------------


def test_ffn_removes_the_least_important_neurons_of_gated_mlps(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model, ctx = _setup(tiny_llama_dir)
    dead = {0: [3, 10, 20, 40], 2: [0, 63]}  # neurons whose up projection is zero: importance 0
    with torch.no_grad():
        for layer, neurons in dead.items():
            model.model.layers[layer].mlp.up_proj.weight[neurons] = 0
    before = sum(p.numel() for p in model.parameters())
    pruned = FfnPruning().apply(
        model, ctx, FfnPruning.clean_params({"amount": 0.25, "importance_batches": 2, "recovery_steps": 1})
    )
    assert pruned.config.intermediate_size == 48
    assert ctx.notes["feed-forward neurons per layer"] == "48 of 64" and ctx.notes["recovery steps"] == 1
    for layer in pruned.model.layers:
        mlp = layer.mlp
        assert mlp.gate_proj.weight.shape == mlp.up_proj.weight.shape == (48, 32)
        assert mlp.down_proj.weight.shape == (32, 48) and mlp.intermediate_size == 48
        assert bool((mlp.up_proj.weight != 0).any(dim=1).all())  # the dead neurons are the ones gone
    assert sum(p.numel() for p in pruned.parameters()) < before
    assert pruned_shapes(pruned) is None  # the config describes the result
    _round_trip(pruned, ctx.tokenizer, tmp_path / "ffn")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "ffn", use_safetensors=True).eval()
    assert torch.equal(_logits(plain, ctx.tokenizer)[0], _logits(pruned, ctx.tokenizer)[0])


# --- prune.magnitude -------------------------------------------------------------------------------------


def test_magnitude_prunes_the_decoder_layers_only(tiny_llama_dir, tmp_path):
    model, ctx = _setup(tiny_llama_dir)
    pruned = MagnitudePruning().apply(model, ctx, MagnitudePruning.clean_params({"amount": 0.5}))
    linears = [m for m in pruned.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((m.weight == 0).sum()) for m in linears) / sum(m.weight.numel() for m in linears)
    assert zeros == pytest.approx(0.5, abs=0.01) and len(linears) == 4 * 7
    assert torch.equal(pruned.lm_head.weight, ctx.teacher.lm_head.weight)  # the tied LM head stays dense
    _round_trip(pruned, ctx.tokenizer, tmp_path / "magnitude")


# --- quantizers ------------------------------------------------------------------------------------------


def _parameter_count(model):
    """What workers.measure.count_parameters counts: tied weights once, quantized ones too."""
    seen, total = set(), 0
    for key, tensor in dense_tensors(model):
        if key not in seen:
            seen.add(key)
            total += tensor.numel()
    return total


QUANTIZERS = {
    # name: (technique, params, tolerance of a cached decoding step against a full forward)
    "dynamic-int8": (DynamicInt8, {}, 0.05),  # activations are quantized per call: close, not equal
    "dynamic-int8-linear": (DynamicInt8, {"embeddings": False}, 0.05),
    "weight-only-int8": (WeightOnlyQuantization, {}, 1e-4),
    "bf16": (HalfPrecision, {}, 0.05),
}


@pytest.mark.parametrize("name", QUANTIZERS)
def test_quantizers_apply_save_reload_and_generate(name, tiny_llama_dir, tmp_path):
    cls, params, kv_atol = QUANTIZERS[name]
    model, ctx = _setup(tiny_llama_dir)
    reference, _ = _logits(ctx.teacher, ctx.tokenizer)
    quantized = cls().apply(model, ctx, cls.clean_params(params))
    reloaded, _ = _round_trip(quantized, ctx.tokenizer, tmp_path / name, kv_atol=kv_atol)
    # The LM head tied to the embeddings is counted once, even where int8 gave it its own copy.
    assert _parameter_count(quantized) == _parameter_count(reloaded) == _parameter_count(ctx.teacher)
    actual, mask = _logits(reloaded, ctx.tokenizer)
    error = (actual[mask] - reference[mask]).norm() / reference[mask].norm()
    assert error < 0.05, f"{name}: relative error {error:.3f}"
    if cls is not DynamicInt8:  # the LM head stays a float Linear, tied to the embeddings
        assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
        assert not type(reloaded.lm_head.weight).__module__.startswith("torchao")
    if cls is WeightOnlyQuantization:
        import json

        manifest = json.loads((tmp_path / name / "roi_planner.json").read_text())
        assert manifest["format"] == TORCHAO and not any(
            "lm_head" in k for k in manifest["quantized_weights"]
        )


# --- a hybrid, as the default plan offers it ----------------------------------------------------------------


def test_distill_then_ffn_then_weight_only(tiny_llama_dir, tmp_path):
    steps = registry.validate_pipeline(
        [
            {"technique": "distill.kd", "params": {"student_layers": 2, "max_steps": 2, "batch_size": 8}},
            {"technique": "prune.ffn", "params": {"amount": 0.5, "importance_batches": 1}},
            {"technique": "quantize.weight-only"},
        ],
        device="cpu",
        task=LM,
    )
    model, ctx = _setup(tiny_llama_dir)
    for step in steps:
        model = registry.get(step["technique"])().apply(model, ctx, step["params"])
    assert layer_count(model) == 2 and model.config.intermediate_size == 32
    reloaded, _ = _round_trip(model, ctx.tokenizer, tmp_path / "hybrid")
    assert reloaded.config.num_hidden_layers == 2 and reloaded.config.intermediate_size == 32
