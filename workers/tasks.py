"""Celery tasks: thin. They take a request id and hand it to workers.execution, the bridge to the runner.

The web process loads this module too (``workers.app`` discovers it to send tasks), so the bridge is
imported inside the task: only a worker ever loads it, and with it the runner and torch.
"""

from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from workers.app import app

logger = logging.getLogger(__name__)


@app.task(
    name="workers.tasks.run_poc",
    bind=True,
    # acks_late + reject_on_worker_lost (settings): a worker killed mid-run hands the job back, which is safe
    # because the run is idempotent (it skips candidates already measured, and a delivery for a request that
    # is finished or running on a live worker does nothing). A worker that dies without handing it back
    # (SIGKILL, OOM killer) stops beating, and the reconciler queues the request again.
    acks_late=True,
    # A PoC with distillation can take hours on CPU. workers.execution enforces both limits itself (a solo
    # pool ignores these); these make a prefork child stop too, the hard one just after the execution's.
    soft_time_limit=settings.POC_SOFT_TIME_LIMIT_S,
    time_limit=settings.POC_HARD_TIME_LIMIT_S + 60,
)
def run_poc(self, request_id: int) -> None:
    from workers.execution import poc_request_execute, poc_request_fail, time_limit_message

    try:
        poc_request_execute(request_id=request_id, task_id=self.request.id)
    except SoftTimeLimitExceeded:
        poc_request_fail(request_id=request_id, error=time_limit_message())
