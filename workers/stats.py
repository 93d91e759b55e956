"""Bootstrap confidence intervals for latency percentiles and speedups, and how many samples a percentile
needs. numpy only (no torch, no Django), vectorised: every resample of a batch is drawn and reduced in one
array operation.

Intervals are percentile bootstrap intervals (Efron): resample the data with replacement ``resamples``
times, compute the statistic on each resample, and take the ``(1 - confidence) / 2`` and
``(1 + confidence) / 2`` quantiles of those values. The point estimate is the statistic of the data itself.
Every function takes a seeded ``numpy.random.Generator`` (``numpy.random.default_rng(seed)``), so the same
data and seed give the same interval.

Rounds are resampled in blocks of consecutive rounds (a circular block bootstrap, Politis & Romano 1992),
not one by one: a host's state drifts (another tenant's job starts, the clock speed settles), so
neighbouring rounds are alike, and resampling them as if independent gives an interval too narrow to hold
when the measurement is repeated. The block length is ``block_length(n)`` = ⌈n^⅓⌉ rounds, the rate that
keeps a block bootstrap's variance estimate consistent (Hall, Horowitz & Jing 1995); independent rounds
lose little by it (blocks of 1 are the ordinary bootstrap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from workers.trust import IntervalEstimate

# Samples that must lie beyond a quantile before it is reported (see min_samples_for_quantile).
DEFAULT_TAIL_SAMPLES = 5
# Resampled values held in memory at once: 2,000 resamples of 10,000 timings are drawn in slices.
_MAX_ELEMENTS = 4_000_000

FloatArray = npt.NDArray[np.float64]


def min_samples_for_quantile(q: float, *, beyond: int = DEFAULT_TAIL_SAMPLES) -> int:
    """The fewest samples from which the ``q`` quantile is reported: enough that at least ``beyond``
    samples lie above it, i.e. ``n (1 - q) >= beyond``, so ``n >= beyond / (1 - q)``.

    With the default of 5: a median needs 10 samples, p95 100, p99 500. Below that the sample quantile is
    one of the few largest values (p99 of 50 samples is interpolated between the two largest), and neither
    it nor a bootstrap interval around it says anything stable about the tail. The same idea as MLPerf
    LoadGen's early-stopping rule, which refuses a tail latency that too few queries support.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"a quantile lies strictly between 0 and 1, not {q}")
    if beyond < 1:
        raise ValueError("at least one sample must lie beyond the quantile")
    # The small epsilon keeps 5 / (1 - 0.95) = 100.00000000000001 at 100.
    return math.ceil(beyond / (1.0 - q) - 1e-9)


def block_length(units: int) -> int:
    """Consecutive rounds kept together in a resample: ⌈n^⅓⌉ (5 of 100 rounds, 6 of 200); 1 for one."""
    return max(1, math.ceil(math.pow(units, 1 / 3) - 1e-9))


def block_indices(rng: np.random.Generator, units: int, count: int, block: int) -> npt.NDArray[np.int64]:
    """``count`` resamples of ``units`` indices, each made of blocks of ``block`` consecutive indices
    (wrapping around the end), from uniformly drawn starts: the circular block bootstrap's draw."""
    blocks = math.ceil(units / block)
    starts = rng.integers(0, units, size=(count, blocks))
    picked = (starts[:, :, None] + np.arange(block)) % units
    return picked.reshape(count, blocks * block)[:, :units]


def _bounds(boot: FloatArray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _check(confidence: float, resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence lies strictly between 0 and 1, not {confidence}")
    if resamples < 100:
        raise ValueError("a bootstrap interval needs at least 100 resamples")


def bootstrap_quantiles(
    samples: Sequence[float] | Sequence[Sequence[float]] | FloatArray,
    qs: Sequence[float],
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    resamples: int = 2000,
    beyond: int = DEFAULT_TAIL_SAMPLES,
) -> list[IntervalEstimate | None]:
    """The ``qs`` quantiles of timing samples, each with its percentile bootstrap interval, or ``None`` for
    a quantile with fewer samples than ``min_samples_for_quantile(q, beyond=beyond)``. Every quantile is
    read from the same resamples, so asking for p50, p95 and p99 together costs one bootstrap.

    One-dimensional ``samples`` are resampled value by value. Two-dimensional ``samples`` (one row per
    round, the same number of iterations in each, in the order they ran) are resampled a whole round at a
    time (a cluster bootstrap), in blocks of ``block_length`` consecutive rounds: iterations of one round,
    and neighbouring rounds, share the host's state, so they are not independent, and resampling them one
    by one would make the interval too narrow. The quantile is taken over every value of the resampled
    rounds. Quantiles interpolate linearly (numpy's default, as the latency sweep).
    """
    _check(confidence, resamples)
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim not in (1, 2):
        raise ValueError("samples are a list of timings, or one list of timings per round")
    wanted = [q for q in qs if data.size >= min_samples_for_quantile(q, beyond=beyond)]
    if not wanted:
        return [None for _ in qs]
    units = data.shape[0]  # values, or rounds
    per_unit = 1 if data.ndim == 1 else data.shape[1]
    chunk = max(1, _MAX_ELEMENTS // (units * per_unit))
    block = 1 if data.ndim == 1 else block_length(units)
    boot = np.empty((len(wanted), resamples), dtype=np.float64)
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        picked = data[block_indices(rng, units, count, block)].reshape(count, units * per_unit)
        boot[:, start : start + count] = np.quantile(picked, wanted, axis=1)
    found = {}
    for row, q in enumerate(wanted):
        low, high = _bounds(boot[row], confidence)
        value = float(np.quantile(data, q))
        found[q] = IntervalEstimate(value=value, low=low, high=high, n=int(data.size), confidence=confidence)
    return [found.get(q) for q in qs]


def bootstrap_quantile(
    samples: Sequence[float] | Sequence[Sequence[float]] | FloatArray,
    q: float,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    resamples: int = 2000,
    beyond: int = DEFAULT_TAIL_SAMPLES,
) -> IntervalEstimate | None:
    """One quantile of ``bootstrap_quantiles``."""
    return bootstrap_quantiles(
        samples, [q], rng=rng, confidence=confidence, resamples=resamples, beyond=beyond
    )[0]


def bootstrap_speedup(
    round_ratios: Sequence[float] | FloatArray,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    resamples: int = 2000,
    beyond: int = DEFAULT_TAIL_SAMPLES,
) -> IntervalEstimate | None:
    """The speedup as the median of per-round ratios (baseline time ÷ candidate time in the same round),
    with its percentile bootstrap interval over rounds; ``None`` with fewer rounds than a median needs
    (``min_samples_for_quantile(0.5, beyond=beyond)``, 10 by default).

    Why the median of per-round ratios rather than the ratio of the two overall medians: the two halves of
    a round run back to back, so whatever the host was doing then slows both, and their ratio cancels it;
    a ratio of overall medians mixes a baseline timed under one load with a candidate timed under another,
    which is how a busy host turned a 1.5× speedup into 0.11×. The bootstrap resamples rounds, in blocks
    of ``block_length`` consecutive ones (ratios in the order the rounds ran), so a drift of the host's
    state across the run widens the interval as it should; the median keeps a round that interference hit on one side only (a
    burst that began mid-round) from moving the estimate, where a mean of ratios would follow it.
    """
    _check(confidence, resamples)
    ratios = np.asarray(round_ratios, dtype=np.float64)
    if ratios.ndim != 1:
        raise ValueError("one ratio per round")
    if ratios.size < min_samples_for_quantile(0.5, beyond=beyond):
        return None
    if not np.all(np.isfinite(ratios)) or np.any(ratios <= 0):
        raise ValueError("every round's ratio must be a positive, finite number")
    n = ratios.size
    chunk = max(1, _MAX_ELEMENTS // n)
    block = block_length(n)
    boot = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        boot[start : start + count] = np.median(ratios[block_indices(rng, n, count, block)], axis=1)
    low, high = _bounds(boot, confidence)
    return IntervalEstimate(
        value=float(np.median(ratios)), low=low, high=high, n=int(n), confidence=confidence
    )
