"""What a timing measurement can be trusted for, as plain data: every estimate with its interval and sample
count, the host's load while it ran, and the verdict (clean, or unstable and why).

Frozen dataclasses with ``to_json()`` / ``from_json()`` round trips through plain JSON types, so a worker
stores them in a JSON column and the web reads them back for display. Standard library only: no numpy,
torch or Django. The method is described in docs/measurement.md.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BASELINE = "baseline"
CANDIDATE = "candidate"

# Why an interleaved run stopped.
STOP_PRECISE = "precise"  # the speedup interval reached the target precision
STOP_MAX_ROUNDS = "max_rounds"
STOP_MAX_SECONDS = "max_seconds"


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class IntervalEstimate:
    """A point estimate and its bootstrap confidence interval.

    ``n`` is the number of independent units the interval rests on: timed samples for a latency
    percentile, rounds for a speedup.
    """

    value: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def relative_half_width(self) -> float:
        """The interval's wider side as a share of the estimate (0.03 = ±3%); infinite for a zero estimate."""
        if self.value == 0:
            return math.inf
        return max(self.value - self.low, self.high - self.value) / abs(self.value)

    def contains(self, threshold: float) -> bool:
        """Whether ``threshold`` lies inside the interval: a decision must not turn on that comparison."""
        return self.low <= threshold <= self.high

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "confidence": self.confidence,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IntervalEstimate:
        return cls(
            value=float(data["value"]),
            low=float(data["low"]),
            high=float(data["high"]),
            n=int(data["n"]),
            confidence=float(data["confidence"]),
        )


def _estimate_json(estimate: IntervalEstimate | None) -> dict[str, Any] | None:
    return None if estimate is None else estimate.to_json()


def _estimate_from(data: Mapping[str, Any] | None) -> IntervalEstimate | None:
    return None if data is None else IntervalEstimate.from_json(data)


@dataclass(frozen=True)
class LatencySummary:
    """One model's latency in one interleaved run, in milliseconds. A percentile is ``None`` when the run
    had too few samples for it (see ``workers.stats.min_samples_for_quantile``)."""

    p50_ms: IntervalEstimate | None
    p95_ms: IntervalEstimate | None
    p99_ms: IntervalEstimate | None
    mean_ms: float
    samples: int
    rounds: int

    def to_json(self) -> dict[str, Any]:
        return {
            "p50_ms": _estimate_json(self.p50_ms),
            "p95_ms": _estimate_json(self.p95_ms),
            "p99_ms": _estimate_json(self.p99_ms),
            "mean_ms": self.mean_ms,
            "samples": self.samples,
            "rounds": self.rounds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatencySummary:
        return cls(
            p50_ms=_estimate_from(data["p50_ms"]),
            p95_ms=_estimate_from(data["p95_ms"]),
            p99_ms=_estimate_from(data["p99_ms"]),
            mean_ms=float(data["mean_ms"]),
            samples=int(data["samples"]),
            rounds=int(data["rounds"]),
        )


@dataclass(frozen=True)
class HostLoad:
    """How busy the host was while a measurement ran.

    ``other_cpu_share`` is the share of the whole machine's CPU capacity (every core) that processes other
    than this one used over the measurement, 0 to 1; ``other_cpu_share_peak`` the highest share over any
    stretch of at least the sampler's window. Either is ``None`` where the host does not expose its CPU
    counters (no /proc/stat). ``load_avg_1m`` is the 1-minute load average at the end, ``load_avg_1m_max``
    the highest seen while the measurement ran.
    """

    cpu_count: int
    load_avg_1m: float | None
    load_avg_1m_max: float | None
    other_cpu_share: float | None
    other_cpu_share_peak: float | None
    seconds: float
    samples: int

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu_count": self.cpu_count,
            "load_avg_1m": self.load_avg_1m,
            "load_avg_1m_max": self.load_avg_1m_max,
            "other_cpu_share": self.other_cpu_share,
            "other_cpu_share_peak": self.other_cpu_share_peak,
            "seconds": self.seconds,
            "samples": self.samples,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostLoad:
        return cls(
            cpu_count=int(data["cpu_count"]),
            load_avg_1m=_float_or_none(data["load_avg_1m"]),
            load_avg_1m_max=_float_or_none(data["load_avg_1m_max"]),
            other_cpu_share=_float_or_none(data["other_cpu_share"]),
            other_cpu_share_peak=_float_or_none(data["other_cpu_share_peak"]),
            seconds=float(data["seconds"]),
            samples=int(data["samples"]),
        )


@dataclass(frozen=True)
class InterleavedRun:
    """The raw record of one interleaved run: every timed iteration, in seconds, per round.

    ``baseline[r]`` and ``candidate[r]`` are round r's iterations of each model; ``first[r]`` names the
    model timed first in that round.
    """

    baseline: tuple[tuple[float, ...], ...]
    candidate: tuple[tuple[float, ...], ...]
    first: tuple[str, ...]
    iterations_per_round: int
    warmup: int
    stop_reason: str
    seconds: float

    @property
    def rounds(self) -> int:
        return len(self.baseline)

    def samples(self, subject: str) -> int:
        return sum(len(r) for r in (self.baseline if subject == BASELINE else self.candidate))

    def round_medians(self, subject: str) -> list[float]:
        """Each round's median iteration time (seconds) of ``subject`` (BASELINE or CANDIDATE)."""
        return [statistics.median(r) for r in (self.baseline if subject == BASELINE else self.candidate)]

    def round_ratios(self) -> list[float]:
        """Per round: the baseline's median iteration time over the candidate's (> 1: the candidate is
        faster). Both halves of a round ran back to back, so a slowdown of the host cancels out."""
        return [
            b / c for b, c in zip(self.round_medians(BASELINE), self.round_medians(CANDIDATE), strict=True)
        ]

    def carryover(self, *, least: int = 3) -> dict[str, float | None]:
        """Per subject: the median of its blocks that ran right after the other subject's block over the
        median of those that ran right after its own (the round order is random, so both happen). Above 1,
        the other model slows what runs after it (worker threads that keep spinning after a call, caches it
        evicted), which would pass for a speedup. None with fewer than ``least`` blocks of either kind."""
        blocks = {BASELINE: self.round_medians(BASELINE), CANDIDATE: self.round_medians(CANDIDATE)}
        after: dict[str, dict[bool, list[float]]] = {s: {True: [], False: []} for s in blocks}
        previous: str | None = None
        for index, first in enumerate(self.first):
            second = CANDIDATE if first == BASELINE else BASELINE
            for subject in (first, second):
                if previous is not None:
                    after[subject][previous != subject].append(blocks[subject][index])
                previous = subject
        found: dict[str, float | None] = {}
        for subject, kinds in after.items():
            other, own = kinds[True], kinds[False]
            enough = len(other) >= least and len(own) >= least
            found[subject] = statistics.median(other) / statistics.median(own) if enough else None
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": [list(r) for r in self.baseline],
            "candidate": [list(r) for r in self.candidate],
            "first": list(self.first),
            "iterations_per_round": self.iterations_per_round,
            "warmup": self.warmup,
            "stop_reason": self.stop_reason,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InterleavedRun:
        return cls(
            baseline=tuple(tuple(float(t) for t in r) for r in data["baseline"]),
            candidate=tuple(tuple(float(t) for t in r) for r in data["candidate"]),
            first=tuple(str(s) for s in data["first"]),
            iterations_per_round=int(data["iterations_per_round"]),
            warmup=int(data["warmup"]),
            stop_reason=str(data["stop_reason"]),
            seconds=float(data["seconds"]),
        )


@dataclass(frozen=True)
class TrustRule:
    """When a measurement is unstable: its speedup interval is wider than ``max_relative_half_width`` of the
    estimate, or other processes used more than ``max_other_cpu_share`` of the machine while it ran."""

    max_relative_half_width: float = 0.10
    max_other_cpu_share: float = 0.25


def unstable_reasons(
    speedup: IntervalEstimate | None, host: HostLoad, rule: TrustRule, *, rounds: int
) -> tuple[str, ...]:
    """Why a measurement cannot be shown as a clean number, in words for a manager; empty when it can."""
    reasons = []
    if speedup is None:
        reasons.append(f"too few rounds ({rounds}) for a speedup interval")
    elif speedup.relative_half_width > rule.max_relative_half_width:
        reasons.append(
            f"the speedup interval is ±{speedup.relative_half_width:.0%} of the estimate "
            f"(more than ±{rule.max_relative_half_width:.0%}) after {rounds} rounds"
        )
    if host.other_cpu_share is not None and host.other_cpu_share > rule.max_other_cpu_share:
        load = host.load_avg_1m_max if host.load_avg_1m_max is not None else host.load_avg_1m
        load_text = f"load {load:.1f} on {host.cpu_count} cores; " if load is not None else ""
        reasons.append(
            f"the host was busy ({load_text}other processes used {host.other_cpu_share:.0%} of the CPU)"
        )
    return tuple(reasons)


def carryover_reasons(run: InterleavedRun, *, tolerance: float) -> tuple[str, ...]:
    """Why the pairing itself is suspect: one model runs more than ``tolerance`` slower right after the
    other than right after itself (``InterleavedRun.carryover``), so the ratio measures the interference
    as well as the models. Re-measuring does not cure it; it is kept as a reason."""
    names = {BASELINE: ("the baseline", "the candidate"), CANDIDATE: ("the candidate", "the baseline")}
    reasons = []
    for subject, ratio in run.carryover().items():
        if ratio is not None and ratio > 1 + tolerance:
            slowed, by = names[subject]
            reasons.append(
                f"{slowed} ran {ratio - 1:.0%} slower right after {by} than right after itself: {by} "
                f"slows what runs next (e.g. threads that keep spinning), so the speedup is not the models' alone"
            )
    return tuple(reasons)


@dataclass(frozen=True)
class AttemptSummary:
    """One attempt of a measurement that may have been re-measured: what it found and why it was unstable."""

    speedup: IntervalEstimate | None
    other_cpu_share: float | None
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "speedup": _estimate_json(self.speedup),
            "other_cpu_share": self.other_cpu_share,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttemptSummary:
        return cls(
            speedup=_estimate_from(data["speedup"]),
            other_cpu_share=_float_or_none(data["other_cpu_share"]),
            reasons=tuple(str(r) for r in data["reasons"]),
        )


FLAG_UNSTABLE = "unstable"
FLAG_BORDERLINE = "borderline"
FLAG_IMPRECISE = "imprecise"
FLAG_NO_P95 = "too_few_samples_for_p95"
FLAG_NO_P99 = "too_few_samples_for_p99"


@dataclass(frozen=True)
class TimingTrust:
    """A candidate timed against the baseline in interleaved rounds, and how far the figures can be trusted.

    ``speedup`` is baseline time ÷ candidate time (> 1: the candidate is faster). ``reasons`` is empty when
    the measurement is clean; otherwise it was re-measured up to the limit and stayed unstable, and the
    figures are the kept attempt's, to be shown as unstable with these reasons. ``history`` lists every
    attempt in order.
    """

    speedup: IntervalEstimate | None
    baseline: LatencySummary
    candidate: LatencySummary
    host: HostLoad
    rounds: int
    iterations_per_round: int
    stop_reason: str
    target_precision: float
    reasons: tuple[str, ...]
    attempts: int
    history: tuple[AttemptSummary, ...]

    @property
    def unstable(self) -> bool:
        return bool(self.reasons)

    @property
    def status(self) -> str:
        return FLAG_UNSTABLE if self.reasons else "clean"

    @property
    def borderline(self) -> bool:
        """The speedup interval includes 1: the candidate is not measurably faster or slower."""
        return self.speedup is not None and self.speedup.contains(1.0)

    def flags(self) -> list[str]:
        """Every caveat a display should show next to the figures (docs/measurement.md explains each)."""
        found = []
        if self.unstable:
            found.append(FLAG_UNSTABLE)
        if self.borderline:
            found.append(FLAG_BORDERLINE)
        if self.stop_reason != STOP_PRECISE:
            found.append(FLAG_IMPRECISE)
        if self.baseline.p95_ms is None or self.candidate.p95_ms is None:
            found.append(FLAG_NO_P95)
        if self.baseline.p99_ms is None or self.candidate.p99_ms is None:
            found.append(FLAG_NO_P99)
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "speedup": _estimate_json(self.speedup),
            "baseline": self.baseline.to_json(),
            "candidate": self.candidate.to_json(),
            "host": self.host.to_json(),
            "rounds": self.rounds,
            "iterations_per_round": self.iterations_per_round,
            "stop_reason": self.stop_reason,
            "target_precision": self.target_precision,
            "reasons": list(self.reasons),
            "attempts": self.attempts,
            "history": [a.to_json() for a in self.history],
            "status": self.status,  # derived; stored so a query can filter on it
            "flags": self.flags(),  # derived, for the same reason
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TimingTrust:
        history: Sequence[Mapping[str, Any]] = data["history"]
        return cls(
            speedup=_estimate_from(data["speedup"]),
            baseline=LatencySummary.from_json(data["baseline"]),
            candidate=LatencySummary.from_json(data["candidate"]),
            host=HostLoad.from_json(data["host"]),
            rounds=int(data["rounds"]),
            iterations_per_round=int(data["iterations_per_round"]),
            stop_reason=str(data["stop_reason"]),
            target_precision=float(data["target_precision"]),
            reasons=tuple(str(r) for r in data["reasons"]),
            attempts=int(data["attempts"]),
            history=tuple(AttemptSummary.from_json(a) for a in history),
        )
