import json

import pytest
import torch

from plugins import registry
from plugins.artifacts import MANIFEST, PICKLE_SUFFIXES, load_pretrained, save_model
from plugins.base import Context, ParamError, TechniqueError
from plugins.formats import dense_tensors
from plugins.quantize import DYNAMIC_INT8, TORCHAO, DynamicInt8, HalfPrecision, WeightOnlyQuantization

TASK = "sequence-classification"
TEXTS = ["rain cloud wind", "goal team score player the new coach"]
# name: (technique, params, format in the manifest (None: plain transformers, no manifest), max relative
# error of the last hidden state against fp32)
VARIANTS = {
    "int8+embeddings": (DynamicInt8, {}, DYNAMIC_INT8, 0.02),
    "int8": (DynamicInt8, {"embeddings": False}, DYNAMIC_INT8, 0.02),
    "bf16": (HalfPrecision, {}, None, 0.02),
    "weight-only-int8": (WeightOnlyQuantization, {}, TORCHAO, 0.02),
}


def _ctx(device="cpu"):
    return Context(
        task=TASK, device=device, seed=0, tokenizer=None, teacher=None, train=[], eval=[], labels=[]
    )


def _outputs(model, batch):
    with torch.inference_mode():
        out = model(**batch, output_hidden_states=True)
    return out.logits, out.hidden_states[-1].float()


def _relative_error(actual, expected):
    return float((actual - expected).norm() / expected.norm())


def _count(model):
    """What workers.measure.count_parameters counts, through plugins.formats.dense_tensors."""
    seen, total, nonzero = set(), 0, 0
    for key, tensor in dense_tensors(model):
        if key not in seen:
            seen.add(key)
            total += tensor.numel()
            nonzero += int(torch.count_nonzero(tensor))
    return total, nonzero


@pytest.fixture(scope="module")
def produced(tiny_model_dir, tmp_path_factory):
    """Every variant applied to the tiny model, saved and reloaded once for the tests below."""
    root = tmp_path_factory.mktemp("quantized")
    fp32, tokenizer = load_pretrained(tiny_model_dir, TASK)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    result = {
        "fp32": {
            "model": fp32,
            "size": save_model(fp32, tokenizer, root / "fp32", card=""),
            "dir": root / "fp32",
        }
    }
    for name, (cls, params, _, _) in VARIANTS.items():
        model, _ = load_pretrained(tiny_model_dir, TASK)  # HalfPrecision and torchao change it in place
        quantized = cls().apply(model, _ctx(), cls.clean_params(params))
        size = save_model(quantized, tokenizer, root / name, card="# test\n")
        reloaded, _ = load_pretrained(root / name, TASK)
        result[name] = {"model": quantized, "reloaded": reloaded, "size": size, "dir": root / name}
    return result, batch


@pytest.mark.parametrize("name", VARIANTS)
def test_round_trip_gives_the_same_logits_and_stays_close_to_fp32(name, produced):
    result, batch = produced
    _, _, _, tolerance = VARIANTS[name]
    logits, hidden = _outputs(result[name]["model"], batch)
    reloaded_logits, reloaded_hidden = _outputs(result[name]["reloaded"], batch)
    assert torch.equal(logits, reloaded_logits)
    _, fp32_hidden = _outputs(result["fp32"]["model"], batch)
    # The tiny random model's logits are ~0.01, so compare the last hidden state (LayerNorm'd, ~1).
    assert _relative_error(reloaded_hidden, fp32_hidden) < tolerance
    assert torch.allclose(reloaded_logits.float(), _outputs(result["fp32"]["model"], batch)[0], atol=0.05)


@pytest.mark.parametrize("name", VARIANTS)
def test_the_manifest_names_the_format_and_nothing_is_pickled(name, produced):
    result, _ = produced
    _, _, expected, _ = VARIANTS[name]
    directory = result[name]["dir"]
    assert not [p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES]
    assert (directory / "model.safetensors").is_file()
    if expected is None:
        assert not (directory / MANIFEST).exists()
    else:
        assert json.loads((directory / MANIFEST).read_text())["format"] == expected


@pytest.mark.parametrize("name", VARIANTS)
def test_quantized_weights_are_counted_like_the_fp32_ones(name, produced):
    result, _ = produced
    total, nonzero = _count(result[name]["reloaded"])
    assert total == _count(result["fp32"]["model"])[0]
    assert 0.9 * total < nonzero <= total


def test_dynamic_int8_quantizes_linear_and_embedding_layers(produced):
    from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    result, _ = produced
    for model in (result["int8+embeddings"]["model"], result["int8+embeddings"]["reloaded"]):
        embeddings = model.bert.embeddings
        assert isinstance(model.bert.encoder.layer[0].intermediate.dense, DynamicQuantizedLinear)
        for module in (
            embeddings.word_embeddings,
            embeddings.position_embeddings,
            embeddings.token_type_embeddings,
        ):
            assert isinstance(module, QuantizedEmbedding)
    assert isinstance(result["int8"]["reloaded"].bert.embeddings.word_embeddings, torch.nn.Embedding)
    manifest = json.loads((result["int8+embeddings"]["dir"] / MANIFEST).read_text())
    assert "bert.embeddings.word_embeddings" in manifest["quantized_embedding"]


def test_int8_embeddings_take_strided_indices(produced):
    # Without token_type_ids BERT expands a buffer into a strided index tensor, which the int8 embedding
    # kernel refuses on its own; batch of 2 so the expansion is really strided.
    result, batch = produced
    plain = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.inference_mode():
        assert torch.equal(
            result["int8+embeddings"]["reloaded"](**plain).logits,
            result["int8+embeddings"]["model"](**plain).logits,
        )


def test_sizes(produced):
    result, _ = produced
    sizes = {name: entry["size"] for name, entry in result.items()}
    assert sizes["int8+embeddings"] < sizes["int8"] < sizes["fp32"]
    assert sizes["weight-only-int8"] < sizes["fp32"]
    # Linear weights shrink 4x (saving 75% of their bytes) less the per-channel scales, which weigh a lot
    # on a 32-wide model.
    fp32 = result["fp32"]["model"]
    linear_bytes = sum(m.weight.numel() * 4 for m in fp32.modules() if isinstance(m, torch.nn.Linear))
    assert sizes["fp32"] - sizes["int8"] > 0.5 * linear_bytes
    weights = {name: _tensor_bytes(entry["dir"] / "model.safetensors") for name, entry in result.items()}
    assert weights["bf16"] / weights["fp32"] == pytest.approx(0.5, abs=0.01)


def _tensor_bytes(path):
    """A safetensors file's size less its JSON header, which is large next to a tiny model's weights."""
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
    return path.stat().st_size - 8 - header


def test_bf16_reloads_in_bf16_and_runs_on_cpu(produced):
    result, batch = produced
    reloaded = result["bf16"]["reloaded"]
    assert reloaded.dtype == torch.bfloat16
    assert json.loads((result["bf16"]["dir"] / "config.json").read_text())["dtype"] == "bfloat16"
    logits, _ = _outputs(reloaded, batch)  # integer input_ids/attention_mask need no cast
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_weight_only_int8_keeps_torchao_tensors_after_reloading(produced):
    from torchao.quantization import Int8Tensor

    result, _ = produced
    for model in (result["weight-only-int8"]["model"], result["weight-only-int8"]["reloaded"]):
        assert isinstance(model.bert.encoder.layer[0].intermediate.dense.weight, Int8Tensor)
        assert isinstance(model.classifier.weight, Int8Tensor)
        assert not isinstance(model.bert.embeddings.word_embeddings.weight, Int8Tensor)
    manifest = json.loads((result["weight-only-int8"]["dir"] / MANIFEST).read_text())
    assert manifest["quantized_weights"]["classifier.weight"] == "Int8Tensor"


@pytest.fixture
def registered():
    """The new techniques registered directly, whether or not the package's entry points list them yet."""
    for cls in (DynamicInt8, HalfPrecision, WeightOnlyQuantization):
        registry.register(cls)
    yield
    for cls in (DynamicInt8, HalfPrecision, WeightOnlyQuantization):
        registry.unregister(cls.name)


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (
            {"technique": "quantize.half", "params": {"dtype": "fp16"}},
            "fp16 needs a CUDA device; use bf16 on CPU",
        ),
        (
            {"technique": "quantize.weight-only", "params": {"bits": "4"}},
            "int4 weight-only needs a CUDA device",
        ),
    ],
)
def test_cpu_refuses_cuda_only_parameters_before_queueing(registered, step, reason):
    with pytest.raises(ParamError, match=reason):
        registry.validate_pipeline([step], device="cpu", task=TASK)
    assert registry.validate_pipeline([step], device="cuda", task=TASK)[0]["params"] == registry.get(
        step["technique"]
    ).clean_params(step["params"])


def test_parameters_are_validated(registered):
    ok = registry.validate_pipeline(
        [{"technique": "quantize.weight-only", "params": {"bits": 8}}], device="cpu", task=TASK
    )
    assert ok[0]["params"] == {"bits": 8, "group_size": 128}
    assert registry.validate_pipeline([{"technique": "quantize.half"}], device="cpu", task=TASK)[0][
        "params"
    ] == {"dtype": "bf16"}
    with pytest.raises(ParamError, match="group_size: 100 is not one of 32, 64, 128, 256"):
        WeightOnlyQuantization.clean_params({"group_size": 100})
    with pytest.raises(ParamError, match="dtype: 'fp8' is not one of bf16, fp16"):
        HalfPrecision.clean_params({"dtype": "fp8"})
    assert DynamicInt8.clean_params({"embeddings": "false"}) == {"per_channel": True, "embeddings": False}


def test_apply_refuses_cuda_only_parameters_on_cpu_too(tiny_model_dir):
    model, _ = load_pretrained(tiny_model_dir, TASK)
    with pytest.raises(TechniqueError, match="fp16 needs a CUDA device"):
        HalfPrecision().apply(model, _ctx(), {"dtype": "fp16"})
    with pytest.raises(TechniqueError, match="int4 weight-only needs a CUDA device"):
        WeightOnlyQuantization().apply(model, _ctx(), {"bits": 4, "group_size": 32})


def _gpu_round_trip(tiny_model_dir, tmp_path, cls, params, *, tolerance=0.05):
    model, tokenizer = load_pretrained(tiny_model_dir, TASK, device="cuda")
    reference, _ = load_pretrained(tiny_model_dir, TASK, device="cuda")
    quantized = cls().apply(model, _ctx("cuda"), cls.clean_params(params))
    save_model(quantized, tokenizer, tmp_path / "out", card="")
    reloaded, _ = load_pretrained(tmp_path / "out", TASK, device="cuda")
    batch = {k: v.cuda() for k, v in tokenizer(TEXTS, padding=True, return_tensors="pt").items()}
    logits, hidden = _outputs(quantized, batch)
    reloaded_logits, reloaded_hidden = _outputs(reloaded, batch)
    assert torch.equal(logits, reloaded_logits)
    assert _relative_error(reloaded_hidden, _outputs(reference, batch)[1]) < tolerance
    assert _count(reloaded)[0] == _count(reference)[0]
    return quantized, reloaded, tmp_path / "out"


@pytest.mark.gpu
def test_fp16_round_trips_on_cuda(tiny_model_dir, tmp_path):
    _, reloaded, _ = _gpu_round_trip(tiny_model_dir, tmp_path, HalfPrecision, {"dtype": "fp16"})
    assert reloaded.dtype == torch.float16


@pytest.mark.gpu
def test_int8_weight_only_round_trips_on_cuda(tiny_model_dir, tmp_path):
    _gpu_round_trip(tiny_model_dir, tmp_path, WeightOnlyQuantization, {"bits": 8})


@pytest.mark.gpu
def test_int4_weight_only_round_trips_on_cuda(tiny_model_dir, tmp_path):
    # The tiny model's layers are 32 and 64 wide: group_size 32 quantizes them all.
    _, reloaded, directory = _gpu_round_trip(
        tiny_model_dir, tmp_path, WeightOnlyQuantization, {"bits": 4, "group_size": 32}, tolerance=0.2
    )
    manifest = json.loads((directory / MANIFEST).read_text())
    assert set(manifest["quantized_weights"].values()) == {"Int4TilePackedTo4dTensor"}
    assert reloaded.bert.embeddings.word_embeddings.weight.dtype == torch.bfloat16
