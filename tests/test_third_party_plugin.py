"""A third-party technique package is installed with pip, then seen in the form, queued and run by a worker."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from planner.models import Candidate, HardwareProfile, PocRequest
from plugins import registry
from tests.conftest import wait_for
from tests.planner.factories import join_team
from tests.planner.test_views import default_params

SAMPLE = Path(__file__).parent / "sample_plugin"


@pytest.fixture(scope="session")
def sample_plugin(tmp_path_factory):
    """pip-installs tests/sample_plugin into a folder put on the path of this process and its workers."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-compile",
            "--target",
            str(target),
            str(SAMPLE),
        ],
        check=True,
        timeout=300,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    registry.reload()
    yield target
    sys.path.remove(str(target))
    registry.reload()


def test_installed_package_registers_through_its_entry_point(sample_plugin):
    assert "sample.clip-outliers" in registry.techniques()
    assert registry.version_of("sample.clip-outliers") == "roi-planner-sample 0.1.0"


@pytest.mark.django_db
def test_form_offers_it_with_its_parameters(sample_plugin, client_logged_in):
    body = client_logged_in.get(reverse("planner:request-create")).content.decode()
    assert 'value="sample.clip-outliers"' in body
    assert 'name="param:sample.clip-outliers:sigmas"' in body and "standard deviations" in body


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_runs_end_to_end(
    sample_plugin, client, django_user_model, tiny_model_dir, tiny_csv_path, celery_worker_process
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    eng = django_user_model.objects.create_user("eng", password="pw")
    client.force_login(join_team(eng, "Alpha", "requester"))
    response = client.post(
        reverse("planner:request-create"),
        {
            "title": "Sample plugin",
            "model_ref": "tiny-bert",
            "dataset_ref": "upload",
            "dataset_upload": SimpleUploadedFile("d.csv", tiny_csv_path.read_bytes()),
            "p95_target_ms": "1000",
            "accuracy_floor_pct": "50",
            "requests_per_day": "1000",
            "peak_factor": "1",
            "target_utilisation": "0.7",
            "hardware": HardwareProfile.objects.get(name="CPU, 2 vCPU").pk,
            "horizon_months": "12",
            "engineering_hours": "1",
            "engineering_rate": "100",
            "currency": "USD",
            "custom_pipelines": "sample.clip-outliers → quantize.dynamic-int8",
            **default_params(),
            "param:sample.clip-outliers:sigmas": "2.5",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    poc_request = PocRequest.objects.get()
    wait_for(lambda: not PocRequest.objects.get(pk=poc_request.pk).is_active, timeout=180, message="the PoC")
    poc_request.refresh_from_db()
    assert poc_request.status == PocRequest.Status.SUCCEEDED, poc_request.error
    candidate = poc_request.candidates.get(position=1)
    assert candidate.status == Candidate.Status.MEASURED, candidate.error
    assert candidate.pipeline[0] == {"technique": "sample.clip-outliers", "params": {"sigmas": 2.5}}
    assert candidate.environment["plugins"]["sample.clip-outliers"] == "roi-planner-sample 0.1.0"
    assert "clipped weights" in " ".join(candidate.notes)
