"""Dynamic int8 quantization (torch.ao) and the format that stores its int8 layers.

The format, ``roi-planner/dynamic-int8``, stores torch.ao's dynamically quantized Linear layers and int8
Embedding layers as their integer values plus scales and zero points in safetensors, listed in the manifest;
only this tool reloads them, which the model card says.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from plugins.artifacts import WEIGHTS, ModelLoadError, empty_model, load_weights, safetensors_ready
from plugins.base import Context, Param, Technique
from plugins.formats import Format

DYNAMIC_INT8 = "roi-planner/dynamic-int8"
QUANTIZED_KEYS = ("weight_int8", "weight_scales", "weight_zero_points", "bias")


def quantize_linear_dynamic(
    model: Any,
    *,
    only: set[str] | None = None,
    per_channel: bool = True,
    embeddings: bool | Collection[str] = False,
) -> Any:
    """Replace Linear layers (all, or those named in ``only``) by dynamically quantized int8 ones.

    ``embeddings`` also replaces Embedding layers (all when True, or those named) by int8 ones with a float
    scale and zero point per row (torch.ao's ``float_qparams_weight_only_qconfig``).

    A weight shared by several layers (a causal LM's LM head tied to its input embeddings) gives each
    quantized layer its own int8 copy; ``plugins.formats.dense_tensors`` still counts it once, as the original model did.
    """
    import warnings

    import torch
    from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        float_qparams_weight_only_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    shared: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            shared.setdefault(id(weight), []).append(name)
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec: dict[Any, Any] = {torch.nn.Linear: qconfig} if only is None else dict.fromkeys(only, qconfig)
    if embeddings is True:
        spec[torch.nn.Embedding] = float_qparams_weight_only_qconfig
    elif embeddings:
        spec.update(dict.fromkeys(embeddings, float_qparams_weight_only_qconfig))
    with warnings.catch_warnings():
        # torch.ao's eager quantization is deprecated in favour of torchao, but it is the one path with
        # fast fbgemm int8 kernels on CPU in eager mode today.
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(model, spec, dtype=torch.qint8, inplace=False)
    for module in quantized.modules():
        if isinstance(module, QuantizedEmbedding):
            module.register_forward_pre_hook(_contiguous_indices)
    _mark_shared_weights(quantized, [names for names in shared.values() if len(names) > 1])
    return quantized


def _mark_shared_weights(model: Any, groups: list[list[str]]) -> None:
    """Give the quantized layers of each group of layers that shared one float weight the counting key of
    that weight (the float parameter where one layer kept it, else the first layer's)."""
    import torch

    modules = dict(model.named_modules())
    for names in groups:
        members = [modules[name] for name in names if name in modules]
        floats = [m.weight for m in members if isinstance(getattr(m, "weight", None), torch.Tensor)]
        key = id(floats[0]) if floats else id(members[0])
        for member in members:
            if not isinstance(getattr(member, "weight", None), torch.Tensor):
                member.shared_weight_key = key


def _contiguous_indices(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The int8 embedding kernel refuses strided indices, which models pass (BERT's default
    token_type_ids are an expanded buffer; generation slices input_ids); nn.Embedding takes them."""
    return tuple(arg.contiguous() if hasattr(arg, "contiguous") else arg for arg in args)


# --- the format ------------------------------------------------------------------------------------------


def _quantized_modules() -> tuple[Any, Any]:  # torch's classes: Any to mypy (see pyproject.toml)
    from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return DynamicQuantizedLinear, QuantizedEmbedding


def _detects(model: Any) -> bool:
    kinds = _quantized_modules()
    return any(isinstance(m, kinds) for m in model.modules())


def _dense_tensors(module: Any) -> list[tuple[int, Any]] | None:
    """A quantized layer's weight dequantized, under the counting key of the float weight it was made from
    (one key for the layers made from one tied weight); its bias as it is."""
    linear, embedding = _quantized_modules()
    key = getattr(module, "shared_weight_key", id(module))
    if isinstance(module, linear):
        weight, bias = module.weight(), module.bias()
        pairs = [(key, weight.dequantize())]
        return pairs + ([(id(bias), bias.detach())] if bias is not None else [])
    if isinstance(module, embedding):
        return [(key, module.weight().dequantize())]
    return None


def _store_quantized(tensors: dict[str, Any], name: str, weight: Any) -> dict[str, Any]:
    """Put a torch.ao quantized weight's integer values, scales and zero points into ``tensors``."""
    import torch

    tensors[f"{name}.weight_int8"] = weight.int_repr().contiguous()
    if weight.qscheme() == torch.per_tensor_affine:
        tensors[f"{name}.weight_scales"] = torch.tensor([weight.q_scale()], dtype=torch.float64)
        tensors[f"{name}.weight_zero_points"] = torch.tensor([weight.q_zero_point()], dtype=torch.int64)
        return {"scheme": "per_tensor"}
    # per_channel_affine (Linear, int8 zero points) or per_channel_affine_float_qparams (Embedding: uint8
    # values, float zero points); the dtypes stored give the scheme back.
    tensors[f"{name}.weight_scales"] = weight.q_per_channel_scales().contiguous()
    tensors[f"{name}.weight_zero_points"] = weight.q_per_channel_zero_points().contiguous()
    return {"scheme": "per_channel", "axis": int(weight.q_per_channel_axis())}


def _restore_quantized(stored: dict[str, Any], spec: dict[str, Any]) -> Any:
    import torch

    if spec["scheme"] == "per_channel":
        return torch._make_per_channel_quantized_tensor(
            stored["weight_int8"], stored["weight_scales"], stored["weight_zero_points"], spec["axis"]
        )
    return torch._make_per_tensor_quantized_tensor(
        stored["weight_int8"], float(stored["weight_scales"][0]), int(stored["weight_zero_points"][0])
    )


def _save_dynamic_int8(model: Any, path: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file
    from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    model.config.save_pretrained(path)
    linear = {n: m for n, m in model.named_modules() if isinstance(m, DynamicQuantizedLinear)}
    embedding = {n: m for n, m in model.named_modules() if isinstance(m, QuantizedEmbedding)}
    quantized = tuple(f"{name}." for name in (*linear, *embedding))
    tensors = {
        key: value
        for key, value in model.state_dict().items()
        if isinstance(value, torch.Tensor) and not value.is_quantized and not key.startswith(quantized)
    }
    linear_layout = {}
    for name, module in linear.items():
        linear_layout[name] = _store_quantized(tensors, name, module.weight())
        if module.bias() is not None:
            tensors[f"{name}.bias"] = module.bias().detach()
    embedding_layout = {name: _store_quantized(tensors, name, m.weight()) for name, m in embedding.items()}
    save_file(safetensors_ready(tensors), str(path / WEIGHTS), metadata={"format": "pt"})
    return {"quantized_linear": linear_layout, "quantized_embedding": embedding_layout}


def _load_dynamic_int8(path: Path, task: str, manifest: dict[str, Any], device: str) -> Any:
    from safetensors.torch import load_file
    from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    linear: dict[str, dict[str, Any]] = manifest.get("quantized_linear", {})
    embedding: dict[str, dict[str, Any]] = manifest.get("quantized_embedding", {})
    model = empty_model(path, task, manifest)
    tensors = load_file(str(path / WEIGHTS))
    stored = {
        name: {k: tensors.pop(f"{name}.{k}", None) for k in QUANTIZED_KEYS} for name in (*linear, *embedding)
    }
    # The float weights first; the quantized layers' weights are the only ones allowed to be missing.
    load_weights(model, tensors, path, may_miss=tuple(f"{name}." for name in stored))
    if getattr(model.config, "tie_word_embeddings", False):
        # Loading replaced the tied tensor on one side only: tie them again, so that quantizing sees one
        # weight shared by the embeddings and the LM head, as it did when the model was produced.
        model.tie_weights()
    model = quantize_linear_dynamic(model, only=set(linear), embeddings=set(embedding), per_channel=True)
    modules = dict(model.named_modules())
    for name, spec in (*linear.items(), *embedding.items()):
        module = modules.get(name)
        kind = DynamicQuantizedLinear if name in linear else QuantizedEmbedding
        if not isinstance(module, kind) or stored[name]["weight_int8"] is None:
            raise ModelLoadError(f"{path.name}: layer {name} is listed as int8 but cannot be restored")
        weight = _restore_quantized(stored[name], spec)
        if name in linear:
            module.set_weight_bias(weight, stored[name]["bias"])
        else:
            module.set_weight(weight)
    return model


DYNAMIC_INT8_FORMAT = Format(
    DYNAMIC_INT8,
    detects=_detects,
    save=_save_dynamic_int8,
    load=_load_dynamic_int8,
    dense_tensors=_dense_tensors,
    legacy_keys=("quantized_linear",),  # manifests from before the format key held only this format
)


class DynamicInt8(Technique):
    """Dynamic int8 quantization of every Linear layer: weights stored as int8, activations quantized on
    the fly per batch, int8 matrix multiplies through fbgemm on x86 CPUs. Optionally the embeddings too,
    stored as int8 with a scale per row.

    Source: PyTorch ``torch.ao.quantization.quantize_dynamic`` (Jacob et al. 2018, "Quantization and
    Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference"); the dynamic variant as
    in the PyTorch BERT dynamic quantization tutorial; embeddings with torch.ao's
    ``float_qparams_weight_only_qconfig``. LayerNorm stays in fp32. On a causal LM the LM head is a Linear
    layer and is quantized too; where it is tied to the input embeddings, it gets its own int8 copy.
    """

    name = "quantize.dynamic-int8"
    title = "Dynamic int8 quantization (Linear layers)"
    family = "quantize"
    devices = ("cpu",)
    tasks = ("sequence-classification", "causal-lm")
    formats = (DYNAMIC_INT8_FORMAT,)
    params = (
        Param(
            "per_channel",
            bool,
            True,
            "One scale per output channel instead of one per layer: usually keeps more accuracy at the "
            "same size and speed.",
        ),
        Param(
            "embeddings",
            bool,
            True,
            "Also store the word and position embeddings as int8 with a scale per row (torch.ao "
            "float_qparams_weight_only_qconfig); on small encoders the embeddings are most of the bytes.",
        ),
    )

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        what = "Linear and Embedding layers" if params["embeddings"] else "Linear layers"
        ctx.report(0.0, f"quantizing {what} to int8")
        quantized = quantize_linear_dynamic(
            model.to("cpu").eval(), per_channel=params["per_channel"], embeddings=params["embeddings"]
        )
        ctx.report(1.0, "quantized")
        return quantized
