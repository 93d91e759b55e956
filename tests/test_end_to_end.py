"""A PoC request filed over HTTP, run by a real Celery worker process through the real Redis."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from planner.models import Candidate, HardwareProfile, PocRequest
from tests.conftest import wait_for
from tests.planner.factories import join_team
from tests.planner.test_views import default_params
from tests.tiny import tiny_csv

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_request_filed_in_the_browser_is_measured_by_a_worker(
    client, django_user_model, tiny_model_dir, celery_worker_process
):
    manager = django_user_model.objects.create_user("manager", password="pw")
    client.force_login(join_team(manager, "Alpha", "requester", "manager"))
    hardware = HardwareProfile.objects.get(name="CPU, 2 vCPU")
    response = client.post(
        reverse("planner:request-create"),
        {
            "title": "Tickets, int8 on CPU",
            "model_ref": "tiny-bert",
            "dataset_ref": "upload",
            "dataset_upload": SimpleUploadedFile("tickets.csv", tiny_csv()),
            "p95_target_ms": "1000",
            "accuracy_floor_pct": "50",
            "requests_per_day": "100000",
            "peak_factor": "2",
            "target_utilisation": "0.7",
            "hardware": hardware.pk,
            "horizon_months": "12",
            "engineering_hours": "10",
            "engineering_rate": "100",
            "currency": "USD",
            "candidates": ["quantize.dynamic-int8"],
            **default_params(),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    poc_request = PocRequest.objects.get()

    def finished():
        poc_request.refresh_from_db()
        assert celery_worker_process.poll() is None, "the worker died"
        return not poc_request.is_active

    wait_for(finished, timeout=180, message="the worker to finish the PoC")
    assert poc_request.status == PocRequest.Status.SUCCEEDED, poc_request.error
    assert poc_request.progress == 1.0 and poc_request.attempts == 1
    candidates = list(poc_request.candidates.all())
    assert [c.status for c in candidates] == [Candidate.Status.MEASURED] * 2
    for candidate in candidates:
        assert candidate.accuracy is not None and candidate.size_bytes > 0
        assert [p["batch_size"] for p in candidate.latency] == [1, 4]
        assert candidate.environment["threads"] == 1

    page = client.get(reverse("planner:request-detail", args=[poc_request.pk])).content.decode()
    assert "Recommendation" in page and "quantize.dynamic-int8" in page and "Finished" in page


def test_text_generation_request_is_measured_by_a_worker_with_per_token_costs(
    client, django_user_model, tiny_llama_dir, celery_worker_process
):
    """A causal-LM PoC from the form: a tiny Llama, unlabeled text, a distilled and a quantized candidate."""
    from tests.planner.test_generation import lm_post

    manager = django_user_model.objects.create_user("manager", password="pw")
    client.force_login(join_team(manager, "Alpha", "requester", "manager"))
    hardware = HardwareProfile.objects.get(name="CPU, 2 vCPU")
    response = client.post(
        reverse("planner:request-create"),
        lm_post(
            hardware,
            title="Support replies, LLM",
            p95_target_ms="1000",
            per_token_target_ms="500",
            candidates=["quantize.weight-only", "distill.kd → quantize.weight-only"],
            **{"param:distill.kd:max_steps": "3", "param:distill.kd:batch_size": "8"},
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    poc_request = PocRequest.objects.get()
    assert poc_request.task == "causal-lm"

    def finished():
        poc_request.refresh_from_db()
        assert celery_worker_process.poll() is None, "the worker died"
        return not poc_request.is_active

    wait_for(finished, timeout=240, message="the worker to finish the PoC")
    assert poc_request.status == PocRequest.Status.SUCCEEDED, poc_request.error
    candidates = list(poc_request.candidates.all())
    assert [c.status for c in candidates] == [Candidate.Status.MEASURED] * 3, [c.error for c in candidates]
    for candidate in candidates:
        assert candidate.perplexity > 1 and candidate.accuracy is None
        assert [p["batch_size"] for p in candidate.latency] == [1, 4]
        assert all(p["ttft_p95_ms"] > 0 and p["itl_p95_ms"] > 0 for p in candidate.latency)
    distilled = candidates[2]
    assert "distill.kd: layers" in distilled.notes and distilled.parameters < candidates[0].parameters

    page = client.get(reverse("planner:request-detail", args=[poc_request.pk])).content.decode()
    assert "Finished" in page and "Recommendation" in page
    assert "per 1M output tokens" in page and "TTFT" in page and "Perplexity" in page
