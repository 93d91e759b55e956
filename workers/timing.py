"""Interleaved timing: a candidate is timed against the baseline in alternating rounds, so whatever else
runs on the host slows both, and their speedup is judged with a bootstrap interval and the host's load.

Each subject is a callable that runs one timed unit (a forward pass of one batch, one generation) and
returns only when the work is done (on CUDA it must synchronize before returning). After a warm-up, every
round times both subjects ``k`` iterations each, in an order drawn from a seeded RNG; the round's speedup
is the baseline's median iteration over the candidate's. Rounds go on until the speedup interval is within
the target precision, or a round or time budget is spent (never fewer than the minimum rounds). A
measurement that is too noisy, or taken on a busy host, is re-measured, and if it stays so it is kept and
marked unstable with the reason. numpy only, no torch or Django; docs/measurement.md has the method and the
settings.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from workers.hostload import HostMonitor
from workers.stats import bootstrap_quantiles, bootstrap_speedup
from workers.trust import (
    BASELINE,
    CANDIDATE,
    STOP_MAX_ROUNDS,
    STOP_MAX_SECONDS,
    STOP_PRECISE,
    AttemptSummary,
    HostLoad,
    InterleavedRun,
    IntervalEstimate,
    LatencySummary,
    TimingTrust,
    TrustRule,
    carryover_reasons,
    unstable_reasons,
)

Clock = Callable[[], float]
Unit = Callable[[], object]
# What each subject's units returned, one tuple per round (k results), warm-up left out.
Outputs = Mapping[str, tuple[tuple[object, ...], ...]]


@dataclass(frozen=True)
class TimingPolicy:
    """How long to time, when to stop, and when a measurement is unstable (the MEASURE_* settings)."""

    warmup: int = 5  # untimed iterations of each subject, alternating, before the first round
    # Iterations of each subject per round; 0: from the warm-up, so that one subject's block of a round
    # lasts about block_seconds (at most max_iterations_per_round, at least one iteration).
    iterations_per_round: int = 0
    block_seconds: float = 0.05
    max_iterations_per_round: int = 50
    min_rounds: int = 10  # a median of per-round ratios needs 10 rounds (5 each side) for an interval
    max_rounds: int = 200
    min_samples: int = 100  # timed iterations of each subject before the precision may stop the run
    max_seconds: float = 60.0  # after min_rounds, stop once this much time is spent
    target_precision: float = 0.03  # stop once the speedup interval is within ±3% of the estimate
    confidence: float = 0.95
    resamples: int = 2000
    tail_samples: int = 5  # samples beyond a percentile before it is reported
    seed: int = 0
    unstable_width: float = 0.10  # a speedup interval wider than ±10% is unstable
    unstable_cpu_share: float = 0.25  # other processes using over 25% of the machine: unstable
    # A model over 20% slower right after the other than right after itself: the pairing is suspect.
    carryover_tolerance: float = 0.20
    remeasure: int = 2  # re-measurements of an unstable measurement before it is kept as unstable
    remeasure_pause_s: float = 5.0  # wait before a re-measurement, for a passing burst to end

    def __post_init__(self) -> None:
        if self.min_rounds < 1 or self.max_rounds < self.min_rounds:
            raise ValueError("rounds: need 1 <= min_rounds <= max_rounds")
        if self.iterations_per_round < 0 or self.max_iterations_per_round < 1:
            raise ValueError("iterations per round: 0 (from the warm-up) or a positive number")
        if self.iterations_per_round == 0 and self.warmup < 1:
            raise ValueError("iterations per round come from the warm-up, so warm-up needs an iteration")
        if not 0.0 < self.target_precision < 1.0 or self.unstable_width <= 0.0:
            raise ValueError("precision and instability widths are positive shares (0.03 = ±3%)")
        if self.remeasure < 0 or self.remeasure_pause_s < 0 or self.warmup < 0:
            raise ValueError("warm-up, re-measurements and the pause cannot be negative")

    @property
    def rule(self) -> TrustRule:
        return TrustRule(
            max_relative_half_width=self.unstable_width, max_other_cpu_share=self.unstable_cpu_share
        )


@dataclass(frozen=True)
class Comparison:
    """What ``measure_speedup`` found: the trust record to store and show, the raw iterations of the
    attempt it rests on (stored too where the raw values are kept), and what the units returned in that
    attempt's rounds (e.g. a generation's token timestamps), aligned with ``run``'s rounds."""

    trust: TimingTrust
    run: InterleavedRun
    outputs: Outputs = field(default_factory=dict)


def _time_once(unit: Unit, clock: Clock) -> tuple[float, object]:
    started = clock()
    result = unit()
    return clock() - started, result


def _iterations_for(warm: dict[str, list[float]], policy: TimingPolicy) -> int:
    """The same k for both subjects: a block of the slower one lasts about ``block_seconds``."""
    slower = max(sorted(times)[len(times) // 2] for times in warm.values())
    if slower <= 0:
        return policy.max_iterations_per_round
    return max(1, min(policy.max_iterations_per_round, math.ceil(policy.block_seconds / slower)))


def _speedup(ratios: Sequence[float], policy: TimingPolicy) -> IntervalEstimate | None:
    return bootstrap_speedup(
        ratios,
        rng=np.random.default_rng(policy.seed),
        confidence=policy.confidence,
        resamples=policy.resamples,
        beyond=policy.tail_samples,
    )


def time_interleaved(
    baseline: Unit,
    candidate: Unit,
    *,
    policy: TimingPolicy,
    clock: Clock = time.perf_counter,
    rng: random.Random | None = None,
    on_round: Callable[[int], None] | None = None,
    outputs: dict[str, list[tuple[object, ...]]] | None = None,
) -> InterleavedRun:
    """Warm up both subjects, then time them in interleaved rounds until the stopping rule says enough.

    The run stops after a round once (a) at least ``min_rounds`` rounds and ``min_samples`` iterations per
    subject are done and the speedup interval is within ``target_precision``; or (b) ``max_rounds`` rounds
    are done; or (c) ``min_rounds`` are done and ``max_seconds`` have passed since the first round.
    ``on_round(rounds_done)`` is called after every round (host sampling, progress; it may raise to stop).
    ``outputs``, when given, receives per subject one tuple per round of what its units returned (the
    warm-up's are left out), so a unit that records more than its own duration (a generation's token
    timestamps) is read from the same rounds as the timings.
    """
    order_rng = rng if rng is not None else random.Random(policy.seed)
    subjects = {BASELINE: baseline, CANDIDATE: candidate}
    warm: dict[str, list[float]] = {BASELINE: [], CANDIDATE: []}
    for _ in range(policy.warmup):
        for name, unit in subjects.items():
            warm[name].append(_time_once(unit, clock)[0])
    k = policy.iterations_per_round or _iterations_for(warm, policy)

    rounds: dict[str, list[tuple[float, ...]]] = {BASELINE: [], CANDIDATE: []}
    first: list[str] = []
    ratios: list[float] = []
    started = clock()
    while True:
        order = [BASELINE, CANDIDATE]
        order_rng.shuffle(order)
        for name in order:
            timed = [_time_once(subjects[name], clock) for _ in range(k)]
            rounds[name].append(tuple(seconds for seconds, _ in timed))
            if outputs is not None:
                outputs.setdefault(name, []).append(tuple(result for _, result in timed))
        first.append(order[0])
        ratios.append(statistics.median(rounds[BASELINE][-1]) / statistics.median(rounds[CANDIDATE][-1]))
        done = len(ratios)
        if on_round is not None:
            on_round(done)
        if done >= policy.min_rounds and done * k >= policy.min_samples:
            speedup = _speedup(ratios, policy)
            if speedup is not None and speedup.relative_half_width <= policy.target_precision:
                stop = STOP_PRECISE
                break
        if done >= policy.max_rounds:
            stop = STOP_MAX_ROUNDS
            break
        if done >= policy.min_rounds and clock() - started >= policy.max_seconds:
            stop = STOP_MAX_SECONDS
            break
    return InterleavedRun(
        baseline=tuple(rounds[BASELINE]),
        candidate=tuple(rounds[CANDIDATE]),
        first=tuple(first),
        iterations_per_round=k,
        warmup=policy.warmup,
        stop_reason=stop,
        seconds=clock() - started,
    )


def summarize_latency(rows: Sequence[Sequence[float]], *, policy: TimingPolicy) -> LatencySummary:
    """p50/p95/p99 (ms) of one subject's iterations with cluster-bootstrap intervals (rounds resampled
    whole); a percentile with too few samples behind it is ``None``."""
    data = np.asarray(rows, dtype=np.float64) * 1000.0
    p50, p95, p99 = bootstrap_quantiles(
        data,
        [0.50, 0.95, 0.99],
        rng=np.random.default_rng(policy.seed),
        confidence=policy.confidence,
        resamples=policy.resamples,
        beyond=policy.tail_samples,
    )
    return LatencySummary(
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        mean_ms=float(data.mean()),
        samples=int(data.size),
        rounds=len(rows),
    )


def percentile_fields(
    prefix: str, summary: LatencySummary, intervals: Sequence[str] = ()
) -> dict[str, float | None]:
    """``{prefix}p50_ms``, ``_p95_ms`` and ``_p99_ms`` of a summary, as ``workers.record.LatencyPoint``
    stores them, and the interval bounds (``{prefix}p95_low_ms``, ``…_high_ms``) of the percentiles named
    in ``intervals`` ("p50", "p95", "p99"). A percentile with too few samples is None, with its bounds."""
    found: dict[str, float | None] = {}
    for name, estimate in (("p50", summary.p50_ms), ("p95", summary.p95_ms), ("p99", summary.p99_ms)):
        found[f"{prefix}{name}_ms"] = None if estimate is None else estimate.value
        if name in intervals:
            found[f"{prefix}{name}_low_ms"] = None if estimate is None else estimate.low
            found[f"{prefix}{name}_high_ms"] = None if estimate is None else estimate.high
    return found


def trust_fields(trust: TimingTrust, *, is_baseline: bool = False) -> dict[str, object]:
    """The speedup with its interval, the rounds, the verdict and the host load, as
    ``workers.record.LatencyPoint`` stores them. ``unstable`` is None when clean, else the reasons joined
    by "; ". On the baseline the speedup is left out: it was timed against itself, and that ratio (about
    1) only serves to judge the noise. ``load_avg`` is the highest 1-minute load seen while timing."""
    speedup = None if is_baseline else trust.speedup
    host = trust.host
    return {
        "speedup": None if speedup is None else speedup.value,
        "speedup_low": None if speedup is None else speedup.low,
        "speedup_high": None if speedup is None else speedup.high,
        "rounds": trust.rounds,
        "unstable": "; ".join(trust.reasons) or None,
        "load_avg": host.load_avg_1m_max if host.load_avg_1m_max is not None else host.load_avg_1m,
        "other_cpu_share": host.other_cpu_share,
    }


def _trust(
    run: InterleavedRun,
    host: HostLoad,
    *,
    speedup: IntervalEstimate | None,
    reasons: tuple[str, ...],
    history: tuple[AttemptSummary, ...],
    policy: TimingPolicy,
) -> TimingTrust:
    return TimingTrust(
        speedup=speedup,
        baseline=summarize_latency(run.baseline, policy=policy),
        candidate=summarize_latency(run.candidate, policy=policy),
        host=host,
        rounds=run.rounds,
        iterations_per_round=run.iterations_per_round,
        stop_reason=run.stop_reason,
        target_precision=policy.target_precision,
        reasons=reasons,
        attempts=len(history),
        history=history,
    )


def measure_speedup(
    baseline: Unit,
    candidate: Unit,
    *,
    policy: TimingPolicy | None = None,
    clock: Clock = time.perf_counter,
    rng: random.Random | None = None,
    host: Callable[[], HostMonitor] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_round: Callable[[int, int], None] | None = None,
) -> Comparison:
    """Time ``candidate`` against ``baseline`` in interleaved rounds while watching the host; re-measure an
    unstable result up to ``policy.remeasure`` times.

    A clean attempt is returned at once. If every attempt is unstable, the one with the narrowest speedup
    interval is kept, with its reasons: shown as unstable, never as a clean number. ``on_round(attempt,
    rounds_done)`` is called after every round (attempt counts from 1). ``host`` builds the load sampler
    (default ``HostMonitor``; tests pass one with fake readers); ``sleep`` waits between attempts. The
    kept attempt's unit results are in ``Comparison.outputs`` (see ``time_interleaved``).
    """
    policy = policy or TimingPolicy()
    host = host or HostMonitor
    order_rng = rng if rng is not None else random.Random(policy.seed)
    attempts: list[tuple[InterleavedRun, HostLoad, IntervalEstimate | None, tuple[str, ...]]] = []
    results: list[dict[str, list[tuple[object, ...]]]] = []
    settled = False
    for attempt in range(1, policy.remeasure + 2):
        if attempt > 1:
            sleep(policy.remeasure_pause_s)
        results.append({})
        with host() as monitor:

            def round_done(done: int, _attempt: int = attempt, _monitor: HostMonitor = monitor) -> None:
                _monitor.sample()
                if on_round is not None:
                    on_round(_attempt, done)

            run = time_interleaved(
                baseline,
                candidate,
                policy=policy,
                clock=clock,
                rng=order_rng,
                on_round=round_done,
                outputs=results[-1],
            )
        if monitor.load is None:  # set on leaving the block; a guard for the type checker
            raise RuntimeError("the host monitor recorded nothing")
        speedup = _speedup(run.round_ratios(), policy)
        reasons = unstable_reasons(speedup, monitor.load, policy.rule, rounds=run.rounds)
        carried = carryover_reasons(run, tolerance=policy.carryover_tolerance)
        attempts.append((run, monitor.load, speedup, reasons + carried))
        settled = not reasons
        if settled:  # a carry-over is the pairing's, not the moment's: re-measuring would not cure it
            break
    history = tuple(
        AttemptSummary(speedup=s, other_cpu_share=h.other_cpu_share, reasons=r) for _, h, s, r in attempts
    )
    widths = [math.inf if s is None else s.relative_half_width for _, _, s, _ in attempts]
    index = len(attempts) - 1
    if not settled:  # every attempt unstable: keep the most informative one
        index = min(range(len(attempts)), key=widths.__getitem__)
    run, load, speedup, reasons = attempts[index]
    trust = _trust(run, load, speedup=speedup, reasons=reasons, history=history, policy=policy)
    outputs = {name: tuple(rows) for name, rows in results[index].items()}
    return Comparison(trust=trust, run=run, outputs=outputs)
