"""Bootstrap intervals and the percentile sample rule (workers/stats.py): deterministic, seeded."""

import math

import numpy as np
import pytest

from workers.stats import (
    block_indices,
    block_length,
    bootstrap_quantile,
    bootstrap_quantiles,
    bootstrap_speedup,
    min_samples_for_quantile,
)

Z95 = 1.6448536269514722  # standard normal 0.95 quantile


def test_a_percentile_needs_five_samples_beyond_it():
    assert min_samples_for_quantile(0.5) == 10
    assert min_samples_for_quantile(0.95) == 100
    assert min_samples_for_quantile(0.99) == 500
    assert min_samples_for_quantile(0.99, beyond=1) == 100
    with pytest.raises(ValueError):
        min_samples_for_quantile(1.0)
    with pytest.raises(ValueError):
        min_samples_for_quantile(0.5, beyond=0)


def test_too_few_samples_give_none_not_a_number():
    rng = np.random.default_rng(0)
    fifty = rng.lognormal(0, 0.3, 50)
    p50, p95, p99 = bootstrap_quantiles(fifty, [0.5, 0.95, 0.99], rng=np.random.default_rng(1))
    assert p50 is not None and p50.n == 50
    assert p95 is None and p99 is None
    assert bootstrap_quantile(rng.lognormal(0, 0.3, 99), 0.95, rng=np.random.default_rng(1)) is None
    p95_of_100 = bootstrap_quantile(rng.lognormal(0, 0.3, 100), 0.95, rng=np.random.default_rng(1))
    assert p95_of_100 is not None and p95_of_100.low <= p95_of_100.value <= p95_of_100.high
    assert bootstrap_speedup([1.5] * 9, rng=np.random.default_rng(1)) is None


def test_same_seed_same_interval():
    data = np.random.default_rng(3).lognormal(0, 0.3, 200)
    first = bootstrap_quantile(data, 0.95, rng=np.random.default_rng(7))
    again = bootstrap_quantile(data, 0.95, rng=np.random.default_rng(7))
    assert first == again
    assert first is not None and first.value == pytest.approx(float(np.quantile(data, 0.95)))


def test_about_95_percent_of_median_intervals_cover_the_true_median():
    """200 simulated runs of 61 log-normal timings (true median exp(0) = 1)."""
    simulate = np.random.default_rng(42)
    covered = 0
    for i in range(200):
        estimate = bootstrap_quantile(
            simulate.lognormal(0, 0.3, 61), 0.5, rng=np.random.default_rng(i), resamples=1000
        )
        assert estimate is not None
        covered += estimate.contains(1.0)
    assert 0.90 <= covered / 200 <= 0.99


def test_about_95_percent_of_p95_intervals_cover_the_true_p95():
    true_p95 = math.exp(0.3 * Z95)
    simulate = np.random.default_rng(43)
    covered = 0
    for i in range(200):
        estimate = bootstrap_quantile(
            simulate.lognormal(0, 0.3, 400), 0.95, rng=np.random.default_rng(i), resamples=1000
        )
        assert estimate is not None
        covered += estimate.contains(true_p95)
    assert 0.88 <= covered / 200 <= 0.99


def test_about_95_percent_of_speedup_intervals_cover_the_true_speedup():
    """Per-round ratios around a true speedup of 1.5 (log-normal noise): the median of ratios."""
    simulate = np.random.default_rng(44)
    covered = 0
    for i in range(200):
        ratios = 1.5 * simulate.lognormal(0, 0.05, 30)
        estimate = bootstrap_speedup(ratios, rng=np.random.default_rng(i), resamples=1000)
        assert estimate is not None and estimate.n == 30
        covered += estimate.contains(1.5)
    assert 0.90 <= covered / 200 <= 0.99


def test_rounds_are_resampled_whole_so_a_shared_slowdown_widens_the_interval():
    """Iterations of one round share its host state; resampling them one by one would be overconfident."""
    simulate = np.random.default_rng(5)
    per_round = simulate.lognormal(0, 0.2, (40, 1))  # the host's state in each round
    rows = per_round * simulate.lognormal(0, 0.02, (40, 10))
    clustered = bootstrap_quantile(rows, 0.5, rng=np.random.default_rng(0))
    flat = bootstrap_quantile(rows.ravel(), 0.5, rng=np.random.default_rng(0))
    assert clustered is not None and flat is not None
    assert clustered.value == flat.value and clustered.n == flat.n == 400
    assert (clustered.high - clustered.low) > 2 * (flat.high - flat.low)


def test_large_inputs_are_bootstrapped_in_slices_with_the_same_result_shape():
    data = np.random.default_rng(6).lognormal(0, 0.3, (1000, 20))  # 20,000 timings, 2,000 resamples
    p50, p95, p99 = bootstrap_quantiles(data, [0.5, 0.95, 0.99], rng=np.random.default_rng(0))
    assert p50 is not None and p95 is not None and p99 is not None
    assert p50.value < p95.value < p99.value
    for estimate in (p50, p95, p99):
        assert estimate.low <= estimate.value <= estimate.high
        assert estimate.relative_half_width < 0.05


def test_speedup_refuses_impossible_ratios():
    with pytest.raises(ValueError, match="positive"):
        bootstrap_speedup([1.0] * 9 + [0.0], rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_speedup([1.0] * 10, rng=np.random.default_rng(0), confidence=1.0)


def test_block_indices_keep_runs_of_consecutive_rounds():
    assert [block_length(n) for n in (1, 8, 9, 100, 200)] == [1, 2, 3, 5, 6]
    picked = block_indices(np.random.default_rng(0), 10, 4, 3)
    assert picked.shape == (4, 10)
    for row in picked:
        for block in (row[0:3], row[3:6], row[6:9]):  # each block counts up by one, wrapping past 9
            assert all((b - a) % 10 == 1 for a, b in zip(block, block[1:], strict=False))


def test_a_drifting_host_widens_the_speedup_interval_so_it_covers_the_truth_more_often():
    """Per-round ratios that drift (an AR(1) process, φ = 0.9: the host's state changes slowly): resampling
    rounds one by one thinks 60 rounds are 60 independent ones and covers the true speedup far less often
    than its 95%; blocks of consecutive rounds cover it much more often."""
    simulate = np.random.default_rng(45)
    covered = {"block": 0, "iid": 0}
    for i in range(200):
        noise = np.empty(60)
        noise[0] = simulate.normal(0, 0.05)
        for t in range(1, 60):
            noise[t] = 0.9 * noise[t - 1] + simulate.normal(0, 0.05 * math.sqrt(1 - 0.81))
        ratios = 1.5 * np.exp(noise)
        block = bootstrap_speedup(ratios, rng=np.random.default_rng(i), resamples=500)
        assert block is not None
        covered["block"] += block.contains(1.5)
        rng = np.random.default_rng(i)
        iid = np.median(ratios[rng.integers(0, 60, size=(500, 60))], axis=1)
        low, high = np.quantile(iid, [0.025, 0.975])
        covered["iid"] += bool(low <= 1.5 <= high)
    assert covered["block"] >= covered["iid"] + 20
    assert covered["iid"] / 200 < 0.8
