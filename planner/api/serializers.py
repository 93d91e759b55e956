"""What the API shows of the rows, and the inputs it takes (the request body of a filing is validated by
planner.forms.PocRequestForm; RequestCreateSerializer only describes it for the schema)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

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
            "model_source",
            "model_ref",
            "model_revision",
            "dataset_ref",
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
            "maintenance_hours_per_month",
            "teacher_updates_per_year",
            "rerun_schedule",
            "rerun_of",
            "currency",
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


class StepSerializer(serializers.Serializer):
    technique = serializers.CharField()
    params = serializers.DictField(required=False)


class RequestCreateSerializer(serializers.Serializer):
    """Everything the request form takes. Left out, a target or a cost takes the form's default, a
    currency the hardware's; ``params`` sets techniques' parameters for every step that uses them,
    ``pipelines`` adds candidates with their own parameters (like the form's "More pipelines")."""

    title = serializers.CharField()
    task = serializers.ChoiceField(choices=PocRequest.Task.choices, required=False)
    team = serializers.IntegerField(required=False, help_text="Needed when you are in several teams.")
    model_source = serializers.ChoiceField(choices=PocRequest.ModelSource.choices, required=False)
    model_ref = serializers.CharField(required=False, help_text='"demo" or a folder under MODELS_ROOT.')
    model_archive = serializers.FileField(required=False, help_text="model_source=archive: a .zip or .tar.")
    hub_model = serializers.CharField(required=False, help_text="model_source=hub: org/name.")
    model_revision = serializers.CharField(required=False, help_text="model_source=hub: a 40-hex commit.")
    dataset_ref = serializers.ChoiceField(choices=["demo", "upload"], required=False)
    dataset_upload = serializers.FileField(required=False)
    p95_target_ms = serializers.DecimalField(max_digits=10, decimal_places=2, required=False)
    per_token_target_ms = serializers.DecimalField(max_digits=10, decimal_places=2, required=False)
    accuracy_floor_pct = serializers.DecimalField(max_digits=5, decimal_places=2, required=False)
    perplexity_increase_pct = serializers.DecimalField(max_digits=6, decimal_places=2, required=False)
    output_tokens_per_request = serializers.IntegerField(required=False)
    requests_per_day = serializers.IntegerField(required=False)
    peak_factor = serializers.DecimalField(max_digits=6, decimal_places=2, required=False)
    target_utilisation = serializers.DecimalField(max_digits=4, decimal_places=2, required=False)
    hardware = serializers.IntegerField(help_text="A hardware profile's id (GET /api/v1/hardware/).")
    horizon_months = serializers.IntegerField(required=False)
    engineering_hours = serializers.DecimalField(max_digits=8, decimal_places=1, required=False)
    engineering_rate = serializers.DecimalField(max_digits=10, decimal_places=2, required=False)
    maintenance_hours_per_month = serializers.DecimalField(max_digits=7, decimal_places=1, required=False)
    teacher_updates_per_year = serializers.IntegerField(required=False)
    rerun_schedule = serializers.ChoiceField(choices=PocRequest.RerunSchedule.choices, required=False)
    currency = serializers.CharField(required=False)
    candidates = serializers.ListField(child=serializers.CharField(), required=False)
    custom_pipelines = serializers.CharField(required=False)
    pipelines = serializers.ListField(child=StepSerializer(many=True), required=False)
    params = serializers.DictField(child=serializers.DictField(), required=False)


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
