"""Goodput: the highest Poisson arrival rate at which the target share of requests meets the latency
targets, with the model behind a dynamic batcher (workers/serving.py), over a few batcher settings.

Per setting, a bisection over the rate between 0 and the static upper bound ``max_batch ÷ median batch
time`` (full batches back to back, no waiting: no arrival process does better). Each trial's attainment
(the share of requests within the targets) gets a Wilson score interval; a trial stops as soon as the
interval lies wholly above or below the target share (after its minimum requests and seconds). A rate
*holds* only when the interval's lower bound is at or above the share: a rate whose interval straddles the
share is not taken, the bisection goes below it. The best setting is the one with the highest rate that
holds. No torch or Django: a trial is a callable (a real model, or a simulated one in tests).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

from workers.record import Goodput
from workers.serving import STATIC, BatcherSetting, TrialLimits, TrialResult


@dataclass(frozen=True)
class GoodputPolicy:
    """The MEASURE_GOODPUT_* settings."""

    share: float = 0.95  # the share of requests that must meet the targets (a p95 target: 95%)
    confidence: float = 0.95  # of the Wilson interval on each trial's attainment
    max_waits_ms: tuple[float, ...] = (0.0, 2.0)
    steps: int = 6  # bisection steps per setting at most
    precision: float = 0.05  # stop a setting's bisection once (high − low) ≤ precision × high
    limits: TrialLimits = field(default_factory=TrialLimits)
    max_seconds: float = 60.0  # the whole search of one model; settings not reached are skipped
    max_tokens: int = 256  # text generation: replies longer than this are measured at this length


def wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial share (good down to a handful of trials and at 0 or 1)."""
    if trials <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


# (rate, setting, decided) -> the trial's result. ``decided(met, count)`` is the stopping rule.
Trial = Callable[[float, BatcherSetting, Callable[[int, int], bool]], TrialResult]


@dataclass(frozen=True)
class _Run:
    rate: float
    result: TrialResult
    low: float
    high: float
    holds: bool


def _p95(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * 0.95
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _bisect(
    trial: Trial,
    setting: BatcherSetting,
    upper: float,
    policy: GoodputPolicy,
    out_of_time: Callable[[], bool],
) -> list[_Run]:
    share, confidence = policy.share, policy.confidence

    def decided(met: int, count: int) -> bool:
        low, high = wilson(met, count, confidence)
        return low >= share or high < share

    runs: list[_Run] = []
    low_rate, high_rate = 0.0, upper
    for _ in range(policy.steps):
        if out_of_time() or high_rate - low_rate <= policy.precision * high_rate:
            break
        rate = (low_rate + high_rate) / 2
        result = trial(rate, setting, decided)
        low, high = wilson(result.met, result.requests, confidence)
        holds = result.requests > 0 and low >= share
        runs.append(_Run(rate, result, low, high, holds))
        low_rate, high_rate = (rate, high_rate) if holds else (low_rate, rate)
    return runs


def search_goodput(
    trial: Trial,
    upper_bounds: dict[int, float],
    policy: GoodputPolicy,
    *,
    target_ms: float,
    itl_target_ms: float | None = None,
    tokens: int | None = None,
    capped_tokens: int | None = None,
    batching: str = STATIC,
    on_setting: Callable[[int, int, BatcherSetting], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Goodput:
    """The best batcher setting's goodput. ``upper_bounds`` maps each max batch size to its static upper
    bound in requests/s (``b ÷ median batch time``); every max wait of the policy is tried with each.
    ``on_setting(position, count, setting)`` reports progress (it may raise to stop the search)."""
    settings = [
        BatcherSetting(batch, wait)
        for batch in sorted(upper_bounds)
        for wait in policy.max_waits_ms
        if upper_bounds[batch] > 0
    ]
    started = clock()

    def out_of_time() -> bool:
        return clock() - started >= policy.max_seconds

    best: tuple[float, BatcherSetting, list[_Run]] | None = None
    total_requests = 0
    for position, setting in enumerate(settings):
        if best is not None and out_of_time():
            break
        if on_setting is not None:
            on_setting(position, len(settings), setting)
        runs = _bisect(
            trial,
            setting,
            upper_bounds[setting.max_batch],
            policy,
            out_of_time if best is not None else (lambda: False),  # the first setting always finishes
        )
        total_requests += sum(r.result.requests for r in runs)
        rate = max((r.rate for r in runs if r.holds), default=0.0)
        if best is None or rate > best[0]:
            best = (rate, setting, runs)
    if best is None:
        raise ValueError("goodput needs a batch size with a positive upper bound")
    rate, setting, runs = best
    taken = next((r for r in runs if r.holds and r.rate == rate), None)
    curve = tuple(
        (round(r.rate, 6), round(r.result.attainment, 6), _round(_p95(r.result.first_ms)))
        for r in sorted(runs, key=lambda r: r.rate)
    )
    return Goodput(
        rps=rate,
        attainment=None if taken is None else taken.result.attainment,
        attainment_low=None if taken is None else taken.low,
        attainment_high=None if taken is None else taken.high,
        share=policy.share,
        max_batch=setting.max_batch,
        max_wait_ms=setting.max_wait_ms,
        requests=0 if taken is None else taken.result.requests,
        duration_s=0.0 if taken is None else taken.result.duration_s,
        batching=batching,
        target_ms=target_ms,
        itl_target_ms=itl_target_ms,
        tokens=tokens,
        capped_tokens=capped_tokens,
        static_rps=upper_bounds[setting.max_batch],
        trials=len(runs),
        search_requests=total_requests,
        search_seconds=clock() - started,
        curve=curve,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
