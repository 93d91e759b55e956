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
from typing import TYPE_CHECKING, Any

from plugins.base import ParamError, Technique, TechniqueError

if TYPE_CHECKING:
    from plugins.model_info import ModelInfo

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


#: The most steps one pipeline may have: every family once, with room for a second pruning step, fits
#: well within it; a longer pipeline only multiplies the run time of every candidate.
MAX_PIPELINE_STEPS = 8
#: Families whose techniques may come back later in a pipeline (never twice in a row, which is one step
#: with a larger amount): pruning, as in iterative prune-and-recover schedules (Han et al. 2015, "Learning
#: both Weights and Connections for Efficient Neural Networks"). A distiller retrains from the original
#: teacher, so running it again only redoes it; a model is quantized once and served by one runtime.
REPEATABLE_FAMILIES = frozenset({"prune"})


def _order_problem(
    cls: type[Technique], earlier: Sequence[type[Technique]], later: Sequence[type[Technique]]
) -> str | None:
    """Why ``cls`` cannot stand between the ``earlier`` and ``later`` steps: a quantize step or a runtime
    step ends a pipeline, and a pipeline has at most one of them (a runtime exports a full-precision model
    and quantizes it with its own int8 options; it cannot take one a quantizer already changed); a
    technique repeats only when its family is in REPEATABLE_FAMILIES, and never twice in a row."""
    runtime = next((c for c in later if c.family == "runtime"), None)
    if cls.family == "quantize" and runtime is not None:
        return (
            f"{runtime.name} exports a full-precision model and has its own int8 option; drop {cls.name} "
            "and set that option instead"
        )
    if cls.family == "quantize" and later:
        return f"{cls.name} quantizes the model, so it must be the last step"
    if cls.family == "runtime" and later:
        return f"{cls.name} hands the model to a runtime, so it must be the last step"
    if cls.family in ("quantize", "runtime") and any(c.family == cls.family for c in earlier):
        return f"a pipeline has at most one {cls.family} step; keep one {cls.family} technique"
    names = [c.name for c in earlier]
    if cls.name in names:
        first = names.index(cls.name) + 1
        if cls.family not in REPEATABLE_FAMILIES:
            return f"{cls.name} is already step {first}, and a {cls.family} technique runs once per pipeline"
        if names[-1] == cls.name:
            return (
                f"{cls.name} twice in a row does what one step with a larger amount does; merge the two steps "
                "or put another technique between them"
            )
    return None


def validate_pipeline(
    steps: Sequence[Mapping[str, Any]], *, device: str, task: str, model_info: ModelInfo | None = None
) -> list[dict[str, Any]]:
    """Check a pipeline before it is queued; return it with every step's parameters cleaned.

    A step is ``{"technique": name, "params": {...}}``. A pipeline has at most MAX_PIPELINE_STEPS steps in
    the order ``_order_problem`` allows, and every technique must support the device and the task. With
    ``model_info`` (the model's config, ``plugins.model_info``), each step's parameters are also checked
    against the model as that step receives it (``Technique.check_for_model``), e.g. that the layers they
    name exist.
    """
    if len(steps) > MAX_PIPELINE_STEPS:
        raise ParamError(
            f"a pipeline has at most {MAX_PIPELINE_STEPS} steps; this one has {len(steps)}: keep the "
            "techniques that matter most"
        )
    classes: list[type[Technique]] = []
    for position, step in enumerate(steps, start=1):
        if not isinstance(step, Mapping) or "technique" not in step:
            raise ParamError(f"step {position}: expected an object with a 'technique' key")
        classes.append(get(str(step["technique"])))
    cleaned: list[dict[str, Any]] = []
    for position, (cls, step) in enumerate(zip(classes, steps, strict=True), start=1):
        refusal = cls.refusal(device=device, task=task)
        if refusal:
            raise ParamError(f"step {position}: {refusal}")
        problem = _order_problem(cls, classes[: position - 1], classes[position:])
        if problem:
            raise ParamError(f"step {position}: {problem}")
        try:
            params = cls.clean_params(step.get("params"))
        except ParamError as exc:
            raise ParamError(f"step {position}: {exc}") from None
        problem = cls.check(params, device=device, task=task)
        if problem:
            raise ParamError(f"step {position}: {cls.name}: {problem}")
        if model_info is not None:
            model_info = _check_for_model(cls, params, model_info, position)
        cleaned.append({"technique": cls.name, "params": params})
    return cleaned


def _check_for_model(
    cls: type[Technique], params: dict[str, Any], model_info: ModelInfo, position: int
) -> ModelInfo | None:
    """Run the technique's model-aware check; return the model as the next step receives it, or None when
    the technique's hooks fail (logged: a broken plugin must not break the site; the run checks again)."""
    try:
        cls.check_for_model(params, model_info)
        return cls.model_after(params, model_info)
    except (ParamError, TechniqueError) as exc:
        raise ParamError(f"step {position}: {cls.name}: {exc}") from None
    except Exception:
        logger.exception(
            "The model check of %s failed; the later steps are not checked against the model", cls.name
        )
        return None


def pipeline_label(steps: Sequence[Mapping[str, Any]]) -> str:
    return " → ".join(str(s["technique"]) for s in steps) if steps else "baseline"


# Hybrids offered by default per task, most aggressive first, then the runtime hybrids (a smaller model
# served by another runtime, as a deployment would ship it); each is offered only where all its techniques
# are installed and accept the device and task with their default parameters.
DEFAULT_HYBRIDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "sequence-classification": (
        ("distill.kd", "prune.ffn", "prune.vocabulary", "quantize.dynamic-int8"),
        ("distill.kd", "quantize.dynamic-int8"),
        ("distill.kd", "prune.ffn", "quantize.half"),
        ("prune.layers", "quantize.dynamic-int8"),
        ("distill.kd", "prune.ffn", "runtime.openvino"),
    ),
    # A causal LM keeps its vocabulary (it is the output too). Weight-only int8 runs on CPU and CUDA and
    # leaves the LM head alone; dynamic int8, CPU only, is the one that is faster on a CPU in eager mode.
    "causal-lm": (
        ("distill.kd", "prune.ffn", "quantize.weight-only"),
        ("distill.kd", "quantize.weight-only"),
        ("prune.layers", "quantize.weight-only"),
        ("distill.kd", "quantize.dynamic-int8"),
        ("distill.kd", "runtime.openvino"),
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
