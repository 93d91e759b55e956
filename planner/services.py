"""Writes of the web process: filing, deciding, cancelling and queueing requests, and the portfolio
summaries. What a running PoC writes (its claim, heartbeat, progress and results) is in workers.execution,
which reuses these where both sides do the same thing. Never imports the runner or the measurement."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files import File
from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _

from planner.model_sources import archive_discard, archive_keep
from planner.models import (
    PER_TOKEN_TARGET_REQUIRED,
    Candidate,
    HardwareProfile,
    PocRequest,
    PocRequestSummary,
    Team,
)
from planner.reviews.fingerprint import model_fingerprint_for
from plugins import registry
from plugins.artifacts import ModelLoadError, check_model_dir
from plugins.model_info import ModelInfo

logger = logging.getLogger(__name__)


def poc_request_create(
    *,
    owner: Any,
    title: str,
    model_ref: str,
    dataset_ref: str,
    dataset_file: File | None = None,
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
    model_source: str = PocRequest.ModelSource.LOCAL,
    model_revision: str = "",
    model_archive_dir: Path | None = None,
    serving_runtime: str = PocRequest.ServingRuntime.PYTORCH,
    maintenance_hours_per_month: Decimal = Decimal("0"),
    teacher_updates_per_year: int = 0,
    rerun_schedule: str = PocRequest.RerunSchedule.NEVER,
    mode: str = PocRequest.Mode.PIPELINES,
    search_max_trials: int | None = None,
    search_max_minutes: int | None = None,
) -> PocRequest:
    """File a PoC request with the baseline plus one candidate per pipeline, and queue it on commit.

    ``mode="search"``: no pipelines; the worker searches the technique space for the cheapest candidate
    that meets the targets (workers/search.py), within ``search_max_trials`` and/or ``search_max_minutes``
    (at least one is required), adding a candidate per trial.

    For text generation (``task="causal-lm"``) ``p95_target_ms`` is the time-to-first-token target and
    ``per_token_target_ms`` is required; ``accuracy_floor_pct`` is kept but not used. ``currency`` defaults
    to the hardware profile's and must equal it (ValidationError otherwise).

    ``model_source``: "local" (``model_ref`` under MODELS_ROOT, or "demo"), "archive" (``model_archive_dir``
    is the extracted, checked archive from ``model_sources.archive_stage``, moved into the request's own
    folder; ``model_ref`` its file name) or "hub" (``model_ref`` a Hub id, ``model_revision`` its commit,
    fetched by the worker)."""
    try:
        return _poc_request_create(**locals())
    except BaseException:
        archive_discard(model_archive_dir)  # a refused request keeps no extracted archive
        raise


def _poc_request_create(
    *,
    owner: Any,
    hardware: HardwareProfile,
    team: Team | None,
    pipelines: Sequence[Sequence[dict[str, Any]]],
    currency: str | None,
    task: str,
    per_token_target_ms: Decimal | None,
    dataset_file: File | None,
    model_archive_dir: Path | None,
    **fields: Any,
) -> PocRequest:
    if task == PocRequest.Task.CAUSAL_LM and per_token_target_ms is None:
        raise ValidationError({"per_token_target_ms": PER_TOKEN_TARGET_REQUIRED})
    if fields.get("mode") == PocRequest.Mode.SEARCH:
        if not fields.get("search_max_trials") and not fields.get("search_max_minutes"):
            raise ValidationError(
                {
                    "search_max_trials": _(
                        "A search needs a budget: the most trials, the most minutes, or both."
                    )
                }
            )
        pipelines = []  # the search proposes its own candidates
    if currency is not None and currency != hardware.currency:
        # Prices are never converted: every amount of a request is in its hardware profile's currency.
        raise ValidationError(
            {
                "currency": _(
                    "%(hardware)s is priced in %(priced_in)s; choose %(priced_in)s or another hardware profile."
                )
                % {"hardware": hardware.name, "priced_in": hardware.currency}
            }
        )
    model_info = _model_info(
        model_ref=fields["model_ref"], task=task, source=fields["model_source"], archive=model_archive_dir
    )
    cleaned = [
        registry.validate_pipeline(p, device=hardware.device_kind, task=task, model_info=model_info)
        for p in pipelines
    ]
    with transaction.atomic():
        poc_request = PocRequest(
            owner=owner,
            team=team or team_for_user(user=owner),
            task=task,
            hardware=hardware,
            currency=currency or hardware.currency,
            per_token_target_ms=per_token_target_ms,
            **fields,
        )
        if dataset_file is not None:
            # The name only, so validation can run before any byte is written to storage.
            poc_request.dataset_file.name = _base_name(dataset_file)
        poc_request.model_fingerprint = model_fingerprint_for(poc_request, archive=model_archive_dir)
        poc_request.full_clean()
        if dataset_file is not None:
            poc_request.dataset_file.save(_base_name(dataset_file), dataset_file, save=False)
        poc_request.save()
        candidates = [Candidate(request=poc_request, position=0, pipeline=[])]
        candidates += [
            Candidate(request=poc_request, position=i, pipeline=p) for i, p in enumerate(cleaned, 1)
        ]
        for candidate in candidates:
            candidate.full_clean(exclude=["request"])
        Candidate.objects.bulk_create(candidates)
        if model_archive_dir is not None:
            archive_keep(model_archive_dir, poc_request.pk)
        transaction.on_commit(lambda: poc_request_enqueue(poc_request=poc_request))
    return poc_request


def _base_name(upload: File) -> str:
    """The uploaded file's name without its folders (an upload or a stored file always has a name)."""
    if upload.name is None:
        raise TypeError("the dataset file has no name")
    return Path(upload.name).name


def _model_info(
    *, model_ref: str, task: str, source: str = "local", archive: Path | None = None
) -> ModelInfo | None:
    """The sizes the pipelines are checked against, from the model's config.json (read without torch),
    after refusing a directory that cannot be loaded safely, whose config and weights disagree, or that is
    over MODEL_MAX_BYTES. None while the directory is not there (the demo before it is built): the worker
    then fails the run with the reason."""
    if source == PocRequest.ModelSource.HUB:
        return None  # fetched by the worker, which checks it there
    if source == PocRequest.ModelSource.ARCHIVE:
        if archive is None:
            raise ValidationError({"model_archive": _("Upload the model archive.")})
        path = archive
    elif model_ref == "demo":
        path = settings.DEMO_LLM_DIR if task == PocRequest.Task.CAUSAL_LM else settings.DEMO_MODEL_DIR
    else:
        root = settings.MODELS_ROOT.resolve()
        path = (root / model_ref).resolve()
        if root not in path.parents:
            raise ValidationError({"model_ref": _("Pick a model directory inside the models folder.")})
    if not (path / "config.json").is_file():
        return None
    try:
        config = check_model_dir(path, task=task, max_bytes=settings.MODEL_MAX_BYTES)
        return ModelInfo.from_config(config, task=task, name=f"{path.name}/config.json")
    except ModelLoadError as exc:
        raise ValidationError({"model_ref": str(exc)}) from None


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
    if decision == PocRequest.Decision.APPROVED:
        from planner.reviews.services import prediction_freeze

        prediction_freeze(poc_request=poc_request)  # the review compares the bills with this day's figures
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


def candidates_mark_not_measured(*, request_id: int, reason: str) -> None:
    """Mark the candidates never measured; those measured, or failed with their own reason, keep theirs."""
    Candidate.objects.filter(
        request_id=request_id, status__in=[Candidate.Status.PENDING, Candidate.Status.RUNNING]
    ).update(status=Candidate.Status.FAILED, error=f"not measured: {reason}")


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
        candidates_mark_not_measured(request_id=request_id, reason="the request was cancelled")


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
    from planner.dashboard.portfolio import summary_figures
    from planner.dashboard.request import poc_request_roi

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
            report = poc_request_roi(poc_request=poc_request)
            if report is None:
                continue
            figures = summary_figures(report=report)
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
