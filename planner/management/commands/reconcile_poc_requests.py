"""Bring back the PoC requests the broker or a worker lost (see workers.reconcile).

python manage.py reconcile_poc_requests             # one pass
python manage.py reconcile_poc_requests --every 60  # keep going: the reconciler process of a deployment

A process of its own rather than a Celery beat job: the job it does is repairing what the broker lost, so
it must not travel through the broker, nor wait in a queue behind hours-long PoCs.
"""

import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections, connections

from workers.reconcile import poc_requests_reconcile


class Command(BaseCommand):
    help = "Re-enqueue (or fail, after too many attempts) PoC requests whose message or worker was lost."

    def add_arguments(self, parser):
        parser.add_argument(
            "--every",
            type=float,
            nargs="?",
            const=settings.POC_RECONCILE_EVERY_S,
            help="Run a pass every this many seconds until stopped (default POC_RECONCILE_EVERY_S).",
        )

    def handle(self, *args, **opts):
        every = opts["every"]
        if every is None:
            self._pass(raise_errors=True)
            return
        self.stdout.write(f"Reconciling PoC requests every {every:g} s.")
        while True:
            started = time.monotonic()
            close_old_connections()  # a connection the database dropped since the last pass is replaced
            self._pass(raise_errors=False)
            time.sleep(max(0.0, every - (time.monotonic() - started)))

    def _pass(self, *, raise_errors: bool) -> None:
        try:
            report = poc_requests_reconcile()
        except Exception as exc:  # the database or the broker is down: try again at the next pass
            if raise_errors:
                raise
            self.stderr.write(f"Reconciling failed, retrying at the next pass: {type(exc).__name__}: {exc}")
            connections.close_all()
            return
        done = {outcome: ids for outcome, ids in report.items() if ids}
        if done or raise_errors:
            self.stdout.write(" ".join(f"{k}={v}" for k, v in done.items()) or "Nothing to reconcile.")
