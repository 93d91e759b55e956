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


def test_request_served_on_openvino_measures_its_baseline_and_a_runtime_candidate_there(
    client, django_user_model, tiny_model_dir, celery_worker_process
):
    """The baseline runs on the runtime the request says it is served with today (OpenVINO); an ONNX
    Runtime int8 candidate is produced, saved in its own format, reloaded and measured by a real worker."""
    manager = django_user_model.objects.create_user("manager", password="pw")
    client.force_login(join_team(manager, "Alpha", "requester", "manager"))
    hardware = HardwareProfile.objects.get(name="CPU, 2 vCPU")
    response = client.post(
        reverse("planner:request-create"),
        {
            "title": "Tickets, served on OpenVINO",
            "model_ref": "tiny-bert",
            "dataset_ref": "upload",
            "dataset_upload": SimpleUploadedFile("tickets.csv", tiny_csv()),
            "p95_target_ms": "1000",
            "accuracy_floor_pct": "50",
            "requests_per_day": "100000",
            "peak_factor": "2",
            "target_utilisation": "0.7",
            "hardware": hardware.pk,
            "serving_runtime": "openvino",
            "horizon_months": "12",
            "engineering_hours": "10",
            "engineering_rate": "100",
            "currency": "USD",
            "candidates": ["runtime.onnxruntime"],
            **default_params(),
            "param:runtime.onnxruntime:quantization": "dynamic-int8",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    poc_request = PocRequest.objects.get()
    assert poc_request.serving_runtime == "openvino"

    def finished():
        poc_request.refresh_from_db()
        assert celery_worker_process.poll() is None, "the worker died"
        return not poc_request.is_active

    wait_for(finished, timeout=300, message="the worker to finish the PoC")
    assert poc_request.status == PocRequest.Status.SUCCEEDED, poc_request.error
    baseline, candidate = sorted(poc_request.candidates.all(), key=lambda c: len(c.pipeline))
    assert [baseline.status, candidate.status] == [Candidate.Status.MEASURED] * 2, [candidate.error]
    for measured in (baseline, candidate):
        assert measured.accuracy is not None and measured.size_bytes > 0 and measured.parameters > 0
        assert [p["batch_size"] for p in measured.latency] == [1, 4]
    assert candidate.pipeline[0]["params"]["quantization"] == "dynamic-int8"
    assert "ONNX Runtime, dynamic-int8" in str(candidate.notes)


def test_a_worker_measures_goodput_and_the_pages_say_what_a_replica_sustains(
    client, django_user_model, tiny_model_dir, celery_worker_process
):
    """The tiny classifier behind the batcher under Poisson arrivals (the short trials of tests/settings.py):
    every stored candidate has its goodput, capacity is that rate, and the pages say so."""
    manager = django_user_model.objects.create_user("manager", password="pw")
    client.force_login(join_team(manager, "Alpha", "requester", "manager"))
    hardware = HardwareProfile.objects.get(name="CPU, 2 vCPU")
    response = client.post(
        reverse("planner:request-create"),
        {
            "title": "Tickets served",
            "model_ref": "tiny-bert",
            "dataset_ref": "upload",
            "dataset_upload": SimpleUploadedFile("tickets.csv", tiny_csv()),
            "p95_target_ms": "200",
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

    wait_for(finished, timeout=240, message="the worker to finish the PoC")
    assert poc_request.status == PocRequest.Status.SUCCEEDED, poc_request.error
    for candidate in poc_request.candidates.all():
        goodput = candidate.measurement.goodput
        assert goodput is not None and goodput.target_ms == 200.0 and goodput.share == 0.95
        assert goodput.max_batch in (1, 4) and goodput.max_wait_ms == 1.0 and goodput.batching == "static"
        assert 0 < goodput.rps <= goodput.static_rps and goodput.attainment_low >= 0.95
        assert goodput.curve and candidate.environment["goodput_seconds"] > 0
    baseline = poc_request.candidates.get(pipeline=[])
    page = client.get(reverse("planner:request-detail", args=[poc_request.pk])).content.decode()
    assert "per replica with 95% of requests under 200 ms (batches of up to" in page
    raw = client.get(
        reverse("planner:candidate-measurement", args=[poc_request.pk, baseline.pk])
    ).content.decode()
    assert 'id="goodput-data"' in raw and 'id="goodput-chart"' in raw and "planner/goodput.js" in raw


def test_search_request_finds_candidates_within_its_budget_through_a_real_worker(
    client, django_user_model, tiny_model_dir, celery_worker_process
):
    """Search mode: the form takes the targets and a budget instead of pipelines; the worker proposes,
    produces and measures each trial as a candidate, stores the trials and why it stopped, and calibrates
    the hardware's estimate; the page shows the search, and the form's estimate endpoint answers."""
    from planner.models import HardwareCalibration, SearchTrial

    manager = django_user_model.objects.create_user("manager", password="pw")
    client.force_login(join_team(manager, "Alpha", "requester", "manager"))
    hardware = HardwareProfile.objects.get(name="CPU, 2 vCPU")
    estimate = client.get(
        reverse("planner:request-estimate"), {"model_ref": "tiny-bert", "hardware": hardware.pk}
    ).json()
    assert estimate["rows"] and estimate["parameters"] > 0 and not estimate["calibrated"]
    response = client.post(
        reverse("planner:request-create"),
        {
            "title": "Tickets, cheapest that meets the targets",
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
            "mode": "search",
            "search_max_trials": "2",
            **default_params(),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    poc_request = PocRequest.objects.get()
    assert poc_request.mode == "search" and list(
        poc_request.candidates.values_list("pipeline", flat=True)
    ) == [[]]

    def finished():
        poc_request.refresh_from_db()
        assert celery_worker_process.poll() is None, "the worker died"
        return not poc_request.is_active

    wait_for(finished, timeout=240, message="the worker to finish the search")
    assert poc_request.status == PocRequest.Status.SUCCEEDED, poc_request.error
    assert poc_request.search_stop_reason in ("trials", "bound", "exhausted")
    trials = list(SearchTrial.objects.filter(request=poc_request).order_by("number"))
    measured = [t for t in trials if t.state == "measured"]
    assert 1 <= len(measured) <= 2 and all(
        t.candidate and t.candidate.status == "measured" for t in measured
    ), [
        (
            t.number,
            t.state,
            t.params,
            t.candidate.error if t.candidate else None,
            poc_request.search_stop_reason,
        )
        for t in trials
    ]
    assert all(set(t.params) == {"student_layers", "epochs", "ffn_amount", "finish"} for t in trials)
    assert all(t.estimate_ms and t.estimate_ms > 0 for t in measured)
    assert poc_request.candidates.count() == 1 + len(measured)
    calibration = HardwareCalibration.objects.get(hardware=hardware)
    assert calibration.samples == 1 + len(measured) and calibration.efficiency > 0
    assert calibration.request == poc_request and calibration.error_after >= 0

    page = client.get(reverse("planner:request-detail", args=[poc_request.pk])).content.decode()
    assert 'id="search-trials"' in page and 'id="search-data"' in page and "Stopped:" in page
    assert 'id="estimate-table"' in page and "planner/search.js" in page
    again = client.get(
        reverse("planner:request-estimate"), {"model_ref": "tiny-bert", "hardware": hardware.pk}
    )
    assert again.json()["calibrated"] is True
