"""The reconciler: brings back the PoC requests the broker or a worker lost. The database is the record,
the broker only the transport (see POC_* in settings). ``manage.py reconcile_poc_requests`` runs it."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from planner.models import PocRequest
from planner.services import POC_QUEUES, poc_request_enqueue, poc_request_mark_cancelled
from workers.execution import poc_request_fail_stopped, poc_request_heartbeat_stale

logger = logging.getLogger(__name__)


def poc_requests_reconcile(*, now: Any = None) -> dict[str, list[int]]:
    """Bring back the requests the broker or a worker lost. Safe to run anywhere, any time, several at once.

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
    if held is not None:
        for request_id, task_id in waiting:
            if task_id in held.waiting or held.delivered.get(task_id, 0.0) > grace_before.timestamp():
                continue  # in a queue, or a worker took it a moment ago and is about to start it
            if _poc_request_resend(
                request_id=request_id, task_id=task_id, grace_before=grace_before, now=now
            ):
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
        if poc_request is None or not poc_request_heartbeat_stale(poc_request=poc_request, now=now):
            return None  # finished, or beating again, or another reconciler has it
        if poc_request.cancel_requested_at is not None:
            poc_request_mark_cancelled(request_id=request_id)
            return "cancelled"
        if poc_request.attempts >= settings.POC_MAX_ATTEMPTS:
            poc_request_fail_stopped(poc_request=poc_request)
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
