"""Quantization techniques."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from plugins.base import Context, Param, Technique, TechniqueError

HALF_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


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
    quantized layer its own int8 copy; ``dense_tensors`` still counts it once, as the original model did.
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


def is_torchao_tensor(tensor: Any) -> bool:
    """Whether ``tensor`` is one of torchao's quantized tensor subclasses (without importing torchao)."""
    return type(tensor).__module__.split(".", 1)[0] == "torchao"


def dense_tensors(module: Any) -> list[tuple[int, Any]]:
    """The weights ``module`` itself holds (not its children's), quantized ones dequantized, each with a key
    that is the same for a tensor shared between modules: what a parameter count counts. Quantized layers
    made from one shared float weight (a tied LM head) share a key too.

    Covers torch.ao dynamic int8 Linear, torch.ao int8 Embedding and torchao's weight-only tensors, whose
    weights are not plain parameters.
    """
    from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    key = getattr(module, "shared_weight_key", id(module))
    if isinstance(module, DynamicQuantizedLinear):
        weight, bias = module.weight(), module.bias()
        pairs = [(key, weight.dequantize())]
        return pairs + ([(id(bias), bias.detach())] if bias is not None else [])
    if isinstance(module, QuantizedEmbedding):
        return [(key, module.weight().dequantize())]
    pairs = []
    for param in module.parameters(recurse=False):
        if is_torchao_tensor(param):
            pairs.append((id(param), _dequantize_torchao(param)))
        else:
            pairs.append((id(param), param.detach()))
    return pairs


def _dequantize_torchao(weight: Any) -> Any:
    import torch

    if hasattr(weight, "dequantize"):
        return weight.dequantize()
    # Int4 tile-packed weights have no dequantize(); multiplying the identity by them gives them back
    # exactly (each output is one weight times 1), in column chunks so the identity stays small.
    in_features = weight.shape[-1]
    columns = []
    for start in range(0, in_features, 4096):
        stop = min(start + 4096, in_features)
        rows = torch.zeros(stop - start, in_features, dtype=weight.dtype, device=weight.device)
        rows[:, start:stop] = torch.eye(stop - start, dtype=weight.dtype, device=weight.device)
        columns.append(torch.nn.functional.linear(rows, weight).T)  # weight[:, start:stop]
    return torch.cat(columns, dim=1)


def _output_embedding_names(model: Any) -> set[str]:
    """Names of the modules computing the LM head, which quantizers leave alone for accuracy (and to keep
    them tied to the input embeddings)."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if get is not None else None
    return {name for name, module in model.named_modules() if head is not None and module is head}


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


class HalfPrecision(Technique):
    """Casts every weight to 16-bit floats: bf16 (the range of fp32, less precision) or fp16 (more
    precision, smaller range; fast on GPUs only).

    Source: mixed/half-precision inference as in Micikevicius et al. 2018, "Mixed Precision Training", and
    bfloat16 (Kalamkar et al. 2019, "A Study of BFLOAT16 for Deep Learning Training"); done with PyTorch's
    ``Module.to(dtype)``. Saved by transformers in that dtype, so any transformers loads it.
    """

    name = "quantize.half"
    title = "Half precision (bf16 / fp16)"
    family = "quantize"
    devices = ("cpu", "cuda")
    tasks = ("sequence-classification", "causal-lm")
    speedup_caveat = (
        "bf16 halves the size, but its matrix multiplies are faster than fp32 only on CPUs with native "
        "bf16 instructions (AMX, or AVX512-BF16) and on GPUs; elsewhere it can be slower."
    )
    params = (
        Param(
            "dtype",
            str,
            "bf16",
            "bf16 keeps fp32's range (safe for most models, fast on recent CPUs and GPUs); fp16 keeps "
            "more precision but can overflow, and runs only on CUDA.",
            choices=tuple(HALF_DTYPES),
        ),
    )

    @classmethod
    def check(cls, params: Mapping[str, Any], *, device: str, task: str) -> str | None:
        if params.get("dtype") == "fp16" and not device.startswith("cuda"):
            return "fp16 needs a CUDA device; use bf16 on CPU"
        return None

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        import torch

        problem = self.check(params, device=ctx.device, task=ctx.task)
        if problem:
            raise TechniqueError(problem)
        dtype = getattr(torch, HALF_DTYPES[params["dtype"]])
        ctx.report(0.0, f"casting the weights to {params['dtype']}")
        # Buffers that are not saved (rotary frequencies) stay in fp32, as transformers computes them when
        # it loads the saved model: the model measured after reloading is the one produced here.
        unsaved = [
            (module, name, buffer)
            for module in model.modules()
            for name, buffer in module.named_buffers(recurse=False)
            if name in module._non_persistent_buffers_set
        ]
        model = model.to(dtype=dtype).eval()
        for module, name, buffer in unsaved:
            module._buffers[name] = buffer
        model.config.dtype = dtype
        ctx.report(1.0, f"cast to {params['dtype']}")
        return model


class WeightOnlyQuantization(Technique):
    """Weight-only quantization with torchao: Linear weights stored as int8 (one scale per output row) or,
    on CUDA, int4 (a scale and zero point per group of input columns); activations stay in floating point.

    Source: torchao's ``quantize_`` with ``Int8WeightOnlyConfig`` and ``Int4WeightOnlyConfig`` (int4 in the
    tinygemm tile-packed layout, in bf16; group-wise int4 as in GPTQ/AWQ-style weight-only schemes). The
    LM head of a causal LM stays unquantized, as transformers' TorchAoConfig does by default.
    """

    name = "quantize.weight-only"
    title = "Weight-only int8 / int4 quantization (torchao)"
    family = "quantize"
    devices = ("cpu", "cuda")
    tasks = ("sequence-classification", "causal-lm")
    speedup_caveat = (
        "weight-only int8 dequantizes the weights on the fly in eager mode; it saves memory, and is faster "
        "only with torch.compile or fused kernels"
    )
    params = (
        Param(
            "bits",
            int,
            8,
            "8: int8 weights, on CPU or CUDA. 4: int4 weights in groups, CUDA only (compute capability 8.0 "
            "or newer); the model runs in bf16.",
            choices=(8, 4),
        ),
        Param(
            "group_size",
            int,
            128,
            "int4 only: input columns sharing one scale and zero point; smaller keeps more accuracy and "
            "stores more scales. Layers whose width is not a multiple stay unquantized.",
            choices=(32, 64, 128, 256),
        ),
    )

    @classmethod
    def check(cls, params: Mapping[str, Any], *, device: str, task: str) -> str | None:
        if params.get("bits") == 4 and not device.startswith("cuda"):
            return (
                "int4 weight-only needs a CUDA device (torchao's int4 kernels are CUDA-only); "
                "use bits=8 on CPU"
            )
        return None

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        import torch

        problem = self.check(params, device=ctx.device, task=ctx.task)
        if problem:
            raise TechniqueError(problem)
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
        from transformers import TorchAoConfig

        # set_inductor_config=False: torchao would otherwise change torch.compile's global settings for
        # the whole worker process.
        if params["bits"] == 4:
            if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
                raise TechniqueError("int4 weight-only needs a CUDA GPU of compute capability 8.0 or newer")
            config: Any = Int4WeightOnlyConfig(
                group_size=params["group_size"],
                int4_packing_format="tile_packed_to_4d",
                set_inductor_config=False,
            )
            model = model.to(device=ctx.device, dtype=torch.bfloat16)
        else:
            config = Int8WeightOnlyConfig(set_inductor_config=False)
            model = model.to(ctx.device)
        model.eval()
        skip = _output_embedding_names(model)
        ctx.report(0.0, f"quantizing Linear weights to int{params['bits']}")
        quantize_(model, config, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn not in skip)
        linear = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        kept = sorted(n for n, m in linear.items() if not is_torchao_tensor(m.weight))
        if len(kept) == len(linear):
            why = (
                f"no input width is a multiple of group_size {params['group_size']}"
                if set(linear) - skip
                else "the model has no torch.nn.Linear layer besides the LM head (GPT-2 uses Conv1D)"
            )
            raise TechniqueError(f"no layer could be quantized to int{params['bits']}: {why}")
        # Recorded in config.json, so transformers (with torchao) can load the saved model as well.
        model.config.quantization_config = TorchAoConfig(quant_type=config, modules_to_not_convert=kept)
        ctx.notes["quantized_layers"] = len(linear) - len(kept)
        if kept:
            ctx.notes["unquantized_layers"] = ", ".join(kept)
        ctx.report(1.0, "quantized")
        return model
