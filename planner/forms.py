from __future__ import annotations

import functools
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from django import forms
from django.conf import settings
from django.core.validators import MinValueValidator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from planner.model_sources import LOCAL, ModelSourceFields
from planner.models import HardwareProfile, PocRequest, Team
from planner.pipeline_fields import PipelineFields
from planner.task_kinds import TASK_KINDS, TaskKind, task_kind
from plugins import registry
from plugins.artifacts import ModelLoadError, check_model_dir
from plugins.model_info import ModelInfo
from workers.datasets import DataError, load_demo_examples, split_examples

DEMO = "demo"
UPLOAD = "upload"
SEARCH_BUDGET_REQUIRED = "A search needs a budget: the most trials, the most minutes, or both."
CLASSIFICATION = PocRequest.Task.SEQUENCE_CLASSIFICATION
CAUSAL_LM = PocRequest.Task.CAUSAL_LM


def local_model_choices() -> list[tuple[str, str]]:
    """Directories directly under MODELS_ROOT that hold a saved model, links out of it left out."""
    root = settings.MODELS_ROOT.resolve()
    if not root.is_dir():
        return []
    return [
        (p.name, p.name)
        for p in sorted(root.iterdir())
        if not p.name.startswith(".") and _inside(p, root) and p.is_dir() and (p / "config.json").is_file()
    ]


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with every symlink followed, lies under ``root`` (itself resolved)."""
    try:
        return root in path.resolve().parents
    except (OSError, RuntimeError):  # a broken or looping link
        return False


def demo_model_dir(task: str) -> Path:
    return task_kind(task).demo_model_dir()


def resolve_model_dir(ref: str, task: str = CLASSIFICATION) -> Path:
    """The model directory for a form value, refusing anything outside MODELS_ROOT (symlinks included)."""
    if ref == DEMO:
        return demo_model_dir(task)
    root = settings.MODELS_ROOT.resolve()
    candidate = root / ref
    if not _inside(candidate, root):
        raise forms.ValidationError(
            "Pick a model directory inside the models folder; links that lead out of it are refused."
        )
    candidate = candidate.resolve()
    if candidate.is_dir():
        outside = sorted(p.name for p in candidate.iterdir() if p.is_symlink() and not _inside(p, root))
        if outside:
            raise forms.ValidationError(
                f"{ref} links to files outside the models folder ({', '.join(outside[:5])}); copy those "
                "files into the model directory instead."
            )
    return candidate


def model_labels(config: dict) -> set[str]:
    """The labels a classifier's config.json says it predicts, as transformers reads them."""
    label2id = config.get("label2id")
    if isinstance(label2id, dict) and label2id:
        return {str(label) for label in label2id}
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return {str(label) for label in id2label.values()}
    count = config.get("num_labels")
    count = count if isinstance(count, int) and 0 < count <= 10_000 else 2
    return {f"LABEL_{i}" for i in range(count)}


@functools.cache
def demo_labels() -> tuple[str, ...]:
    """The demo data set's labels (cached: the installed file does not change while the server runs)."""
    return tuple(split_examples(load_demo_examples()).labels)


_FieldT = TypeVar("_FieldT", bound=forms.Field)


def declared(form: forms.BaseForm, name: str, kind: type[_FieldT]) -> _FieldT:
    """``form.fields[name]`` as the field class it is declared with (``fields`` holds the base Field)."""
    field = form.fields[name]
    if not isinstance(field, kind):
        raise TypeError(f"{name} is a {type(field).__name__}, not a {kind.__name__}")
    return field


def _listed(items: list[str], limit: int = 10) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# The recurring cost and the re-run schedule (planner.reviews), with what a form posted without them means.
RECURRING_DEFAULTS: dict[str, Any] = {
    "maintenance_hours_per_month": Decimal("0"),
    "teacher_updates_per_year": 0,
    "rerun_schedule": PocRequest.RerunSchedule.NEVER,
}


class PocRequestForm(ModelSourceFields, PipelineFields, forms.ModelForm):
    task = forms.ChoiceField(
        label="Task",
        choices=PocRequest.Task.choices,
        required=False,  # a form posted without one files a classification request, as before
        widget=forms.RadioSelect,
        help_text="What the model does: label a text, or write one. The targets and the candidates follow.",
    )
    model_ref = forms.ChoiceField(label="Model", help_text="The model to compress, as it is served today.")
    dataset_ref = forms.ChoiceField(
        label="Task data",
        choices=[(DEMO, task_kind(CLASSIFICATION).demo_data_label), (UPLOAD, "Upload a file")],
        help_text="20% of it, chosen by a fixed hash, is held out to measure accuracy or perplexity and never trained on.",
    )
    dataset_upload = forms.FileField(
        label="Data file",
        required=False,
        help_text=(
            "Classification: CSV or JSONL with a 'text' column and a 'label' column. Text generation: a .txt "
            "file with one text per line, JSONL with 'text' or 'prompt' (and an optional 'reference' "
            "completion), or CSV with a 'text' column. UTF-8."
        ),
    )
    candidates = forms.MultipleChoiceField(
        label="Candidates to try",
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Each pipeline becomes one candidate, measured against the baseline on the same device.",
    )
    custom_pipelines = forms.CharField(
        label="More pipelines",
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 3, "placeholder": "prune.layers → prune.vocabulary → quantize.dynamic-int8"}
        ),
        max_length=2000,
        strip=False,  # an error names its line as an editor counts them, leading blank lines included
        help_text=(
            "One per line, steps joined by → (or >), each with its own parameters if you like: "
            "prune.ffn(amount=0.3) → quantize.dynamic-int8. The last step may be one quantize step or one "
            "runtime step, never both (a runtime has its own int8 options)."
        ),
    )

    class Meta:
        model = PocRequest
        fields = [
            "title",
            "task",
            "model_source",
            "model_ref",
            "model_archive",
            "hub_model",
            "model_revision",
            "dataset_ref",
            "dataset_upload",
            "p95_target_ms",
            "per_token_target_ms",
            "accuracy_floor_pct",
            "perplexity_increase_pct",
            "output_tokens_per_request",
            "requests_per_day",
            "peak_factor",
            "target_utilisation",
            "hardware",
            "serving_runtime",
            "horizon_months",
            "engineering_hours",
            "engineering_rate",
            "maintenance_hours_per_month",
            "teacher_updates_per_year",
            "rerun_schedule",
            "currency",
            "mode",
            "search_max_trials",
            "search_max_minutes",
            "candidates",
            "custom_pipelines",
        ]
        labels = {
            "p95_target_ms": "p95 latency target (ms)",
            "per_token_target_ms": "Per-token latency target, p95 (ms)",
            "accuracy_floor_pct": "Accuracy floor (% of baseline)",
            "perplexity_increase_pct": "Max perplexity rise over the baseline (%)",
            "output_tokens_per_request": "Output tokens per request",
            "target_utilisation": "Target utilisation (0–1)",
            "model_revision": "Hub commit (40 hex digits)",
            "mode": "What to try",
            "search_max_trials": "Search budget: at most this many candidates",
            "search_max_minutes": "Search budget: at most this many minutes",
        }
        widgets = {"mode": forms.RadioSelect}
        help_texts = {
            "p95_target_ms": (
                "Classification: the p95 time of one request. Text generation: the p95 time to the first "
                "token (TTFT)."
            ),
            "per_token_target_ms": (
                "Text generation: the p95 time between two generated tokens (inter-token latency) that "
                "readers accept."
            ),
            "accuracy_floor_pct": "A candidate must keep at least this share of the baseline's accuracy.",
            "perplexity_increase_pct": (
                "A candidate's perplexity on the held-out text may be at most this much higher than the "
                "baseline's."
            ),
            "output_tokens_per_request": (
                "The length of a typical reply; it sets the request time and the cost per token."
            ),
            "peak_factor": "Peak traffic ÷ average traffic.",
            "target_utilisation": "How busy a replica may run at peak; headroom for bursts.",
            "engineering_hours": "Hours to take a compressed model to production.",
            "maintenance_hours_per_month": "Engineering hours a month to keep a compressed model in production.",
            "teacher_updates_per_year": (
                "How often the current model is updated; each update means producing the candidate again."
            ),
            "rerun_schedule": "The PoC also runs again when the model's files change.",
            "mode": (
                "A search tries student sizes, distillation epochs, pruning amounts, quantizers and runtimes "
                "itself, cheapest first by the estimate, and stops when nothing left can beat the best."
            ),
            "search_max_trials": "Each trial is a full candidate: produced, then measured like any other.",
            "search_max_minutes": "The search stops starting new trials after this long.",
        }

    # Shown for one task only (request_form.js hides the others; the server ignores them).
    TASK_FIELDS = {name: kind.name for kind in TASK_KINDS.values() for name in kind.target_defaults}

    def __init__(self, *args, teams: Sequence[Team] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The task the form shows: the one posted, else the initial one (a link may ask for ?task=causal-lm).
        chosen = (self.data.get("task") if self.is_bound else None) or self.initial.get("task")
        self.kind: TaskKind = task_kind(chosen if chosen in PocRequest.Task.values else CLASSIFICATION)
        self.fields["task"].initial = self.kind.name
        for name, task in self.TASK_FIELDS.items():
            field = self.fields[name]
            field.required = False  # required for its own task only: see clean()
            # The form's own mark, read by _field.html; Field declares no such attribute.
            field.task_only = task  # type: ignore[attr-defined]
        # A form posted without the recurring figures (as before they existed) takes their defaults.
        for name in RECURRING_DEFAULTS:
            self.fields[name].required = False
        self.fields["mode"].required = False  # a form posted without one lists its pipelines, as before
        # A user in several teams picks one (only theirs validate); with one team it is implied.
        self.implied_team = teams[0] if teams and len(teams) == 1 else None
        if teams and len(teams) > 1:
            self.fields["team"] = forms.ModelChoiceField(
                queryset=Team.objects.filter(pk__in=[t.pk for t in teams]),
                label="Team",
                help_text="The members of this team see the request.",
            )
        declared(self, "model_ref", forms.ChoiceField).choices = [(DEMO, self.kind.demo_model_label)] + [
            (ref, f"Local: {label}") for ref, label in local_model_choices()
        ]
        declared(self, "dataset_ref", forms.ChoiceField).choices = [
            (DEMO, self.kind.demo_data_label),
            (UPLOAD, "Upload a file"),
        ]
        declared(self, "hardware", forms.ModelChoiceField).queryset = HardwareProfile.objects.all()
        # Zero traffic would make every saving zero: the model allows it, a request does not. A horizon's and
        # a reply length's model bound (1) is tighter than their positive integer fields' (0); say the real one.
        for name in ("requests_per_day", "horizon_months", "output_tokens_per_request"):
            field = declared(self, name, forms.IntegerField)
            field.min_value = 1
            field.validators = [v for v in field.validators if not isinstance(v, MinValueValidator)]
            field.validators.append(MinValueValidator(1))
            field.widget.attrs["min"] = 1
        self.model_config: dict[str, Any] | None = None
        self.data_labels: list[str] | None = None
        # Every task's plan is offered (the page shows the chosen task's; validation checks the task).
        self.offered: dict[str, list[str]] = {
            task: list(
                dict.fromkeys(
                    " → ".join(steps)
                    for device in HardwareProfile.DeviceKind.values
                    for steps in registry.default_plan(device=device, task=task)
                )
            )
            for task in PocRequest.Task.values
        }
        # The candidate list's pipelines, in order: a pipeline's position in it names its step fields.
        self.candidate_labels: list[str] = list(dict.fromkeys(sum(self.offered.values(), [])))
        declared(self, "candidates", forms.MultipleChoiceField).choices = [
            (label, label) for label in self.candidate_labels
        ]
        self.initial_candidates = {task: initial_candidates(task) for task in PocRequest.Task.values}
        self.fields["candidates"].initial = self.initial_candidates[self.kind.name]
        self._add_pipeline_fields()

    def task_data(self) -> dict:
        """What request_form.js needs to show one task's choices (labels in the reader's language)."""
        return {
            "offered": self.offered,
            "initial": self.initial_candidates,
            "demo_model": {task: gettext(kind.demo_model_label) for task, kind in TASK_KINDS.items()},
            "demo_data": {task: gettext(kind.demo_data_label) for task, kind in TASK_KINDS.items()},
        }

    def _chosen_task(self) -> str | None:
        """The task as cleaned so far; None when the posted one is not a task (its error says so)."""
        if "task" in self.errors:
            return None
        return self.cleaned_data.get("task") or CLASSIFICATION

    def clean_mode(self) -> str:
        return self.cleaned_data.get("mode") or PocRequest.Mode.PIPELINES

    def clean_task(self) -> str:
        return self.cleaned_data.get("task") or CLASSIFICATION

    def main_fields(self):
        names = list(self.Meta.fields)
        if "team" in self.fields:
            names.insert(1, "team")  # after the title
        return [self[name] for name in names]

    def clean_model_ref(self) -> str:
        ref = self.cleaned_data["model_ref"]
        task = self._chosen_task()
        if task is None or self.cleaned_data.get("model_source") != LOCAL:
            return ref
        try:
            self.model_config = check_model_dir(
                resolve_model_dir(ref, task), task=task, max_bytes=settings.MODEL_MAX_BYTES
            )
        except ModelLoadError as exc:
            if ref == DEMO and not demo_model_dir(task).is_dir():
                what = task_kind(task).demo_model_noun
                raise forms.ValidationError(
                    f"The {what} is not built yet; run `make demo` (or `python manage.py demo_setup`)."
                ) from None
            raise forms.ValidationError(str(exc)) from None
        return ref

    def clean_dataset_upload(self):
        upload = self.cleaned_data.get("dataset_upload")
        if upload is None or self.cleaned_data.get("dataset_ref") == DEMO:
            return None  # a file sent along with the demo data is ignored, not checked
        task = self._chosen_task()
        if upload.size > settings.DATA_UPLOAD_MAX_BYTES:
            limit_mib = settings.DATA_UPLOAD_MAX_BYTES / 2**20
            plenty = task_kind(task).enough_data if task else TASK_KINDS[CLASSIFICATION].enough_data
            raise forms.ValidationError(
                f"The file is {upload.size / 2**20:.1f} MiB; the limit is {limit_mib:.0f} MiB. "
                f"Upload a sample of it: {plenty} are plenty."
            )
        if task is None:
            return upload
        raw = upload.read()
        upload.seek(0)
        kind = task_kind(task)
        try:
            split = kind.read_data(raw, upload.name)
        except DataError as exc:
            raise forms.ValidationError(str(exc)) from None
        if kind.labelled:
            self.data_labels = split.labels
        return upload

    def clean(self):
        data = super().clean()
        task = self._chosen_task()
        kind = task_kind(task) if task else TASK_KINDS[CLASSIFICATION]
        if (
            data.get("dataset_ref") == UPLOAD
            and not data.get("dataset_upload")
            and "dataset_upload" not in self.errors
        ):
            self.add_error("dataset_upload", f"Choose {kind.data_files} to upload, or pick the demo data.")
        if task is not None and kind.labelled:
            if data.get("dataset_ref") == DEMO:
                try:
                    self.data_labels = list(demo_labels())
                except DataError as exc:
                    self.add_error("dataset_ref", str(exc))
            self._clean_labels(data)
        self._clean_task_fields(data, task)
        hardware = data.get("hardware")
        if hardware and data.get("currency") and hardware.currency != data["currency"]:
            self.add_error(
                "currency",
                f"{hardware.name} is priced in {hardware.currency}; choose {hardware.currency} or another hardware profile.",
            )
        searching = data.get("mode") == PocRequest.Mode.SEARCH
        if searching and not data.get("search_max_trials") and not data.get("search_max_minutes"):
            self.add_error("search_max_trials", SEARCH_BUDGET_REQUIRED)
        if searching:
            self.pipelines = []  # the worker proposes the candidates
        elif hardware and task is not None:
            self._clean_pipelines(data, hardware.device_kind, task, self._model_info(task))
        if hardware and data.get("serving_runtime"):
            self._clean_serving_runtime(data, hardware.device_kind, task)
        return data

    def _model_info(self, task: str) -> ModelInfo | None:
        """The model's sizes for the pipelines' model-aware checks, when its config was read (a local model or
        an archive; a Hub model is checked by the worker once fetched)."""
        if self.model_config is None:
            return None
        try:
            return ModelInfo.from_config(self.model_config, task=task)
        except ModelLoadError:  # already refused next to the model field
            return None

    def _clean_serving_runtime(self, data: dict, device: str, task: str | None) -> None:
        """The runtime the model is served with today must run on the hardware's device (and vLLM only
        serves text generation)."""
        from plugins.runtime import serving_refusal

        runtime = data["serving_runtime"]
        problem = serving_refusal(runtime, device=device)
        if problem is None and runtime == PocRequest.ServingRuntime.VLLM and task != "causal-lm":
            problem = "vLLM serves text generation; choose PyTorch for a classifier"
        if problem:
            self.add_error("serving_runtime", problem)

    def _clean_task_fields(self, data: dict, task: str | None) -> None:
        """Each task's own fields (TaskKind.target_defaults): the required ones must be filled in for their
        task; left empty, the others take their defaults; another task's are stored as their defaults,
        unused (a per-token target only ever belongs to text generation)."""
        if task is None:
            return
        kind = task_kind(task)
        for other in TASK_KINDS.values():
            for name, default in other.target_defaults.items():
                if other is not kind:
                    if name not in self.errors and (data.get(name) is None or default is None):
                        data[name] = default
                elif name not in self.errors and data.get(name) is None:
                    if name in kind.required_targets:
                        self.add_error(name, kind.required_targets[name])
                    else:
                        data[name] = default

    def _clean_labels(self, data: dict) -> None:
        """Refuse data labelled with classes the model cannot predict: its accuracy could not be measured."""
        if self.model_config is None or not self.data_labels:
            return
        known = model_labels(self.model_config)
        unknown = [label for label in self.data_labels if label not in known]
        if unknown:
            field = "dataset_ref" if data.get("dataset_ref") == DEMO else "dataset_upload"
            self.add_error(
                field,
                f"The model {data.get('model_ref')} does not know the labels {_listed(unknown)}; it predicts: "
                f"{_listed(sorted(known))}. Use data labelled with the model's labels, or a model "
                "fine-tuned on these labels.",
            )

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        return {
            "title": data["title"],
            "task": data["task"],
            "per_token_target_ms": data.get("per_token_target_ms"),
            "output_tokens_per_request": data["output_tokens_per_request"],
            "perplexity_increase_pct": data["perplexity_increase_pct"],
            "model_ref": data["model_ref"],
            **self.model_source_kwargs(),
            "dataset_ref": data["dataset_ref"],
            "dataset_file": data.get("dataset_upload") if data["dataset_ref"] == UPLOAD else None,
            "p95_target_ms": data["p95_target_ms"],
            "accuracy_floor_pct": data["accuracy_floor_pct"],
            "requests_per_day": data["requests_per_day"],
            "peak_factor": data["peak_factor"],
            "target_utilisation": data["target_utilisation"],
            "hardware": data["hardware"],
            "serving_runtime": data.get("serving_runtime") or PocRequest.ServingRuntime.PYTORCH,
            "horizon_months": data["horizon_months"],
            "engineering_hours": data["engineering_hours"],
            "engineering_rate": data["engineering_rate"],
            **{name: data.get(name) or default for name, default in RECURRING_DEFAULTS.items()},
            "currency": data["currency"],
            "pipelines": self.pipelines,
            "team": data.get("team") or self.implied_team,
            "mode": data.get("mode") or PocRequest.Mode.PIPELINES,
            "search_max_trials": data.get("search_max_trials"),
            "search_max_minutes": data.get("search_max_minutes"),
        }


class DecisionForm(forms.Form):
    """A manager's approval or rejection of a finished request's recommendation."""

    decision = forms.ChoiceField(label=_("Decision"), choices=PocRequest.Decision.choices)
    comment = forms.CharField(
        label=_("Comment"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Required when rejecting: tell the requester why."),
    )

    def clean(self):
        data = super().clean()
        if data.get("decision") == PocRequest.Decision.REJECTED and not data.get("comment", "").strip():
            self.add_error("comment", _("Say why the recommendation is rejected."))
        return data


class HardwareProfileForm(forms.ModelForm):
    """A hardware profile as an engineer edits it (the price drives every cost figure)."""

    class Meta:
        model = HardwareProfile
        fields = ["name", "device_kind", "price_per_hour", "currency", "power_watts", "notes"]
        labels = {
            "name": _("Name"),
            "device_kind": _("Device"),
            "price_per_hour": _("Price per hour"),
            "currency": _("Currency"),
            "power_watts": _("Power (W)"),
            "notes": _("Notes"),
        }


def initial_candidates(task: str) -> list[str]:
    """Checked at first: the task's quick candidates (TaskKind.quick_candidates) and the most aggressive
    hybrid the CPU can run."""
    cpu_plan = registry.default_plan(device="cpu", task=task)
    hybrids = [p for p in cpu_plan if len(p) > 1]
    quick = [[name] for name in task_kind(task).quick_candidates]
    return [" → ".join(p) for p in cpu_plan if p in quick or (hybrids and p == hybrids[0])]


DEFAULTS = {
    "p95_target_ms": Decimal("50"),
    # Each task's own targets (planner.task_kinds).
    **{name: value for kind in TASK_KINDS.values() for name, value in kind.target_defaults.items()},
    "requests_per_day": 2_000_000,
    "peak_factor": Decimal("2"),
    "target_utilisation": Decimal("0.7"),
    "horizon_months": 12,
    "engineering_hours": Decimal("40"),
    "engineering_rate": Decimal("100"),
    **RECURRING_DEFAULTS,
    "currency": "USD",
}
