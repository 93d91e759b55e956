"""Fault tests: real worker processes, the real Redis and PostgreSQL. Workers are SIGKILLed mid-run, Redis
restarts and loses its queue, a technique runs out of memory, runs pass their time limits. Every test
checks the final state of every request: none lost, none left queued or running.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import redis
from django.conf import settings

from planner.models import Candidate, PocRequest
from tests.conftest import wait_for
from tests.tiny import tiny_csv
from tests.workerprocs import (
    FAST_RELIABILITY,
    fault_techniques,
    file_request,
    slow,
    start_reconciler,
    start_worker,
    workers,
)

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

INT8 = [{"technique": "quantize.dynamic-int8"}]


@pytest.fixture(scope="module")
def fault_plugin(tmp_path_factory):
    with fault_techniques(tmp_path_factory.mktemp("fault-plugin")) as folder:
        yield folder


@pytest.fixture
def fast(settings):
    """The test process (which files requests and runs the reconciler) uses the workers' thresholds."""
    for name, value in FAST_RELIABILITY.items():
        setattr(settings, name, value)
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.flushdb()  # no message left over from another test
    return settings


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("faults", password="pw")


@pytest.fixture
def cpu(db):
    from planner.models import HardwareProfile

    return HardwareProfile.objects.get(name="CPU, 2 vCPU")


def _finished(*requests: PocRequest, worker=None):
    def check():
        if worker is not None:
            assert worker.alive(), "the worker died"
        return not PocRequest.objects.filter(
            pk__in=[r.pk for r in requests], status__in=["queued", "running"]
        )

    return check


def test_a_technique_out_of_memory_fails_its_candidate_and_the_rest_go_on(
    fault_plugin, fast, owner, cpu, tiny_model_dir
):
    with workers() as started:
        worker = start_worker("oom", pythonpath=fault_plugin)
        started.append(worker)
        oom = [[{"technique": "faults.out-of-memory", "params": {"device": d}}] for d in ("host", "cuda")]
        poc = file_request(owner, cpu, tiny_csv(), pipelines=[*oom, INT8])
        after = file_request(owner, cpu, tiny_csv(), pipelines=[], title="the next request")
        wait_for(_finished(poc, after, worker=worker), timeout=120, message="both requests to finish")

        poc.refresh_from_db()
        assert poc.status == PocRequest.Status.SUCCEEDED and poc.attempts == 1, poc.error
        baseline, host_oom, cuda_oom, int8 = poc.candidates.order_by("position")
        assert (baseline.status, int8.status) == (Candidate.Status.MEASURED, Candidate.Status.MEASURED)
        for candidate in (host_oom, cuda_oom):  # MemoryError, and torch.OutOfMemoryError as CUDA raises it
            assert candidate.status == Candidate.Status.FAILED
            assert candidate.error == "faults.out-of-memory: ran out of memory"
        assert poc.progress_message == "finished; some candidates failed"
        # The worker lived through it and took the next request.
        assert worker.alive()
        after.refresh_from_db()
        assert after.status == PocRequest.Status.SUCCEEDED, after.error


def _mid_run(poc: PocRequest):
    """Running on a worker that beats, the baseline measured, the slow technique under way."""

    def check():
        poc.refresh_from_db()
        return (
            poc.status == PocRequest.Status.RUNNING
            and poc.heartbeat_at is not None
            and poc.progress_message.startswith("faults.slow: step")
            and poc.candidates.filter(position=0, status=Candidate.Status.MEASURED).exists()
        )

    return check


def test_a_worker_killed_mid_run_is_replaced_and_the_request_completes(
    fault_plugin, fast, owner, cpu, tiny_model_dir
):
    """SIGKILL, three trials: the periodic reconciler sees the heartbeat stop and queues the request again;
    another worker resumes it without measuring again what was measured before the kill."""
    outcomes = []
    with workers() as started:
        started.append(start_reconciler(every=0.5))
        pool = [start_worker(f"kill-{i}", pythonpath=fault_plugin) for i in range(2)]
        started += pool
        for worker in pool:
            worker.wait_ready()
        for trial in range(1, 4):
            began = time.monotonic()
            poc = file_request(owner, cpu, tiny_csv(), pipelines=[slow(2), INT8], title=f"kill {trial}")
            wait_for(_mid_run(poc), timeout=60, interval=0.1, message=f"trial {trial} to be mid-run")
            baseline_measured_at = poc.candidates.get(position=0).measured_at
            victim = next((w for w in pool if poc.task_id in w.log()), None)
            assert victim is not None, f"no worker log names task {poc.task_id}"
            victim.kill()
            killed_at = time.monotonic()
            pool.remove(victim)
            # The next worker starts now, as a supervisor would restart the dead one.
            pool.append(start_worker(f"kill-{trial + 1}b", pythonpath=fault_plugin))
            started.append(pool[-1])
            wait_for(_finished(poc), timeout=60, message=f"trial {trial} to end after the kill")

            poc.refresh_from_db()
            assert poc.status == PocRequest.Status.SUCCEEDED, poc.error
            assert poc.attempts == 2 and poc.progress_message == "finished"
            candidates = list(poc.candidates.order_by("position"))
            assert [c.status for c in candidates] == [Candidate.Status.MEASURED] * 3
            assert candidates[0].measured_at == baseline_measured_at  # measured once, before the kill
            outcomes.append(
                f"trial {trial}: killed {victim.name} (pid {victim.pid}) mid-run -> {poc.status} after "
                f"{poc.attempts} attempts, {time.monotonic() - killed_at:.1f} s after the kill "
                f"({time.monotonic() - began:.1f} s in all)"
            )
    print("\n".join(outcomes))
    assert not PocRequest.objects.filter(status__in=["queued", "running"]).exists()


def _restart_redis(client: redis.Redis) -> None:
    """Restart the broker's Redis the way it runs here (same address, no persistence): its queue is lost."""
    config = {key: client.config_get(key)[key] for key in ("bind", "port", "dir", "logfile")}
    subprocess.run(["redis-cli", "-p", config["port"], "shutdown", "nosave"], capture_output=True, timeout=30)
    wait_for(lambda: not _answers(client), timeout=30, interval=0.2, message="Redis to stop")
    command = ["redis-server", "--daemonize", "yes", "--bind", *config["bind"].split()]
    command += ["--port", config["port"], "--save", "", "--appendonly", "no", "--dir", config["dir"]]
    subprocess.run([*command, "--logfile", config["logfile"]], check=True, timeout=30)
    wait_for(lambda: _answers(client), timeout=30, interval=0.2, message="Redis to start again")


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_requests_queued_when_redis_restarts_are_sent_again_and_all_complete(
    fast, owner, cpu, tiny_model_dir
):
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server on this machine, to restart it")
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    requests = [file_request(owner, cpu, tiny_csv(), pipelines=[], title=f"queued {i}") for i in range(20)]
    assert broker.llen("cpu") == 20  # queued, no worker running

    _restart_redis(broker)
    assert broker.llen("cpu") == 0, "Redis kept its queue across the restart"

    began = time.monotonic()
    with workers() as started:
        started.append(start_reconciler(every=0.5))
        started.append(start_worker("after-restart", MEASURE_BATCH_SIZES="1"))
        wait_for(_finished(*requests), timeout=150, message="the 20 requests to finish")
    print(f"20 requests lost with the queue, all finished {time.monotonic() - began:.1f} s after the restart")
    for poc in PocRequest.objects.filter(pk__in=[r.pk for r in requests]):
        assert poc.status == PocRequest.Status.SUCCEEDED and poc.attempts == 1, poc.error
        assert poc.candidates.get().status == Candidate.Status.MEASURED
    # The web process's own connection to Redis recovers too: a request filed now is queued.
    after = file_request(owner, cpu, tiny_csv(), pipelines=[], title="after the restart")
    assert broker.llen("cpu") == 1 and after.task_id


def test_runs_past_their_time_limits_are_stopped_and_failed_with_the_reason(
    fault_plugin, fast, owner, cpu, tiny_model_dir
):
    """Soft limit: the run stops at its next progress report. Hard limit: a step that never reports is
    ended with its worker process (a solo pool honours neither of Celery's limits)."""
    with workers() as started:
        worker = start_worker(
            "limits", pythonpath=fault_plugin, POC_SOFT_TIME_LIMIT_S=4, POC_HARD_TIME_LIMIT_S=8
        )
        started.append(worker)
        reporting = file_request(owner, cpu, tiny_csv(), pipelines=[slow(60, 120)], title="reports")
        stuck = file_request(owner, cpu, tiny_csv(), pipelines=[slow(60, 1)], title="never reports")
        wait_for(_finished(reporting, stuck), timeout=90, message="both runs to be stopped")

        reporting.refresh_from_db()
        assert reporting.status == PocRequest.Status.FAILED
        assert reporting.error.startswith("The PoC ran past its time limit (4 s) and was stopped")
        baseline, candidate = reporting.candidates.order_by("position")
        assert baseline.status == Candidate.Status.MEASURED
        assert (candidate.status, candidate.error) == (
            Candidate.Status.FAILED,
            "not measured: the PoC stopped",
        )

        stuck.refresh_from_db()
        assert stuck.status == PocRequest.Status.FAILED
        assert "ran past its hard time limit" in stuck.error and "its worker was ended" in stuck.error
        wait_for(lambda: not worker.alive(), timeout=10, message="the worker to end")
        assert worker.process.returncode == -9
