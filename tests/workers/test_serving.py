"""The serving scenario on a simulated model with a known service time, on the virtual clock: the batcher's
max-batch and max-wait rules, latency from arrival, and queueing theory's waiting time (M/D/1)."""

from __future__ import annotations

import statistics

import pytest

from workers.serving import (
    BatcherSetting,
    DynamicBatcher,
    Request,
    Served,
    Targets,
    TrialLimits,
    VirtualClock,
    poisson_arrivals,
    run_trial,
    simulated_executor,
)

LONG = TrialLimits(
    warmup_requests=200,
    warmup_seconds=0,
    min_requests=20_000,
    max_requests=20_000,
    min_seconds=0,
    max_seconds=1e9,
)


ANY = Targets(first_ms=1e9)


def _trial(rate, setting, service, *, limits=LONG, targets=ANY, step=None, tokens=1):
    clock = VirtualClock()
    execute = simulated_executor(clock, service, step)
    batches = []

    def recording(batch):
        batches.append(len(batch))
        return execute(batch)

    result = run_trial(
        rate, setting, recording, clock=clock, targets=targets, limits=limits, seed=7, tokens=tokens
    )
    return result, batches


def test_the_batcher_runs_a_full_batch_at_once_and_a_partial_one_at_the_oldest_deadline():
    batcher = DynamicBatcher(BatcherSetting(max_batch=3, max_wait_ms=5))
    assert not batcher.ready(0.0) and batcher.deadline() is None
    batcher.add(Request(0, 0.000))
    batcher.add(Request(1, 0.001))
    assert batcher.deadline() == pytest.approx(0.005)
    assert not batcher.ready(0.004)  # two of three, the oldest has waited 4 ms of 5
    assert batcher.ready(0.005)
    batcher.add(Request(2, 0.002))
    assert batcher.ready(0.002)  # full: no reason to wait
    batcher.add(Request(3, 0.003))
    assert [r.index for r in batcher.take()] == [0, 1, 2]  # oldest first, at most max_batch
    assert [r.index for r in batcher.waiting] == [3]


def test_a_lone_request_waits_max_wait_then_its_service_time():
    # 1 request/s against a 1 ms model: another request almost never arrives within the 5 ms wait.
    result, batches = _trial(
        1.0,
        BatcherSetting(8, 5.0),
        lambda b: 0.001,
        limits=TrialLimits(
            warmup_requests=0,
            warmup_seconds=0,
            min_requests=500,
            max_requests=500,
            min_seconds=0,
            max_seconds=1e9,
        ),
    )
    assert statistics.median(result.first_ms) == pytest.approx(6.0)
    assert min(result.first_ms) == pytest.approx(6.0) or min(result.first_ms) < 6.0
    assert max(batches) <= 2


def test_under_overload_batches_fill_to_max_batch():
    # 4,000 requests/s against 1 ms per batch of up to 4: the queue never empties, so batches are full.
    result, batches = _trial(
        4000.0,
        BatcherSetting(4, 0.0),
        lambda b: 0.001,
        limits=TrialLimits(
            warmup_requests=0,
            warmup_seconds=0,
            min_requests=2000,
            max_requests=2000,
            min_seconds=0,
            max_seconds=1e9,
        ),
    )
    assert statistics.mean(batches[50:]) > 3.9 and max(batches) == 4


def test_md1_mean_wait_matches_queueing_theory():
    """Batch 1, no waiting, a deterministic 10 ms service: M/D/1, mean wait ρ / (2μ(1 − ρ))."""
    service, rate = 0.010, 50.0  # μ = 100/s, ρ = 0.5: mean wait 5 ms, mean latency 15 ms
    result, batches = _trial(rate, BatcherSetting(1, 0.0), lambda b: service)
    rho, mu = rate * service, 1 / service
    expected_ms = (rho / (2 * mu * (1 - rho)) + service) * 1000
    assert set(batches) == {1}
    assert statistics.mean(result.first_ms) == pytest.approx(expected_ms, rel=0.05)


def test_poisson_arrivals_are_seeded_and_have_the_rate():
    first, again = poisson_arrivals(100.0, seed=3), poisson_arrivals(100.0, seed=3)
    times = [first() for _ in range(10_000)]
    assert times[:5] == [again() for _ in range(5)]
    assert 10_000 / times[-1] == pytest.approx(100.0, rel=0.03)


def test_text_generation_takes_ttft_from_arrival_and_the_mean_gap_per_token():
    targets = Targets(first_ms=25.0, itl_ms=4.0, tokens=5)
    request = Request(0, 1.000, tokens=5)
    assert targets.met(request, Served(first=1.020, done=1.035))  # 20 ms to the first token, 3.75 ms a token
    assert not targets.met(request, Served(first=1.030, done=1.040))  # 30 ms to the first token
    assert not targets.met(request, Served(first=1.010, done=1.030))  # 5 ms a token
    # Static batching on the simulated model: 10 ms prefill, then 2 ms a step, 5 tokens, one at a time.
    result, _ = _trial(
        1.0,
        BatcherSetting(1, 0.0),
        lambda b: 0.010,
        step=lambda b: 0.002,
        tokens=5,
        targets=targets,
        limits=TrialLimits(0, 0, 200, 200, 0, 1e9),
    )
    assert statistics.median(result.first_ms) == pytest.approx(10.0)
    assert result.attainment > 0.95


def test_a_trial_stops_by_itself_when_decided_and_counts_late_waiters_as_misses():
    limits = TrialLimits(
        warmup_requests=0,
        warmup_seconds=0,
        min_requests=50,
        max_requests=10_000,
        min_seconds=0,
        max_seconds=1e9,
    )
    clock = VirtualClock()
    result = run_trial(
        500.0,
        BatcherSetting(1, 0.0),
        simulated_executor(clock, lambda b: 0.010),
        clock=clock,
        targets=Targets(first_ms=20.0),
        limits=limits,
        seed=1,
        decided=lambda met, n: n - met > 20,
    )
    assert 50 <= result.requests < 1000  # five times overloaded: decided long before max_requests
    assert result.attainment < 0.7
