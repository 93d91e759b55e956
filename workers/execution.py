"""The bridge between the rows and the runner, on the worker side: claim a request, turn its rows into a
plain ``PocSpec``, run it while a heartbeat and the progress writer keep the row current, and store each
result as it arrives.

Only worker processes import this module (the web sends tasks by name through ``workers.app``). It reads
and writes ``planner.models`` rows and reuses the web's services where both sides do the same thing
(marking a request cancelled, queueing it, refreshing its summary).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from planner.models import Candidate, PocRequest
from planner.services import (
    candidates_mark_not_measured,
    poc_request_mark_cancelled,
    poc_request_summary_refresh,
)
from workers import runner
from workers.runner import CandidateResult, CandidateSpec, PocError, PocSpec, PocStopped

if TYPE_CHECKING:
    from workers.goodput import GoodputPolicy
    from workers.measure import MeasureConfig
    from workers.serving import Targets

logger = logging.getLogger(__name__)

# How often a running PoC writes a repeated progress message, and reads its row for a cancel, a time
# limit, or another worker taking over.
PROGRESS_WRITE_INTERVAL_S = 1.0
STOP_CHECK_INTERVAL_S = 1.0


def model_dir_for(poc_request: PocRequest) -> Path:
    if poc_request.model_source != PocRequest.ModelSource.LOCAL:
        from planner import model_sources
        from plugins.model_info import ModelLoadError

        if poc_request.model_source == PocRequest.ModelSource.ARCHIVE:
            return model_sources.archive_dir(poc_request.pk)  # extracted and checked when it was filed
        try:  # the Hub, at the request's commit: fetched into the Hub cache unless it is there already
            return model_sources.hub_snapshot(
                repo_id=poc_request.model_ref, revision=poc_request.model_revision, task=poc_request.task
            )
        except ModelLoadError as exc:
            # Called while the spec is built, before the run's own handlers: the request fails here.
            poc_request_fail(request_id=poc_request.pk, error=str(exc))
            raise PocError(str(exc)) from None
    if poc_request.model_ref == "demo":
        return settings.DEMO_LLM_DIR if poc_request.is_generative else settings.DEMO_MODEL_DIR
    return settings.MODELS_ROOT / poc_request.model_ref


def dataset_for(poc_request: PocRequest) -> str:
    return "demo" if poc_request.dataset_ref == "demo" else poc_request.dataset_file.path


def measure_config_from_settings() -> MeasureConfig:
    """How every candidate is measured, from the MEASURE_* settings (docs/measurement.md)."""
    from workers.measure import MeasureConfig
    from workers.timing import TimingPolicy

    timing = TimingPolicy(
        warmup=settings.MEASURE_WARMUP,
        iterations_per_round=settings.MEASURE_ITERATIONS_PER_ROUND,
        block_seconds=settings.MEASURE_BLOCK_SECONDS,
        min_rounds=settings.MEASURE_MIN_ROUNDS,
        max_rounds=settings.MEASURE_MAX_ROUNDS,
        min_samples=settings.MEASURE_MIN_ITERATIONS,
        max_seconds=settings.MEASURE_MAX_SECONDS,
        target_precision=settings.MEASURE_TARGET_PRECISION,
        confidence=settings.MEASURE_CONFIDENCE,
        resamples=settings.MEASURE_BOOTSTRAP_RESAMPLES,
        tail_samples=settings.MEASURE_TAIL_SAMPLES,
        unstable_width=settings.MEASURE_UNSTABLE_WIDTH,
        unstable_cpu_share=settings.MEASURE_UNSTABLE_CPU_SHARE,
        carryover_tolerance=settings.MEASURE_CARRYOVER_TOLERANCE,
        remeasure=settings.MEASURE_REMEASURE,
        remeasure_pause_s=settings.MEASURE_REMEASURE_PAUSE_S,
    )
    return MeasureConfig(
        batch_sizes=tuple(settings.MEASURE_BATCH_SIZES),
        timing=timing,  # its seed is the PoC's, set by the runner
        threads=settings.MEASURE_THREADS,
        new_tokens=settings.MEASURE_NEW_TOKENS,
        max_prompt_tokens=settings.MEASURE_MAX_PROMPT_TOKENS,
        generation_min_iterations=settings.MEASURE_GENERATION_ITERATIONS,
        lm_eval_texts=settings.MEASURE_LM_EVAL_TEXTS,
        goodput=goodput_policy_from_settings(),
    )


def goodput_policy_from_settings() -> GoodputPolicy | None:
    """The serving scenario's search (workers/goodput.py), from the MEASURE_GOODPUT_* settings; None when
    MEASURE_GOODPUT is off."""
    from workers.goodput import GoodputPolicy
    from workers.serving import TrialLimits

    if not settings.MEASURE_GOODPUT:
        return None
    return GoodputPolicy(
        share=settings.MEASURE_GOODPUT_SHARE,
        confidence=settings.MEASURE_CONFIDENCE,
        max_waits_ms=tuple(settings.MEASURE_GOODPUT_MAX_WAITS_MS),
        steps=settings.MEASURE_GOODPUT_STEPS,
        precision=settings.MEASURE_GOODPUT_PRECISION,
        limits=TrialLimits(
            warmup_requests=settings.MEASURE_GOODPUT_WARMUP_REQUESTS,
            warmup_seconds=settings.MEASURE_GOODPUT_WARMUP_SECONDS,
            min_requests=settings.MEASURE_GOODPUT_MIN_REQUESTS,
            max_requests=settings.MEASURE_GOODPUT_MAX_REQUESTS,
            min_seconds=settings.MEASURE_GOODPUT_MIN_SECONDS,
            max_seconds=settings.MEASURE_GOODPUT_TRIAL_MAX_SECONDS,
        ),
        max_seconds=settings.MEASURE_GOODPUT_MAX_SECONDS,
        max_tokens=settings.MEASURE_GOODPUT_MAX_TOKENS,
    )


def poc_spec_for(*, poc_request: PocRequest, candidates: Sequence[Candidate]) -> PocSpec:
    """The plain spec the runner measures: these candidates of the request, on its hardware."""
    return PocSpec(
        task=poc_request.task,
        model_dir=str(model_dir_for(poc_request)),
        dataset=dataset_for(poc_request),
        device=poc_request.hardware.device_kind,
        candidates=[CandidateSpec(key=str(c.pk), pipeline=c.pipeline) for c in candidates],
        artifacts_dir=str(settings.ARTIFACTS_ROOT / f"request-{poc_request.pk}"),
        measure=measure_config_from_settings(),
        serving_runtime=poc_request.serving_runtime or "pytorch",
        targets=serving_targets_for(poc_request),
    )


def serving_targets_for(poc_request: PocRequest) -> Targets:
    """What each request of the serving scenario must meet: the p95 target from arrival to result (text
    generation: to the first token, with the per-token target and the reply length M)."""
    from workers.serving import Targets

    if not poc_request.is_generative:
        return Targets(first_ms=float(poc_request.p95_target_ms))
    per_token_ms = poc_request.per_token_target_ms
    if per_token_ms is None:  # a text-generation request always has one (poc_request_create requires it)
        raise TypeError("a text-generation request without a per-token target")
    return Targets(
        first_ms=float(poc_request.p95_target_ms),
        itl_ms=float(per_token_ms),
        tokens=poc_request.output_tokens_per_request,
    )


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
    token = task_id or str(uuid.uuid4())
    poc_request = _poc_request_claim(request_id=request_id, token=token)
    if poc_request is None:
        return
    todo = list(
        poc_request.candidates.exclude(
            status__in=[Candidate.Status.MEASURED, Candidate.Status.FAILED]
        ).order_by("position")
    )
    searching = poc_request.mode == PocRequest.Mode.SEARCH and not poc_request.search_stop_reason
    if not todo and not searching:  # the previous run recorded the last result and stopped before finishing
        poc_request_finish(request_id=request_id, token=token)
        return
    spec = poc_spec_for(poc_request=poc_request, candidates=todo)
    started = time.monotonic()
    progress = _ProgressWriter(
        request_id, token=token, soft_deadline=started + settings.POC_SOFT_TIME_LIMIT_S
    )
    heartbeat = _Heartbeat(request_id, token=token, hard_deadline=started + settings.POC_HARD_TIME_LIMIT_S)
    heartbeat.start()
    by_key = {str(c.pk): c for c in todo}
    try:
        if searching:  # the search proposes the candidates as it goes (workers/search_run.py)
            from workers.search_run import poc_request_search

            def record(candidate: Candidate, result: CandidateResult) -> None:
                _candidate_record_result_as_owner(
                    request_id=request_id, token=token, candidate=candidate, result=result
                )
                progress.check()

            poc_request_search(poc_request=poc_request, spec=spec, progress=progress, record=record)
        for result in [] if searching else runner.run_poc(spec, progress):
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
    from workers.search_run import hardware_calibrate_after_run

    hardware_calibrate_after_run(poc_request=poc_request, spec=spec)
    poc_request_finish(request_id=request_id, token=token)


def poc_request_heartbeat_stale(*, poc_request: PocRequest, now: Any) -> bool:
    """Whether the run holding this request has been silent for POC_HEARTBEAT_STALE_S (its worker died)."""
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
            if poc_request.task_id != token and not poc_request_heartbeat_stale(
                poc_request=poc_request, now=now
            ):
                logger.info(
                    "PoC request %s is running on a live worker; duplicate delivery ignored", request_id
                )
                return None
            if poc_request.attempts >= settings.POC_MAX_ATTEMPTS:
                poc_request_fail_stopped(poc_request=poc_request)
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
    *, request_id: int, token: str, candidate: Candidate, result: CandidateResult
) -> None:
    """Record a result only while this run owns the request (checked under the row's lock)."""
    with transaction.atomic():
        if _owned(request_id, token).select_for_update().values_list("pk", flat=True).first() is None:
            raise _Superseded
        candidate_record_result(candidate=candidate, result=result)


def candidate_record_result(*, candidate: Candidate, result: CandidateResult) -> Candidate:
    """Persist one runner result on its candidate row: its measurement, or why it failed."""
    if not result.ok or result.measurement is None:
        candidate.status = Candidate.Status.FAILED
        candidate.error = result.error or "The runner reported no measurement for this candidate."
        candidate.save(update_fields=["status", "error"])
        return candidate
    candidate.set_measurement(result.measurement)
    candidate.status = Candidate.Status.MEASURED
    candidate.error = ""
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


def poc_request_fail(*, request_id: int, error: str, token: str | None = None) -> None:
    rows = PocRequest.objects.filter(pk=request_id) if token is None else _owned(request_id, token)
    if rows.update(
        status=PocRequest.Status.FAILED, error=error, finished_at=timezone.now(), updated_at=timezone.now()
    ):
        candidates_mark_not_measured(request_id=request_id, reason="the PoC stopped")


def poc_request_fail_stopped(*, poc_request: PocRequest) -> None:
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
