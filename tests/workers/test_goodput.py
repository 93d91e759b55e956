"""The goodput search on a simulated model with a known service time: it must find the rate queueing
theory gives for the latency target (M/D/1), never report a rate whose interval straddles the share, and
pick the better batcher setting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers.goodput import (
    GoodputPolicy,
    interpolated,
    lognormal_service,
    predict_rates,
    search_goodput,
    simulated_trial,
    wilson,
)
from workers.record import Goodput, Measurement
from workers.serving import (
    BatcherSetting,
    Targets,
    TrialLimits,
    VirtualClock,
    run_trial,
    simulated_executor,
)

SERVICE = 0.010  # s per batch of 1: μ = 100 requests/s
LIMITS = TrialLimits(
    warmup_requests=200,
    warmup_seconds=0,
    min_requests=2000,
    max_requests=20_000,
    min_seconds=0,
    max_seconds=1e9,
)


def md1_wait_cdf(t: float, rate: float, service: float) -> float:
    """P(wait ≤ t) in an M/D/1 queue (Erlang): (1 − ρ) Σ_{k ≤ t/D} (λ(kD − t))^k / k! · e^{−λ(kD − t)}."""
    rho = rate * service
    return (1 - rho) * sum(
        (rate * (k * service - t)) ** k / math.factorial(k) * math.exp(-rate * (k * service - t))
        for k in range(int(t / service) + 1)
    )


def md1_goodput(target_s: float, share: float, service: float) -> float:
    """The highest λ with P(wait + D ≤ target) ≥ share, by bisection on the formula."""
    low, high = 0.0, 1 / service
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if md1_wait_cdf(target_s - service, mid, service) >= share else (low, mid)
    return low


def _simulated_trial(service_s, limits=LIMITS):
    def trial(rate, setting, decided):
        clock = VirtualClock()
        return run_trial(
            rate,
            setting,
            simulated_executor(clock, service_s),
            clock=clock,
            targets=Targets(first_ms=50.0),
            limits=limits,
            seed=11,
            decided=decided,
        )

    return trial


def test_wilson_interval_known_values():
    low, high = wilson(95, 100)
    assert (round(low, 4), round(high, 4)) == (0.8882, 0.9785)  # 95 of 100, z = 1.96
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(100, 100)[1] == 1.0 and wilson(100, 100)[0] == pytest.approx(0.963, abs=1e-3)


def test_md1_goodput_is_found_within_tolerance():
    """Batch 1, 10 ms service, a 50 ms target for 95% of requests: theory says λ* ≈ 69.4 requests/s (ρ ≈ 0.69).
    The search starts from the static bound (100/s) and may only err low (the interval must clear 95%): it
    must land within 5% below λ*, never above it (theory's λ* at 100,000 requests a trial)."""
    expected = md1_goodput(0.050, 0.95, SERVICE)
    assert 69 < expected < 70
    # Long trials: neighbours' latencies are correlated through the queue, so a short trial's share wanders.
    limits = TrialLimits(200, 0, 100_000, 100_000, 0, 1e9)
    policy = GoodputPolicy(max_waits_ms=(0.0,), steps=10, precision=0.005, limits=limits, max_seconds=1e9)
    found = search_goodput(_simulated_trial(lambda b: SERVICE, limits), {1: 100.0}, policy, target_ms=50.0)
    assert expected * 0.95 <= found.rps <= expected * 1.005
    assert found.attainment_low >= 0.95 and found.attainment >= found.attainment_low
    assert (found.max_batch, found.max_wait_ms, found.batching) == (1, 0.0, "static")
    assert found.static_rps == 100.0 and found.curve == tuple(sorted(found.curve))
    # Every point of the curve that held is at or below the goodput, and the share there met the target.
    assert all(rps <= found.rps or attainment < 0.97 for rps, attainment, _ in found.curve)


def test_a_rate_whose_interval_straddles_the_share_is_not_taken():
    # 96 of 100 met: 96% is above 95%, but the interval reaches below it.
    calls = []

    def trial(rate, setting, decided):
        from workers.serving import TrialResult

        calls.append(rate)
        assert not decided(96, 100)
        return TrialResult(rate, 100, 96 if rate < 60 else 50, (1.0,) * 100, 1.0)

    found = search_goodput(trial, {1: 100.0}, GoodputPolicy(max_waits_ms=(0.0,), steps=4), target_ms=5.0)
    assert found.rps == 0.0 and found.attainment is None
    assert calls == [50.0, 25.0, 12.5, 6.25]


def test_the_search_picks_the_better_batcher_setting():
    """A batch of b costs 10 ms + 1 ms per request: batching pays, and batches of 8 beat batches of 1."""
    service = lambda b: 0.010 + 0.001 * b  # noqa: E731
    policy = GoodputPolicy(max_waits_ms=(0.0, 2.0), steps=6, precision=0.02, limits=LIMITS, max_seconds=1e9)
    bounds = {1: 1 / service(1), 8: 8 / service(8)}
    found = search_goodput(_simulated_trial(service), bounds, policy, target_ms=50.0)
    assert found.max_batch == 8 and found.rps > md1_goodput(0.050, 0.95, service(1))
    assert found.rps < bounds[8]  # the static figure is an upper bound


def test_goodput_survives_the_measurement_json():
    policy = GoodputPolicy(max_waits_ms=(0.0,), steps=3, limits=LIMITS)
    found = search_goodput(_simulated_trial(lambda b: SERVICE), {1: 100.0}, policy, target_ms=50.0)
    stored = Measurement(latency=(), goodput=found).to_json()
    assert Measurement.from_json(stored).goodput == found
    assert isinstance(Measurement.from_json(stored).goodput, Goodput)


def test_interpolated_service_time_between_measured_batch_sizes():
    service = interpolated({1: 0.010, 8: 0.024, 32: 0.072})
    assert service(1) == pytest.approx(0.010)
    assert service(4) == pytest.approx(0.010 + 3 / 7 * 0.014)  # linear between 1 and 8
    assert service(20) == pytest.approx(0.024 + 12 / 24 * 0.048)
    assert service(64) == pytest.approx(0.072)  # never beyond the largest measured size
    assert interpolated({4: 0.008})(2) == pytest.approx(0.004)  # proportional below the smallest
    with pytest.raises(ValueError):
        interpolated({})


def test_the_prediction_from_timed_medians_matches_md1_theory():
    """A constant-service model's prediction is the M/D/1 goodput itself (the simulation is exact there)."""
    limits = TrialLimits(200, 0, 20_000, 20_000, 0, 1e9)
    policy = GoodputPolicy(max_waits_ms=(0.0,), steps=12, precision=0.005, limits=limits)
    predicted = predict_rates(lambda b: SERVICE, {1: 100.0}, policy, targets=Targets(first_ms=50.0))
    assert list(predicted) == [BatcherSetting(1, 0.0)]
    assert predicted[BatcherSetting(1, 0.0)] == pytest.approx(md1_goodput(0.050, 0.95, SERVICE), rel=0.05)


def test_a_search_started_from_the_prediction_needs_fewer_real_trials():
    """Same model, same policy: started near the prediction, the search reaches the same precision with
    fewer real trials than bisecting from the static bound, and lands as close to theory's λ* (trials of
    2,000 requests: their share wanders by about a point, and a rate is taken only when it clearly holds,
    so both may err up to ~8% low, never above)."""
    expected = md1_goodput(0.050, 0.95, SERVICE)
    policy = GoodputPolicy(max_waits_ms=(0.0,), steps=10, precision=0.02, limits=LIMITS, max_seconds=1e9)
    plain = search_goodput(_simulated_trial(lambda b: SERVICE), {1: 100.0}, policy, target_ms=50.0)
    guided = search_goodput(
        _simulated_trial(lambda b: SERVICE),
        {1: 100.0},
        policy,
        target_ms=50.0,
        predicted={BatcherSetting(1, 0.0): expected},
    )
    assert guided.trials < plain.trials
    for found in (plain, guided):
        assert expected * 0.92 <= found.rps <= expected * 1.005
    assert guided.predicted_rps == expected and plain.predicted_rps is None


def test_a_wrong_prediction_still_ends_at_the_real_goodput():
    """A prediction twice too high (or far too low) only costs trials: the search steps down (or up) until
    a rate holds and one above it fails, then bisects."""
    expected = md1_goodput(0.050, 0.95, SERVICE)
    policy = GoodputPolicy(max_waits_ms=(0.0,), steps=12, precision=0.02, limits=LIMITS, max_seconds=1e9)
    for guess in (2 * expected, expected / 4):
        found = search_goodput(
            _simulated_trial(lambda b: SERVICE),
            {1: 100.0},
            policy,
            target_ms=50.0,
            predicted={BatcherSetting(1, 0.0): guess},
        )
        assert expected * 0.92 <= found.rps <= expected * 1.005, guess


def test_a_setting_predicted_below_the_best_measured_rate_is_not_tried():
    """Batches of 8 are predicted (and measured) better than batches of 1; batches of 1 are then skipped."""
    service = lambda b: 0.010 + 0.001 * b  # noqa: E731
    tried = []

    def trial(rate, setting, decided):
        tried.append(setting)
        return _simulated_trial(service)(rate, setting, decided)

    policy = GoodputPolicy(max_waits_ms=(0.0,), steps=6, precision=0.02, limits=LIMITS, max_seconds=1e9)
    bounds = {1: 1 / service(1), 8: 8 / service(8)}
    predicted = predict_rates(service, bounds, policy, targets=Targets(first_ms=50.0), seed=11)
    assert predicted[BatcherSetting(8, 0.0)] > predicted[BatcherSetting(1, 0.0)]
    found = search_goodput(trial, bounds, policy, target_ms=50.0, predicted=predicted)
    assert found.max_batch == 8 and set(tried) == {BatcherSetting(8, 0.0)}


def test_lognormal_service_draws_have_the_measured_median_and_p95():
    draw = lognormal_service({1: 0.010, 8: 0.030}, {1: 0.016, 8: 0.045}, seed=3)
    for batch, (median, p95) in {
        1: (0.010, 0.016),
        4: (0.010 + 3 / 7 * 0.020, 0.016 + 3 / 7 * 0.029),
    }.items():
        values = np.array([draw(batch) for _ in range(20_000)])
        assert np.median(values) == pytest.approx(median, rel=0.02)
        assert np.quantile(values, 0.95) == pytest.approx(p95, rel=0.03)
    fixed = lognormal_service({1: 0.010}, {}, seed=0)  # no p95 measured: the median every time
    assert {fixed(1) for _ in range(10)} == {0.010}


def test_a_model_too_slow_for_a_served_trial_gets_the_simulated_goodput():
    """100 ms a request, a 500 ms target: λ* ≈ 6.7 req/s, far under the 25 req/s at which a real trial
    counts its 200 requests (after 50 warm-up ones) within 10 s. No real trial runs; the simulation's
    answer is M/D/1's, marked simulated."""
    policy = GoodputPolicy(max_waits_ms=(0.0,), steps=10, precision=0.02, limits=TrialLimits())
    assert policy.min_served_rps == 25.0
    service = lognormal_service({1: 0.100}, {1: 0.100})
    simulated = simulated_trial(service, policy, targets=Targets(first_ms=500.0), seed=11)

    def served(rate, setting, decided):
        raise AssertionError("a real trial at this rate could not decide")

    found = search_goodput(served, {1: 10.0}, policy, target_ms=500.0, simulated=simulated)
    expected = md1_goodput(0.500, 0.95, 0.100)
    assert found.method == "simulated" and found.static_rps == 10.0
    assert expected * 0.85 <= found.rps <= expected * 1.01
    assert found.predicted_rps == pytest.approx(found.rps)


def test_a_served_search_never_runs_below_the_rate_a_trial_can_decide():
    """Predicted at 60 req/s, but the real model fails everywhere (it is slower than its timing said):
    the real trials stop at the 25 req/s floor, and the simulation answers below the lowest rate that
    failed, marked simulated."""
    policy = GoodputPolicy(max_waits_ms=(0.0,), steps=8, precision=0.02, limits=TrialLimits())
    simulated = simulated_trial(
        lognormal_service({1: 0.010}, {1: 0.010}), policy, targets=Targets(first_ms=50.0), seed=11
    )
    rates = []

    def served(rate, setting, decided):
        from workers.serving import TrialResult

        rates.append(rate)
        return TrialResult(rate, 300, 150, (80.0,) * 300, 10.0)  # half the requests late

    found = search_goodput(served, {1: 100.0}, policy, target_ms=50.0, simulated=simulated)
    assert rates and min(rates) == pytest.approx(policy.min_served_rps)
    assert found.method == "simulated" and 0 < found.rps <= min(rates)
    assert found.static_rps == 100.0


def test_a_fast_model_is_served_and_its_figure_is_a_real_trials():
    policy = GoodputPolicy(max_waits_ms=(0.0,), steps=8, precision=0.02, limits=LIMITS, max_seconds=1e9)
    simulated = simulated_trial(
        lognormal_service({1: SERVICE}, {1: SERVICE}), policy, targets=Targets(first_ms=50.0), seed=11
    )
    found = search_goodput(
        _simulated_trial(lambda b: SERVICE), {1: 100.0}, policy, target_ms=50.0, simulated=simulated
    )
    assert found.method == "served" and found.predicted_rps is not None
    assert found.rps == pytest.approx(md1_goodput(0.050, 0.95, SERVICE), rel=0.08)


def test_lognormal_service_takes_its_spread_from_the_mean_where_no_p95_was_measured():
    """Median 10 ms, mean 11 ms, no p95: σ = √(2 ln 1.1), so the draws' mean is 11 ms and median 10 ms."""
    draw = lognormal_service({8: 0.010}, {}, seed=5, mean_s={8: 0.011})
    values = np.array([draw(8) for _ in range(40_000)])
    assert np.median(values) == pytest.approx(0.010, rel=0.02)
    assert values.mean() == pytest.approx(0.011, rel=0.02)
