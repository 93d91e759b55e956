"""Finds techniques through the ``roi_planner.techniques`` entry-point group.

Loading a technique imports only its metadata module: heavy libraries are imported inside ``apply``. A
technique whose module fails to import is recorded in ``broken()`` and logged, never raised, so one bad
package cannot take the site down.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from plugins.base import ParamError, Technique

GROUP = "roi_planner.techniques"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokenTechnique:
    name: str
    target: str
    distribution: str
    error: str


@dataclass(frozen=True)
class Loaded:
    techniques: dict[str, type[Technique]]
    versions: dict[str, str]
    broken: tuple[BrokenTechnique, ...]


_extra: dict[str, type[Technique]] = {}


def register(technique: type[Technique]) -> None:
    """Register a technique class directly (tests, notebooks); packages use the entry-point group."""
    _extra[technique.name] = technique
    _load.cache_clear()


def unregister(name: str) -> None:
    _extra.pop(name, None)
    _load.cache_clear()


def reload() -> None:
    """Forget what was loaded, e.g. after a package was installed into the running interpreter."""
    _load.cache_clear()


@lru_cache(maxsize=1)
def _load() -> Loaded:
    techniques: dict[str, type[Technique]] = {}
    versions: dict[str, str] = {}
    broken: list[BrokenTechnique] = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else "?"
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Technique)):
                raise TypeError(f"{ep.value} is not a plugins.base.Technique subclass")
            if cls.name != ep.name:
                raise TypeError(f"entry point {ep.name!r} loads a technique named {cls.name!r}")
        except Exception as exc:  # a broken plugin must not break the site
            logger.warning("Technique %s from %s failed to load: %s", ep.name, dist, exc)
            broken.append(BrokenTechnique(ep.name, ep.value, dist, f"{type(exc).__name__}: {exc}"))
            continue
        techniques[ep.name] = cls
        versions[ep.name] = f"{dist} {ep.dist.version}" if ep.dist else "?"
    for name, cls in _extra.items():
        techniques[name] = cls
        versions[name] = f"{cls.__module__} (registered)"
    return Loaded(dict(sorted(techniques.items())), versions, tuple(broken))


def techniques() -> dict[str, type[Technique]]:
    return _load().techniques


def broken() -> tuple[BrokenTechnique, ...]:
    return _load().broken


def version_of(name: str) -> str:
    return _load().versions.get(name, "?")


def get(name: str) -> type[Technique]:
    try:
        return _load().techniques[name]
    except KeyError:
        raise ParamError(
            f"Unknown technique {name!r}; installed: {', '.join(techniques()) or 'none'}"
        ) from None


def validate_pipeline(steps: Sequence[Mapping[str, Any]], *, device: str, task: str) -> list[dict[str, Any]]:
    """Check a pipeline before it is queued; return it with every step's parameters cleaned.

    A step is ``{"technique": name, "params": {...}}``. A quantizer must be the last step, and every
    technique must support the device and the task.
    """
    cleaned: list[dict[str, Any]] = []
    for position, step in enumerate(steps, start=1):
        if not isinstance(step, Mapping) or "technique" not in step:
            raise ParamError(f"step {position}: expected an object with a 'technique' key")
        cls = get(str(step["technique"]))
        refusal = cls.refusal(device=device, task=task)
        if refusal:
            raise ParamError(f"step {position}: {refusal}")
        if cls.family == "quantize" and position != len(steps):
            raise ParamError(f"step {position}: {cls.name} quantizes the model, so it must be the last step")
        try:
            params = cls.clean_params(step.get("params"))
        except ParamError as exc:
            raise ParamError(f"step {position}: {exc}") from None
        problem = cls.check(params, device=device, task=task)
        if problem:
            raise ParamError(f"step {position}: {cls.name}: {problem}")
        cleaned.append({"technique": cls.name, "params": params})
    return cleaned


def pipeline_label(steps: Sequence[Mapping[str, Any]]) -> str:
    return " → ".join(str(s["technique"]) for s in steps) if steps else "baseline"


# Hybrids offered by default per task, most aggressive first; each is offered only where all its techniques
# are installed and accept the device and task with their default parameters.
DEFAULT_HYBRIDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "sequence-classification": (
        ("distill.kd", "prune.ffn", "prune.vocabulary", "quantize.dynamic-int8"),
        ("distill.kd", "quantize.dynamic-int8"),
        ("distill.kd", "prune.ffn", "quantize.half"),
        ("prune.layers", "quantize.dynamic-int8"),
    ),
    # A causal LM keeps its vocabulary (it is the output too). Weight-only int8 runs on CPU and CUDA and
    # leaves the LM head alone; dynamic int8, CPU only, is the one that is faster on a CPU in eager mode.
    "causal-lm": (
        ("distill.kd", "prune.ffn", "quantize.weight-only"),
        ("distill.kd", "quantize.weight-only"),
        ("prune.layers", "quantize.weight-only"),
        ("distill.kd", "quantize.dynamic-int8"),
    ),
}


def _runs(steps: Sequence[str], *, device: str, task: str) -> bool:
    try:
        validate_pipeline([{"technique": name} for name in steps], device=device, task=task)
    except ParamError:
        return False
    return True


def default_plan(*, device: str, task: str) -> list[list[str]]:
    """The candidates a new request offers: each single technique, then the hybrids that can run here."""
    singles = [[name] for name in techniques() if _runs([name], device=device, task=task)]
    hybrids = [list(h) for h in DEFAULT_HYBRIDS.get(task, ()) if _runs(h, device=device, task=task)]
    return singles + hybrids


def parse_pipeline(text: str) -> list[str]:
    """'distill.kd → prune.ffn → quantize.dynamic-int8' (or with '>' or ',') as a list of names."""
    for separator in ("→", "->", ">", ","):
        text = text.replace(separator, "\n")
    return [name.strip() for name in text.splitlines() if name.strip()]
