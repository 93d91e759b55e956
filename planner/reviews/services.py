"""Writes after the decision: the frozen prediction of an approved switch, its monthly actual figures (a
form, the API or a CSV), the shortfall flag, the nightly re-evaluation under current hardware prices, and
the re-runs of a PoC (on its schedule, or when its model files changed)."""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, overload

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from planner import roi
from planner.models import (
    Candidate,
    MonthlyActual,
    PocRequest,
    RecommendationChange,
    RecommendationWatch,
    SwitchPrediction,
)
from planner.reviews.actuals_csv import ActualRow, parse_actuals
from planner.reviews.figures import Review, review_figures
from planner.reviews.fingerprint import model_fingerprint_for

logger = logging.getLogger(__name__)
PLACES = Decimal("0.000001")  # as PocRequestSummary: far below a cent
RERUN_EVERY = {PocRequest.RerunSchedule.MONTHLY: 30, PocRequest.RerunSchedule.QUARTERLY: 91}  # days


@overload
def _stored(value: Decimal) -> Decimal: ...
@overload
def _stored(value: Decimal | None) -> Decimal | None: ...
def _stored(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(PLACES, rounding=ROUND_HALF_UP)


def _report(poc_request: PocRequest) -> roi.RoiReport | None:
    from planner.dashboard.request import poc_request_roi

    return poc_request_roi(poc_request=poc_request)


# ---------------------------------------------------------------------------------------------------------
# The review of an approved switch


def prediction_freeze(*, poc_request: PocRequest) -> SwitchPrediction | None:
    """Freeze what the approved switch is predicted to save under today's economics (replacing an earlier
    freeze of the same request). None when the recommendation is not a switch with a savings figure."""
    report = _report(poc_request)
    rec = report.recommendation if report else None
    if report is None or rec is None or rec.outcome != roi.SWITCH or rec.key is None:
        return None
    row, base = report.row(rec.key), report.baseline
    if (
        row.monthly_cost is None
        or row.monthly_savings is None
        or row.one_time_cost is None
        or base.monthly_cost is None
    ):
        return None  # the current model cannot serve within its target: nothing to compare bills with
    now = timezone.now()
    prediction = SwitchPrediction(
        request=poc_request,
        candidate_id=int(rec.key),
        candidate_label=rec.name or "",
        currency=poc_request.currency,
        price_per_hour=report.economics.price_per_hour,
        requests_per_day=poc_request.requests_per_day,
        baseline_monthly_cost=_stored(base.monthly_cost),
        monthly_cost=_stored(row.monthly_cost),
        monthly_maintenance=_stored(row.monthly_maintenance) or Decimal(0),
        monthly_savings=_stored(row.monthly_savings),
        one_time_cost=_stored(row.one_time_cost),
        payback_months=_stored(row.payback_months),
        horizon_months=poc_request.horizon_months,
        approved_at=now,
    )
    prediction.full_clean(exclude=["request", "candidate"], validate_unique=False)
    prediction.save()
    _watch_save(poc_request, rec, report.economics.price_per_hour, now)
    return prediction


def review_for(*, poc_request: PocRequest) -> Review | None:
    """The review of the request's approved switch; None when it has none."""
    prediction = getattr(poc_request, "prediction", None)  # the reverse one-to-one: None when none
    if prediction is None or poc_request.decision != PocRequest.Decision.APPROVED:
        return None
    return review_figures(
        prediction=prediction,
        actuals=list(poc_request.actuals.all()),
        shortfall_share=settings.REVIEW_SHORTFALL_SHARE,
    )


def actuals_save(*, poc_request: PocRequest, user: Any, rows: list[ActualRow]) -> Review | None:
    """Record months of actual figures (a month entered again replaces the earlier figures), then flag the
    request or clear its flag. The caller checks that the user may (reviews.access)."""
    with transaction.atomic():
        for row in rows:
            actual = MonthlyActual.objects.filter(
                request=poc_request, month=row.month
            ).first() or MonthlyActual(request=poc_request, month=row.month)
            actual.requests, actual.serving_cost, actual.entered_by = row.requests, row.serving_cost, user
            actual.full_clean(exclude=["request", "entered_by"], validate_unique=False)
            actual.save()
    return review_shortfall_update(poc_request=poc_request)


def actuals_import(*, poc_request: PocRequest, user: Any, raw: bytes) -> Review | None:
    """A CSV of months (ActualsFileError, nothing saved, when any line is bad)."""
    return actuals_save(poc_request=poc_request, user=user, rows=parse_actuals(raw))


def review_shortfall_update(*, poc_request: PocRequest) -> Review | None:
    """Flag the approved switch while its actual savings fall short of the prediction (clear it once not)."""
    poc_request = PocRequest.objects.select_related("prediction").get(pk=poc_request.pk)
    review = review_for(poc_request=poc_request)
    if review is None:
        return None
    prediction = review.prediction
    flagged = prediction.shortfall_at is not None
    if review.shortfall != flagged:
        prediction.shortfall_at = timezone.now() if review.shortfall else None
        prediction.save(update_fields=["shortfall_at"])
    return review


# ---------------------------------------------------------------------------------------------------------
# Nightly: the recommendation under today's prices, and the re-runs due


def _watch_save(poc_request: PocRequest, rec: roi.Recommendation, price: Decimal, now: datetime) -> None:
    RecommendationWatch.objects.update_or_create(
        request=poc_request,
        defaults={
            "outcome": rec.outcome,
            "candidate_label": rec.name or "",
            "price_per_hour": price,
            "evaluated_at": now,
        },
    )


def watched_requests() -> Any:
    """What the nightly job re-evaluates: finished requests not rejected (open or approved)."""
    return (
        PocRequest.objects.filter(status=PocRequest.Status.SUCCEEDED)
        .exclude(decision=PocRequest.Decision.REJECTED)
        .select_related("hardware", "watch")
        .prefetch_related("candidates")
        .order_by("pk")
    )


def requests_reevaluate(*, now: datetime | None = None) -> list[RecommendationChange]:
    """Recompute every watched request's economics with its hardware's price today. A recommendation that
    differs from the one last seen is recorded with both outcomes and the price change; a request seen
    for the first time is only remembered. The portfolio summaries are rebuilt too."""
    from planner.services import poc_request_summaries_refresh

    now = now or timezone.now()
    changes, seen = [], []
    for poc_request in watched_requests().iterator(chunk_size=200):
        report = _report(poc_request)
        if report is None:
            continue
        seen.append(poc_request.pk)
        rec, price = report.recommendation, poc_request.hardware.price_per_hour
        watch = getattr(poc_request, "watch", None)
        if watch is not None and (watch.outcome, watch.candidate_label) != (rec.outcome, rec.name or ""):
            chosen = report.row(rec.key) if rec.key else None
            changes.append(
                RecommendationChange.objects.create(
                    request=poc_request,
                    detected_at=now,
                    previous_outcome=watch.outcome,
                    previous_candidate=watch.candidate_label,
                    new_outcome=rec.outcome,
                    new_candidate=rec.name or "",
                    hardware_name=poc_request.hardware.name,
                    previous_price=watch.price_per_hour,
                    new_price=price,
                    new_payback_months=_stored(chosen.payback_months) if chosen else None,
                )
            )
        _watch_save(poc_request, rec, price, now)
    poc_request_summaries_refresh(request_ids=seen)
    return changes


def _latest_runs() -> Any:
    """Finished requests (not rejected) that have no re-run yet: a chain of re-runs is watched at its end."""
    return (
        PocRequest.objects.filter(status=PocRequest.Status.SUCCEEDED, reruns__isnull=True)
        .exclude(decision=PocRequest.Decision.REJECTED)
        .select_related("hardware", "owner", "team")
        .order_by("pk")
    )


@dataclass
class RerunsDue:
    scheduled: list[PocRequest] = field(default_factory=list)
    model_changed: list[PocRequest] = field(default_factory=list)


def reruns_due(*, now: datetime | None = None) -> RerunsDue:
    """The requests whose PoC should run again: their schedule came round, or their model's files changed
    since they were measured (a request filed before fingerprints gets one now, and no re-run)."""
    now = now or timezone.now()
    due = RerunsDue()
    for poc_request in _latest_runs().iterator(chunk_size=200):
        every = RERUN_EVERY.get(poc_request.rerun_schedule)
        measured_at = poc_request.finished_at or poc_request.created_at
        current = model_fingerprint_for(poc_request)
        if every is not None and measured_at + timedelta(days=every) <= now:
            due.scheduled.append(poc_request)
        elif current and poc_request.model_fingerprint and current != poc_request.model_fingerprint:
            due.model_changed.append(poc_request)
        elif current and not poc_request.model_fingerprint:
            PocRequest.objects.filter(pk=poc_request.pk).update(model_fingerprint=current)
    return due


def poc_request_rerun(*, poc_request: PocRequest) -> PocRequest:
    """File the same PoC again (same model reference, data, targets, economics and pipelines) as a new
    request linked to this one (``rerun_of``); both are kept."""
    from planner.model_sources import archive_dir
    from planner.services import poc_request_create

    old = poc_request
    names = ["title", "task", "model_ref", "model_source", "model_revision", "dataset_ref", "p95_target_ms"]
    names += ["per_token_target_ms", "output_tokens_per_request", "perplexity_increase_pct"]
    names += ["accuracy_floor_pct", "requests_per_day", "peak_factor", "target_utilisation", "hardware"]
    names += ["serving_runtime", "horizon_months", "engineering_hours", "engineering_rate", "currency"]
    names += ["maintenance_hours_per_month", "teacher_updates_per_year", "rerun_schedule", "team"]
    kwargs: dict[str, Any] = {name: getattr(old, name) for name in names}
    pipelines = [c.pipeline for c in Candidate.objects.filter(request=old).order_by("position") if c.pipeline]
    stage = None
    if old.model_source == PocRequest.ModelSource.ARCHIVE:
        stage = settings.MODEL_ARCHIVES_ROOT / f"staging-{uuid.uuid4().hex}"
        shutil.copytree(archive_dir(old.pk), stage)
    handle = old.dataset_file.open("rb") if old.dataset_ref == "upload" and old.dataset_file else None
    try:
        dataset = File(handle, name=old.dataset_file.name.rsplit("/", 1)[-1]) if handle else None
        with transaction.atomic():
            new = poc_request_create(
                owner=old.owner, pipelines=pipelines, dataset_file=dataset, model_archive_dir=stage, **kwargs
            )
            PocRequest.objects.filter(pk=new.pk).update(rerun_of=old)
    finally:
        if handle is not None:
            handle.close()
    new.rerun_of = old
    return new


def nightly_review(*, now: datetime | None = None) -> dict[str, int]:
    """The nightly job (workers.schedule): re-evaluate under today's prices, then file the re-runs due.
    A re-run that cannot be filed (its model or data is gone) is logged and the others go on."""
    now = now or timezone.now()
    changes = requests_reevaluate(now=now)
    due = reruns_due(now=now)
    filed = 0
    for poc_request in due.scheduled + due.model_changed:
        try:
            poc_request_rerun(poc_request=poc_request)
            filed += 1
        except Exception:
            logger.exception("Could not re-run PoC request %s", poc_request.pk)
    return {"changed": len(changes), "reruns": filed}
