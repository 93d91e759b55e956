"""Cancel from the request page: a queued request at once, a running one at the worker's next safe point,
keeping what was measured."""

from __future__ import annotations

import time

import pytest
import redis
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from planner import services
from planner.models import Candidate, PocRequest
from tests.conftest import wait_for
from tests.tiny import tiny_csv
from tests.workerprocs import FAST_RELIABILITY, fault_techniques, file_request, slow, start_worker, workers
from workers.execution import poc_request_execute

INT8 = [{"technique": "quantize.dynamic-int8"}]


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("canceller", password="pw")


@pytest.fixture
def cpu(db):
    from planner.models import HardwareProfile

    return HardwareProfile.objects.get(name="CPU, 2 vCPU")


@pytest.mark.django_db
def test_a_queued_request_is_cancelled_at_once_and_a_later_delivery_does_nothing(
    client, owner, cpu, tiny_model_dir
):
    poc = file_request(owner, cpu, tiny_csv(), pipelines=[INT8])  # never sent: on_commit does not run here
    client.force_login(owner)
    page = client.get(reverse("planner:request-detail", args=[poc.pk])).content.decode()
    assert 'id="cancel-button"' in page

    response = client.post(reverse("planner:request-cancel", args=[poc.pk]), follow=True)
    assert response.redirect_chain == [(reverse("planner:request-detail", args=[poc.pk]), 302)]
    assert "Request cancelled; what was measured is kept." in response.content.decode()
    poc.refresh_from_db()
    assert poc.status == PocRequest.Status.CANCELLED and poc.cancel_requested_at and poc.finished_at
    assert set(poc.candidates.values_list("status", "error")) == {
        (Candidate.Status.FAILED, "not measured: the request was cancelled")
    }
    assert 'id="cancel-button"' not in response.content.decode()

    poc_request_execute(request_id=poc.pk, task_id=poc.task_id)  # its message arrives after all
    poc.refresh_from_db()
    assert poc.status == PocRequest.Status.CANCELLED and poc.attempts == 0


@pytest.mark.django_db
def test_only_the_owner_or_staff_can_cancel(client, owner, cpu, django_user_model, tiny_model_dir):
    poc = file_request(owner, cpu, tiny_csv(), pipelines=[])
    teammate = django_user_model.objects.create_user("teammate", password="pw")
    poc.team.members.add(teammate)
    with pytest.raises(PermissionDenied):
        services.poc_request_cancel(request_id=poc.pk, user=teammate)
    client.force_login(owner)
    assert client.get(reverse("planner:request-cancel", args=[poc.pk])).status_code == 405
    staff = django_user_model.objects.create_user("admin", password="pw", is_staff=True)
    assert services.poc_request_cancel(request_id=poc.pk, user=staff).status == PocRequest.Status.CANCELLED


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_cancel_during_a_run_stops_at_the_next_safe_point_and_keeps_what_was_measured(
    client, owner, cpu, tiny_model_dir, tmp_path, settings
):
    for name, value in FAST_RELIABILITY.items():
        setattr(settings, name, value)
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    client.force_login(owner)
    with fault_techniques(tmp_path) as plugin, workers() as started:
        worker = start_worker("cancel", pythonpath=plugin)
        started.append(worker)
        poc = file_request(owner, cpu, tiny_csv(), pipelines=[slow(60, 120), INT8])

        def mid_run():
            poc.refresh_from_db()
            return poc.progress_message.startswith("faults.slow: step")

        wait_for(mid_run, timeout=60, interval=0.1, message="the slow technique to be under way")
        page = client.get(reverse("planner:request-detail", args=[poc.pk])).content.decode()
        assert 'id="cancel-button"' in page
        response = client.post(reverse("planner:request-cancel", args=[poc.pk]), follow=True)
        asked = time.monotonic()
        assert "Cancelling: the worker stops at its next safe point" in response.content.decode()

        wait_for(
            lambda: PocRequest.objects.get(pk=poc.pk).status == PocRequest.Status.CANCELLED,
            timeout=20,
            message="the run to stop",
        )
        stopped_after = time.monotonic() - asked
        assert stopped_after < 5, stopped_after  # a progress report every 0.5 s, read at most once a second
        poc.refresh_from_db()
        assert poc.progress_message == "cancelled; 1 of 3 candidates measured" and poc.finished_at
        baseline, slow_candidate, int8 = poc.candidates.order_by("position")
        assert baseline.status == Candidate.Status.MEASURED and baseline.accuracy is not None
        for candidate in (slow_candidate, int8):
            assert (candidate.status, candidate.error) == (
                Candidate.Status.FAILED,
                "not measured: the request was cancelled",
            )
        page = client.get(reverse("planner:request-detail", args=[poc.pk])).content.decode()
        assert "Cancelled" in page and 'id="cancel-button"' not in page

        # The worker goes on with the next request.
        after = file_request(owner, cpu, tiny_csv(), pipelines=[], title="next")
        wait_for(
            lambda: not PocRequest.objects.get(pk=after.pk).is_active, timeout=60, message="the next request"
        )
        after.refresh_from_db()
        assert after.status == PocRequest.Status.SUCCEEDED and worker.alive()
    print(f"cancelled {stopped_after:.1f} s after the owner asked")
