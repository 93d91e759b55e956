"""Goodput: the highest Poisson arrival rate at which the target share of requests meets the latency
targets, with the model behind a dynamic batcher (workers/serving.py), over a few batcher settings.

Per setting, a bisection over the rate between 0 and the static upper bound ``max_batch ÷ median batch
time`` (full batches back to back, no waiting: no arrival process does better). Each trial's attainment
(the share of requests within the targets) gets a Wilson score interval; a trial stops as soon as the
interval lies wholly above or below the target share (after its minimum requests and seconds). A rate
*holds* only when the interval's lower bound is at or above the share: a rate whose interval straddles the
share is not taken, the bisection goes below it. The best setting is the one with the highest rate that
holds. No torch or Django: a trial is a callable (a real model, or a simulated one in tests).

Where the search starts (``predict_rates``): the same batcher and arrivals on a virtual clock, with every
batch taking the median time the interleaved timing measured for its size. That prediction costs
milliseconds; it ranks the settings and gives each real bisection its first rate, a little under the
predicted one (a model of constant service time is optimistic: real times vary). From there the real
trials step up or down until a rate holds and one above it does not, then bisect between the two. A
setting whose prediction is below the best rate already measured is not tried for real. The prediction
is stored beside the figure.

A real trial must count ``min_requests`` after its warm-up within ``max_seconds``, so it cannot decide
below ``GoodputPolicy.min_served_rps`` (25 req/s with the defaults): a model that slow (a large model, any
text generation on a CPU) would need minutes per trial. There the simulation answers, with the batch times
drawn from a log-normal that has each timed size's measured median and p95 (``lognormal_service``), and the
figure is marked ``method="simulated"``: arithmetic over the measurements, not a served run, and the page
says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any

from workers.record import Goodput
from workers.serving import (
    STATIC,
    BatcherSetting,
    Targets,
    TrialLimits,
    TrialResult,
    VirtualClock,
    run_trial,
    simulated_executor,
)

SERVED, SIMULATED = "served", "simulated"  # where a goodput figure comes from (Goodput.method)
SIMULATED_REQUESTS = 10_000  # counted requests in every simulated trial


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
    # A predicted search starts this share under the prediction, and steps by twice it (then doubling).
    start_margin: float = 0.1

    @property
    def min_served_rps(self) -> float:
        """The lowest rate at which a real trial counts its minimum requests (after its warm-up) within its
        time limit; below it a real trial cannot decide, and the simulation answers."""
        return (self.limits.warmup_requests + self.limits.min_requests) / self.limits.max_seconds


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
    start: float | None = None,
    floor: float = 0.0,
) -> list[_Run]:
    """The real trials of one setting. Without ``start``: bisection over [0, upper]. With ``start`` (a
    predicted rate): the first trial a margin under it, then steps up while rates hold and down while they
    fail (each step twice the last) until one rate holds and one above it fails, then bisection between.
    No trial runs below ``floor`` (the floor itself is tried once, when the steps would pass it)."""
    share, confidence = policy.share, policy.confidence

    def decided(met: int, count: int) -> bool:
        low, high = wilson(met, count, confidence)
        return low >= share or high < share

    runs: list[_Run] = []
    low_rate, high_rate = 0.0, upper
    held = failed = start is None  # without a start, bisection from the first trial
    step = 2 * policy.start_margin
    rate = upper / 2 if start is None else min(upper, max(upper * 1e-3, start * (1 - policy.start_margin)))
    for _ in range(policy.steps):
        if out_of_time() or high_rate - low_rate <= policy.precision * high_rate:
            break
        if rate < floor:
            if high_rate <= floor or any(r.rate == floor for r in runs):
                break
            rate = floor
        result = trial(rate, setting, decided)
        low, high = wilson(result.met, result.requests, confidence)
        holds = result.requests > 0 and low >= share
        runs.append(_Run(rate, result, low, high, holds))
        if holds:
            low_rate, held = rate, True
        else:
            high_rate, failed = rate, True
        if held and failed:
            rate = (low_rate + high_rate) / 2
        elif held:  # every rate so far held: step up, at most to the upper bound
            rate = min(high_rate, low_rate * (1 + step))
        else:  # every rate so far failed: step down
            rate = high_rate * max(0.05, 1 - step)
        step *= 2
    return runs


def simulated_trial(
    service_s: Callable[[int], float],
    policy: GoodputPolicy,
    *,
    targets: Targets,
    step_s: Callable[[int], float] | None = None,
    tokens: int = 1,
    seed: int = 0,
) -> Trial:
    """A trial on the virtual clock: the same batcher, arrivals and limits as a real one, with a batch of
    ``b`` taking ``service_s(b)`` seconds to its first token (then ``step_s(b)`` per token); each counts
    ``SIMULATED_REQUESTS`` requests, whatever (virtual) time that takes. Tens of milliseconds a trial."""

    def trial(rate: float, setting: BatcherSetting, decided: Callable[[int, int], bool]) -> TrialResult:
        clock = VirtualClock()
        return run_trial(
            rate,
            setting,
            simulated_executor(clock, service_s, step_s),
            clock=clock,
            targets=targets,
            limits=limits,
            seed=seed,
            decided=decided,
            tokens=tokens,
        )

    # Virtual seconds cost nothing, so a simulated trial is long: the queue makes neighbouring requests'
    # latencies alike, and a short trial's share wanders (see the module's docstring).
    requests = max(SIMULATED_REQUESTS, policy.limits.min_requests)
    limits = replace(policy.limits, max_seconds=math.inf, min_requests=requests, max_requests=requests)
    return trial


def _predict(
    simulated: Trial, upper_bounds: dict[int, float], policy: GoodputPolicy
) -> dict[BatcherSetting, float]:
    predicted = {}
    for setting in _settings(upper_bounds, policy):
        runs = _bisect(simulated, setting, upper_bounds[setting.max_batch], policy, lambda: False)
        predicted[setting] = max((r.rate for r in runs if r.holds), default=0.0)
    return predicted


def predict_rates(
    service_s: Callable[[int], float],
    upper_bounds: dict[int, float],
    policy: GoodputPolicy,
    *,
    targets: Targets,
    step_s: Callable[[int], float] | None = None,
    tokens: int = 1,
    seed: int = 0,
) -> dict[BatcherSetting, float]:
    """Per batcher setting, the goodput of a model whose batch of ``b`` takes ``service_s(b)`` seconds (to
    its first token; then ``step_s(b)`` per token), found by the same bisection on a virtual clock: where
    the real search starts. Runs in milliseconds; no time limit applies to it."""
    trial = simulated_trial(service_s, policy, targets=targets, step_s=step_s, tokens=tokens, seed=seed)
    return _predict(trial, upper_bounds, policy)


def lognormal_service(
    p50_s: dict[int, float],
    p95_s: dict[int, float],
    seed: int = 0,
    *,
    mean_s: dict[int, float] | None = None,
) -> Callable[[int], float]:
    """Batch times drawn at random with the measured median and p95 at each timed batch size (linear
    between sizes, see ``interpolated``): a log-normal with μ = ln p50 and σ = ln(p95 ÷ p50) ÷ 1.645, which
    has exactly that median and p95. Where a size has no p95 (too few samples), σ comes from its mean
    instead (a log-normal's mean is its median × e^(σ²/2)); with neither above the median, the median
    every time. Seeded, so a simulation is reproducible."""
    import random

    z95 = NormalDist().inv_cdf(0.95)
    means = mean_s or {}

    def sigma(batch: int) -> float:
        median, tail, mean = p50_s[batch], p95_s.get(batch), means.get(batch)
        if tail is not None and tail > median > 0:
            return math.log(tail / median) / z95
        if mean is not None and mean > median > 0:
            return math.sqrt(2 * math.log(mean / median))
        return 0.0

    median_of = interpolated(p50_s)
    sigma_of = interpolated({b: sigma(b) for b in p50_s})
    rng = random.Random(seed)

    def draw(batch: int) -> float:
        spread = sigma_of(batch) if batch >= min(p50_s) else sigma(min(p50_s))
        return median_of(batch) * math.exp(rng.gauss(0.0, spread)) if spread else median_of(batch)

    return draw


def interpolated(medians: dict[int, float]) -> Callable[[int], float]:
    """A batch's time for any size from the times measured at some sizes: linear between the two measured
    sizes around it, proportional below the smallest, the largest's beyond it (the batcher never exceeds
    the largest measured size)."""
    sizes = sorted(medians)
    if not sizes:
        raise ValueError("a service time needs at least one measured batch size")

    def service(batch: int) -> float:
        if batch <= sizes[0]:
            return medians[sizes[0]] * batch / sizes[0]
        for small, large in zip(sizes, sizes[1:], strict=False):
            if batch <= large:
                share = (batch - small) / (large - small)
                return medians[small] + share * (medians[large] - medians[small])
        return medians[sizes[-1]]

    return service


def _settings(upper_bounds: dict[int, float], policy: GoodputPolicy) -> list[BatcherSetting]:
    return [
        BatcherSetting(batch, wait)
        for batch in sorted(upper_bounds)
        for wait in policy.max_waits_ms
        if upper_bounds[batch] > 0
    ]


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
    predicted: dict[BatcherSetting, float] | None = None,
    simulated: Trial | None = None,
) -> Goodput:
    """The best batcher setting's goodput. ``upper_bounds`` maps each max batch size to its static upper
    bound in requests/s (``b ÷ median batch time``); every max wait of the policy is tried with each.
    ``on_setting(position, count, setting)`` reports progress (it may raise to stop the search).

    ``predicted`` (``predict_rates``): the settings are tried best-predicted first, each bisection starts
    near its prediction, and a setting predicted below the best rate measured so far is skipped.
    ``simulated`` (``simulated_trial`` over the measured batch times): the predictions come from it, and it
    answers where a real trial cannot decide, below ``policy.min_served_rps`` (too few arrivals within a
    trial's time): when every predicted rate is below that, or when no rate at or above it held for real
    (then the simulation searches below the lowest rate that failed). Such a figure is marked
    ``method="simulated"``."""
    common: dict[str, Any] = {
        "target_ms": target_ms,
        "itl_target_ms": itl_target_ms,
        "tokens": tokens,
        "capped_tokens": capped_tokens,
        "batching": batching,
        "clock": clock,
    }
    if simulated is None:
        return _search(trial, upper_bounds, policy, predicted=predicted, on_setting=on_setting, **common)
    started = clock()
    if predicted is None:
        predicted = _predict(simulated, upper_bounds, policy)
    floor = policy.min_served_rps
    if max(predicted.values(), default=0.0) >= floor:
        found = _search(
            trial, upper_bounds, policy, predicted=predicted, on_setting=on_setting, floor=floor, **common
        )
        if found.rps > 0:
            return found
        below = min((rate for rate, _, _ in found.curve), default=floor)
        capped = {b: min(u, below) for b, u in upper_bounds.items()}
    else:
        capped = upper_bounds
    found = _search(simulated, capped, policy, predicted=None, on_setting=None, **common)
    best = BatcherSetting(found.max_batch, found.max_wait_ms)
    return replace(
        found,
        method=SIMULATED,
        static_rps=upper_bounds[found.max_batch],
        predicted_rps=predicted.get(best),
        search_seconds=clock() - started,
    )


def _search(
    trial: Trial,
    upper_bounds: dict[int, float],
    policy: GoodputPolicy,
    *,
    target_ms: float,
    itl_target_ms: float | None,
    tokens: int | None,
    capped_tokens: int | None,
    batching: str,
    on_setting: Callable[[int, int, BatcherSetting], None] | None,
    clock: Callable[[], float],
    predicted: dict[BatcherSetting, float] | None,
    floor: float = 0.0,
) -> Goodput:
    settings = _settings(upper_bounds, policy)
    if predicted is not None:
        settings.sort(key=lambda s: -predicted.get(s, 0.0))
    started = clock()

    def out_of_time() -> bool:
        return clock() - started >= policy.max_seconds

    best: tuple[float, BatcherSetting, list[_Run]] | None = None
    total_requests = 0
    for position, setting in enumerate(settings):
        if best is not None and out_of_time():
            break
        if best is not None and predicted is not None and predicted.get(setting, 0.0) <= best[0]:
            continue  # even its optimistic prediction does not beat a rate that held for real
        if on_setting is not None:
            on_setting(position, len(settings), setting)
        runs = _bisect(
            trial,
            setting,
            upper_bounds[setting.max_batch],
            policy,
            out_of_time if best is not None else (lambda: False),  # the first setting always finishes
            start=None if predicted is None else (predicted.get(setting) or None),
            floor=floor,
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
        predicted_rps=None if predicted is None else predicted.get(setting),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
