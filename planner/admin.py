from django.contrib import admin

from planner.models import Candidate, HardwareProfile, PocRequest


@admin.register(HardwareProfile)
class HardwareProfileAdmin(admin.ModelAdmin):
    list_display = ["name", "device_kind", "price_per_hour", "currency", "power_watts"]
    list_editable = ["price_per_hour", "power_watts"]


class CandidateInline(admin.TabularInline):
    model = Candidate
    extra = 0
    fields = ["position", "pipeline", "status", "accuracy", "size_bytes", "error"]
    readonly_fields = fields


@admin.register(PocRequest)
class PocRequestAdmin(admin.ModelAdmin):
    list_display = ["title", "owner", "status", "progress", "hardware", "created_at"]
    list_filter = ["status", "hardware"]
    search_fields = ["title", "owner__username"]
    list_select_related = ["owner", "hardware"]
    readonly_fields = [
        "status",
        "progress",
        "progress_message",
        "error",
        "attempts",
        "started_at",
        "finished_at",
    ]
    inlines = [CandidateInline]


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "accuracy", "size_bytes", "measured_at"]
    list_filter = ["status"]
    list_select_related = ["request"]
