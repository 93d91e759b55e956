from django.contrib import admin, messages
from django.db.models import Count

from planner import services
from planner.models import Candidate, HardwareProfile, PocRequest, PocRequestSummary, Team


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    """Teams decide who sees which requests; roles (groups) decide what members may do."""

    list_display = ["name", "member_count"]
    search_fields = ["name", "members__username"]
    filter_horizontal = ["members"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_member_count=Count("members"))

    @admin.display(description="members", ordering="_member_count")
    def member_count(self, obj):
        return obj._member_count


@admin.register(HardwareProfile)
class HardwareProfileAdmin(admin.ModelAdmin):
    list_display = ["name", "device_kind", "price_per_hour", "currency", "power_watts"]
    list_editable = ["price_per_hour", "power_watts"]

    def save_model(self, request, obj, form, change):
        services.hardware_profile_save(hardware=obj)  # recomputes the portfolio figures at the new price


# A request's candidates as the admin shows them: read-only, the workers write them.
CANDIDATE_FIELDS = ("position", "pipeline", "status", "accuracy", "perplexity", "size_bytes", "error")


class CandidateInline(admin.TabularInline):
    model = Candidate
    extra = 0
    fields = CANDIDATE_FIELDS
    readonly_fields = CANDIDATE_FIELDS


@admin.register(PocRequest)
class PocRequestAdmin(admin.ModelAdmin):
    list_display = [
        "title",
        "task",
        "team",
        "owner",
        "status",
        "progress",
        "hardware",
        "decision",
        "created_at",
    ]
    list_filter = ["status", "task", "team", "decision", "hardware"]
    search_fields = ["title", "owner__username", "team__name"]
    list_select_related = ["owner", "hardware", "team"]
    # A decision is made on the request's page, where it records who made it and when.
    readonly_fields = [
        "decision",
        "decision_comment",
        "decided_by",
        "decided_at",
        "status",
        "progress",
        "progress_message",
        "error",
        "attempts",
        "started_at",
        "finished_at",
    ]
    inlines = [CandidateInline]
    actions = ["refresh_summaries"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change:
            services.poc_request_summary_refresh(request_id=obj.pk)  # its economics may have changed

    @admin.action(description="Recompute the portfolio figures of the selected requests")
    def refresh_summaries(self, request, queryset):
        written = services.poc_request_summaries_refresh(request_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"{written} summaries recomputed.", messages.SUCCESS)


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "accuracy", "size_bytes", "measured_at"]
    list_filter = ["status"]
    list_select_related = ["request"]


@admin.register(PocRequestSummary)
class PocRequestSummaryAdmin(admin.ModelAdmin):
    """Derived figures: read-only here; change the request or the hardware and they are recomputed."""

    list_display = [
        "request",
        "outcome",
        "candidate_label",
        "monthly_savings",
        "payback_months",
        "computed_at",
    ]
    list_filter = ["outcome"]
    list_select_related = ["request"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
