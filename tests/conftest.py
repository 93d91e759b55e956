from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from tests.tiny import build_tiny_classifier, build_tiny_llama, tiny_csv, tiny_lm_jsonl


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
def tiny_llama_dir() -> Path:
    """A tiny Llama causal LM under MODELS_ROOT, accepted by forms and workers like a user's model."""
    path = settings.MODELS_ROOT / "tiny-llama"
    if not (path / "model.safetensors").is_file():
        build_tiny_llama(path)
    return path


@pytest.fixture(scope="session")
def tiny_lm_path() -> Path:
    """Unlabeled text for causal-LM tests, as JSONL."""
    path = Path(settings.VAR_DIR) / "tiny-lm.jsonl"
    path.write_bytes(tiny_lm_jsonl())
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
def sent(monkeypatch):
    """Messages the service sends to the broker, as (task name, args, queue), instead of sending them (the
    real worker is exercised in test_end_to_end)."""
    from workers.app import app

    calls = []
    monkeypatch.setattr(
        app, "send_task", lambda name, args, queue, **options: calls.append((name, args, queue))
    )
    return calls


@pytest.fixture
def celery_worker_process(transactional_db):
    """A real Celery worker process on both queues, against the real Redis and the test database."""
    import redis

    from tests.workerprocs import start_worker

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()  # no queue left over from an earlier run
    worker = start_worker("tests")
    yield worker.process
    worker.stop()
    print(worker.log()[-5000:])  # shown by pytest when the test failed


def wait_for(predicate, *, timeout: float, interval: float = 0.5, message: str = "condition"):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
