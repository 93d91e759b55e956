"""Writes. Views and tasks call these; nothing else changes PoC rows."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _

from planner.models import (
    PER_TOKEN_TARGET_REQUIRED,
    Candidate,
    HardwareProfile,
    PocRequest,
    PocRequestSummary,
    Team,
)
from plugins import registry
from workers.runner import PocStopped

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
    accuracy_floor_pct: Decimal = Decimal("97"),
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
    per_token_target_ms: Decimal | None = None,
    output_tokens_per_request: int = 128,
    perplexity_increase_pct: Decimal = Decimal("10"),
) -> PocRequest:
    """File a PoC request with the baseline plus one candidate per pipeline, and queue it on commit.

    For text generation (``task="causal-lm"``) ``p95_target_ms`` is the time-to-first-token target and
    ``per_token_target_ms`` is required; ``accuracy_floor_pct`` is kept but not used."""
    if task == PocRequest.Task.CAUSAL_LM and per_token_target_ms is None:
        raise ValidationError({"per_token_target_ms": PER_TOKEN_TARGET_REQUIRED})
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
            per_token_target_ms=per_token_target_ms,
            output_tokens_per_request=output_tokens_per_request,
            perplexity_increase_pct=perplexity_increase_pct,
        )
        if dataset_file is not None:
            # The name only, so validation can run before any byte is written to storage.
            poc_request.dataset_file.name = Path(dataset_file.name).name
        poc_request.full_clean()
        if dataset_file is not None:
            poc_request.dataset_file.save(Path(dataset_file.name).name, dataset_file, save=False)
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


DECISION_FIELDS = ["decision", "decision_comment", "decided_by", "decided_at"]


def poc_request_decide(*, poc_request: PocRequest, user: Any, decision: str, comment: str) -> PocRequest:
    """Record a manager's approval or rejection of a finished request's recommendation, replacing an
    earlier decision. The caller checks that the user may decide on this request (``permissions``)."""
    if poc_request.status != PocRequest.Status.SUCCEEDED:
        raise ValidationError(
            _("Only a finished request can be approved or rejected; this one is %(status)s.")
            % {"status": poc_request.get_status_display()}
        )
    comment = comment.strip()
    if decision == PocRequest.Decision.REJECTED and not comment:
        raise ValidationError({"decision_comment": _("Say why the recommendation is rejected.")})
    poc_request.decision = decision
    poc_request.decision_comment = comment
    poc_request.decided_by = user
    poc_request.decided_at = timezone.now()
    # Only the decision is checked: the rest of the row is the worker's, and validated when filed.
    poc_request.full_clean(exclude=[f.name for f in PocRequest._meta.fields if f.name not in DECISION_FIELDS])
    poc_request.save(update_fields=[*DECISION_FIELDS, "updated_at"])
    return poc_request


def hardware_profile_save(*, hardware: HardwareProfile) -> HardwareProfile:
    """Create or change a hardware profile; a changed one has its requests' portfolio figures recomputed
    (they use its price)."""
    changed = hardware.pk is not None
    hardware.full_clean()
    hardware.save()
    if changed:
        poc_request_summaries_refresh(request_ids=hardware.poc_requests.values_list("pk", flat=True))
    return hardware


# The queues PoCs go to (HardwareProfile.queue): what the reconciler looks for messages in.
POC_QUEUES = ("cpu", "gpu")
# How often a running PoC reads its row for a cancel, a time limit, or another worker taking over.
STOP_CHECK_INTERVAL_S = 1.0


def poc_request_enqueue(*, poc_request: PocRequest) -> None:
    """Send the request's message under a new task id, recorded on the row before the send: a send that
    fails (the broker is down) leaves a queued row that the reconciler sends again."""
    from kombu.exceptions import OperationalError

    from workers.app import app

    task_id = str(uuid.uuid4())
    now = timezone.now()
    PocRequest.objects.filter(pk=poc_request.pk).update(task_id=task_id, enqueued_at=now, updated_at=now)
    poc_request.task_id, poc_request.enqueued_at = task_id, now
    queue = poc_request.hardware.queue
    try:
        app.send_task("workers.tasks.run_poc", args=[poc_request.pk], queue=queue, task_id=task_id)
    except OperationalError:
        logger.warning(
            "Could not queue PoC request %s: the broker is unreachable; the reconciler sends it again",
            poc_request.pk,
            exc_info=True,
        )
        return
    logger.info("Queued PoC request %s on %s as task %s", poc_request.pk, queue, task_id)


def model_dir_for(poc_request: PocRequest) -> Path:
    if poc_request.model_ref == "demo":
        return settings.DEMO_LLM_DIR if poc_request.is_generative else settings.DEMO_MODEL_DIR
    return settings.MODELS_ROOT / poc_request.model_ref


def dataset_for(poc_request: PocRequest) -> str:
    return "demo" if poc_request.dataset_ref == "demo" else poc_request.dataset_file.path


class _Cancelled(PocStopped):
    """The owner cancelled the request."""


class _TimeLimitReached(PocStopped):
    """The run is past its soft time limit."""


class _Superseded(PocStopped):
    """This run no longer owns the request: the reconciler queued it again or failed it (it took this worker
    for dead), or another delivery took it over. Stop without writing anything more."""


def poc_request_execute(*, request_id: int, task_id: str | None = None) -> None:
    """Run (or resume) a PoC: measure every candidate not done yet, persisting each as it arrives.

    Idempotent, so a message delivered twice is harmless: the run claims the row under a lock in a short
    transaction, a delivery for a request that is finished, cancelled, or running with a live heartbeat
    does nothing, and a resumed run skips the candidates already measured. ``task_id`` (the message's id)
    marks the run that owns the row; a run that lost it stops at its next safe point.
    """
    from workers.measure import MeasureConfig
    from workers.runner import CandidateSpec, PocError, PocSpec, run_poc

    token = task_id or str(uuid.uuid4())
    poc_request = _poc_request_claim(request_id=request_id, token=token)
    if poc_request is None:
        return
    todo = list(
        poc_request.candidates.exclude(
            status__in=[Candidate.Status.MEASURED, Candidate.Status.FAILED]
        ).order_by("position")
    )
    if not todo:  # the previous run recorded the last result and stopped before finishing
        poc_request_finish(request_id=request_id, token=token)
        return
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
            new_tokens=settings.MEASURE_NEW_TOKENS,
            max_prompt_tokens=settings.MEASURE_MAX_PROMPT_TOKENS,
            generation_min_iterations=settings.MEASURE_GENERATION_ITERATIONS,
            lm_eval_texts=settings.MEASURE_LM_EVAL_TEXTS,
        ),
    )
    started = time.monotonic()
    progress = _ProgressWriter(
        request_id, token=token, soft_deadline=started + settings.POC_SOFT_TIME_LIMIT_S
    )
    heartbeat = _Heartbeat(request_id, token=token, hard_deadline=started + settings.POC_HARD_TIME_LIMIT_S)
    heartbeat.start()
    by_key = {str(c.pk): c for c in todo}
    try:
        for result in run_poc(spec, progress):
            _candidate_record_result_as_owner(
                request_id=request_id, token=token, candidate=by_key[result.key], result=result
            )
            progress.check()  # between candidates: always a safe point
    except _Cancelled:
        logger.info("PoC request %s cancelled; stopped at a safe point", request_id)
        poc_request_mark_cancelled(request_id=request_id, token=token)
        return
    except _TimeLimitReached:
        poc_request_fail(request_id=request_id, error=time_limit_message(), token=token)
        return
    except _Superseded:
        logger.warning("PoC request %s: this run no longer owns the request; stopped", request_id)
        return
    except PocError as exc:
        poc_request_fail(request_id=request_id, error=str(exc), token=token)
        return
    except Exception as exc:
        logger.exception("PoC request %s crashed", request_id)
        poc_request_fail(
            request_id=request_id, error=f"Unexpected error: {type(exc).__name__}: {exc}", token=token
        )
        raise
    finally:
        heartbeat.stop()
    poc_request_finish(request_id=request_id, token=token)


def _heartbeat_stale(poc_request: PocRequest, now: Any) -> bool:
    last = poc_request.heartbeat_at or poc_request.updated_at
    return last is None or (now - last).total_seconds() > settings.POC_HEARTBEAT_STALE_S


def _poc_request_claim(*, request_id: int, token: str) -> PocRequest | None:
    """Lock the row for a moment and mark it running under ``token``; None when this delivery has nothing
    to do. Never holds the transaction across the run."""
    now = timezone.now()
    with transaction.atomic():
        poc_request = (
            PocRequest.objects.select_for_update(of=("self",))
            .select_related("hardware")
            .filter(pk=request_id)
            .first()
        )
        if poc_request is None:
            logger.warning("PoC request %s no longer exists; nothing to do", request_id)
            return None
        if not poc_request.is_active:
            logger.info("PoC request %s is already %s; nothing to do", request_id, poc_request.status)
            return None
        if poc_request.status == PocRequest.Status.RUNNING:
            # Another run holds it. It is dead when its heartbeat stopped, or when the broker hands us the
            # very message it was running (a message only comes back once its worker is gone).
            if poc_request.task_id != token and not _heartbeat_stale(poc_request, now):
                logger.info(
                    "PoC request %s is running on a live worker; duplicate delivery ignored", request_id
                )
                return None
            if poc_request.attempts >= settings.POC_MAX_ATTEMPTS:
                _poc_request_fail_stopped(poc_request=poc_request)
                return None
        if poc_request.cancel_requested_at is not None:
            poc_request_mark_cancelled(request_id=request_id)
            return None
        poc_request.status = PocRequest.Status.RUNNING
        poc_request.attempts += 1
        poc_request.started_at = poc_request.started_at or now
        poc_request.heartbeat_at = now
        poc_request.task_id = token
        if poc_request.attempts > 1:
            poc_request.progress_message = (
                f"resuming after the worker stopped (attempt {poc_request.attempts} of "
                f"{settings.POC_MAX_ATTEMPTS}); candidates already measured are kept"
            )
        poc_request.save(
            update_fields=[
                "status",
                "attempts",
                "started_at",
                "heartbeat_at",
                "task_id",
                "progress_message",
                "updated_at",
            ]
        )
    return poc_request


def _owned(request_id: int, token: str | None) -> Any:
    """The request's row while the run holding ``token`` owns it (any running run when token is None)."""
    rows = PocRequest.objects.filter(pk=request_id, status=PocRequest.Status.RUNNING)
    return rows if token is None else rows.filter(task_id=token)


class _ProgressWriter:
    """Writes progress (and the heartbeat) to the request row, and stops the run at a safe point.

    A new message is always written (it says what the worker is doing now); repeats of the same message
    with a new fraction are written at most once a second. At most once a second it also reads the row,
    and raises (a ``PocStopped``, which the runner lets through) when the request was cancelled, the run is
    past its soft time limit, or the run no longer owns the request.
    """

    def __init__(self, request_id: int, *, token: str | None = None, soft_deadline: float | None = None):
        self.request_id = request_id
        self.token = token
        self.soft_deadline = soft_deadline
        self.last_write = 0.0
        self.last_message = ""
        self.last_check = time.monotonic()

    def check(self) -> None:
        self.last_check = time.monotonic()
        row = PocRequest.objects.filter(pk=self.request_id).values("status", "task_id", "cancel_requested_at")
        state = row.first()
        if (
            state is None
            or state["status"] != PocRequest.Status.RUNNING
            or (self.token is not None and state["task_id"] != self.token)
        ):
            raise _Superseded
        if state["cancel_requested_at"] is not None:
            raise _Cancelled
        if self.soft_deadline is not None and time.monotonic() > self.soft_deadline:
            raise _TimeLimitReached

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self.last_check >= STOP_CHECK_INTERVAL_S:
            self.check()
        if message == self.last_message and now - self.last_write < PROGRESS_WRITE_INTERVAL_S:
            return
        self.last_write, self.last_message = now, message
        written = _owned(self.request_id, self.token).update(
            progress=max(0.0, min(1.0, fraction)),
            progress_message=message[:300],
            heartbeat_at=timezone.now(),
            updated_at=timezone.now(),
        )
        if not written:
            raise _Superseded


class _Heartbeat:
    """Beats on the row every POC_HEARTBEAT_S from a thread of its own, so a long step that reports no
    progress still shows its worker alive; the reconciler takes a silent row's worker for dead.

    It also enforces the hard time limit, which neither a solo pool nor a kernel that never returns to
    Python honours otherwise: past it, the request is failed with the reason and this process ends (its
    supervisor restarts the worker), as Celery's own hard limit ends a prefork child.
    """

    def __init__(self, request_id: int, *, token: str, hard_deadline: float) -> None:
        self.request_id = request_id
        self.token = token
        self.hard_deadline = hard_deadline
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"poc-heartbeat-{request_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        from django.db import DatabaseError, connection

        try:
            while not self.stopped.wait(min(settings.POC_HEARTBEAT_S, self._until_deadline())):
                if self._until_deadline() <= 0:
                    self._end_process()
                    return
                try:
                    alive = _owned(self.request_id, self.token).update(heartbeat_at=timezone.now())
                except DatabaseError:
                    logger.warning("Heartbeat of PoC request %s not written", self.request_id, exc_info=True)
                    continue
                if not alive:  # cancelled, failed or taken over: the run stops at its next safe point
                    return
        finally:
            connection.close()  # this thread's own connection

    def _until_deadline(self) -> float:
        return max(0.0, self.hard_deadline - time.monotonic())

    def _end_process(self) -> None:
        limit = _duration(settings.POC_HARD_TIME_LIMIT_S)
        logger.error(
            "PoC request %s ran past its hard time limit; ending this worker process", self.request_id
        )
        poc_request_fail(
            request_id=self.request_id,
            token=self.token,
            error=(
                f"The PoC ran past its hard time limit ({limit}) in a step that did not stop, so its worker "
                "was ended; what was measured is kept. File it again with fewer or lighter candidates."
            ),
        )
        os.kill(os.getpid(), signal.SIGKILL)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def time_limit_message() -> str:
    limit = _duration(settings.POC_SOFT_TIME_LIMIT_S)
    return (
        f"The PoC ran past its time limit ({limit}) and was stopped; what was measured is kept. File it "
        "again with fewer or lighter candidates, or ask an administrator to raise POC_SOFT_TIME_LIMIT_S."
    )


def _candidate_record_result_as_owner(
    *, request_id: int, token: str, candidate: Candidate, result: Any
) -> None:
    """Record a result only while this run owns the request (checked under the row's lock)."""
    with transaction.atomic():
        if _owned(request_id, token).select_for_update().values_list("pk", flat=True).first() is None:
            raise _Superseded
        candidate_record_result(candidate=candidate, result=result)


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
    # Classification reports accuracy and macro-F1; text generation perplexity and exact match.
    candidate.accuracy = figures.get("accuracy")
    candidate.macro_f1 = figures.get("macro_f1")
    candidate.perplexity = figures.get("perplexity")
    candidate.exact_match = figures.get("exact_match")
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


def poc_request_finish(*, request_id: int, token: str | None = None) -> None:
    statuses = set(Candidate.objects.filter(request_id=request_id).values_list("status", flat=True))
    baseline_ok = Candidate.objects.filter(
        request_id=request_id, position=0, status=Candidate.Status.MEASURED
    ).exists()
    status = PocRequest.Status.SUCCEEDED if baseline_ok else PocRequest.Status.FAILED
    error = "" if baseline_ok else "The baseline could not be measured, so nothing can be compared."
    message = "finished" if statuses == {Candidate.Status.MEASURED} else "finished; some candidates failed"
    rows = PocRequest.objects.filter(pk=request_id) if token is None else _owned(request_id, token)
    finished = rows.update(
        status=status,
        error=error,
        progress=1.0,
        progress_message=message,
        finished_at=timezone.now(),
        updated_at=timezone.now(),
    )
    if finished:
        poc_request_summary_refresh(request_id=request_id)


def _not_measured(request_id: int, reason: str) -> None:
    """Mark the candidates never measured; those measured, or failed with their own reason, keep theirs."""
    Candidate.objects.filter(
        request_id=request_id, status__in=[Candidate.Status.PENDING, Candidate.Status.RUNNING]
    ).update(status=Candidate.Status.FAILED, error=f"not measured: {reason}")


def poc_request_fail(*, request_id: int, error: str, token: str | None = None) -> None:
    rows = PocRequest.objects.filter(pk=request_id) if token is None else _owned(request_id, token)
    if rows.update(
        status=PocRequest.Status.FAILED, error=error, finished_at=timezone.now(), updated_at=timezone.now()
    ):
        _not_measured(request_id, "the PoC stopped")


def _poc_request_fail_stopped(*, poc_request: PocRequest) -> None:
    """Give up on a request whose worker died on every attempt (out of memory, or restarted)."""
    last = poc_request.progress_message or "starting"
    poc_request_fail(
        request_id=poc_request.pk,
        error=(
            f"The worker running this request stopped {poc_request.attempts} times before it finished (last "
            f"step: {last}). It may have run out of memory or been restarted; what was measured is kept. "
            "File it again with fewer or lighter candidates, or on hardware with more memory."
        ),
    )


def poc_request_mark_cancelled(*, request_id: int, token: str | None = None) -> None:
    """The final state of a cancelled request: what was measured is kept, the rest marked not measured."""
    rows = PocRequest.objects.filter(pk=request_id)
    rows = rows.filter(status__in=[PocRequest.Status.QUEUED, PocRequest.Status.RUNNING])
    if token is not None:
        rows = rows.filter(task_id=token)
    candidates = Candidate.objects.filter(request_id=request_id)
    measured = candidates.filter(status=Candidate.Status.MEASURED).count()
    now = timezone.now()
    if rows.update(
        status=PocRequest.Status.CANCELLED,
        cancel_requested_at=Coalesce("cancel_requested_at", Value(now)),
        progress_message=f"cancelled; {measured} of {candidates.count()} candidates measured",
        finished_at=now,
        updated_at=now,
    ):
        _not_measured(request_id, "the request was cancelled")


def poc_request_cancel(*, request_id: int, user: Any) -> PocRequest:
    """Cancel a request for its owner (or staff, or a user allowed to change requests). One not started
    yet is cancelled at once; a running one stops at its next safe point (between candidates, or at a
    technique's next progress report) and keeps what it measured. A finished request is left as it is."""
    with transaction.atomic():
        poc_request = PocRequest.objects.select_for_update().get(pk=request_id)
        if not (
            poc_request.owner_id == user.pk or user.is_staff or user.has_perm("planner.change_pocrequest")
        ):
            raise PermissionDenied(_("Only the owner of a request can cancel it."))
        if poc_request.status == PocRequest.Status.QUEUED:
            poc_request_mark_cancelled(request_id=request_id)
        elif poc_request.status == PocRequest.Status.RUNNING and poc_request.cancel_requested_at is None:
            poc_request.cancel_requested_at = timezone.now()
            poc_request.save(update_fields=["cancel_requested_at", "updated_at"])
    poc_request.refresh_from_db()
    return poc_request


def poc_requests_reconcile(*, now: Any = None) -> dict[str, list[int]]:
    """Bring back the requests the broker or a worker lost; the database is the record, the broker only
    the transport (see POC_* in settings). Safe to run anywhere, any time, several at once.

    - Running, but silent for POC_HEARTBEAT_STALE_S: its worker died. Queued again, or failed with the
      reason after POC_MAX_ATTEMPTS runs; cancelled if a cancel was waiting.
    - Queued over POC_QUEUED_GRACE_S ago, and its message is in no queue and held by no worker (e.g. Redis
      restarted and lost the queue): sent again. Left alone when the broker cannot be read.
    - Finished, failed and cancelled requests: never touched.
    """
    from workers.app import app
    from workers.broker import held_messages

    now = now or timezone.now()
    report: dict[str, list[int]] = {"requeued": [], "resent": [], "failed": [], "cancelled": []}
    stale_before = now - timedelta(seconds=settings.POC_HEARTBEAT_STALE_S)
    silent = PocRequest.objects.filter(status=PocRequest.Status.RUNNING).filter(
        Q(heartbeat_at__lt=stale_before) | Q(heartbeat_at__isnull=True, updated_at__lt=stale_before)
    )
    for request_id in silent.order_by("created_at").values_list("pk", flat=True):
        outcome = _poc_request_recover(request_id=request_id, now=now)
        if outcome:
            report[outcome].append(request_id)

    grace_before = now - timedelta(seconds=settings.POC_QUEUED_GRACE_S)
    waiting = list(
        PocRequest.objects.filter(status=PocRequest.Status.QUEUED)
        .filter(Q(enqueued_at__lt=grace_before) | Q(enqueued_at__isnull=True, created_at__lt=grace_before))
        .order_by("created_at")  # oldest first, as the queue had them
        .values_list("pk", "task_id")
    )
    # Read after the rows: a message sent since then belongs to a row too recent to be among them.
    held = held_messages(app, POC_QUEUES) if waiting else None
    if waiting and held is None:
        logger.info("The broker cannot be listed; queued requests are left as they are")
    for request_id, task_id in waiting if held is not None else []:
        if task_id in held.waiting or held.delivered.get(task_id, 0.0) > grace_before.timestamp():
            continue  # in a queue, or a worker took it a moment ago and is about to start it
        if _poc_request_resend(request_id=request_id, task_id=task_id, grace_before=grace_before, now=now):
            report["resent"].append(request_id)
    if any(report.values()):
        logger.warning("Reconciled PoC requests: %s", {k: v for k, v in report.items() if v})
    return report


def _poc_request_recover(*, request_id: int, now: Any) -> str | None:
    with transaction.atomic():
        poc_request = (
            PocRequest.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("hardware")
            .filter(pk=request_id, status=PocRequest.Status.RUNNING)
            .first()
        )
        if poc_request is None or not _heartbeat_stale(poc_request, now):
            return None  # finished, or beating again, or another reconciler has it
        if poc_request.cancel_requested_at is not None:
            poc_request_mark_cancelled(request_id=request_id)
            return "cancelled"
        if poc_request.attempts >= settings.POC_MAX_ATTEMPTS:
            _poc_request_fail_stopped(poc_request=poc_request)
            return "failed"
        poc_request.status = PocRequest.Status.QUEUED
        poc_request.enqueued_at = now
        poc_request.progress_message = (
            f"its worker stopped; queued again (attempt {poc_request.attempts + 1} of "
            f"{settings.POC_MAX_ATTEMPTS}); candidates already measured are kept"
        )
        poc_request.save(update_fields=["status", "enqueued_at", "progress_message", "updated_at"])
        transaction.on_commit(lambda: poc_request_enqueue(poc_request=poc_request))
    logger.warning("PoC request %s: its worker stopped beating; queued again", request_id)
    return "requeued"


def _poc_request_resend(*, request_id: int, task_id: str, grace_before: Any, now: Any) -> bool:
    with transaction.atomic():
        poc_request = (
            PocRequest.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("hardware")
            .filter(pk=request_id, status=PocRequest.Status.QUEUED, task_id=task_id)
            .filter(Q(enqueued_at__lt=grace_before) | Q(enqueued_at__isnull=True))
            .first()
        )
        if poc_request is None:
            return False  # started, cancelled or sent again meanwhile
        poc_request.enqueued_at = now
        poc_request.save(update_fields=["enqueued_at", "updated_at"])
        transaction.on_commit(lambda: poc_request_enqueue(poc_request=poc_request))
    logger.warning("PoC request %s: its message %s was lost by the broker; sent again", request_id, task_id)
    return True


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
