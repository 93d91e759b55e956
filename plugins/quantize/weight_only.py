"""Weight-only int8/int4 quantization with torchao, and the format that stores torchao's tensors.

The format, ``roi-planner/torchao-weight-only``, flattens torchao's quantized weight tensors into safetensors
with torchao's own safetensors helpers (the layout transformers writes for a ``TorchAoConfig`` model), so
transformers with torchao loads it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from plugins.artifacts import WEIGHTS, ModelLoadError, empty_model, load_weights, safetensors_ready
from plugins.base import Context, Param, Technique, TechniqueError
from plugins.formats import Format

TORCHAO = "roi-planner/torchao-weight-only"


def is_torchao_tensor(tensor: Any) -> bool:
    """Whether ``tensor`` is one of torchao's quantized tensor subclasses (without importing torchao)."""
    return type(tensor).__module__.split(".", 1)[0] == "torchao"


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


def _detects(model: Any) -> bool:
    return any(is_torchao_tensor(p) for p in model.parameters())


def _dense_tensors(module: Any) -> list[tuple[int, Any]] | None:
    """The module's own parameters, its torchao weights dequantized; None when it holds none."""
    params = list(module.parameters(recurse=False))
    if not any(is_torchao_tensor(p) for p in params):
        return None
    return [(id(p), _dequantize_torchao(p) if is_torchao_tensor(p) else p.detach()) for p in params]


def _save_torchao(model: Any, path: Path) -> dict[str, Any]:
    import torchao
    from safetensors.torch import save_file
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    model.config.save_pretrained(path)  # with the TorchAoConfig the technique recorded, for transformers
    state = model.state_dict()
    tensors, metadata = flatten_tensor_state_dict(state)
    save_file(safetensors_ready(tensors), str(path / WEIGHTS), metadata={**metadata, "format": "pt"})
    quantized = {key: type(value).__name__ for key, value in state.items() if is_torchao_tensor(value)}
    return {"torchao": torchao.__version__, "quantized_weights": quantized}


def _load_torchao(path: Path, task: str, manifest: dict[str, Any], device: str) -> Any:
    from safetensors import safe_open
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    model = empty_model(path, task, manifest)
    # Straight onto the device: packed int4 layouts are device-specific.
    with safe_open(str(path / WEIGHTS), framework="pt", device=device) as f:
        metadata = f.metadata() or {}
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    try:
        state, leftover = unflatten_tensor_state_dict(tensors, metadata)
    except ValueError as exc:  # a tensor type torchao's allow-list does not know
        raise ModelLoadError(f"{path.name}: torchao cannot rebuild its weights: {exc}") from exc
    if leftover:
        raise ModelLoadError(f"{path.name}: tensors without torchao metadata: {sorted(leftover)[:5]}")
    load_weights(model, state, path)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()  # loading replaced the tied tensors by two copies; the LM head is never quantized
    return model


TORCHAO_FORMAT = Format(
    TORCHAO, detects=_detects, save=_save_torchao, load=_load_torchao, dense_tensors=_dense_tensors
)


def _output_embedding_names(model: Any) -> set[str]:
    """Names of the modules computing the LM head, which quantizers leave alone for accuracy (and to keep
    them tied to the input embeddings)."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if get is not None else None
    return {name for name, module in model.named_modules() if head is not None and module is head}


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
    formats = (TORCHAO_FORMAT,)
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
