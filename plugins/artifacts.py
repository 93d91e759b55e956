"""Saving and loading models as directories that hold no code: safetensors, JSON config, tokenizer.

A plain model (fp32, bf16, fp16) is saved by transformers' ``save_pretrained`` and loaded back by
``from_pretrained`` in its stored dtype: the ``transformers`` format, with no manifest. Any other way of
storing a model is a format that a technique declares (``plugins.formats``): int8 layers, torchao tensors,
layer shapes the config cannot describe. Those write a manifest (``roi_planner.json``) naming the format;
``load_pretrained`` dispatches on it. Pickle checkpoints are refused, and ``trust_remote_code`` is never
enabled; the helpers below (``empty_model``, ``load_weights``, ``safetensors_ready``) are for formats.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

from plugins import formats
from plugins.formats import TRANSFORMERS, Format
from plugins.model_info import ModelLoadError, check_config, check_weights

MANIFEST = "roi_planner.json"
WEIGHTS = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def check_model_dir(path: Path, *, task: str | None = None, max_bytes: int | None = None) -> dict[str, Any]:
    """Refuse directories that cannot be loaded safely, with the reason; return the parsed config.json.

    Reads files only (config.json as JSON, the safetensors headers, never through transformers or torch),
    so the web process can call it. Refuses sizes in config.json that are not positive whole numbers within
    sane maxima, and weights that disagree with the size the config describes
    (``plugins.model_info.check_weights``). With ``task``, also refuse a config whose model type or
    architecture cannot serve that task; with ``max_bytes``, a model larger than that.
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
    check_config(config, name=f"{path.name}/config.json")
    if task is not None:
        _check_task(path.name, config, model_type, task)
    check_weights(path, config, max_bytes=max_bytes, compressed=(path / MANIFEST).is_file())
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
            types = {name for pair in ast.walk(node.value) if (name := _string_pair_head(pair)) is not None}
            return frozenset(types) or None
    return None


def _string_pair_head(node: ast.AST) -> str | None:
    """The first string of a two-string tuple literal such as ("bert", "BertModel"); None for any other node."""
    if not isinstance(node, ast.Tuple) or len(node.elts) != 2:
        return None
    first, second = node.elts
    strings = [e.value for e in (first, second) if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return strings[0] if len(strings) == 2 else None


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


def empty_model(path: Path, task: str, manifest: dict[str, Any]) -> Any:
    """The architecture saved in ``path``'s config.json, randomly initialised in the config's dtype, with
    the layer shapes that the manifest's layouts record beyond what the config describes."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    model = _model_class(task).from_config(config)
    for layout in formats.registered().layouts:
        if manifest.get(layout.key):
            layout.rebuild(model, manifest[layout.key])
    return model


def safetensors_ready(tensors: dict[str, Any]) -> dict[str, Any]:
    """Contiguous CPU tensors, each stored once: tied weights share storage, which safetensors refuses."""
    seen: set[int] = set()
    ready = {}
    for key, tensor in tensors.items():
        if tensor.numel() > 0 and tensor.data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        ready[key] = tensor.detach().to("cpu").contiguous()
    return ready


def load_weights(model: Any, tensors: dict[str, Any], path: Path, *, may_miss: tuple[str, ...] = ()) -> None:
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


def _save_transformers(model: Any, path: Path) -> dict[str, Any]:
    model.save_pretrained(path, safe_serialization=True)
    return {}


def _load_transformers(path: Path, task: str, manifest: dict[str, Any], device: str) -> Any:
    if any(manifest.get(layout.key) for layout in formats.registered().layouts):
        from safetensors.torch import load_file

        model = empty_model(path, task, manifest)
        load_weights(model, load_file(str(path / WEIGHTS)), path)
        return model
    try:
        # dtype="auto": a bf16/fp16 model comes back in bf16/fp16, not upcast to fp32.
        return _model_class(task).from_pretrained(
            path, use_safetensors=True, trust_remote_code=False, dtype="auto"
        )
    except (ValueError, KeyError, OSError) as exc:
        raise ModelLoadError(f"{path.name} cannot be loaded for {task}: {exc}") from exc


#: Plain models; chosen when no registered format detects the model.
PLAIN = Format(TRANSFORMERS, detects=lambda model: True, save=_save_transformers, load=_load_transformers)


# --- dispatch ---------------------------------------------------------------------------------------------


def format_of(model: Any) -> str:
    """The name of the format ``model`` must be saved in: the first registered format that detects it
    (from the kinds of layers or tensors it holds), else ``transformers``."""
    found = formats.detect(model)
    return found.name if found is not None else TRANSFORMERS


def _loadable() -> dict[str, Format]:
    return {TRANSFORMERS: PLAIN, **formats.registered().formats}


def _manifest_format(manifest: dict[str, Any]) -> str:
    if "format" in manifest:
        return str(manifest["format"])
    legacy = (
        f.name for f in formats.registered().formats.values() if any(k in manifest for k in f.legacy_keys)
    )
    return next(legacy, TRANSFORMERS)


def load_pretrained(path: Path, task: str, *, device: str = "cpu") -> tuple[Any, Any]:
    """Load a model directory saved by transformers or by ``save_model``; return (model, tokenizer)."""
    from transformers import AutoTokenizer

    check_model_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    manifest_path = path / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    name = _manifest_format(manifest)
    loadable = _loadable()
    if name not in loadable:
        raise ModelLoadError(
            f"{path.name}: {MANIFEST} names the format {name!r}, which this version cannot load; "
            f"it loads {', '.join(loadable)} (a format comes with the technique that produces it: install "
            "that technique's package)"
        )
    model = loadable[name].load(path, task, manifest, device)
    model.eval()
    return model.to(device), tokenizer


def save_model(model: Any, tokenizer: Any, path: Path, *, card: str) -> int:
    """Save ``model`` and ``tokenizer`` under ``path`` and return the directory's size in bytes."""
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    fmt = formats.detect(model) or PLAIN
    # Described before saving: a format may move weights off the model.
    sections = {
        layout.key: shapes for layout in formats.registered().layouts if (shapes := layout.describe(model))
    }
    body = {**fmt.save(model, path), **sections}
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"the {fmt.name} format wrote pickle files ({', '.join(pickles)}), which this tool never loads; "
            "a format must store its weights in safetensors"
        )
    if fmt is not PLAIN or body:
        (path / MANIFEST).write_text(json.dumps({"format": fmt.name, **body}, indent=2))
    (path / "README.md").write_text(card)
    return directory_size(path)
