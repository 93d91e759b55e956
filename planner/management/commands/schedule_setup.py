"""Create (or bring back) the nightly re-evaluation in celery beat's database schedule. Idempotent: an
administrator's later changes of the time (admin → Periodic tasks) are kept unless --reset is given."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django_celery_beat.models import CrontabSchedule, PeriodicTask

NIGHTLY_NAME = "Nightly review: re-evaluate requests, re-run PoCs due"
TASK = "workers.schedule.nightly_review"  # workers.schedule.NIGHTLY_REVIEW (the web does not import workers)


def nightly_task_setup(*, hour: int = 2, minute: int = 30, reset: bool = False) -> PeriodicTask:
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute=str(minute),
        hour=str(hour),
        day_of_week="*",
        day_of_month="*",
        month_of_year="*",
        timezone=settings.TIME_ZONE,
    )
    task, created = PeriodicTask.objects.get_or_create(
        name=NIGHTLY_NAME, defaults={"task": TASK, "crontab": crontab, "queue": "schedule"}
    )
    if reset and not created:
        task.task, task.crontab, task.interval, task.queue, task.enabled = (
            TASK,
            crontab,
            None,
            "schedule",
            True,
        )
        task.save()
    return task


class Command(BaseCommand):
    help = "Create the nightly re-evaluation in celery beat's schedule (django_celery_beat)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--hour", type=int, default=2)
        parser.add_argument("--minute", type=int, default=30)
        parser.add_argument("--reset", action="store_true", help="Put back the time and task if changed.")

    def handle(self, *args: Any, hour: int, minute: int, reset: bool, **options: Any) -> None:
        task = nightly_task_setup(hour=hour, minute=minute, reset=reset)
        self.stdout.write(f"{task.name}: {task.crontab} ({'enabled' if task.enabled else 'disabled'})")
