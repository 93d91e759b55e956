from __future__ import annotations

import functools
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from django import forms
from django.conf import settings
from django.core.validators import MinValueValidator
from django.utils.translation import gettext_lazy as _

from planner.models import HardwareProfile, PocRequest, Team
from plugins import registry
from plugins.artifacts import ModelLoadError, check_model_dir
from plugins.base import Param
from workers.datasets import DataError, load_demo_examples, parse_task_data, split_examples

DEMO = "demo"
UPLOAD = "upload"
MAX_CANDIDATES = 12


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


def resolve_model_dir(ref: str) -> Path:
    """The model directory for a form value, refusing anything outside MODELS_ROOT (symlinks included)."""
    if ref == DEMO:
        return settings.DEMO_MODEL_DIR
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
    model_ref = forms.ChoiceField(label="Model", help_text="The model to compress, as it is served today.")
    dataset_ref = forms.ChoiceField(
        label="Task data",
        choices=[
            (DEMO, "Demo: Wikipedia lead paragraphs by topic (11 labels)"),
            (UPLOAD, "Upload a CSV or JSONL file"),
        ],
        help_text="20% of it, chosen by a fixed hash, is held out for accuracy and never trained on.",
    )
    dataset_upload = forms.FileField(
        label="Data file",
        required=False,
        help_text="CSV or JSONL with a 'text' column and a 'label' column (UTF-8).",
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
            "model_ref",
            "dataset_ref",
            "dataset_upload",
            "p95_target_ms",
            "accuracy_floor_pct",
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
            "target_utilisation": "Target utilisation (0–1)",
        }
        help_texts = {
            "accuracy_floor_pct": "A candidate must keep at least this share of the baseline's accuracy.",
            "peak_factor": "Peak traffic ÷ average traffic.",
            "target_utilisation": "How busy a replica may run at peak; headroom for bursts.",
            "engineering_hours": "Hours to take a compressed model to production.",
        }

    def __init__(self, *args, teams: Sequence[Team] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # A user in several teams picks one (only theirs validate); with one team it is implied.
        self.implied_team = teams[0] if teams and len(teams) == 1 else None
        if teams and len(teams) > 1:
            self.fields["team"] = forms.ModelChoiceField(
                queryset=Team.objects.filter(pk__in=[t.pk for t in teams]),
                label="Team",
                help_text="The members of this team see the request.",
            )
        self.fields["model_ref"].choices = [(DEMO, "Demo: MiniLM-L6 fine-tuned on Wikipedia topics")] + [
            (ref, f"Local: {label}") for ref, label in local_model_choices()
        ]
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
        offered = {
            " → ".join(steps): steps
            for device in HardwareProfile.DeviceKind.values
            for steps in registry.default_plan(device=device, task=PocRequest.Task.SEQUENCE_CLASSIFICATION)
        }
        self.fields["candidates"].choices = [(label, label) for label in offered]
        cpu_plan = registry.default_plan(device="cpu", task=PocRequest.Task.SEQUENCE_CLASSIFICATION)
        # Checked at first: the quick int8 candidate and the most aggressive hybrid the CPU can run.
        hybrids = [p for p in cpu_plan if len(p) > 1]
        self.fields["candidates"].initial = [
            " → ".join(p) for p in cpu_plan if p == ["quantize.dynamic-int8"] or (hybrids and p == hybrids[0])
        ]
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

    def main_fields(self):
        names = list(self.Meta.fields)
        if "team" in self.fields:
            names.insert(1, "team")  # after the title
        return [self[name] for name in names]

    def clean_model_ref(self) -> str:
        ref = self.cleaned_data["model_ref"]
        try:
            self.model_config = check_model_dir(
                resolve_model_dir(ref), task=PocRequest.Task.SEQUENCE_CLASSIFICATION
            )
        except ModelLoadError as exc:
            if ref == DEMO and not settings.DEMO_MODEL_DIR.is_dir():
                raise forms.ValidationError(
                    "The demo model is not built yet; run `make demo` (or `python manage.py demo_setup`)."
                ) from None
            raise forms.ValidationError(str(exc)) from None
        return ref

    def clean_dataset_upload(self):
        upload = self.cleaned_data.get("dataset_upload")
        if upload is None or self.cleaned_data.get("dataset_ref") == DEMO:
            return None  # a file sent along with the demo data is ignored, not checked
        if upload.size > settings.DATA_UPLOAD_MAX_BYTES:
            limit_mib = settings.DATA_UPLOAD_MAX_BYTES / 2**20
            raise forms.ValidationError(
                f"The file is {upload.size / 2**20:.1f} MiB; the limit is {limit_mib:.0f} MiB. "
                "Upload a sample of it: a few thousand examples per label are plenty."
            )
        raw = upload.read()
        upload.seek(0)
        try:
            examples = parse_task_data(raw, upload.name, require_labels=True)
            self.data_labels = split_examples(examples).labels
        except DataError as exc:
            raise forms.ValidationError(str(exc)) from None
        return upload

    def clean(self):
        data = super().clean()
        if (
            data.get("dataset_ref") == UPLOAD
            and not data.get("dataset_upload")
            and "dataset_upload" not in self.errors
        ):
            self.add_error("dataset_upload", "Choose a CSV or JSONL file to upload, or pick the demo data.")
        if data.get("dataset_ref") == DEMO:
            try:
                self.data_labels = list(demo_labels())
            except DataError as exc:
                self.add_error("dataset_ref", str(exc))
        self._clean_labels(data)
        hardware = data.get("hardware")
        if hardware and data.get("currency") and hardware.currency != data["currency"]:
            self.add_error(
                "currency",
                f"{hardware.name} is priced in {hardware.currency}; choose {hardware.currency} or another hardware profile.",
            )
        if hardware:
            self._clean_pipelines(data, hardware.device_kind)
        return data

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

    def _clean_pipelines(self, data: dict, device: str) -> None:
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
                cleaned = registry.validate_pipeline(
                    raw, device=device, task=PocRequest.Task.SEQUENCE_CLASSIFICATION
                )
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


DEFAULTS = {
    "p95_target_ms": Decimal("50"),
    "accuracy_floor_pct": Decimal("97"),
    "requests_per_day": 2_000_000,
    "peak_factor": Decimal("2"),
    "target_utilisation": Decimal("0.7"),
    "horizon_months": 12,
    "engineering_hours": Decimal("40"),
    "engineering_rate": Decimal("100"),
    "currency": "USD",
}
