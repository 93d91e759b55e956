"""Saving and loading models as directories that hold no code: safetensors, JSON config, tokenizer.

Each way of storing a model is a format with one save/load pair, in ``FORMATS``:

- ``transformers``: plain models (fp32, bf16, fp16) through transformers' ``save_pretrained`` /
  ``from_pretrained``, kept in their stored dtype. No manifest.
- ``roi-planner/dynamic-int8``: torch.ao dynamically quantized Linear layers and int8 Embedding layers,
  stored as their integer values plus scales and zero points in safetensors; only this tool reloads them,
  which the model card says.
- ``roi-planner/torchao-weight-only``: torchao's quantized weight tensors, flattened into safetensors by
  torchao's own safetensors helpers (the layout transformers writes for a ``TorchAoConfig`` model).

Quantized formats write a manifest (``roi_planner.json``) naming the format and the quantized layers;
``load_pretrained`` dispatches on it. Pickle checkpoints are refused, and ``trust_remote_code`` is never
enabled.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "roi_planner.json"
WEIGHTS = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
QUANTIZED_KEYS = ("weight_int8", "weight_scales", "weight_zero_points", "bias")

TRANSFORMERS = "transformers"
DYNAMIC_INT8 = "roi-planner/dynamic-int8"
TORCHAO = "roi-planner/torchao-weight-only"


class ModelLoadError(Exception):
    """The model directory cannot be loaded safely; the message says why and what to do."""


def check_model_dir(path: Path, *, task: str | None = None) -> dict[str, Any]:
    """Refuse directories that cannot be loaded safely, with the reason; return the parsed config.json.

    Reads files only (config.json as JSON, never through transformers), so the web process can call it.
    With ``task``, also refuse a config whose model type or architecture cannot serve that task.
    """
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
    config = _read_json(path, "config.json")
    tokenizer_config = (
        _read_json(path, "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
    )
    for name, body in (("config.json", config), ("tokenizer_config.json", tokenizer_config)):
        if "auto_map" in body:
            raise ModelLoadError(
                f"{path.name} needs its own Python code to load ({name} has an auto_map), and this tool "
                "never runs a model's code (trust_remote_code stays off); use a model whose architecture "
                "transformers ships, saved with save_pretrained()"
            )
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelLoadError(
            f"{path.name}/config.json has no model_type, so transformers cannot tell which architecture to "
            "build; save the model again with transformers' save_pretrained()"
        )
    if task is not None:
        _check_task(path.name, config, model_type, task)
    return config


def _read_json(path: Path, name: str) -> dict[str, Any]:
    try:
        body = json.loads((path / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(
            f"{path.name}/{name} cannot be read ({exc.__class__.__name__}); check the file"
        ) from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"{path.name}/{name} is not valid JSON (line {exc.lineno}: {exc.msg}); save the model again "
            "with save_pretrained()"
        ) from None
    except (ValueError, RecursionError):
        raise ModelLoadError(
            f"{path.name}/{name} is not JSON this tool can read; save the model again"
        ) from None
    if not isinstance(body, dict):
        raise ModelLoadError(f"{path.name}/{name} must hold a JSON object; save the model again")
    return body


#: What a config's ``architectures`` entry ends with for a model that serves the task, and the
#: transformers table (in models/auto/modeling_auto.py) of the model types it can build for it.
TASK_ARCHITECTURES = {
    "sequence-classification": (
        ("ForSequenceClassification",),
        "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    ),
    "causal-lm": (("ForCausalLM", "LMHeadModel"), "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
}
_ARCHITECTURE_KINDS = {
    "ForCausalLM": "a text generator",
    "LMHeadModel": "a text generator",
    "ForConditionalGeneration": "a text generator",
    "ForMaskedLM": "a masked-language model",
    "ForSequenceClassification": "a text classifier",
    "ForTokenClassification": "a token tagger",
    "ForQuestionAnswering": "a question-answering model",
    "Model": "a base model without a task head",
}


def _check_task(name: str, config: dict[str, Any], model_type: str, task: str) -> None:
    if task not in TASK_ARCHITECTURES:
        return
    suffixes, table = TASK_ARCHITECTURES[task]
    wanted = "a text classifier" if task == "sequence-classification" else "a text generator"
    architectures = config.get("architectures")
    if (
        isinstance(architectures, list)
        and architectures
        and not any(isinstance(a, str) and a.endswith(suffixes) for a in architectures)
    ):
        first = str(architectures[0])[:80]
        kind = next((k for s, k in _ARCHITECTURE_KINDS.items() if first.endswith(s)), "another kind of model")
        raise ModelLoadError(
            f"{name} is a {first} ({kind}, says config.json's architectures), but this request "
            f"measures {wanted}; pick a model whose architectures end with {' or '.join(suffixes)}, "
            "or fine-tune this one for the task first"
        )
    buildable = _transformers_model_types(table)
    if buildable is not None and model_type not in buildable:
        raise ModelLoadError(
            f"{name}: transformers {_version('transformers')} cannot build {wanted} for the model type "
            f"{model_type!r} (config.json); pick a model of a type it supports, such as "
            f"{', '.join(t for t in ('bert', 'distilbert', 'roberta', 'xlm-roberta') if t in buildable)}"
        )


@functools.cache
def _transformers_model_types(table: str) -> frozenset[str] | None:
    """The model types in one of transformers' auto tables, read from its source without importing it (the
    web process never imports transformers); None where the table cannot be found."""
    spec = importlib.util.find_spec("transformers")  # a top-level name: finds it without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))) / "models" / "auto" / "modeling_auto.py"
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == table for t in node.targets
        ):
            types = {
                pair.elts[0].value
                for pair in ast.walk(node.value)
                if isinstance(pair, ast.Tuple)
                and len(pair.elts) == 2
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in pair.elts)
            }
            return frozenset(types) or None
    return None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _model_class(task: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForCausalLM if task == "causal-lm" else AutoModelForSequenceClassification


def _empty_model(path: Path, task: str, manifest: dict[str, Any]) -> Any:
    """The architecture saved in ``path``'s config.json, randomly initialised in the config's dtype, with
    the layer shapes structured pruning changed beyond what the config describes (attention heads)."""
    from transformers import AutoConfig

    from plugins.prune import apply_pruned_shapes

    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    model = _model_class(task).from_config(config)
    apply_pruned_shapes(model, manifest.get("pruned_shapes"))
    return model


def _safetensors_ready(tensors: dict[str, Any]) -> dict[str, Any]:
    """Contiguous CPU tensors, each stored once: tied weights share storage, which safetensors refuses."""
    seen: set[int] = set()
    ready = {}
    for key, tensor in tensors.items():
        if tensor.numel() > 0 and tensor.data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        ready[key] = tensor.detach().to("cpu").contiguous()
    return ready


def _load_weights(model: Any, tensors: dict[str, Any], path: Path, *, may_miss: tuple[str, ...] = ()) -> None:
    """Load ``tensors`` into ``model`` (replacing its tensors, so dtypes and tensor subclasses are kept);
    only keys under the module names in ``may_miss`` may be missing."""
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    missing = [k for k in missing if not k.startswith(may_miss)]
    if missing or unexpected:
        raise ModelLoadError(
            f"{path.name}: the weights do not match the architecture (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )


# --- transformers: plain models ------------------------------------------------------------------------


def _save_transformers(model: Any, path: Path) -> None:
    model.save_pretrained(path, safe_serialization=True)


def _load_transformers(path: Path, task: str, manifest: dict[str, Any], device: str) -> Any:
    if manifest.get("pruned_shapes"):
        from safetensors.torch import load_file

        model = _empty_model(path, task, manifest)
        _load_weights(model, load_file(str(path / WEIGHTS)), path)
        return model
    try:
        # dtype="auto": a bf16/fp16 model comes back in bf16/fp16, not upcast to fp32.
        return _model_class(task).from_pretrained(
            path, use_safetensors=True, trust_remote_code=False, dtype="auto"
        )
    except (ValueError, KeyError, OSError) as exc:
        raise ModelLoadError(f"{path.name} cannot be loaded for {task}: {exc}") from exc


# --- roi-planner/dynamic-int8: torch.ao dynamic Linear and int8 Embedding --------------------------------


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
    save_file(_safetensors_ready(tensors), str(path / WEIGHTS), metadata={"format": "pt"})
    return {"quantized_linear": linear_layout, "quantized_embedding": embedding_layout}


def _load_dynamic_int8(path: Path, task: str, manifest: dict[str, Any], device: str) -> Any:
    from safetensors.torch import load_file
    from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    from plugins.quantize import quantize_linear_dynamic

    linear: dict[str, dict[str, Any]] = manifest.get("quantized_linear", {})
    embedding: dict[str, dict[str, Any]] = manifest.get("quantized_embedding", {})
    model = _empty_model(path, task, manifest)
    tensors = load_file(str(path / WEIGHTS))
    stored = {
        name: {k: tensors.pop(f"{name}.{k}", None) for k in QUANTIZED_KEYS} for name in (*linear, *embedding)
    }
    # The float weights first; the quantized layers' weights are the only ones allowed to be missing.
    _load_weights(model, tensors, path, may_miss=tuple(f"{name}." for name in stored))
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


# --- roi-planner/torchao-weight-only: torchao tensor subclasses ------------------------------------------


def _save_torchao(model: Any, path: Path) -> dict[str, Any]:
    import torchao
    from safetensors.torch import save_file
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    from plugins.quantize import is_torchao_tensor

    model.config.save_pretrained(path)  # with the TorchAoConfig the technique recorded, for transformers
    state = model.state_dict()
    tensors, metadata = flatten_tensor_state_dict(state)
    save_file(_safetensors_ready(tensors), str(path / WEIGHTS), metadata={**metadata, "format": "pt"})
    quantized = {key: type(value).__name__ for key, value in state.items() if is_torchao_tensor(value)}
    return {"torchao": torchao.__version__, "quantized_weights": quantized}


def _load_torchao(path: Path, task: str, manifest: dict[str, Any], device: str) -> Any:
    from safetensors import safe_open
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    model = _empty_model(path, task, manifest)
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
    _load_weights(model, state, path)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()  # loading replaced the tied tensors by two copies; the LM head is never quantized
    return model


# --- dispatch ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    #: Writes the weights (and config.json) under the directory; returns the manifest's body, or None when
    #: the format needs no manifest.
    save: Callable[[Any, Path], dict[str, Any] | None]
    #: (path, task, manifest, device) -> model
    load: Callable[[Path, str, dict[str, Any], str], Any]


FORMATS: dict[str, Format] = {
    TRANSFORMERS: Format(_save_transformers, _load_transformers),
    DYNAMIC_INT8: Format(_save_dynamic_int8, _load_dynamic_int8),
    TORCHAO: Format(_save_torchao, _load_torchao),
}


def format_of(model: Any) -> str:
    """The format ``model`` must be saved in, from the kinds of quantized layers or tensors it holds."""
    from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    from plugins.quantize import is_torchao_tensor

    if any(isinstance(m, (DynamicQuantizedLinear, QuantizedEmbedding)) for m in model.modules()):
        return DYNAMIC_INT8
    if any(is_torchao_tensor(p) for p in model.parameters()):
        return TORCHAO
    return TRANSFORMERS


def _manifest_format(manifest: dict[str, Any]) -> str:
    if "format" in manifest:
        return str(manifest["format"])
    return DYNAMIC_INT8 if manifest.get("quantized_linear") else TRANSFORMERS


def load_pretrained(path: Path, task: str, *, device: str = "cpu") -> tuple[Any, Any]:
    """Load a model directory saved by transformers or by ``save_model``; return (model, tokenizer)."""
    from transformers import AutoTokenizer

    check_model_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    manifest_path = path / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    name = _manifest_format(manifest)
    if name not in FORMATS:
        raise ModelLoadError(
            f"{path.name}: {MANIFEST} names the format {name!r}, which this version cannot load; "
            f"it loads {', '.join(FORMATS)}"
        )
    model = FORMATS[name].load(path, task, manifest, device)
    model.eval()
    return model.to(device), tokenizer


def save_model(model: Any, tokenizer: Any, path: Path, *, card: str) -> int:
    """Save ``model`` and ``tokenizer`` under ``path`` and return the directory's size in bytes."""
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    from plugins.prune import pruned_shapes

    name = format_of(model)
    shapes = pruned_shapes(model)  # computed before saving: a format may move weights off the model
    body = FORMATS[name].save(model, path)
    if shapes:
        body = {**(body or {}), "pruned_shapes": shapes}
    if body is not None:
        (path / MANIFEST).write_text(json.dumps({"format": name, **body}, indent=2))
    (path / "README.md").write_text(card)
    return directory_size(path)
