"""Real Celery worker processes for the fault tests, which start, kill and replace them; and the test-only
techniques of tests/fault_techniques.py, registered through an entry point as a package would be."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from django.conf import settings

from tests.conftest import wait_for

FAULT_TECHNIQUES = {
    "faults.slow": "tests.fault_techniques:SlowTechnique",
    "faults.out-of-memory": "tests.fault_techniques:OutOfMemory",
}
# Shared by the workers (environment) and the test process (settings): a dead worker shows in seconds.
FAST_RELIABILITY = {
    "POC_HEARTBEAT_S": 0.5,
    "POC_HEARTBEAT_STALE_S": 3.0,
    "POC_QUEUED_GRACE_S": 1.0,
    "POC_MAX_ATTEMPTS": 3,
}


@contextmanager
def fault_techniques(folder: Path) -> Iterator[Path]:
    """Registers the fault techniques through a dist-info with entry points in ``folder``, for this process
    (sys.path) and the workers started meanwhile (their PYTHONPATH)."""
    from plugins import registry

    dist = folder / "roi_planner_faults-0.1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: roi-planner-faults\nVersion: 0.1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in FAULT_TECHNIQUES.items())
    (dist / "entry_points.txt").write_text("[roi_planner.techniques]\n" + lines)
    sys.path.insert(0, str(folder))
    registry.reload()
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        registry.reload()


class Worker:
    def __init__(self, name: str, process: subprocess.Popen, log_path: Path) -> None:
        self.name, self.process, self.log_path = name, process, log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> Worker:
        def ready():
            assert self.alive(), f"worker {self.name} exited:\n{self.log()[-3000:]}"
            return " ready." in self.log()

        wait_for(ready, timeout=timeout, interval=0.2, message=f"worker {self.name} to start")
        return self

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no message handed back, no last write: a crash or the OOM killer."""
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _environment(pythonpath: Path | None, env: dict[str, object]) -> dict[str, str]:
    from django.db import connection

    db = connection.settings_dict
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        **{key: str(value) for key, value in {**FAST_RELIABILITY, **env}.items()},
    }
    if pythonpath is not None:
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")])
        )
    return environment


def _start(name: str, command: list[str], environment: dict[str, str]) -> Worker:
    log_path = Path(settings.VAR_DIR) / f"{name}-{time.time_ns()}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
    return Worker(name, process, log_path)


def start_worker(name: str, *, pythonpath: Path | None = None, **env: object) -> Worker:
    """A worker on the cpu and gpu queues against the test database and Redis, with the fast reliability
    thresholds; ``env`` overrides settings (e.g. POC_SOFT_TIME_LIMIT_S=2)."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "worker",
        "-Q",
        "cpu,gpu",
        "--pool",
        "solo",
    ]
    command += [
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
        "-n",
        f"{name}-{os.getpid()}@%h",
    ]
    return _start(name, command, _environment(pythonpath, env))


def start_reconciler(every: float = 1.0, **env: object) -> Worker:
    """The periodic reconciler of a deployment (manage.py reconcile_poc_requests --every), fast thresholds."""
    command = [sys.executable, "manage.py", "reconcile_poc_requests", "--every", str(every)]
    return _start("reconciler", command, _environment(None, env))


@contextmanager
def workers() -> Iterator[list[Worker]]:
    """Collects the workers a test starts, and stops them all at the end (their logs shown on failure)."""
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()
            print(f"--- worker {worker.name} ---\n{worker.log()[-4000:]}")


def file_request(owner, hardware, csv_bytes: bytes, *, pipelines, title: str = "fault test"):
    """A request on the tiny model with the task data uploaded, queued on commit like a form's."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from planner import services

    return services.poc_request_create(
        owner=owner,
        title=title,
        model_ref="tiny-bert",
        dataset_ref="upload",
        dataset_file=SimpleUploadedFile("tickets.csv", csv_bytes),
        p95_target_ms=Decimal(1000),
        accuracy_floor_pct=Decimal(50),
        requests_per_day=1000,
        hardware=hardware,
        pipelines=pipelines,
    )


def slow(seconds: float, steps: int | None = None) -> list[dict]:
    return [
        {
            "technique": "faults.slow",
            "params": {"seconds": seconds, "steps": steps or max(1, int(seconds * 5))},
        }
    ]
