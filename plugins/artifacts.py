"""Saving and loading models as directories that hold no code: safetensors, JSON config, tokenizer.

Plain models use transformers' own ``save_pretrained``/``from_pretrained``. Models with dynamically
quantized Linear layers are stored as int8 weights plus their scales in safetensors, with a manifest
(``roi_planner.json``) naming the quantized layers; only this tool reloads them, which the model card says.
Pickle checkpoints are refused, and ``trust_remote_code`` is never enabled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST = "roi_planner.json"
WEIGHTS = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
QUANTIZED_KEYS = ("weight_int8", "weight_scales", "weight_zero_points", "bias")


class ModelLoadError(Exception):
    """The model directory cannot be loaded safely; the message says why and what to do."""


def check_model_dir(path: Path) -> None:
    """Refuse directories without safetensors weights, with the reason."""
    if not path.is_dir():
        raise ModelLoadError(f"{path} is not a directory with a saved model")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json; save the model with save_pretrained()")
    has_safetensors = any(path.glob("*.safetensors"))
    if not has_safetensors:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ModelLoadError(
                f"{path.name} holds only pickle weights ({', '.join(pickles)}), which can run code when "
                "loaded; convert them to safetensors (save_pretrained(..., safe_serialization=True))"
            )
        raise ModelLoadError(f"{path.name} has no *.safetensors weights")


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _model_class(task: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForCausalLM if task == "causal-lm" else AutoModelForSequenceClassification


def load_pretrained(path: Path, task: str, *, device: str = "cpu") -> tuple[Any, Any]:
    """Load a model directory saved by transformers or by ``save_model``; return (model, tokenizer)."""
    from transformers import AutoTokenizer

    check_model_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    manifest_path = path / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if manifest.get("quantized_linear"):
        model = _load_dynamic_int8(path, task, manifest)
    else:
        try:
            model = _model_class(task).from_pretrained(path, use_safetensors=True, trust_remote_code=False)
        except (ValueError, KeyError, OSError) as exc:
            raise ModelLoadError(f"{path.name} cannot be loaded for {task}: {exc}") from exc
    model.eval()
    return model.to(device), tokenizer


def save_model(model: Any, tokenizer: Any, path: Path, *, card: str) -> int:
    """Save ``model`` and ``tokenizer`` under ``path`` and return the directory's size in bytes."""
    import torch
    from safetensors.torch import save_file
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, DynamicQuantizedLinear)}
    if not quantized:
        model.save_pretrained(path, safe_serialization=True)
    else:
        model.config.save_pretrained(path)
        tensors: dict[str, torch.Tensor] = {}
        for key, value in model.state_dict().items():
            if (
                isinstance(value, torch.Tensor)
                and not value.is_quantized
                and key.rsplit(".", 1)[0] not in quantized
            ):
                tensors[key] = value.contiguous()
        layout: dict[str, dict[str, Any]] = {}
        for name, module in quantized.items():
            weight = module.weight()
            tensors[f"{name}.weight_int8"] = weight.int_repr().contiguous()
            if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                tensors[f"{name}.weight_scales"] = weight.q_per_channel_scales().contiguous()
                tensors[f"{name}.weight_zero_points"] = weight.q_per_channel_zero_points().contiguous()
                layout[name] = {"scheme": "per_channel", "axis": int(weight.q_per_channel_axis())}
            else:
                tensors[f"{name}.weight_scales"] = torch.tensor([weight.q_scale()], dtype=torch.float64)
                tensors[f"{name}.weight_zero_points"] = torch.tensor(
                    [weight.q_zero_point()], dtype=torch.int64
                )
                layout[name] = {"scheme": "per_tensor"}
            bias = module.bias()
            if bias is not None:
                tensors[f"{name}.bias"] = bias.detach().contiguous()
        # Tied weights share storage; safetensors refuses shared tensors, so store each once.
        seen: dict[int, str] = {}
        for key in list(tensors):
            ptr = tensors[key].data_ptr()
            if ptr in seen and tensors[key].numel() > 0:
                tensors[key] = tensors[key].clone()
            seen[ptr] = key
        save_file(tensors, str(path / WEIGHTS), metadata={"format": "pt"})
        (path / MANIFEST).write_text(
            json.dumps({"format": "roi-planner/dynamic-int8", "quantized_linear": layout}, indent=2)
        )
    (path / "README.md").write_text(card)
    return directory_size(path)


def _load_dynamic_int8(path: Path, task: str, manifest: dict[str, Any]) -> Any:
    import torch
    from safetensors.torch import load_file
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
    from transformers import AutoConfig

    from plugins.quantize import quantize_linear_dynamic

    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    model = _model_class(task).from_config(config)
    layout: dict[str, dict[str, Any]] = manifest["quantized_linear"]
    tensors = load_file(str(path / WEIGHTS))
    quantized = {name: {k: tensors.pop(f"{name}.{k}", None) for k in QUANTIZED_KEYS} for name in layout}
    # The fp32 weights first; the quantized layers' weights are the only ones allowed to be missing.
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k.rsplit(".", 1)[0] not in layout]
    if missing or unexpected:
        raise ModelLoadError(
            f"{path.name}: the weights do not match the architecture (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    model = quantize_linear_dynamic(model, only=set(layout), per_channel=True)
    modules = dict(model.named_modules())
    for name, spec in layout.items():
        module = modules[name]
        stored = quantized[name]
        if not isinstance(module, DynamicQuantizedLinear) or stored["weight_int8"] is None:
            raise ModelLoadError(f"{path.name}: layer {name} is listed as int8 but cannot be restored")
        if spec["scheme"] == "per_channel":
            weight = torch._make_per_channel_quantized_tensor(
                stored["weight_int8"], stored["weight_scales"], stored["weight_zero_points"], spec["axis"]
            )
        else:
            weight = torch._make_per_tensor_quantized_tensor(
                stored["weight_int8"], float(stored["weight_scales"][0]), int(stored["weight_zero_points"][0])
            )
        module.set_weight_bias(weight, stored["bias"])
    return model
