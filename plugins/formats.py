"""The registry of save formats: how models that plain transformers cannot store are saved and loaded.

A technique whose output needs its own way of being stored (int8 layers, torchao tensors, layer shapes its
config cannot describe) lists what it needs in its ``formats`` class attribute:

- a ``Format`` stores a whole model: ``detects`` picks the models it must store, ``save`` writes them as
  safetensors and JSON, ``load`` builds them back;
- a ``Layout`` adds a section to the manifest of any saved model, whatever its format: layer shapes that
  the config cannot describe, rebuilt on the empty model before the format loads its weights.

The registry collects them from every registered technique (``plugins.registry``: the
``roi_planner.techniques`` entry points, plus ``registry.register``), so installing a technique's package is
all it takes to add its formats; ``plugins.artifacts`` saves and loads through them. Models that need none
of them are stored by transformers (the ``transformers`` format of ``plugins.artifacts``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins import registry

logger = logging.getLogger(__name__)

#: The name of the built-in format of plain models (transformers' own save_pretrained/from_pretrained).
TRANSFORMERS = "transformers"


@dataclass(frozen=True)
class Format:
    """One way of storing a model, named in the manifest (``roi_planner.json``) of every model saved so.

    ``detects(model)``: whether ``model`` must be saved in this format (it holds this format's layers or
    tensors). ``save(model, path)``: writes config.json and safetensors weights (never pickle) under
    ``path``, returns the manifest's body (JSON-serialisable). ``load(path, task, manifest, device)``:
    the model back from that directory; raise ``plugins.artifacts.ModelLoadError`` with the reason when
    it cannot be restored. The tokenizer, the model card and the pickle and remote-code checks are done by
    ``plugins.artifacts`` around these.
    """

    name: str
    detects: Callable[[Any], bool]
    save: Callable[[Any, Path], dict[str, Any]]
    load: Callable[[Path, str, dict[str, Any], str], Any]
    #: What a parameter count counts of one module in this format: the weights the module itself holds
    #: (not its children's), dequantized, each with a key that tensors shared between modules share; None
    #: for a module that holds nothing of this format (its own parameters are counted as they are).
    dense_tensors: Callable[[Any], list[tuple[int, Any]] | None] | None = None
    #: Manifests written before manifests named their format are this format's if they hold one of these keys.
    legacy_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layout:
    """Layer shapes a technique leaves that the model's config cannot describe, kept in the manifest under
    ``key`` whatever the model's format.

    ``describe(model)``: the JSON-serialisable shapes, or None when ``model`` has none to record (called
    before the format saves). ``rebuild(model, shapes)``: reshapes a model freshly built from the config,
    before the format loads the saved weights into it.
    """

    key: str
    describe: Callable[[Any], dict[str, Any] | None]
    rebuild: Callable[[Any, Mapping[str, Any]], None]


@dataclass(frozen=True)
class Registered:
    """The formats (by name, in detection order) and layouts of the registered techniques."""

    formats: dict[str, Format]
    layouts: tuple[Layout, ...]


_cache: tuple[dict[str, Any], Registered] | None = None


def registered() -> Registered:
    """What the registered techniques declare, in the order of their names; follows ``registry.reload``."""
    global _cache
    techniques = registry.techniques()
    if _cache is None or _cache[0] is not techniques:
        _cache = (techniques, _collect(techniques))
    return _cache[1]


def _collect(techniques: Mapping[str, Any]) -> Registered:
    formats: dict[str, Format] = {}
    layouts: dict[str, Layout] = {}
    for name, technique in techniques.items():
        for item in getattr(technique, "formats", ()):
            if isinstance(item, Format):
                if _accepted(name, item.name, item, formats.get(item.name)):
                    formats[item.name] = item
            elif isinstance(item, Layout):
                if _accepted(name, item.key, item, layouts.get(item.key)):
                    layouts[item.key] = item
            else:
                logger.warning("Technique %s lists %r in formats, which is no Format or Layout", name, item)
    return Registered(formats, tuple(layouts.values()))


def _accepted(technique: str, key: str, item: Format | Layout, known: Format | Layout | None) -> bool:
    """Whether ``item`` may be registered under ``key``: the same declaration twice is fine (two techniques
    of one package), two different ones are a conflict, logged; the first one (by technique name) stays."""
    if key == TRANSFORMERS or (known is not None and known != item):
        logger.warning("Technique %s declares another %r format or layout; it is ignored", technique, key)
        return False
    return True


def detect(model: Any) -> Format | None:
    """The first registered format that must store ``model``; None for a plain model (transformers)."""
    return next((f for f in registered().formats.values() if f.detects(model)), None)


def dense_tensors(model: Any) -> Iterator[tuple[int, Any]]:
    """Every weight of ``model``, module by module, with its counting key: quantized weights dequantized by
    their format's ``dense_tensors``, plain parameters as they are. A tensor shared between modules (tied
    embeddings) comes once per module with the same key: count each key once."""
    hooks = [f.dense_tensors for f in registered().formats.values() if f.dense_tensors is not None]
    for module in model.modules():
        pairs = next((found for hook in hooks if (found := hook(module)) is not None), None)
        if pairs is None:
            pairs = [(id(param), param.detach()) for param in module.parameters(recurse=False)]
        yield from pairs
