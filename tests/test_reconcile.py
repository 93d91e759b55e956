"""The reconciler and the idempotent run, rule by rule, against the real Redis and PostgreSQL (no worker:
the rows are put in the state a dead worker or a lost queue leaves them in)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from django.core.management import call_command
from django.utils import timezone

from planner import services
from planner.models import Candidate, PocRequest
from tests.planner.factories import INT8, points, record, sweep
from workers.app import app
from workers.broker import held_messages
from workers.execution import poc_request_execute
from workers.reconcile import poc_requests_reconcile
from workers.record import Measurement
from workers.runner import CandidateResult

pytestmark = pytest.mark.django_db

LONG_AGO = timedelta(seconds=30)


@pytest.fixture
def broker(settings):
    settings.POC_HEARTBEAT_STALE_S = 3.0
    settings.POC_QUEUED_GRACE_S = 2.0
    settings.POC_MAX_ATTEMPTS = 3
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def queued(user, cpu_hardware, broker, django_capture_on_commit_callbacks):
    """Files a request (baseline + int8) and sends its message to the real Redis."""

    def make(title: str = "r") -> PocRequest:
        with django_capture_on_commit_callbacks(execute=True):
            poc = services.poc_request_create(
                owner=user,
                title=title,
                model_ref="tiny-bert",
                dataset_ref="demo",
                p95_target_ms=Decimal(100),
                accuracy_floor_pct=Decimal(90),
                requests_per_day=1000,
                hardware=cpu_hardware,
                pipelines=[INT8],
            )
        poc.refresh_from_db()
        return poc

    return make


def _waiting() -> frozenset[str]:
    return held_messages(app, services.POC_QUEUES).waiting


def _running(poc: PocRequest, *, beat_ago: timedelta, attempts: int = 1, **fields) -> PocRequest:
    """The row as a worker leaves it mid-run, the baseline measured, its last heartbeat ``beat_ago``."""
    record(poc.candidates.get(position=0), accuracy=0.9, latency=sweep(10))
    PocRequest.objects.filter(pk=poc.pk).update(
        status=PocRequest.Status.RUNNING,
        attempts=attempts,
        started_at=timezone.now() - beat_ago,
        heartbeat_at=timezone.now() - beat_ago,
        progress_message="quantize.dynamic-int8: producing",
        **fields,
    )
    poc.refresh_from_db()
    return poc


def _reconcile(capture) -> dict[str, list[int]]:
    with capture(execute=True):
        return poc_requests_reconcile()


def test_filing_sends_a_message_under_the_task_id_on_the_row(queued):
    poc = queued()
    assert poc.status == PocRequest.Status.QUEUED and poc.enqueued_at is not None
    assert _waiting() == {poc.task_id}


def test_a_running_request_whose_worker_stopped_beating_is_queued_again(
    queued, django_capture_on_commit_callbacks
):
    dead = _running(queued("dead"), beat_ago=LONG_AGO)
    alive = _running(queued("alive"), beat_ago=timedelta(seconds=1))
    old_task_id, alive_task_id = dead.task_id, alive.task_id

    assert _reconcile(django_capture_on_commit_callbacks)["requeued"] == [dead.pk]

    dead.refresh_from_db()
    assert dead.status == PocRequest.Status.QUEUED and dead.attempts == 1
    assert dead.task_id != old_task_id and dead.task_id in _waiting()
    assert dead.progress_message.startswith("its worker stopped; queued again (attempt 2 of 3)")
    assert dead.candidates.get(position=0).status == Candidate.Status.MEASURED
    alive.refresh_from_db()
    assert (alive.status, alive.task_id) == (PocRequest.Status.RUNNING, alive_task_id)


def test_after_the_last_attempt_it_is_failed_with_the_reason(queued, django_capture_on_commit_callbacks):
    poc = _running(queued(), beat_ago=LONG_AGO, attempts=3)

    assert _reconcile(django_capture_on_commit_callbacks)["failed"] == [poc.pk]

    poc.refresh_from_db()
    assert poc.status == PocRequest.Status.FAILED and poc.finished_at
    assert poc.error.startswith(
        "The worker running this request stopped 3 times before it finished "
        "(last step: quantize.dynamic-int8: producing). It may have run out of memory or been restarted"
    )
    baseline, int8 = poc.candidates.order_by("position")
    assert baseline.status == Candidate.Status.MEASURED
    assert (int8.status, int8.error) == (Candidate.Status.FAILED, "not measured: the PoC stopped")


def test_a_cancel_waiting_for_a_dead_worker_ends_cancelled(queued, django_capture_on_commit_callbacks):
    poc = _running(queued(), beat_ago=LONG_AGO, cancel_requested_at=timezone.now() - LONG_AGO)

    assert _reconcile(django_capture_on_commit_callbacks)["cancelled"] == [poc.pk]

    poc.refresh_from_db()
    assert poc.status == PocRequest.Status.CANCELLED
    assert poc.progress_message == "cancelled; 1 of 2 candidates measured"


def test_a_queued_request_whose_message_was_lost_is_sent_again(
    queued, broker, django_capture_on_commit_callbacks
):
    lost, waiting = queued("lost"), queued("waiting")
    broker.lrem("cpu", 0, next(m for m in broker.lrange("cpu", 0, -1) if lost.task_id in m.decode()))
    fresh = queued("just filed")
    broker.delete("cpu")  # this one's message is lost too, but it was queued a moment ago: not yet
    broker.rpush("cpu", json.dumps(_message(waiting.task_id)))
    PocRequest.objects.filter(pk__in=[lost.pk, waiting.pk]).update(enqueued_at=timezone.now() - LONG_AGO)

    assert _reconcile(django_capture_on_commit_callbacks)["resent"] == [lost.pk]

    lost.refresh_from_db()
    assert lost.status == PocRequest.Status.QUEUED and lost.attempts == 0
    assert _waiting() == {waiting.task_id, lost.task_id}
    fresh.refresh_from_db()
    assert fresh.task_id not in _waiting()  # left for a later pass, once its grace period is over


def test_a_message_a_worker_took_counts_as_held_until_it_should_have_started(
    queued, broker, django_capture_on_commit_callbacks
):
    taking, took_long_ago = queued("a worker is taking it"), queued("its worker died before starting it")
    broker.delete("cpu")
    for poc, taken_at in ((taking, time.time()), (took_long_ago, time.time() - 30)):
        tag = f"tag-{poc.pk}"
        broker.hset("unacked", tag, json.dumps([_message(poc.task_id), "cpu", "cpu"]))
        broker.zadd("unacked_index", {tag: taken_at})
    PocRequest.objects.update(enqueued_at=timezone.now() - LONG_AGO)

    assert _reconcile(django_capture_on_commit_callbacks)["resent"] == [took_long_ago.pk]


def test_finished_failed_and_cancelled_requests_are_never_touched(
    queued, broker, django_capture_on_commit_callbacks
):
    requests = [queued(status) for status in ("succeeded", "failed", "cancelled")]
    for poc in requests:
        PocRequest.objects.filter(pk=poc.pk).update(
            status=poc.title, enqueued_at=timezone.now() - LONG_AGO, heartbeat_at=timezone.now() - LONG_AGO
        )
    broker.flushdb()

    assert not any(_reconcile(django_capture_on_commit_callbacks).values())
    assert [PocRequest.objects.get(pk=p.pk).status for p in requests] == ["succeeded", "failed", "cancelled"]
    assert not _waiting()


def test_reconcile_command_runs_one_pass(queued, capsys):
    poc = _running(queued(), beat_ago=LONG_AGO)
    call_command("reconcile_poc_requests")
    assert f"requeued=[{poc.pk}]" in capsys.readouterr().out
    call_command("reconcile_poc_requests")
    assert "Nothing to reconcile." in capsys.readouterr().out


def test_a_send_that_fails_leaves_a_row_the_reconciler_sends_again(
    queued, monkeypatch, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(app, "send_task", broker_down)
    poc = queued()  # filing still succeeds: the row is the record
    assert poc.status == PocRequest.Status.QUEUED and poc.task_id and not _waiting()
    monkeypatch.undo()
    PocRequest.objects.filter(pk=poc.pk).update(enqueued_at=timezone.now() - LONG_AGO)

    assert _reconcile(django_capture_on_commit_callbacks)["resent"] == [poc.pk]
    poc.refresh_from_db()
    assert _waiting() == {poc.task_id}


class FakeRunner:
    """Stands in for workers.runner.run_poc: records what it was asked to measure, measures it at once."""

    def __init__(self):
        self.keys: list[str] | None = None

    def __call__(self, spec, report):
        self.keys = [c.key for c in spec.candidates]
        for candidate in spec.candidates:
            report(0.5, "measuring")
            yield _result(candidate.key)


def _result(key: str) -> CandidateResult:
    measurement = Measurement(
        accuracy=0.9,
        macro_f1=0.89,
        latency=points(sweep(5)),
        size_bytes=1000,
        parameters=10,
        nonzero_parameters=10,
        peak_memory_bytes=10,
        produce_seconds=1.0,
        device_hours=0.001,
    )
    return CandidateResult(key, ok=True, measurement=measurement, environment={"device": "cpu"})


@pytest.fixture
def runner(monkeypatch):
    fake = FakeRunner()
    monkeypatch.setattr("workers.runner.run_poc", fake)
    return fake


def test_a_duplicate_delivery_while_a_live_worker_runs_it_does_nothing(queued, runner):
    poc = _running(queued(), beat_ago=timedelta(seconds=1))
    poc_request_execute(request_id=poc.pk, task_id="another-message")
    assert runner.keys is None
    after = PocRequest.objects.get(pk=poc.pk)
    assert (after.status, after.attempts, after.task_id) == (PocRequest.Status.RUNNING, 1, poc.task_id)


def test_a_message_handed_back_after_its_worker_died_resumes_without_measuring_again(queued, runner):
    """A prefork child killed mid-run: reject_on_worker_lost hands the same message back at once, while the
    heartbeat still looks fresh. The run resumes, measuring only what was not measured."""
    poc = _running(queued(), beat_ago=timedelta(seconds=1))
    baseline = poc.candidates.get(position=0)

    poc_request_execute(request_id=poc.pk, task_id=poc.task_id)

    poc.refresh_from_db()
    assert poc.status == PocRequest.Status.SUCCEEDED and poc.attempts == 2
    assert runner.keys == [str(poc.candidates.get(position=1).pk)]
    assert poc.candidates.get(position=0).measured_at == baseline.measured_at
    poc_request_execute(request_id=poc.pk, task_id=poc.task_id)  # and once more: nothing to do
    assert PocRequest.objects.get(pk=poc.pk).attempts == 2


def test_a_delivery_after_the_last_attempt_fails_the_request_instead_of_running_it(queued, runner):
    poc = _running(queued(), beat_ago=LONG_AGO, attempts=3)
    poc_request_execute(request_id=poc.pk, task_id="redelivered")
    poc.refresh_from_db()
    assert runner.keys is None
    assert poc.status == PocRequest.Status.FAILED and "stopped 3 times" in poc.error


def test_a_run_that_lost_its_request_stops_without_writing(queued, runner, monkeypatch):
    """The reconciler took a live but silent worker for dead and queued the request again: the first run
    must not go on writing next to the second."""
    poc = queued()

    def taken_over(spec, report):
        PocRequest.objects.filter(pk=poc.pk).update(status=PocRequest.Status.QUEUED, task_id="the-new-one")
        yield _result(spec.candidates[0].key)

    monkeypatch.setattr("workers.runner.run_poc", taken_over)
    poc_request_execute(request_id=poc.pk, task_id=poc.task_id)

    poc.refresh_from_db()
    assert (poc.status, poc.task_id) == (PocRequest.Status.QUEUED, "the-new-one")
    assert set(poc.candidates.values_list("status", flat=True)) == {Candidate.Status.PENDING}


def _message(task_id: str) -> dict:
    """The parts of a Celery message (protocol 2) that the reconciler reads."""
    return {"headers": {"id": task_id, "task": "workers.tasks.run_poc"}, "body": "", "properties": {}}
