"""The review page's forms: one month's actual figures, and a CSV of months."""

from __future__ import annotations

from datetime import date
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from planner.reviews.actuals_csv import MAX_REQUESTS, ActualRow, check_actual, parse_month


class ActualForm(forms.Form):
    month = forms.CharField(label=_("Month"), max_length=10, help_text=_("As 2025-03."))
    requests = forms.IntegerField(label=_("Requests served"), min_value=0, max_value=MAX_REQUESTS)
    serving_cost = forms.DecimalField(label=_("Serving bill"), min_value=0, max_digits=16, decimal_places=2)

    def clean_month(self) -> date:
        month = parse_month(self.cleaned_data["month"])
        if month is None:
            raise forms.ValidationError(_("Write the month as 2025-03."))
        return month

    def clean(self) -> dict[str, Any] | None:
        data = super().clean()
        if not self.errors and data is not None:
            for error in check_actual(data["month"], data["requests"], data["serving_cost"]):
                self.add_error(None, error)
        return data

    def row(self) -> ActualRow:
        data = self.cleaned_data
        return ActualRow(data["month"], data["requests"], data["serving_cost"])


class ActualsImportForm(forms.Form):
    file = forms.FileField(
        label=_("CSV file"),
        help_text=_("Columns month, requests, serving_cost; one line per month (month as 2025-03)."),
    )

    MAX_BYTES = 1_000_000

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > self.MAX_BYTES:
            raise forms.ValidationError(_("The file is over 1 MB: one line per month is far less."))
        return upload
