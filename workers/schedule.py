"""Tasks that celery beat sends (their schedules live in the database: django_celery_beat, admin →
Periodic tasks; ``manage.py schedule_setup`` creates them). Thin: each calls a planner service. They go to
the "schedule" queue, so they never wait behind an hours-long PoC on the cpu or gpu queues."""

from __future__ import annotations

import logging

from workers.app import app

logger = logging.getLogger(__name__)

NIGHTLY_REVIEW = "workers.schedule.nightly_review"


@app.task(
    name=NIGHTLY_REVIEW,
    # Recomputing the ROI is about 0.3 ms a request plus a directory listing for the fingerprint: minutes
    # even for many thousands of requests. The limits only stop a run stuck on a hung file system.
    soft_time_limit=30 * 60,
    time_limit=31 * 60,
    # Not acks_late: a re-delivered run would be harmless (it re-evaluates again), but beat sends the next
    # one tomorrow anyway.
)
def nightly_review() -> dict[str, int]:
    from planner.reviews.services import nightly_review as review

    counts = review()
    logger.info("Nightly review: %(changed)s recommendations changed, %(reruns)s PoCs re-run", counts)
    return counts
