"""Writes. Views and tasks call these; nothing else changes PoC rows."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from planner.models import Candidate, HardwareProfile, PocRequest, PocRequestSummary, Team
from plugins import registry

logger = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_S = 1.0


def poc_request_create(
    *,
    owner: Any,
    title: str,
    model_ref: str,
    dataset_ref: str,
    dataset_file: UploadedFile | None = None,
    p95_target_ms: Decimal,
    accuracy_floor_pct: Decimal,
    requests_per_day: int,
    hardware: HardwareProfile,
    team: Team | None = None,
    pipelines: Sequence[Sequence[dict[str, Any]]],
    peak_factor: Decimal = Decimal("2"),
    target_utilisation: Decimal = Decimal("0.7"),
    horizon_months: int = 12,
    engineering_hours: Decimal = Decimal("40"),
    engineering_rate: Decimal = Decimal("100"),
    currency: str | None = None,
    task: str = PocRequest.Task.SEQUENCE_CLASSIFICATION,
) -> PocRequest:
    """File a PoC request with the baseline plus one candidate per pipeline, and queue it on commit."""
    cleaned = [registry.validate_pipeline(p, device=hardware.device_kind, task=task) for p in pipelines]
    with transaction.atomic():
        poc_request = PocRequest(
            owner=owner,
            team=team or team_for_user(user=owner),
            title=title,
            task=task,
            model_ref=model_ref,
            dataset_ref=dataset_ref,
            p95_target_ms=p95_target_ms,
            accuracy_floor_pct=accuracy_floor_pct,
            requests_per_day=requests_per_day,
            peak_factor=peak_factor,
            target_utilisation=target_utilisation,
            hardware=hardware,
            horizon_months=horizon_months,
            engineering_hours=engineering_hours,
            engineering_rate=engineering_rate,
            currency=currency or hardware.currency,
        )
        if dataset_file is not None:
            poc_request.dataset_file.save(Path(dataset_file.name).name, dataset_file, save=False)
        poc_request.full_clean()
        poc_request.save()
        candidates = [Candidate(request=poc_request, position=0, pipeline=[])]
        candidates += [
            Candidate(request=poc_request, position=i, pipeline=p) for i, p in enumerate(cleaned, 1)
        ]
        for candidate in candidates:
            candidate.full_clean(exclude=["request"])
        Candidate.objects.bulk_create(candidates)
        transaction.on_commit(lambda: poc_request_enqueue(poc_request=poc_request))
    return poc_request


def team_for_user(*, user: Any) -> Team:
    """The team a user's requests go to when they do not choose: their first team, else a team of their
    own (created on first use), so a user never sees another team's requests by default."""
    team = user.teams.order_by("name").first()
    if team is None:
        team, _ = Team.objects.get_or_create(name=f"{user.get_username()}'s team")
        team.members.add(user)
    return team


def poc_request_enqueue(*, poc_request: PocRequest) -> None:
    from workers.app import app

    app.send_task("workers.tasks.run_poc", args=[poc_request.pk], queue=poc_request.hardware.queue)
    logger.info("Queued PoC request %s on %s", poc_request.pk, poc_request.hardware.queue)


def model_dir_for(poc_request: PocRequest) -> Path:
    if poc_request.model_ref == "demo":
        return settings.DEMO_MODEL_DIR
    return settings.MODELS_ROOT / poc_request.model_ref


def dataset_for(poc_request: PocRequest) -> str:
    return "demo" if poc_request.dataset_ref == "demo" else poc_request.dataset_file.path


def poc_request_execute(*, request_id: int) -> None:
    """Run (or resume) a PoC: measure every candidate not measured yet, persisting each as it arrives."""
    from workers.measure import MeasureConfig
    from workers.runner import CandidateSpec, PocError, PocSpec, run_poc

    with transaction.atomic():
        poc_request = PocRequest.objects.select_for_update().select_related("hardware").get(pk=request_id)
        if poc_request.status in (PocRequest.Status.SUCCEEDED, PocRequest.Status.FAILED):
            logger.info("PoC request %s is already %s; nothing to do", request_id, poc_request.status)
            return
        poc_request.status = PocRequest.Status.RUNNING
        poc_request.attempts += 1
        poc_request.started_at = poc_request.started_at or timezone.now()
        poc_request.save(update_fields=["status", "attempts", "started_at", "updated_at"])

    todo = list(poc_request.candidates.exclude(status=Candidate.Status.MEASURED).order_by("position"))
    spec = PocSpec(
        task=poc_request.task,
        model_dir=str(model_dir_for(poc_request)),
        dataset=dataset_for(poc_request),
        device=poc_request.hardware.device_kind,
        candidates=[CandidateSpec(key=str(c.pk), pipeline=c.pipeline) for c in todo],
        artifacts_dir=str(settings.ARTIFACTS_ROOT / f"request-{poc_request.pk}"),
        measure=MeasureConfig(
            batch_sizes=tuple(settings.MEASURE_BATCH_SIZES),
            min_iterations=settings.MEASURE_MIN_ITERATIONS,
            min_seconds=settings.MEASURE_MIN_SECONDS,
            warmup=settings.MEASURE_WARMUP,
            threads=settings.MEASURE_THREADS,
        ),
    )
    progress = _ProgressWriter(poc_request.pk)
    by_key = {str(c.pk): c for c in todo}
    try:
        for result in run_poc(spec, progress):
            candidate_record_result(candidate=by_key[result.key], result=result)
    except PocError as exc:
        poc_request_fail(request_id=poc_request.pk, error=str(exc))
        return
    except Exception as exc:
        logger.exception("PoC request %s crashed", poc_request.pk)
        poc_request_fail(request_id=poc_request.pk, error=f"Unexpected error: {type(exc).__name__}: {exc}")
        raise
    poc_request_finish(request_id=poc_request.pk)


class _ProgressWriter:
    """Writes progress to the request row, touching only the progress fields.

    A new message is always written (it says what the worker is doing now); repeats of the same message
    with a new fraction are written at most once a second.
    """

    def __init__(self, request_id: int) -> None:
        self.request_id = request_id
        self.last_write = 0.0
        self.last_message = ""

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if message == self.last_message and now - self.last_write < PROGRESS_WRITE_INTERVAL_S:
            return
        self.last_write, self.last_message = now, message
        PocRequest.objects.filter(pk=self.request_id).update(
            progress=max(0.0, min(1.0, fraction)), progress_message=message[:300], updated_at=timezone.now()
        )


def candidate_record_result(*, candidate: Candidate, result: Any) -> Candidate:
    """Persist one runner result (``workers.runner.CandidateResult``) on its candidate row."""
    if not result.ok:
        candidate.status = Candidate.Status.FAILED
        candidate.error = result.error
        candidate.save(update_fields=["status", "error"])
        return candidate
    figures = result.figures
    candidate.status = Candidate.Status.MEASURED
    candidate.error = ""
    candidate.accuracy = figures["accuracy"]
    candidate.macro_f1 = figures["macro_f1"]
    candidate.latency = figures["latency"]
    candidate.size_bytes = figures["size_bytes"]
    candidate.parameters = figures["parameters"]
    candidate.nonzero_parameters = figures["nonzero_parameters"]
    candidate.peak_memory_bytes = figures["peak_memory_bytes"]
    candidate.produce_seconds = figures["produce_seconds"]
    candidate.device_hours = figures["device_hours"]
    candidate.environment = result.environment
    candidate.notes = result.notes
    candidate.artifact_path = result.artifact_path
    candidate.measured_at = timezone.now()
    candidate.save()
    return candidate


def poc_request_finish(*, request_id: int) -> None:
    statuses = set(Candidate.objects.filter(request_id=request_id).values_list("status", flat=True))
    baseline_ok = Candidate.objects.filter(
        request_id=request_id, position=0, status=Candidate.Status.MEASURED
    ).exists()
    status = PocRequest.Status.SUCCEEDED if baseline_ok else PocRequest.Status.FAILED
    error = "" if baseline_ok else "The baseline could not be measured, so nothing can be compared."
    message = "finished" if statuses == {Candidate.Status.MEASURED} else "finished; some candidates failed"
    PocRequest.objects.filter(pk=request_id).update(
        status=status,
        error=error,
        progress=1.0,
        progress_message=message,
        finished_at=timezone.now(),
        updated_at=timezone.now(),
    )
    poc_request_summary_refresh(request_id=request_id)


def poc_request_fail(*, request_id: int, error: str) -> None:
    PocRequest.objects.filter(pk=request_id).update(
        status=PocRequest.Status.FAILED, error=error, finished_at=timezone.now(), updated_at=timezone.now()
    )
    Candidate.objects.filter(request_id=request_id).exclude(status=Candidate.Status.MEASURED).update(
        status=Candidate.Status.FAILED, error="not measured: the PoC stopped"
    )


SUMMARY_PLACES = Decimal("0.000001")  # PocRequestSummary keeps amounts to 6 places: far below a cent
SUMMARY_MONEY_FIELDS = (
    "baseline_monthly_cost",
    "monthly_cost",
    "monthly_savings",
    "one_time_cost",
    "payback_months",
    "roi",
)


def poc_request_summary_refresh(*, request_id: int) -> PocRequestSummary | None:
    """Rebuild one request's portfolio summary (call it when its PoC finishes)."""
    poc_request_summaries_refresh(request_ids=[request_id])
    return PocRequestSummary.objects.filter(request_id=request_id).first()


def poc_request_summaries_refresh(*, request_ids: Iterable[int] | None = None, chunk_size: int = 200) -> int:
    """Rebuild the portfolio summaries of these requests (all when None) from their measured candidates.

    Only a finished request gets a summary: a running one would show a recommendation that may change,
    a failed one a recommendation from whatever was measured before it stopped. Idempotent; returns how
    many summaries were written."""
    from planner import selectors

    ids = list(
        PocRequest.objects.order_by("pk").values_list("pk", flat=True)
        if request_ids is None
        else sorted(set(request_ids))
    )
    written = 0
    for start in range(0, len(ids), chunk_size):
        chunk = ids[start : start + chunk_size]
        summaries = []
        requests = (
            PocRequest.objects.filter(pk__in=chunk, status=PocRequest.Status.SUCCEEDED)
            .select_related("hardware")
            .prefetch_related("candidates")
        )
        now = timezone.now()
        for poc_request in requests:
            report = selectors.poc_request_roi(poc_request=poc_request)
            if report is None:
                continue
            figures = selectors.summary_figures(report=report)
            for name in SUMMARY_MONEY_FIELDS:
                if figures[name] is not None:
                    figures[name] = figures[name].quantize(SUMMARY_PLACES, rounding=ROUND_HALF_UP)
            summary = PocRequestSummary(request_id=poc_request.pk, computed_at=now, **figures)
            # The foreign keys are the rows just read; checking them again would cost a query each.
            summary.full_clean(exclude=["request", "candidate"], validate_unique=False)
            summaries.append(summary)
        with transaction.atomic():
            PocRequestSummary.objects.filter(request_id__in=chunk).exclude(
                request_id__in=[s.request_id for s in summaries]
            ).delete()
            PocRequestSummary.objects.bulk_create(
                summaries,
                update_conflicts=True,
                unique_fields=["request"],
                update_fields=["outcome", "candidate", "candidate_label", *SUMMARY_MONEY_FIELDS]
                + ["blocking", "computed_at"],
            )
        written += len(summaries)
    return written
