from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from planner import services
from planner.models import Candidate, HardwareProfile, PocRequest
from tests.tiny import tiny_csv
from workers.execution import candidate_record_result, poc_request_finish
from workers.record import LatencyPoint, Measurement
from workers.runner import CandidateResult


def valid_post(hw, **overrides):
    """A request form submission that is accepted as it is; ``None`` in overrides leaves a field out."""
    data = {
        "title": "Support tickets",
        "model_ref": "tiny-bert",
        "dataset_ref": "upload",
        "dataset_upload": SimpleUploadedFile("tickets.csv", tiny_csv(), content_type="text/csv"),
        "p95_target_ms": "50",
        "accuracy_floor_pct": "97",
        "requests_per_day": "1000000",
        "peak_factor": "2",
        "target_utilisation": "0.7",
        "hardware": str(hw.pk),
        "horizon_months": "12",
        "engineering_hours": "40",
        "engineering_rate": "100",
        "currency": "USD",
        "candidates": ["quantize.dynamic-int8"],
        **default_params(),
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def default_params():
    """What a browser submits for untouched parameter fields: checked boxes for true defaults."""
    from plugins import registry

    return {
        f"param:{name}:{p.name}": "on"
        for name, cls in registry.techniques().items()
        for p in cls.params
        if p.type is bool and p.default
    }


def test_pages_need_a_login(client, db):
    response = client.get(reverse("planner:request-list"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_form_lists_models_and_techniques(client_logged_in, tiny_model_dir):
    response = client_logged_in.get(reverse("planner:request-create"))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'value="tiny-bert"' in body and "quantize.dynamic-int8" in body


def test_filing_a_request_stores_it_and_queues_it_on_commit(
    client_logged_in, user, cpu_hardware, tiny_model_dir, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_logged_in.post(reverse("planner:request-create"), valid_post(cpu_hardware))
    poc_request = PocRequest.objects.get()
    assert response.status_code == 302 and response.url == reverse(
        "planner:request-detail", args=[poc_request.pk]
    )
    assert poc_request.owner == user and poc_request.status == PocRequest.Status.QUEUED
    assert poc_request.dataset_file.read() == tiny_csv()
    assert [c.pipeline for c in poc_request.candidates.all()] == [
        [],
        [{"technique": "quantize.dynamic-int8", "params": {"per_channel": True, "embeddings": True}}],
    ]
    assert sent == [("workers.tasks.run_poc", [poc_request.pk], "cpu")]


def test_gpu_hardware_goes_to_the_gpu_queue(user, tiny_model_dir, sent, django_capture_on_commit_callbacks):
    gpu = HardwareProfile.objects.get(name="NVIDIA T4")
    with django_capture_on_commit_callbacks(execute=True):
        poc_request = services.poc_request_create(
            owner=user,
            title="t",
            model_ref="tiny-bert",
            dataset_ref="demo",
            p95_target_ms=Decimal(10),
            accuracy_floor_pct=Decimal(95),
            requests_per_day=10,
            hardware=gpu,
            pipelines=[],
        )
    assert sent == [("workers.tasks.run_poc", [poc_request.pk], "gpu")]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"p95_target_ms": "-5"}, "p95_target_ms", "greater than or equal to 0.1"),
        ({"p95_target_ms": "nan"}, "p95_target_ms", "Enter a number"),
        ({"accuracy_floor_pct": "150"}, "accuracy_floor_pct", "less than or equal to 100"),
        ({"target_utilisation": "0"}, "target_utilisation", "greater than or equal to 0.05"),
        ({"dataset_upload": None}, "dataset_upload", "Choose a CSV or JSONL file"),
        (
            {"dataset_upload": SimpleUploadedFile("d.csv", b"review,stars\nok,5\n")},
            "dataset_upload",
            "needs a &#x27;text&#x27; column",
        ),
        ({"model_ref": "../../etc"}, "model_ref", "Select a valid choice"),
        ({"currency": "EUR"}, "currency", "priced in USD"),
        ({"candidates": ["no.such"]}, "candidates", "Select a valid choice"),
        ({"custom_pipelines": "no.such"}, "custom_pipelines", "Unknown technique &#x27;no.such&#x27;"),
        (
            {"custom_pipelines": "quantize.dynamic-int8 → quantize.dynamic-int8"},
            "custom_pipelines",
            "must be the last step",
        ),
    ],
)
def test_bad_input_is_explained_next_to_the_field(
    client_logged_in, cpu_hardware, tiny_model_dir, sent, overrides, field, message
):
    response = client_logged_in.post(reverse("planner:request-create"), valid_post(cpu_hardware, **overrides))
    assert response.status_code == 200
    body = response.content.decode()
    section = body[body.index(f'id="field-{field}"') :]
    assert message in section[: section.find('id="field-', 10)]
    assert not PocRequest.objects.exists() and not sent


def test_a_cpu_only_technique_is_refused_for_gpu_hardware(client_logged_in, tiny_model_dir, sent):
    gpu = HardwareProfile.objects.get(name="NVIDIA T4")
    response = client_logged_in.post(reverse("planner:request-create"), valid_post(gpu))
    assert "runs on cpu, not cuda" in response.content.decode()
    assert not PocRequest.objects.exists()


def _measured(candidate, *, accuracy, p95_ms, size, notes=None):
    latency = (
        LatencyPoint(
            batch_size=1,
            p50_ms=p95_ms * 0.8,
            p95_ms=p95_ms,
            p99_ms=p95_ms * 1.1,
            mean_ms=p95_ms,
            throughput_rps=1000 / (p95_ms * 0.8),
            iterations=100,
            mean_tokens=20.0,
        ),
    )
    measurement = Measurement(
        accuracy=accuracy,
        macro_f1=accuracy - 0.01,
        latency=latency,
        size_bytes=size,
        parameters=1000,
        nonzero_parameters=1000,
        peak_memory_bytes=10**8,
        produce_seconds=36.0,
        device_hours=0.01,
    )
    candidate_record_result(
        candidate=candidate,
        result=CandidateResult(
            str(candidate.pk),
            ok=True,
            measurement=measurement,
            environment={"device": "cpu"},
            notes=notes or {},
        ),
    )


def test_request_page_shows_figures_and_the_recommendation(client_logged_in, user, cpu_hardware, sent):
    poc_request = services.poc_request_create(
        owner=user,
        title="Tickets",
        model_ref="demo",
        dataset_ref="demo",
        p95_target_ms=Decimal(30),
        accuracy_floor_pct=Decimal(97),
        requests_per_day=8_640_000,
        hardware=cpu_hardware,
        pipelines=[[{"technique": "quantize.dynamic-int8"}]],
    )
    base, int8 = poc_request.candidates.all()
    _measured(base, accuracy=0.90, p95_ms=40, size=4_000_000)
    _measured(int8, accuracy=0.89, p95_ms=20, size=1_000_000)
    poc_request_finish(request_id=poc_request.pk)

    response = client_logged_in.get(reverse("planner:request-detail", args=[poc_request.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    assert "quantize.dynamic-int8" in body and "Recommendation" in body
    assert "2.00×" in body  # speedup 40 / 20 ms
    assert "4.00×" in body  # size ratio
    assert "p95 at batch 1 is 40.0 ms" in body  # the baseline misses the 30 ms target
    assert 'class="recommended"' in body and f'id="candidate-{int8.pk}" class="recommended"' in body


def test_someone_elses_request_is_not_found(client, django_user_model, user, cpu_hardware, sent):
    poc_request = services.poc_request_create(
        owner=user,
        title="Mine",
        model_ref="demo",
        dataset_ref="demo",
        p95_target_ms=Decimal(30),
        accuracy_floor_pct=Decimal(97),
        requests_per_day=1000,
        hardware=cpu_hardware,
        pipelines=[],
    )
    client.force_login(django_user_model.objects.create_user("mallory", password="pw"))
    assert client.get(reverse("planner:request-detail", args=[poc_request.pk])).status_code == 404
    assert client.get(reverse("planner:request-progress", args=[poc_request.pk])).status_code == 404


def test_progress_endpoint(client_logged_in, user, cpu_hardware, sent):
    poc_request = services.poc_request_create(
        owner=user,
        title="Mine",
        model_ref="demo",
        dataset_ref="demo",
        p95_target_ms=Decimal(30),
        accuracy_floor_pct=Decimal(97),
        requests_per_day=1000,
        hardware=cpu_hardware,
        pipelines=[],
    )
    PocRequest.objects.filter(pk=poc_request.pk).update(progress=0.25, progress_message="baseline: measuring")
    data = client_logged_in.get(reverse("planner:request-progress", args=[poc_request.pk])).json()
    assert data["progress"] == 0.25 and data["message"] == "baseline: measuring"
    assert list(data["candidates"].values()) == [Candidate.Status.PENDING]


def test_technique_page_lists_parameters(client_logged_in):
    body = client_logged_in.get(reverse("planner:technique-list")).content.decode()
    assert "per_channel" in body and "Jacob et al. 2018" in body


def test_smaller_but_not_faster_is_flagged_with_the_reason(client_logged_in, user, cpu_hardware, sent):
    poc_request = services.poc_request_create(
        owner=user,
        title="Sparse",
        model_ref="demo",
        dataset_ref="demo",
        p95_target_ms=Decimal(30),
        accuracy_floor_pct=Decimal(97),
        requests_per_day=1000,
        hardware=cpu_hardware,
        pipelines=[
            [{"technique": "quantize.dynamic-int8"}],
            [{"technique": "quantize.dynamic-int8", "params": {"per_channel": False}}],
        ],
    )
    base, smaller, same = poc_request.candidates.all()
    _measured(base, accuracy=0.9, p95_ms=20, size=4_000_000)
    _measured(
        smaller,
        accuracy=0.9,
        p95_ms=19.9,
        size=1_000_000,
        notes={"caveats": ["weights dequantized on the fly"]},
    )
    _measured(same, accuracy=0.9, p95_ms=20.5, size=4_000_000)
    body = client_logged_in.get(reverse("planner:request-detail", args=[poc_request.pk])).content.decode()
    assert "smaller but not faster: weights dequantized on the fly" in body
    assert "neither smaller nor faster" in body
