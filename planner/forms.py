from __future__ import annotations

import functools
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from django import forms
from django.conf import settings
from django.core.validators import MinValueValidator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from planner.models import PER_TOKEN_TARGET_REQUIRED, HardwareProfile, PocRequest, Team
from plugins import registry
from plugins.artifacts import ModelLoadError, check_model_dir
from plugins.base import Param
from workers.datasets import DataError, load_demo_examples, parse_task_data, split_examples, split_for

DEMO = "demo"
UPLOAD = "upload"
MAX_CANDIDATES = 12
CLASSIFICATION = PocRequest.Task.SEQUENCE_CLASSIFICATION
CAUSAL_LM = PocRequest.Task.CAUSAL_LM
# What "demo" means for each task (the strings are translated with the rest: planner.form_strings).
DEMO_MODEL_LABELS = {
    CLASSIFICATION: "Demo: MiniLM-L6 fine-tuned on Wikipedia topics",
    CAUSAL_LM: "Demo: SmolLM2-135M-Instruct, a small chat model",
}
DEMO_DATA_LABELS = {
    CLASSIFICATION: "Demo: Wikipedia lead paragraphs by topic (11 labels)",
    CAUSAL_LM: "Demo: Wikipedia lead paragraphs, as text",
}


def param_field(param: Param) -> forms.Field:
    """A form field rendered from a technique parameter's schema; its help text is the description."""
    common = {
        "label": param.name.replace("_", " "),
        "help_text": param.help,
        "initial": param.default,
        "required": False,  # empty means the default
    }
    if param.type is bool:
        return forms.BooleanField(**common)
    if param.choices is not None:
        return forms.TypedChoiceField(choices=[(c, c) for c in param.choices], coerce=param.type, **common)
    if param.type is int:
        return forms.IntegerField(min_value=param.minimum, max_value=param.maximum, **common)
    if param.type is float:
        return forms.FloatField(min_value=param.minimum, max_value=param.maximum, **common)
    return forms.CharField(max_length=500, **common)


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
    return settings.DEMO_LLM_DIR if task == CAUSAL_LM else settings.DEMO_MODEL_DIR


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


def _listed(items: list[str], limit: int = 10) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


class PocRequestForm(forms.ModelForm):
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
        choices=[
            (DEMO, DEMO_DATA_LABELS[CLASSIFICATION]),
            (UPLOAD, "Upload a file"),
        ],
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
        help_text="One per line, steps joined by → (or >). A quantizer must be the last step.",
    )

    class Meta:
        model = PocRequest
        fields = [
            "title",
            "task",
            "model_ref",
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
            "horizon_months",
            "engineering_hours",
            "engineering_rate",
            "currency",
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
        }
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
        }

    # Shown for one task only (request_form.js hides the others; the server ignores them).
    TASK_FIELDS = {
        "per_token_target_ms": CAUSAL_LM,
        "perplexity_increase_pct": CAUSAL_LM,
        "output_tokens_per_request": CAUSAL_LM,
        "accuracy_floor_pct": CLASSIFICATION,
    }

    def __init__(self, *args, teams: Sequence[Team] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The task the form shows: the one posted, else the initial one (a link may ask for ?task=causal-lm).
        chosen = (self.data.get("task") if self.is_bound else None) or self.initial.get("task")
        self.task = chosen if chosen in PocRequest.Task.values else CLASSIFICATION
        self.fields["task"].initial = self.task
        for name, task in self.TASK_FIELDS.items():
            field = self.fields[name]
            field.required = False  # required for its own task only: see clean()
            field.task_only = task
        # A user in several teams picks one (only theirs validate); with one team it is implied.
        self.implied_team = teams[0] if teams and len(teams) == 1 else None
        if teams and len(teams) > 1:
            self.fields["team"] = forms.ModelChoiceField(
                queryset=Team.objects.filter(pk__in=[t.pk for t in teams]),
                label="Team",
                help_text="The members of this team see the request.",
            )
        self.fields["model_ref"].choices = [(DEMO, DEMO_MODEL_LABELS[self.task])] + [
            (ref, f"Local: {label}") for ref, label in local_model_choices()
        ]
        self.fields["dataset_ref"].choices = [(DEMO, DEMO_DATA_LABELS[self.task]), (UPLOAD, "Upload a file")]
        self.fields["hardware"].queryset = HardwareProfile.objects.all()
        # Zero traffic would make every saving zero: the model allows it, a request does not. A horizon's
        # model bound (1) is tighter than its positive integer field's (0); say the real one.
        for name in ("requests_per_day", "horizon_months"):
            field = self.fields[name]
            field.min_value = 1
            field.validators = [v for v in field.validators if not isinstance(v, MinValueValidator)]
            field.validators.append(MinValueValidator(1))
            field.widget.attrs["min"] = 1
        self.model_config: dict | None = None
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
        self.fields["candidates"].choices = [
            (label, label) for label in dict.fromkeys(sum(self.offered.values(), []))
        ]
        self.initial_candidates = {task: initial_candidates(task) for task in PocRequest.Task.values}
        self.fields["candidates"].initial = self.initial_candidates[self.task]
        self.pipelines: list[list[dict]] = []
        self.param_groups = []
        for name, cls in registry.techniques().items():
            names = []
            for param in cls.params:
                field_name = f"param:{name}:{param.name}"
                self.fields[field_name] = param_field(param)
                names.append(field_name)
            self.param_groups.append({"technique": cls, "fields": names})

    def technique_fieldsets(self):
        """Per technique, its class and its bound parameter fields, for the template."""
        return [
            {"technique": g["technique"], "fields": [self[name] for name in g["fields"]]}
            for g in self.param_groups
        ]

    def task_data(self) -> dict:
        """What request_form.js needs to show one task's choices (labels in the reader's language)."""
        return {
            "offered": self.offered,
            "initial": self.initial_candidates,
            "demo_model": {task: gettext(label) for task, label in DEMO_MODEL_LABELS.items()},
            "demo_data": {task: gettext(label) for task, label in DEMO_DATA_LABELS.items()},
        }

    def _chosen_task(self) -> str | None:
        """The task as cleaned so far; None when the posted one is not a task (its error says so)."""
        if "task" in self.errors:
            return None
        return self.cleaned_data.get("task") or CLASSIFICATION

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
        if task is None:
            return ref
        try:
            self.model_config = check_model_dir(resolve_model_dir(ref, task), task=task)
        except ModelLoadError as exc:
            if ref == DEMO and not demo_model_dir(task).is_dir():
                what = "demo LLM" if task == CAUSAL_LM else "demo model"
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
            plenty = "a few thousand texts" if task == CAUSAL_LM else "a few thousand examples per label"
            raise forms.ValidationError(
                f"The file is {upload.size / 2**20:.1f} MiB; the limit is {limit_mib:.0f} MiB. "
                f"Upload a sample of it: {plenty} are plenty."
            )
        if task is None:
            return upload
        raw = upload.read()
        upload.seek(0)
        try:
            examples = parse_task_data(raw, upload.name, require_labels=task == CLASSIFICATION, task=task)
            split = split_for(examples, task)
        except DataError as exc:
            raise forms.ValidationError(str(exc)) from None
        if task == CLASSIFICATION:
            self.data_labels = split.labels
        return upload

    def clean(self):
        data = super().clean()
        task = self._chosen_task()
        if (
            data.get("dataset_ref") == UPLOAD
            and not data.get("dataset_upload")
            and "dataset_upload" not in self.errors
        ):
            files = "a TXT, JSONL or CSV file" if task == CAUSAL_LM else "a CSV or JSONL file"
            self.add_error("dataset_upload", f"Choose {files} to upload, or pick the demo data.")
        if data.get("dataset_ref") == DEMO and task == CLASSIFICATION:
            try:
                self.data_labels = list(demo_labels())
            except DataError as exc:
                self.add_error("dataset_ref", str(exc))
        if task == CLASSIFICATION:
            self._clean_labels(data)
        self._clean_task_fields(data, task)
        hardware = data.get("hardware")
        if hardware and data.get("currency") and hardware.currency != data["currency"]:
            self.add_error(
                "currency",
                f"{hardware.name} is priced in {hardware.currency}; choose {hardware.currency} or another hardware profile.",
            )
        if hardware and task is not None:
            self._clean_pipelines(data, hardware.device_kind, task)
        return data

    def _clean_task_fields(self, data: dict, task: str | None) -> None:
        """Each task's own fields: the accuracy floor is required for classification and the per-token
        target for text generation; left empty, the others take their defaults, and the other task's are
        stored as their defaults, unused."""
        if task is None:
            return
        if task == CLASSIFICATION:
            data["per_token_target_ms"] = None
        for name, owner in self.TASK_FIELDS.items():
            if name in self.errors or data.get(name) is not None:
                continue
            if name == "accuracy_floor_pct" and owner == task:
                self.add_error(name, forms.Field.default_error_messages["required"])
            elif name == "per_token_target_ms" and owner == task:
                self.add_error(name, PER_TOKEN_TARGET_REQUIRED)
            else:
                data[name] = DEFAULTS[name]

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

    def _clean_pipelines(self, data: dict, device: str, task: str) -> None:
        chosen = [registry.parse_pipeline(label) for label in data.get("candidates", [])]
        custom = [registry.parse_pipeline(line) for line in data.get("custom_pipelines", "").splitlines()]
        params = {
            name: {p.name: data.get(f"param:{name}:{p.name}") for p in cls.params}
            for name, cls in registry.techniques().items()
        }
        pipelines: list[list[dict]] = []
        for steps in chosen + [c for c in custom if c]:
            raw = [{"technique": name, "params": params.get(name, {})} for name in steps]
            field = "custom_pipelines" if steps in custom else "candidates"
            try:
                cleaned = registry.validate_pipeline(raw, device=device, task=task)
            except ValueError as exc:
                self.add_error(field, f"{' → '.join(steps)}: {exc}")
                continue
            if cleaned not in pipelines:
                pipelines.append(cleaned)
        if len(pipelines) > MAX_CANDIDATES:
            self.add_error(
                "candidates", f"Pick at most {MAX_CANDIDATES} candidates; {len(pipelines)} were chosen."
            )
        self.pipelines = pipelines

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        return {
            "title": data["title"],
            "task": data["task"],
            "per_token_target_ms": data.get("per_token_target_ms"),
            "output_tokens_per_request": data["output_tokens_per_request"],
            "perplexity_increase_pct": data["perplexity_increase_pct"],
            "model_ref": data["model_ref"],
            "dataset_ref": data["dataset_ref"],
            "dataset_file": data.get("dataset_upload") if data["dataset_ref"] == UPLOAD else None,
            "p95_target_ms": data["p95_target_ms"],
            "accuracy_floor_pct": data["accuracy_floor_pct"],
            "requests_per_day": data["requests_per_day"],
            "peak_factor": data["peak_factor"],
            "target_utilisation": data["target_utilisation"],
            "hardware": data["hardware"],
            "horizon_months": data["horizon_months"],
            "engineering_hours": data["engineering_hours"],
            "engineering_rate": data["engineering_rate"],
            "currency": data["currency"],
            "pipelines": self.pipelines,
            "team": data.get("team") or self.implied_team,
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
    """Checked at first: the quick int8 candidate and the most aggressive hybrid the CPU can run; for text
    generation weight-only int8 too (decoding is bound by reading the weights, which it shrinks)."""
    cpu_plan = registry.default_plan(device="cpu", task=task)
    hybrids = [p for p in cpu_plan if len(p) > 1]
    quick = [["quantize.dynamic-int8"]] + ([["quantize.weight-only"]] if task == CAUSAL_LM else [])
    return [" → ".join(p) for p in cpu_plan if p in quick or (hybrids and p == hybrids[0])]


DEFAULTS = {
    "p95_target_ms": Decimal("50"),
    "per_token_target_ms": None,
    "accuracy_floor_pct": Decimal("97"),
    "perplexity_increase_pct": Decimal("10"),
    "output_tokens_per_request": 128,
    "requests_per_day": 2_000_000,
    "peak_factor": Decimal("2"),
    "target_utilisation": Decimal("0.7"),
    "horizon_months": 12,
    "engineering_hours": Decimal("40"),
    "engineering_rate": Decimal("100"),
    "currency": "USD",
}
