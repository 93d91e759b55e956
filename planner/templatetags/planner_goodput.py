"""The serving scenario's sentences for the templates (planner.dashboard.wording words them)."""

from __future__ import annotations

from django import template

from planner import roi
from planner.dashboard import wording

register = template.Library()


@register.filter
def capacity_sentence(row: roi.ModelEconomics | None) -> str:
    """ "sustains 412 req/s per replica with 95% of requests under 20 ms (…)"; "" for a static capacity."""
    return (wording.capacity_sentence(row) or "") if row is not None else ""


@register.filter
def static_capacity_note(row: roi.ModelEconomics | None) -> str:
    return (wording.static_capacity_note(row) or "") if row is not None else ""
