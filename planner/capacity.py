"""How many requests one replica serves within the latency targets, from its measured batch sweep; how
many replicas a peak needs; what a million requests cost. Pure arithmetic (see planner.roi, which uses it
and whose docstring is the specification); every figure is a Decimal, never rounded here.

Capacity is computed on one of three sides of the measurements' intervals: POINT (the measured figures,
what the pages show), SLOW (the pessimistic end: a batch size counts only when the upper bound of each
p95 interval meets its target, and its rate is divided by ``speedup / speedup_low`` — or, without a
speedup interval, by ``p50_high / p50``) and FAST (the optimistic end: lower p95 bounds, ``p50 / p50_low``;
a percentile left blank for too few samples might meet its target). A point without bounds gives the same
capacity on every side."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the inputs' types only: roi_types imports this module
    from planner.roi_types import Economics, ModelMeasurement

Number = Decimal | float | int | str

POINT, SLOW, FAST = "point", "slow", "fast"  # the side of the intervals a capacity is computed on

# Capacity is itself a rounded quotient (e.g. 1000/3 ms), so an exact fit can come out as 3.000…01 replicas;
# a quotient this close (relatively) to a whole number is taken as that number rather than costing a replica.
_WHOLE_TOLERANCE = Decimal("1e-20")


def as_decimal(value: Number) -> Decimal:
    # str() first so that 0.1 becomes Decimal("0.1"), not the binary float's 55-digit expansion.
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


_d = as_decimal


def samples_needed(quantile: Decimal, beyond: int = 5) -> int:
    """The fewest samples a percentile is reported from: ``beyond`` samples must lie above it, so
    ``n ≥ beyond / (1 − q)`` (p95: 100, p99: 500; workers.stats.min_samples_for_quantile, the same rule)."""
    return math.ceil(beyond / (1 - quantile))


@dataclass(frozen=True)
class LatencyPoint:
    """The timings at one batch size. A percentile is None when too few samples lie beyond it to report
    it. The interval bounds (95% bootstrap) are None on points timed without them: the figure is then
    taken as exact, as a clean measurement's would be."""

    batch_size: int
    p50_ms: float  # for a causal LM: the whole generation (end to end)
    p95_ms: float | None
    p99_ms: float | None
    # Causal LMs only: time to first token, and inter-token latency (one decode step), at this batch size.
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    itl_p50_ms: float | None = None
    itl_p95_ms: float | None = None
    # Timing trust (see docs/measurement.md).
    p50_low_ms: float | None = None
    p50_high_ms: float | None = None
    p95_low_ms: float | None = None
    p95_high_ms: float | None = None
    ttft_p95_low_ms: float | None = None
    ttft_p95_high_ms: float | None = None
    itl_p95_low_ms: float | None = None
    itl_p95_high_ms: float | None = None
    speedup: float | None = (
        None  # baseline time ÷ this model's, from interleaved rounds (None on the baseline)
    )
    speedup_low: float | None = None
    speedup_high: float | None = None
    unstable: str | None = None  # None when clean; else why (e.g. "the host was busy (load 4.1 on 2 cores)")
    iterations: int | None = None  # timed samples behind the percentiles


def interval(value: Number | None, low: Number | None, high: Number | None) -> tuple[Decimal, Decimal] | None:
    """A measured figure's interval: its bounds (widened to hold the figure), or the figure itself on both
    sides when it has none; None when the figure is None."""
    if value is None:
        return None
    exact = _d(value)
    return (
        exact if low is None else min(_d(low), exact),
        exact if high is None else max(_d(high), exact),
    )


def _admits(
    value: Number | None, low: Number | None, high: Number | None, target: Decimal, side: str
) -> bool:
    """Whether a p95 (with its bounds) meets ``target`` on ``side``; a blank one only on the FAST side."""
    bounds = interval(value, low, high)
    if bounds is None:
        return side == FAST
    return {POINT: _d(value or 0), SLOW: bounds[1], FAST: bounds[0]}[side] <= target


def slowdown(point: LatencyPoint, side: str) -> Decimal:
    """How much slower than its p50 this point may be on ``side`` (below 1: faster). SLOW: the speedup's
    estimate over its lower bound, else ``p50_high / p50``; FAST: ``p50_low / p50``; 1 without bounds."""
    p50 = _d(point.p50_ms)
    if side == SLOW and point.speedup and point.speedup_low and point.speedup_low > 0:
        return max(Decimal(1), _d(point.speedup) / _d(point.speedup_low))
    bound = point.p50_high_ms if side == SLOW else point.p50_low_ms if side == FAST else None
    if bound is None or p50 <= 0:
        return Decimal(1)
    return max(Decimal(1), _d(bound) / p50) if side == SLOW else min(Decimal(1), _d(bound) / p50)


@dataclass(frozen=True)
class Goodput:
    """The serving scenario's capacity (workers.record.Goodput): the highest Poisson arrival rate at which
    ``share`` of the requests met ``target_ms`` from arrival (text generation: TTFT, and ``itl_target_ms``
    per token, for replies of ``tokens``), behind a batcher of at most ``max_batch`` waiting at most
    ``max_wait_ms``. ``capped_tokens``: measured with shorter replies than ``tokens`` (for time).
    ``simulated``: too slow a rate for a real trial to decide in its time, so found from the measured batch
    times on a virtual clock (workers/goodput.py)."""

    rps: float
    max_batch: int
    max_wait_ms: float
    share: float
    target_ms: float
    itl_target_ms: float | None = None
    tokens: int | None = None
    capped_tokens: int | None = None
    simulated: bool = False  # found on a virtual clock from the measured batch times, not a served run


def goodput_for(m: ModelMeasurement, e: Economics) -> Goodput | None:
    """``m``'s goodput when it was measured under the targets of ``e`` (the same latency target; for text
    generation the same per-token target and reply length too), else None: a what-if with other targets,
    or a row measured before the serving scenario, keeps the static capacity."""
    g = m.goodput
    if g is None or as_decimal(g.target_ms) != e.p95_target_ms:
        return None
    if e.is_generative:
        itl = None if g.itl_target_ms is None else as_decimal(g.itl_target_ms)
        if itl != e.itl_target_ms or g.tokens != e.output_tokens_per_request:
            return None
    return g


def utilisation(m: ModelMeasurement, e: Economics) -> Decimal:
    """How busy a replica of ``m`` may run: the goodput headroom where goodput counts (goodput already
    holds the queueing), else the target utilisation (a static capacity holds none, so it keeps a margin)."""
    return e.goodput_headroom if goodput_for(m, e) is not None else e.target_utilisation


@dataclass(frozen=True)
class Capacity:
    rps: Decimal  # requests (text generation: whole generations) per second per replica
    batch_size: int | None  # the batch size that gives it; None when no batch size meets the targets


def _best(rates: Sequence[tuple[int, Decimal]]) -> Capacity:
    best = Capacity(Decimal(0), None)
    for batch_size, rps in rates:
        if rps > best.rps:
            best = Capacity(rps, batch_size)
    return best


def classification_capacity(
    latency: Sequence[LatencyPoint], p95_target_ms: Number, side: str = POINT
) -> Capacity:
    target = _d(p95_target_ms)
    rates = []
    for point in latency:
        if not _admits(point.p95_ms, point.p95_low_ms, point.p95_high_ms, target, side):
            continue
        p50 = _d(point.p50_ms)
        if p50 <= 0:
            raise ValueError(f"p50 at batch {point.batch_size} must be > 0 ms, got {p50}")
        # Throughput uses the median batch time; p95 only decides which batch sizes are allowed.
        rates.append((point.batch_size, Decimal(point.batch_size) * 1000 / (p50 * slowdown(point, side))))
    return _best(rates)


def capacity_rps(latency: Sequence[LatencyPoint], p95_target_ms: Number) -> Decimal:
    """Requests/s one replica sustains: the best batch size whose p95 meets the target (0 if none)."""
    return classification_capacity(latency, p95_target_ms).rps


def _timed_for_generation(point: LatencyPoint) -> bool:
    return None not in (point.ttft_p50_ms, point.itl_p50_ms)


def request_ms(point: LatencyPoint, output_tokens: int) -> Decimal:
    """Median time of one generation of ``output_tokens`` tokens at this batch size: TTFT p50, then
    ``output_tokens − 1`` decode steps at the ITL p50."""
    if point.ttft_p50_ms is None or point.itl_p50_ms is None:
        raise ValueError(f"batch {point.batch_size} has no TTFT and inter-token timings")
    return _d(point.ttft_p50_ms) + (output_tokens - 1) * _d(point.itl_p50_ms)


def generation_capacity(
    latency: Sequence[LatencyPoint],
    ttft_target_ms: Number,
    per_token_target_ms: Number,
    output_tokens: int,
    side: str = POINT,
) -> Capacity:
    ttft_target, itl_target = _d(ttft_target_ms), _d(per_token_target_ms)
    rates = []
    for point in latency:
        if not _timed_for_generation(point):
            continue  # timed without generation timings (a classification-style sweep)
        if not (
            _admits(point.ttft_p95_ms, point.ttft_p95_low_ms, point.ttft_p95_high_ms, ttft_target, side)
            and _admits(point.itl_p95_ms, point.itl_p95_low_ms, point.itl_p95_high_ms, itl_target, side)
        ):
            continue
        t = request_ms(point, output_tokens)
        if t <= 0:
            raise ValueError(f"the request time at batch {point.batch_size} must be > 0 ms, got {t}")
        # The whole generation's p50 interval (or the speedup's) scales the composed request time.
        rates.append((point.batch_size, Decimal(point.batch_size) * 1000 / (t * slowdown(point, side))))
    return _best(rates)


def generation_capacity_rps(
    latency: Sequence[LatencyPoint], ttft_target_ms: Number, per_token_target_ms: Number, output_tokens: int
) -> Decimal:
    """Generations/s one replica sustains: the best ``b × 1000 / t(b)`` over batch sizes whose TTFT p95
    and inter-token p95 both meet their targets (0 if none). Points without generation timings are not
    counted."""
    return generation_capacity(latency, ttft_target_ms, per_token_target_ms, output_tokens).rps


def replicas_needed(peak: Decimal, capacity: Decimal, utilisation: Decimal) -> int | None:
    """Replicas that keep each one at or below the target utilisation at peak; None if capacity is 0."""
    if capacity <= 0:
        return None
    needed = peak / (capacity * utilisation)
    whole = needed.to_integral_value()
    if abs(needed - whole) <= whole * _WHOLE_TOLERANCE:
        needed = whole
    # At least one replica: the service exists even with no traffic.
    return max(1, math.ceil(needed))


def cost_per_million(price_per_hour: Decimal, capacity: Decimal, utilisation: Decimal) -> Decimal | None:
    """Hardware cost of one million requests served at the target utilisation; None if capacity is 0."""
    if capacity <= 0:
        return None
    return price_per_hour / (capacity * utilisation * 3600) * 1_000_000
