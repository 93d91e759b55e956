"""The pre-flight estimate as JSON for the request form's script (planner/static/planner/estimate.js):
the model's size and FLOPs, and the roofline latency and cost of the baseline and each candidate family
on the chosen hardware, ranked. Reads config.json only (no torch)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django import forms
from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from planner import estimates, permissions, preflight
from planner.forms import CLASSIFICATION, DEFAULTS, resolve_model_dir
from planner.models import HardwareProfile, PocRequest

TRAFFIC_FIELDS = (
    "requests_per_day",
    "peak_factor",
    "target_utilisation",
    "horizon_months",
    "engineering_hours",
    "engineering_rate",
    "p95_target_ms",
)


def _number(request: HttpRequest, name: str) -> float:
    try:
        value = Decimal(request.GET.get(name) or DEFAULTS[name])
    except (InvalidOperation, ValueError):
        value = Decimal(DEFAULTS[name])
    return float(value) if value.is_finite() and value > 0 else float(DEFAULTS[name])


@require_GET
def request_estimate(request: HttpRequest) -> JsonResponse:
    """?model_ref=&task=&hardware=<pk> and, optionally, the form's traffic fields.

    The form's live preview: a state of the form that allows no estimate (no hardware chosen yet, a model
    without a readable config) is an answer, not a failed request, so it comes with status 200 and an
    ``error`` saying what is missing."""
    permissions.require_filing(request.user)
    task = request.GET.get("task") or CLASSIFICATION
    if task not in PocRequest.Task.values:
        return JsonResponse({"error": _("Choose a task.")})
    raw = request.GET.get("hardware") or ""
    hardware = HardwareProfile.objects.filter(pk=int(raw)).first() if raw.isdigit() else None
    if hardware is None:
        return JsonResponse({"error": _("Choose the serving hardware to see an estimate.")})
    peaks = estimates.peaks_for(hardware)
    if peaks is None:
        return JsonResponse(
            {"error": _("No estimate: this hardware profile has no peak compute and memory bandwidth.")}
        )
    try:
        model_dir = resolve_model_dir(request.GET.get("model_ref") or "demo", task)
    except forms.ValidationError as exc:
        return JsonResponse({"error": " ".join(exc.messages)})
    config = estimates.model_config(model_dir)
    if config is None:
        return JsonResponse({"error": _("No estimate: the model's config.json cannot be read.")})
    n = {name: _number(request, name) for name in TRAFFIC_FIELDS}
    traffic = preflight.Traffic(
        requests_per_day=n["requests_per_day"],
        peak_factor=n["peak_factor"],
        utilisation=min(1.0, n["target_utilisation"]),
        price_per_hour=float(hardware.price_per_hour),
        horizon_months=int(n["horizon_months"]),
        one_time=n["engineering_hours"] * n["engineering_rate"],
        p95_target_ms=n["p95_target_ms"],
    )
    tokens = estimates.demo_tokens(task)
    rows = estimates.ranked(config=config, task=task, peaks=peaks, traffic=traffic, tokens=tokens)
    return JsonResponse(
        {**estimates.as_json(rows, peaks=peaks, tokens=tokens), "currency": hardware.currency}
    )
