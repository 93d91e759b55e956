"""The technique contract.

A technique is a class with declarative metadata (importable without torch) and an ``apply`` method that
does the work. Third-party packages register theirs under the ``roi_planner.techniques`` entry-point group,
exactly like the built-ins in this project's pyproject.toml.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from plugins.formats import Format, Layout
    from plugins.model_info import ModelInfo

FAMILIES = ("distill", "prune", "quantize", "runtime")
DEVICES = ("cpu", "cuda")
TASKS = ("sequence-classification", "causal-lm")


class TechniqueError(Exception):
    """A technique cannot run with these inputs; the message tells the user what to change."""


class ParamError(ValueError):
    """A pipeline step's parameters do not match the technique's schema."""


@dataclass(frozen=True)
class Param:
    """One parameter of a technique: what the form renders and what validation checks.

    ``type`` is one of int, float, bool, str. ``choices`` restricts str/int values; ``minimum`` and
    ``maximum`` bound numbers (inclusive). ``help`` is shown next to the form field.
    """

    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: Sequence[Any] | None = None

    def clean(self, value: Any) -> Any:
        if value is None or value == "":
            return self.default
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "on", "yes"):
                return True
            if str(value).lower() in ("false", "0", "off", "no"):
                return False
            raise ParamError(f"{self.name}: expected true or false, got {value!r}")
        try:
            if self.type is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                cleaned: Any = int(value)
            elif self.type is float:
                cleaned = float(value)
                if not math.isfinite(cleaned):
                    raise ValueError
            else:
                cleaned = str(value)
        except (TypeError, ValueError):
            raise ParamError(f"{self.name}: expected {self.type.__name__}, got {value!r}") from None
        if self.choices is not None and cleaned not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise ParamError(f"{self.name}: {cleaned!r} is not one of {allowed}")
        if self.minimum is not None and cleaned < self.minimum:
            raise ParamError(f"{self.name}: {cleaned} is below the minimum {self.minimum:g}")
        if self.maximum is not None and cleaned > self.maximum:
            raise ParamError(f"{self.name}: {cleaned} is above the maximum {self.maximum:g}")
        return cleaned

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type.__name__,
            "default": self.default,
            "help": self.help,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "choices": list(self.choices) if self.choices is not None else None,
        }


@dataclass
class Example:
    """One piece of task data. Classification: ``text`` and its ``label``. Causal LM: ``text`` is the
    prompt (or a whole document), ``reference`` an optional expected completion; labels are unused."""

    text: str
    label: str | None = None
    reference: str | None = None


@dataclass
class Context:
    """What a technique gets besides the model it transforms.

    ``teacher`` is the original model (for distillation or recovery) and ``teacher_tokenizer`` its
    tokenizer; ``tokenizer`` is the tokenizer of the model being transformed, which a technique may
    replace (vocabulary pruning does) by assigning a new one. ``train`` may be unlabeled; ``eval`` is held
    out and must never be trained on. ``report(fraction, message)`` shows progress; ``notes`` collects
    what the technique wants shown with the result (e.g. the sparsity it reached).
    """

    task: str
    device: str
    seed: int
    tokenizer: Any
    teacher: Any
    train: Sequence[Example]
    eval: Sequence[Example]
    labels: Sequence[str]
    max_length: int = 128
    work_dir: str | None = None
    report: Callable[[float, str], None] = lambda fraction, message: None
    notes: dict[str, Any] = field(default_factory=dict)
    teacher_tokenizer: Any = None

    def __post_init__(self) -> None:
        if self.teacher_tokenizer is None:
            self.teacher_tokenizer = self.tokenizer

    def accelerator(self, **kwargs: Any) -> Any:
        """An ``accelerate.Accelerator`` placed on this run's device, for training loops."""
        from accelerate import Accelerator

        return Accelerator(cpu=self.device == "cpu", **kwargs)


class Technique:
    """Base class for techniques. Subclasses set the metadata and implement ``apply``."""

    name: ClassVar[str]
    title: ClassVar[str]
    family: ClassVar[str]
    params: ClassVar[Sequence[Param]] = ()
    devices: ClassVar[Sequence[str]] = DEVICES
    tasks: ClassVar[Sequence[str]] = ("sequence-classification",)
    #: Why the output may be smaller without being faster, shown next to the measured speedup.
    speedup_caveat: ClassVar[str | None] = None
    #: How this technique's output is saved when transformers alone cannot save it: the save formats and
    #: layouts (``plugins.formats``) it needs, which the artifact loader collects from every technique.
    formats: ClassVar[Sequence[Format | Layout]] = ()

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def description(cls) -> str:
        """The class docstring: what the technique does and the paper or source it implements."""
        import inspect

        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def summary(cls) -> str:
        return cls.description().split("\n\n", 1)[0].replace("\n", " ")

    @classmethod
    def clean_params(cls, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        raw = dict(raw or {})
        known = {p.name for p in cls.params}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ParamError(f"{cls.name} has no parameter {', '.join(unknown)}")
        return {p.name: p.clean(raw.get(p.name)) for p in cls.params}

    @classmethod
    def check(cls, params: Mapping[str, Any], *, device: str, task: str) -> str | None:
        """Why these (already cleaned) parameters cannot run on ``device``, or None. Override when a
        parameter's support depends on the device, e.g. fp16 only on CUDA."""
        return None

    @classmethod
    def check_for_model(cls, params: Mapping[str, Any], model_info: ModelInfo) -> None:
        """Raise ParamError, saying what to choose instead, when these (already cleaned) parameters cannot
        work on this model: e.g. a layer number it does not have. ``model_info`` describes the model as
        this step receives it (after the earlier steps of the pipeline). Override when a parameter names
        layers, heads or another part of the model."""

    @classmethod
    def model_after(cls, params: Mapping[str, Any], model_info: ModelInfo) -> ModelInfo:
        """The model as the next step of a pipeline receives it; override when this technique changes a
        size that ``check_for_model`` looks at (the layer count, for distillation and layer dropping)."""
        return model_info

    @classmethod
    def refusal(cls, *, device: str, task: str) -> str | None:
        """Why this technique cannot run on ``device`` for ``task``, or None when it can."""
        if device not in cls.devices:
            return f"{cls.name} runs on {', '.join(cls.devices)}, not {device}"
        if task not in cls.tasks:
            return f"{cls.name} supports {', '.join(cls.tasks)}, not {task}"
        return None
