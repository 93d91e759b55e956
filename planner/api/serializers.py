"""What the API shows of the rows, and the inputs it takes (the request body of a filing is validated by
planner.forms.PocRequestForm; RequestCreateSerializer only describes it for the schema, its fields derived
from the form's, so a field added to the form is in the API's schema too)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import FieldDoesNotExist
from django.core.validators import MaxValueValidator, MinValueValidator
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from planner.forms import DEFAULTS, PocRequestForm
from planner.models import Candidate, HardwareProfile, PocRequest, PocRequestSummary


class HardwareSerializer(serializers.ModelSerializer):
    class Meta:
        model = HardwareProfile
        fields = ["id", "name", "device_kind", "price_per_hour", "currency", "power_watts", "notes"]


class SummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = PocRequestSummary
        fields = [
            "outcome",
            "candidate",
            "candidate_label",
            "baseline_monthly_cost",
            "monthly_cost",
            "monthly_savings",
            "one_time_cost",
            "payback_months",
            "roi",
            "blocking",
            "computed_at",
        ]


def _candidate_links(candidate: Candidate, request: Any) -> dict[str, str | None]:
    args = [candidate.request_id, candidate.pk]
    measured = candidate.status == Candidate.Status.MEASURED and bool(candidate.artifact_path)
    return {
        "self": request.build_absolute_uri(reverse("api:candidate-detail", args=args)),
        "page": request.build_absolute_uri(reverse("planner:candidate-measurement", args=args)),
        "download": request.build_absolute_uri(reverse("api:candidate-download", args=args))
        if measured
        else None,
    }


class LinksField(serializers.DictField):
    child = serializers.CharField(allow_null=True)


class CandidateBriefSerializer(serializers.ModelSerializer):
    # A declared field, moved off the class by the serializer metaclass: it does not replace Field.label
    # (the field's own label) at run time, as the stubs assume.
    label = serializers.CharField(read_only=True)  # type: ignore[assignment]
    links = serializers.SerializerMethodField()

    class Meta:
        model = Candidate
        fields = ["id", "position", "label", "pipeline", "status", "error", "measured_at", "links"]

    @extend_schema_field(LinksField)
    def get_links(self, candidate: Candidate) -> dict[str, str | None]:
        return _candidate_links(candidate, self.context["request"])


class LatencyPointSerializer(serializers.Serializer):
    """One batch size of the sweep as stored (workers.record.LatencyPoint): percentiles, each *_low_ms /
    *_high_ms pair the bootstrap interval of the figure before it, sample counts and stability."""

    batch_size = serializers.IntegerField()
    p50_ms = serializers.FloatField()
    p95_ms = serializers.FloatField(allow_null=True)
    p99_ms = serializers.FloatField(allow_null=True)
    p50_low_ms = serializers.FloatField(allow_null=True, required=False)
    p50_high_ms = serializers.FloatField(allow_null=True, required=False)
    p95_low_ms = serializers.FloatField(allow_null=True, required=False)
    p95_high_ms = serializers.FloatField(allow_null=True, required=False)
    iterations = serializers.IntegerField()
    throughput_rps = serializers.FloatField()
    speedup = serializers.FloatField(allow_null=True, required=False)
    speedup_low = serializers.FloatField(allow_null=True, required=False)
    speedup_high = serializers.FloatField(allow_null=True, required=False)
    unstable = serializers.CharField(allow_null=True, required=False)


class CandidateSerializer(CandidateBriefSerializer):
    latency = serializers.SerializerMethodField()

    class Meta(CandidateBriefSerializer.Meta):
        fields = CandidateBriefSerializer.Meta.fields + [
            "accuracy",
            "macro_f1",
            "perplexity",
            "exact_match",
            "latency",
            "size_bytes",
            "parameters",
            "nonzero_parameters",
            "peak_memory_bytes",
            "produce_seconds",
            "device_hours",
            "environment",
            "notes",
        ]

    @extend_schema_field(LatencyPointSerializer(many=True))
    def get_latency(self, candidate: Candidate) -> list[dict[str, Any]]:
        return candidate.latency  # every stored field, intervals included


#: The columns of a request that its filing sets, in the request form's order: a request shows each as filed.
FILED = [
    name
    for name in PocRequestForm.Meta.fields
    if name in {field.name for field in PocRequest._meta.concrete_fields}
]


class PocRequestListSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    team = serializers.CharField(source="team.name", read_only=True)
    hardware = HardwareSerializer(read_only=True)
    summary = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta:
        model = PocRequest
        fields = [
            "id",
            "title",
            "task",
            "owner",
            "team",
            "status",
            "progress",
            "progress_message",
            "error",
            *[name for name in FILED if name not in ("title", "task")],
            "rerun_of",
            "decision",
            "decision_comment",
            "decided_at",
            "created_at",
            "started_at",
            "finished_at",
            "summary",
            "links",
        ]

    @extend_schema_field(SummarySerializer(allow_null=True))
    def get_summary(self, poc_request: PocRequest) -> dict[str, Any] | None:
        summary = getattr(poc_request, "summary", None)
        return SummarySerializer(summary).data if summary else None

    @extend_schema_field(LinksField)
    def get_links(self, poc_request: PocRequest) -> dict[str, str]:
        request, pk = self.context["request"], poc_request.pk
        return {
            "self": request.build_absolute_uri(reverse("api:request-detail", args=[pk])),
            "page": request.build_absolute_uri(reverse("planner:request-detail", args=[pk])),
            "candidates": request.build_absolute_uri(reverse("api:candidate-list", args=[pk])),
        }


class PocRequestSerializer(PocRequestListSerializer):
    candidates = CandidateBriefSerializer(many=True, read_only=True)

    class Meta(PocRequestListSerializer.Meta):
        fields = PocRequestListSerializer.Meta.fields + ["candidates"]


def _bounds(field: forms.Field, name: str, decimal: bool) -> dict[str, Any]:
    """The tightest bounds the form holds a number to: its field's and, for a field of the model, the model
    field's (a ModelForm runs those too)."""
    try:
        validators = [*field.validators, *getattr(PocRequest._meta.get_field(name), "validators", [])]
    except FieldDoesNotExist:  # a field of the form only
        validators = list(field.validators)
    kind = Decimal if decimal else int
    lows = [
        v.limit_value for v in validators if isinstance(v, MinValueValidator) and not callable(v.limit_value)
    ]
    highs = [
        v.limit_value for v in validators if isinstance(v, MaxValueValidator) and not callable(v.limit_value)
    ]
    bounds: dict[str, Any] = {}
    if lows:
        bounds["min_value"] = kind(str(max(lows)))
    if highs:
        bounds["max_value"] = kind(str(min(highs)))
    return bounds


def api_field(form: forms.BaseForm, name: str) -> serializers.Field:
    """The form's field ``name`` as the API takes it: its type, choices, bounds, label and help text; required
    when the form requires it and the API fills in no default (planner.api.filing)."""
    field = form.fields[name]
    common: dict[str, Any] = {
        "required": field.required and DEFAULTS.get(name) is None,
        "label": str(field.label) if field.label else None,
        "help_text": str(field.help_text) or None,
    }
    if isinstance(field, forms.ModelChoiceField):  # before ChoiceField: its choices would query the rows
        return serializers.IntegerField(**common)
    if isinstance(field, forms.ChoiceField):
        offered: Any = field.choices
        choices = [(value, str(label)) for value, label in offered if value != ""]  # "": left out
        if isinstance(field, forms.MultipleChoiceField):
            return serializers.ListField(child=serializers.ChoiceField(choices=choices), **common)
        return serializers.ChoiceField(choices=choices, allow_blank=not field.required, **common)
    if isinstance(field, forms.FileField):
        return serializers.FileField(**common)
    if isinstance(field, forms.DecimalField):
        return serializers.DecimalField(
            max_digits=field.max_digits,
            decimal_places=field.decimal_places,
            **_bounds(field, name, True),
            **common,
        )
    if isinstance(field, forms.IntegerField):
        return serializers.IntegerField(**_bounds(field, name, False), **common)
    if isinstance(field, forms.BooleanField):
        return serializers.BooleanField(**common)
    common["max_length"] = getattr(field, "max_length", None)
    return serializers.CharField(allow_blank=not field.required, **common)


class StepSerializer(serializers.Serializer):
    technique = serializers.CharField()
    params = serializers.DictField(required=False)


class RequestCreateSerializer(serializers.Serializer):
    """Everything the request form takes: each field of ``PocRequestForm.Meta.fields`` as the form declares
    it (``api_field``), where the API says it otherwise the field declared here, then what only the API takes.
    Left out, a target or a cost takes the form's default, a currency the hardware's; ``params`` sets
    techniques' parameters for every step that uses them, ``pipelines`` adds candidates with their own
    parameters (like the form's "More pipelines")."""

    team = serializers.IntegerField(required=False, help_text="Needed when you are in several teams.")
    # The form offers this server's folders as choices; the API takes a name, which the form checks.
    model_ref = serializers.CharField(
        required=False, help_text='model_source=local: "demo" or a folder under MODELS_ROOT.'
    )
    hardware = serializers.IntegerField(help_text="A hardware profile's id (GET /api/v1/hardware/).")
    pipelines = serializers.ListField(child=StepSerializer(many=True), required=False)
    params = serializers.DictField(child=serializers.DictField(), required=False)

    def get_fields(self) -> dict[str, serializers.Field]:
        declared = super().get_fields()
        form = PocRequestForm()
        fields = {}
        for name in PocRequestForm.Meta.fields:
            fields[name] = declared.pop(name) if name in declared else api_field(form, name)
            if name == "title":  # where the form adds its team field, for a user in several teams
                fields["team"] = declared.pop("team")
        return {**fields, **declared}


class DecisionSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=PocRequest.Decision.choices)
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class ParamSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    default = serializers.JSONField(allow_null=True)
    help = serializers.CharField()
    minimum = serializers.FloatField(allow_null=True)
    maximum = serializers.FloatField(allow_null=True)
    choices = serializers.ListField(child=serializers.JSONField(), allow_null=True)


class TechniqueSerializer(serializers.Serializer):
    name = serializers.CharField()
    title = serializers.CharField()
    family = serializers.CharField()
    version = serializers.CharField()
    description = serializers.CharField()
    devices = serializers.ListField(child=serializers.CharField())
    tasks = serializers.ListField(child=serializers.CharField())
    params = ParamSerializer(many=True)


class PortfolioTotalSerializer(serializers.Serializer):
    currency = serializers.CharField()
    requests = serializers.IntegerField()
    switching = serializers.IntegerField()
    baseline_monthly_cost = serializers.DecimalField(max_digits=26, decimal_places=6)
    monthly_cost = serializers.DecimalField(max_digits=26, decimal_places=6)
    monthly_savings = serializers.DecimalField(max_digits=26, decimal_places=6)
    one_time_cost = serializers.DecimalField(max_digits=26, decimal_places=6)
    payback_months = serializers.DecimalField(max_digits=26, decimal_places=6, allow_null=True)


class RequestFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=PocRequest.Status.choices, required=False)
    task = serializers.ChoiceField(choices=PocRequest.Task.choices, required=False)
    outcome = serializers.ChoiceField(
        choices=[*PocRequestSummary.Outcome.choices, ("pending", "pending")], required=False
    )
    owner = serializers.IntegerField(required=False, help_text="A user's id.")
    team = serializers.IntegerField(required=False, help_text="A team's id.")
