"""A Hub model at a pinned commit, filed through the API and measured by a real Celery worker, which reads
it from a Hub cache the test fills (HF_HUB_OFFLINE: nothing is fetched); then its candidate downloaded."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.urls import reverse

from planner.models import Candidate, PocRequest
from tests.api.conftest import token_client
from tests.conftest import wait_for
from tests.workerprocs import start_worker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]
REVISION = "0123456789abcdef0123456789abcdef01234567"


def fill_hub_cache(cache: Path, repo_id: str, model_dir: Path, revision: str = REVISION) -> Path:
    """The layout huggingface_hub keeps: models--org--name/{refs/main, snapshots/<commit>/…}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    shutil.copytree(model_dir, snapshot, dirs_exist_ok=True)
    return snapshot


@pytest.fixture
def hub_worker(transactional_db, tiny_model_dir):
    cache = Path(settings.VAR_DIR) / "hub-cache"
    fill_hub_cache(cache, "acme/tiny-bert", tiny_model_dir)
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    worker = start_worker("hub", HF_HUB_CACHE=cache, HF_HUB_OFFLINE=1)
    yield worker
    worker.stop()
    print(worker.log()[-5000:])


def test_hub_request_is_measured_by_a_worker_and_downloadable(client, user, cpu_hardware, hub_worker):
    from tests.api.test_api import _file

    api = token_client(client, user)
    response = _file(
        api,
        cpu_hardware,
        model_source="hub",
        model_ref=None,
        hub_model="acme/tiny-bert",
        model_revision=REVISION,
        p95_target_ms="1000",
        accuracy_floor_pct="50",
    )
    assert response.status_code == 201, response.content[:2000]
    pk = response.json()["id"]

    def finished():
        assert hub_worker.alive(), "the worker died"
        body = api.get(reverse("api:request-detail", args=[pk])).json()
        return body if body["status"] not in ("queued", "running") else None

    body = wait_for(finished, timeout=180, message="the worker to measure the Hub model")
    assert body["status"] == "succeeded", body["error"]
    poc_request = PocRequest.objects.get(pk=pk)
    assert [c.status for c in poc_request.candidates.all()] == [Candidate.Status.MEASURED] * 2
    candidates = api.get(reverse("api:candidate-list", args=[pk])).json()
    assert candidates[1]["accuracy"] is not None and candidates[1]["latency"][0]["p95_ms"] > 0
    download = api.get(candidates[1]["links"]["download"])
    archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
    names = {n.split("/", 1)[1] for n in archive.namelist()}
    assert {"README.md", "config.json", "tokenizer.json"} <= names
    assert any(n.endswith(".safetensors") for n in names)
    card = archive.read(next(n for n in archive.namelist() if n.endswith("README.md"))).decode()
    assert "base_model: acme/tiny-bert" in card and REVISION in card


def test_a_commit_missing_from_the_cache_fails_the_request_with_the_reason(
    client, user, cpu_hardware, hub_worker
):
    from tests.api.test_api import _file

    api = token_client(client, user)
    response = _file(
        api,
        cpu_hardware,
        model_source="hub",
        model_ref=None,
        hub_model="acme/absent",
        model_revision="f" * 40,
    )
    assert response.status_code == 201
    pk = response.json()["id"]
    poc_request = PocRequest.objects.get(pk=pk)

    def ended():
        poc_request.refresh_from_db()
        return poc_request.status == PocRequest.Status.FAILED

    wait_for(ended, timeout=120, message="the request to fail")
    assert "could not be fetched from the Hub" in poc_request.error
