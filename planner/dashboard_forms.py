"""Forms of the dashboards: the what-if controls and the portfolio filters. Both are GET forms, so a
scenario or a filtered view is a link a manager can forward."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from planner import roi
from planner.dashboard.request import economics_for, economics_with_overrides
from planner.forms import declared
from planner.models import MAX_OUTPUT_TOKENS, PocRequest, PocRequestSummary
from planner.task_kinds import TASK_KINDS, task_kind


class WhatIfForm(forms.Form):
    """Changes to a request's economics. Empty means the request's own figure; the bounds are the request
    form's, and roi.Economics checks the combination again."""

    requests_per_day = forms.IntegerField(label=_("Requests per day"), min_value=0, max_value=10**12)
    peak_factor = forms.DecimalField(
        label=_("Peak factor"), min_value=1, max_value=100, max_digits=6, decimal_places=2
    )
    target_utilisation = forms.DecimalField(
        label=_("Target utilisation (0–1)"),
        min_value=Decimal("0.05"),
        max_value=1,
        max_digits=4,
        decimal_places=2,
    )
    price_per_hour = forms.DecimalField(
        label=_("Hardware price per hour"), min_value=0, max_digits=12, decimal_places=4
    )
    horizon_months = forms.IntegerField(label=_("Horizon (months)"), min_value=1, max_value=120)
    engineering_hours = forms.DecimalField(
        label=_("Engineering hours"), min_value=0, max_value=100_000, max_digits=8, decimal_places=1
    )
    engineering_rate = forms.DecimalField(
        label=_("Engineering rate per hour"),
        min_value=0,
        max_value=1_000_000,
        max_digits=10,
        decimal_places=2,
    )
    grid_kg_co2_per_kwh = forms.DecimalField(
        label=_("Grid intensity (kg CO₂/kWh)"), min_value=0, max_value=5, max_digits=6, decimal_places=4
    )
    # The recurring cost of a compressed model (roi.maintenance).
    maintenance_hours_per_month = forms.DecimalField(
        label=_("Maintenance hours per month"), min_value=0, max_value=10_000, max_digits=7, decimal_places=1
    )
    teacher_updates_per_year = forms.IntegerField(
        label=_("Teacher updates per year"), min_value=0, max_value=365
    )
    # A task's own figures (TaskKind.whatif_fields): text generation's.
    per_token_target_ms = forms.DecimalField(
        label=_("Per-token latency target, p95 (ms)"),
        min_value=Decimal("0.1"),
        max_value=60_000,
        max_digits=10,
        decimal_places=2,
    )
    output_tokens_per_request = forms.IntegerField(
        label=_("Output tokens per request"), min_value=1, max_value=MAX_OUTPUT_TOKENS
    )

    def __init__(self, data: Any = None, *, poc_request: PocRequest) -> None:
        # Bound only when the query string carries a what-if figure (other parameters, such as a page
        # number, are not a scenario).
        if data is not None and not any(data.get(name) for name in self.base_fields):
            data = None
        super().__init__(data)
        self.poc_request = poc_request
        self.economics: roi.Economics | None = None
        current = economics_for(poc_request)
        for name, field in self.fields.items():
            field.required = False
            value = getattr(current, name)
            # "2", not "2.00" or Decimal("1E+2").normalize()'s "1E+2": what a person would type.
            field.initial = f"{value.normalize():f}" if isinstance(value, Decimal) else value
            field.widget.attrs.update({"inputmode": "decimal", "step": "any"})
        if current.power_watts is None:
            del self.fields["grid_kg_co2_per_kwh"]  # no power figure, so no CO₂ to recompute
        own = task_kind(poc_request.task).whatif_fields
        for name in {n for kind in TASK_KINDS.values() for n in kind.whatif_fields} - set(own):
            del self.fields[name]  # another task's figure

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.cleaned_data.items() if v is not None}

    def clean(self) -> dict[str, Any] | None:
        data = super().clean()
        if not self.errors:
            try:
                self.economics = economics_with_overrides(
                    poc_request=self.poc_request, overrides=self.overrides()
                )
            except ValueError as exc:
                raise forms.ValidationError(
                    _("These figures cannot be combined: %(error)s"), params={"error": exc}
                ) from None
        return data


OUTCOME_CHOICES = [
    ("", _("Any recommendation")),
    *PocRequestSummary.Outcome.choices,
    ("pending", _("No recommendation (running or failed)")),
]


class PortfolioFilterForm(forms.Form):
    status = forms.ChoiceField(
        label=_("Status"), required=False, choices=[("", _("Any status")), *PocRequest.Status.choices]
    )
    owner = forms.TypedChoiceField(label=_("Owner"), required=False, coerce=int, empty_value=None)
    outcome = forms.ChoiceField(label=_("Recommendation"), required=False, choices=OUTCOME_CHOICES)

    def __init__(self, data: Any = None, *, owners: Any) -> None:
        super().__init__(data)
        declared(self, "owner", forms.TypedChoiceField).choices = [("", _("Anyone"))] + [
            (u.pk, u.get_username()) for u in owners
        ]

    def filters(self) -> dict[str, Any]:
        """Valid filters only: a bad value (an owner the user may not see) is ignored, with its error."""
        if not self.is_bound:
            return {}
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        return {
            "status": data.get("status") or "",
            "owner_id": data.get("owner"),
            "outcome": data.get("outcome") or "",
        }
