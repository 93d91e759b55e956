"""Reads. Views call these; each returns what a page needs in a bounded number of queries."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from planner import roi
from planner.models import Candidate, PocRequest


def poc_request_list_for_user(*, user: Any) -> QuerySet[PocRequest]:
    qs = PocRequest.objects.select_related("hardware", "owner")
    return qs if user.is_staff else qs.filter(owner=user)


def poc_request_get_for_user(*, user: Any, pk: int) -> PocRequest:
    """The request with its candidates; 404 (DoesNotExist) when the user may not see it."""
    return poc_request_list_for_user(user=user).prefetch_related("candidates").get(pk=pk)


def economics_for(poc_request: PocRequest) -> roi.Economics:
    hardware = poc_request.hardware
    return roi.Economics(
        requests_per_day=Decimal(poc_request.requests_per_day),
        price_per_hour=hardware.price_per_hour,
        p95_target_ms=poc_request.p95_target_ms,
        accuracy_floor_pct_of_baseline=poc_request.accuracy_floor_pct,
        peak_factor=poc_request.peak_factor,
        target_utilisation=poc_request.target_utilisation,
        horizon_months=poc_request.horizon_months,
        engineering_hours=poc_request.engineering_hours,
        engineering_rate=poc_request.engineering_rate,
        power_watts=Decimal(hardware.power_watts) if hardware.power_watts else None,
    )


def measurement_for(candidate: Candidate) -> roi.ModelMeasurement:
    return roi.ModelMeasurement(
        key=str(candidate.pk),
        name=candidate.label,
        is_baseline=candidate.is_baseline,
        accuracy=candidate.accuracy or 0.0,
        latency=[
            roi.LatencyPoint(p["batch_size"], p["p50_ms"], p["p95_ms"], p["p99_ms"])
            for p in candidate.latency
        ],
        device_hours=candidate.device_hours or 0.0,
    )


def poc_request_roi(*, poc_request: PocRequest) -> roi.RoiReport | None:
    """The ROI report over the measured candidates, or None until the baseline is measured."""
    measured = [c for c in poc_request.candidates.all() if c.status == Candidate.Status.MEASURED]
    if not any(c.is_baseline for c in measured):
        return None
    return roi.evaluate([measurement_for(c) for c in measured], economics_for(poc_request))


NOT_FASTER_BELOW = 1.05  # a speedup under 5% is within run-to-run noise: not faster


def candidate_comparisons(*, poc_request: PocRequest) -> dict[int, dict[str, Any]]:
    """Per measured candidate: p95 speedup at batch 1 and size ratio against the baseline, and a verdict
    when it is not faster ("smaller but not faster", "neither smaller nor faster") with the reasons the
    techniques give (unstructured sparsity, weight-only formats, …)."""
    candidates = list(poc_request.candidates.all())
    baseline = next((c for c in candidates if c.is_baseline and c.status == Candidate.Status.MEASURED), None)
    out: dict[int, dict[str, Any]] = {}
    if baseline is None or not baseline.latency_at(1):
        return out
    base_p95 = baseline.latency_at(1)["p95_ms"]
    for c in candidates:
        if c.status != Candidate.Status.MEASURED or c.is_baseline or not c.latency_at(1):
            continue
        speedup = base_p95 / c.latency_at(1)["p95_ms"]
        size_ratio = (baseline.size_bytes or 0) / c.size_bytes if c.size_bytes else None
        verdict = ""
        if speedup < NOT_FASTER_BELOW:
            verdict = "smaller but not faster" if size_ratio and size_ratio >= NOT_FASTER_BELOW else "not faster"
            if size_ratio is not None and size_ratio < NOT_FASTER_BELOW:
                verdict = "neither smaller nor faster"
        out[c.pk] = {
            "speedup": speedup,
            "size_ratio": size_ratio,
            "accuracy_kept": c.accuracy / baseline.accuracy if baseline.accuracy else None,
            "verdict": verdict,
            "reasons": list(c.notes.get("caveats", [])) if verdict else [],
        }
    return out
