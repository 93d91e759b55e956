"""Celery tasks: thin. They load ids and hand over to planner.services and workers.runner."""

from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from workers.app import app

logger = logging.getLogger(__name__)


@app.task(
    name="workers.tasks.run_poc",
    # acks_late + reject_on_worker_lost (settings): a worker killed mid-run hands the job back, which is safe
    # because run_poc skips candidates already measured.
    acks_late=True,
    # A PoC with distillation can take hours on CPU; past the soft limit the run is failed with the reason,
    # the hard limit is the backstop if a kernel ignores the exception.
    soft_time_limit=settings.POC_SOFT_TIME_LIMIT_S,
    time_limit=settings.POC_SOFT_TIME_LIMIT_S + 300,
)
def run_poc(request_id: int) -> None:
    from planner.services import poc_request_execute

    try:
        poc_request_execute(request_id=request_id)
    except SoftTimeLimitExceeded:
        from planner.services import poc_request_fail

        poc_request_fail(request_id=request_id, error="The PoC ran past its time limit and was stopped.")
