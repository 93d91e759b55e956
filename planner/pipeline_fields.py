"""The request form's pipeline parameters: a form field per technique parameter (rendered from its schema),
a field per offered pipeline step, the typed-pipeline syntax that gives a step its own parameters, and the
cleaning that turns the chosen and typed pipelines into validated ones (``PipelineFields``, mixed into
planner.forms.PocRequestForm)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from django import forms
from django.utils.html import format_html
from django.utils.safestring import SafeString

from plugins import registry
from plugins.base import Param

if TYPE_CHECKING:
    from plugins.model_info import ModelInfo

# A pipeline step's own parameter left empty: the technique's value (the technique parameters' section).
AS_ABOVE = "as above"
MAX_CANDIDATES = 12
SHOWN = ":shown"


class MarkedCheckbox(forms.CheckboxInput):
    """A yes/no parameter's box, rendered with a hidden marker named after it (``<name>:shown``).

    A browser sends nothing for an unticked box, so "unticked" and "not sent" look the same on the server.
    Reading absence as "no" would store False for every yes/no parameter a script or the API leaves out,
    while any other parameter left out takes its default. The marker is sent by every form the page
    rendered, and never by a client that did not render it: with the marker and without the box the
    answer is no (the box was shown and unticked); with neither, the parameter was not sent and takes the
    schema's default. A marker per parameter (rather than one per form) also covers a technique installed
    after the page was rendered: its box was never shown, so it takes its default too."""

    def __init__(self, default: bool, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.default = default

    def render(self, name: str, value: Any, attrs: Any = None, renderer: Any = None) -> SafeString:
        box = super().render(name, value, attrs, renderer)
        return box + format_html('<input type="hidden" name="{}" value="1">', name + SHOWN)

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        if name not in data and name + SHOWN not in data:
            return self.default
        return super().value_from_datadict(data, files, name)


class _Common(TypedDict):
    """The arguments every parameter's field gets."""

    label: str
    help_text: str
    initial: Any
    required: bool


def param_field(param: Param, *, step: bool = False) -> forms.Field:
    """A form field rendered from a technique parameter's schema; its help text is the description.

    ``step``: the field of one pipeline step, empty unless that step differs from the technique's value
    (a yes/no parameter is then a choice, since an unticked box cannot say "as above")."""
    common: _Common = {
        "label": param.name.replace("_", " "),
        "help_text": "" if step else param.help,
        "initial": None if step else param.default,
        "required": False,  # empty means the default
    }
    if param.type is bool and step:
        choices = [("", AS_ABOVE), ("true", "yes"), ("false", "no")]
        return forms.TypedChoiceField(
            choices=choices, coerce=lambda v: v == "true", empty_value=None, **common
        )
    if param.type is bool:
        return forms.BooleanField(widget=MarkedCheckbox(default=bool(param.default)), **common)
    if param.choices is not None:
        coerce: Callable[[Any], Any] = param.type
        return forms.TypedChoiceField(choices=[(c, c) for c in param.choices], coerce=coerce, **common)
    if param.type is int:
        return forms.IntegerField(min_value=_whole(param.minimum), max_value=_whole(param.maximum), **common)
    if param.type is float:
        return forms.FloatField(min_value=param.minimum, max_value=param.maximum, **common)
    return forms.CharField(max_length=500, **common)


def _whole(bound: float | None) -> int | None:
    """An int parameter's bound (Param declares bounds as numbers; an int parameter's are whole)."""
    return None if bound is None else int(bound)


class PipelineSyntaxError(ValueError):
    """A typed pipeline that cannot be read; ``step`` is the position (from 1) of the step at fault."""

    def __init__(self, message: str, *, step: int) -> None:
        super().__init__(message)
        self.step = step

    def at_line(self, line: int) -> str:
        return f"line {line}, step {self.step}: {self}"


def parse_steps(line: str) -> list[tuple[str, dict[str, str]]]:
    """A typed pipeline: 'prune.ffn(amount=0.3) → quantize.dynamic-int8' (steps joined by →, -> or >) as
    (technique, its own parameters) per step; a blank line is no pipeline. PipelineSyntaxError names the
    step at fault: an empty one (two arrows in a row, an arrow at either end) is refused, not tidied away,
    since a step the user meant to type may be missing."""
    parts: list[str] = []
    depth, current = 0, ""
    for char in line.replace("->", "→").replace(">", "→"):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0 or depth > 1:
            raise PipelineSyntaxError("parentheses do not match", step=len(parts) + 1)
        if char == "→" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise PipelineSyntaxError("parentheses do not match", step=len(parts) + 1)
    parts.append(current)
    if len(parts) == 1 and not current.strip():
        return []
    out = []
    for position, step in enumerate(parts, start=1):
        raw_name, _open, rest = step.strip().partition("(")
        name = raw_name.strip()
        if not name:
            raise PipelineSyntaxError(_empty_step(position, len(parts), bool(_open)), step=position)
        if _open and not rest.rstrip().endswith(")"):
            raise PipelineSyntaxError(f"write a step's parameters as {name}(name=value, …)", step=position)
        params = {}
        for pair in filter(None, (p.strip() for p in rest.rstrip()[:-1].split(","))) if _open else ():
            key, equals, value = pair.partition("=")
            if not equals or not key.strip():
                raise PipelineSyntaxError(
                    f"{name}: write each parameter as name=value, not {pair!r}", step=position
                )
            params[key.strip()] = value.strip()
        out.append((name, params))
    return out


def _empty_step(position: int, count: int, has_params: bool) -> str:
    if has_params:
        return "parameters without a technique; write technique(name=value, …)"
    if position == 1:
        return "empty step before the first arrow; remove the arrow or name a technique before it"
    if position == count:
        return "empty step after the last arrow; remove the arrow or name a technique after it"
    return "empty step between two arrows; remove one arrow or name a technique between them"


class PipelineFields(forms.Form):
    """The request form's technique parameters, each offered pipeline's step fields, and the cleaning of the
    chosen and typed pipelines (planner.forms.PocRequestForm mixes it in; it sets ``candidate_labels``, the
    offered pipelines in order, before ``_add_pipeline_fields``)."""

    candidate_labels: list[str]

    def _add_pipeline_fields(self) -> None:
        self.pipelines: list[list[dict[str, Any]]] = []
        self.param_groups: list[dict[str, Any]] = []
        for name, cls in registry.techniques().items():
            names = []
            for param in cls.params:
                field_name = f"param:{name}:{param.name}"
                self.fields[field_name] = param_field(param)
                names.append(field_name)
            self.param_groups.append({"technique": cls, "fields": names})
        self._add_step_fields()

    @staticmethod
    def step_field_name(candidate: int, step: int, param: str) -> str:
        """The field of one step's parameter: candidate is the position of the pipeline in the candidate
        list, step the position of the technique in it (both from 0)."""
        return f"step:{candidate}:{step}:{param}"

    def _add_step_fields(self) -> None:
        """Per offered pipeline and step, a field for each parameter, so that two candidates can use the
        same technique differently (empty: the technique's value above). A step field a client leaves out
        is empty too, so a yes/no parameter left out in both places takes its default (MarkedCheckbox)."""
        techniques = registry.techniques()
        self.step_groups: dict[str, list[dict[str, Any]]] = {}
        for n, label in enumerate(self.candidate_labels):
            steps = []
            for i, name in enumerate(registry.parse_pipeline(label)):
                cls = techniques.get(name)
                names = []
                for param in cls.params if cls else ():
                    field_name = self.step_field_name(n, i, param.name)
                    self.fields[field_name] = param_field(param, step=True)
                    names.append(field_name)
                steps.append({"position": i, "technique": name, "fields": names})
            self.step_groups[label] = steps

    def candidate_choices(self) -> list[dict[str, Any]]:
        """The candidate list for the template: per offered pipeline its checkbox and its steps' fields."""
        chosen = set(self["candidates"].value() or [])
        return [
            {
                "index": n,
                "value": label,
                "checked": label in chosen,
                "steps": [
                    {**step, "fields": [self[name] for name in step["fields"]]}
                    for step in self.step_groups[label]
                ],
            }
            for n, label in enumerate(self.candidate_labels)
        ]

    def technique_fieldsets(self) -> list[dict[str, Any]]:
        """Per technique, its class and its bound parameter fields, for the template."""
        return [
            {"technique": g["technique"], "fields": [self[name] for name in g["fields"]]}
            for g in self.param_groups
        ]

    def _clean_pipelines(
        self, data: dict[str, Any], device: str, task: str, model_info: ModelInfo | None = None
    ) -> None:
        """Each chosen and typed pipeline, step by step: a step's parameters are the technique's values above
        with the step's own (its fields in the candidate list, or name(key=value) in a typed line) on top.
        With ``model_info`` (the model's config is known), each step is also checked against the model as
        the earlier steps leave it, so a layer that does not exist is refused next to the pipeline."""
        techniques = registry.techniques()
        shared = {
            name: {p.name: data.get(f"param:{name}:{p.name}") for p in cls.params}
            for name, cls in techniques.items()
        }
        index = {label: n for n, label in enumerate(self.candidate_labels)}
        wanted: list[tuple[str, str, list[tuple[str, dict[str, Any]]]]] = []
        for label in data.get("candidates", []):
            steps = []
            for i, name in enumerate(registry.parse_pipeline(label)):
                own = {p: data.get(self.step_field_name(index[label], i, p)) for p in shared.get(name, {})}
                steps.append((name, {p: v for p, v in own.items() if v not in (None, "")}))
            wanted.append(("candidates", "", steps))
        for number, line in enumerate(data.get("custom_pipelines", "").splitlines(), start=1):
            try:
                typed = parse_steps(line)
            except PipelineSyntaxError as exc:
                self.add_error("custom_pipelines", f"{exc.at_line(number)} ({line.strip()[:200]})")
                continue
            if typed:
                wanted.append(("custom_pipelines", f"line {number}: ", typed))
        pipelines: list[list[dict[str, Any]]] = []
        for field, where, steps in wanted:
            raw = [{"technique": name, "params": {**shared.get(name, {}), **own}} for name, own in steps]
            try:
                cleaned = registry.validate_pipeline(raw, device=device, task=task, model_info=model_info)
            except ValueError as exc:
                self.add_error(field, f"{where}{' → '.join(name for name, _own in steps)}: {exc}")
                continue
            if cleaned not in pipelines:
                pipelines.append(cleaned)
        if len(pipelines) > MAX_CANDIDATES:
            self.add_error(
                "candidates", f"Pick at most {MAX_CANDIDATES} candidates; {len(pipelines)} were chosen."
            )
        self.pipelines = pipelines
