from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from tests.tiny import build_tiny_classifier, tiny_csv


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A tiny classifier under MODELS_ROOT, so forms and workers accept it like a user's model."""
    path = settings.MODELS_ROOT / "tiny-bert"
    if not (path / "model.safetensors").is_file():
        build_tiny_classifier(path)
    return path


@pytest.fixture(scope="session")
def tiny_csv_path() -> Path:
    path = Path(settings.VAR_DIR) / "tiny.csv"
    path.write_bytes(tiny_csv())
    return path


@pytest.fixture
def user(db, django_user_model):
    """A member of team Alpha who files requests and manages them (requester and manager)."""
    from tests.planner.factories import join_team

    return join_team(
        django_user_model.objects.create_user("alice", password="pw"), "Alpha", "requester", "manager"
    )


@pytest.fixture
def client_logged_in(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def cpu_hardware(db):
    from planner.models import HardwareProfile

    return HardwareProfile.objects.get(name="CPU, 2 vCPU")


@pytest.fixture
def celery_worker_process(transactional_db):
    """A real Celery worker process on both queues, against the real Redis and the test database."""
    import os
    import subprocess
    import sys
    import time

    import redis
    from django.db import connection

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.flushdb()  # a queue left over from an earlier run must not leak into this one
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    db = connection.settings_dict
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    log_path = Path(settings.VAR_DIR) / f"worker-{time.time_ns()}.log"
    with open(log_path, "w+") as log:
        process = subprocess.Popen(
            [
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
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
                "-n",
                f"tests-{os.getpid()}@%h",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        yield process
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.seek(0)
        print(log.read()[-5000:])  # shown by pytest when the test failed


def wait_for(predicate, *, timeout: float, interval: float = 0.5, message: str = "condition"):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
