"""What one run measures about one model, as typed values: the runner produces a ``Measurement``, and
``Candidate.set_measurement`` / ``Candidate.measurement`` store it and read it back.

Pure: nothing of Django, torch or Celery, so the web process may import it. The JSON mapping is generic
over the dataclass fields: a new field needs no mapping code, and ``from_json`` gives a field missing from
an older row its default.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, fields
from typing import Any, Self, Union, get_args, get_origin, get_type_hints


@dataclass(frozen=True)
class _Record:
    """The JSON mapping the records share. ``to_json`` leaves out the fields that are None."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                data[field.name] = _dumped(value)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The record stored as ``data``; keys it does not know are ignored, a missing or null key takes the
        field's default (an error for a required field)."""
        hints = _field_types(cls)
        values = {
            field.name: _loaded(hints[field.name], data[field.name])
            for field in fields(cls)
            if data.get(field.name) is not None
        }
        return cls(**values)


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    """The declared type of each field (once per class: dashboards read thousands of points)."""
    found = _FIELD_TYPES.get(cls)
    if found is None:
        found = _FIELD_TYPES[cls] = get_type_hints(cls)
    return found


def _dumped(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_json()
    if isinstance(value, tuple):
        return [_dumped(item) for item in value]
    return value


def _loaded(hint: Any, value: Any) -> Any:
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:  # X | None: read it as X
        (inner,) = [arg for arg in get_args(hint) if arg is not type(None)]
        return _loaded(inner, value)
    if origin is tuple:  # tuple[X, ...]
        return tuple(_loaded(get_args(hint)[0], item) for item in value)
    if isinstance(hint, type) and issubclass(hint, _Record):
        return hint.from_json(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # JSON writes 20.0 back as 20
    return value


@dataclass(frozen=True)
class LatencyPoint(_Record):
    """The timings at one batch size. For a causal LM the times are those of one whole generation, and
    the fields from ``prompt_tokens`` on describe its first token and the tokens after it.

    The model was timed against the baseline in interleaved rounds (docs/measurement.md): the percentiles
    come from this model's iterations in those rounds, each ``*_low_ms`` / ``*_high_ms`` pair is the
    bootstrap interval of the figure it follows, and ``iterations`` is this model's sample count. A
    percentile with too few samples behind it (p95 needs 100, p99 500) is ``None``, never a guess; so is an
    interval that was not computed (a point stored before intervals existed). ``speedup`` is the baseline's
    time over this model's from the same rounds (``None`` on the baseline itself); ``unstable`` is ``None``
    for a clean measurement, else why it is not (after re-measuring).
    """

    batch_size: int
    p50_ms: float
    _: KW_ONLY
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float
    iterations: int  # timed iterations of this model at this batch size
    throughput_rps: float  # batch_size ÷ p50
    mean_tokens: float | None = None  # classifiers: real (unpadded) tokens per text
    prompt_tokens: float | None = None  # mean real tokens per prompt
    new_tokens: int | None = None
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    ttft_p99_ms: float | None = None
    itl_p50_ms: float | None = None
    itl_p95_ms: float | None = None
    itl_p99_ms: float | None = None
    tokens_per_s: float | None = None  # output tokens per second at the p50 generation time
    # Bootstrap interval bounds (confidence MEASURE_CONFIDENCE) of the percentile each pair follows.
    p50_low_ms: float | None = None
    p50_high_ms: float | None = None
    p95_low_ms: float | None = None
    p95_high_ms: float | None = None
    p99_low_ms: float | None = None
    p99_high_ms: float | None = None
    ttft_p95_low_ms: float | None = None
    ttft_p95_high_ms: float | None = None
    itl_p95_low_ms: float | None = None
    itl_p95_high_ms: float | None = None
    # Baseline time ÷ this model's time, the median of per-round ratios, with its interval.
    speedup: float | None = None
    speedup_low: float | None = None
    speedup_high: float | None = None
    rounds: int | None = None  # interleaved rounds behind the speedup and the intervals
    unstable: str | None = None  # None: clean; else the reason(s), "; "-joined
    load_avg: float | None = None  # highest 1-minute load average while this point was timed
    other_cpu_share: float | None = None  # share of the machine's CPU other processes used meanwhile


@dataclass(frozen=True)
class Goodput(_Record):
    """The serving scenario's result (workers/goodput.py, docs/measurement.md): the highest Poisson arrival
    rate at which ``share`` of the requests met the targets, behind a dynamic batcher of at most
    ``max_batch`` requests waiting at most ``max_wait_ms``, latency from arrival (queueing included).

    ``attainment`` is the share measured at that rate, with its Wilson interval (its lower bound is at
    least ``share``, or the rate would not have been taken); all three are None when no rate held (``rps``
    0). ``curve`` is every trial of that setting: (offered requests/s, attainment, p95 latency in ms — text
    generation: p95 time to first token), by rate. ``static_rps`` is that batch size's ``b ÷ median``, the
    optimistic upper bound the search started from. Text generation: ``tokens`` is the reply length M the
    targets are for, ``capped_tokens`` the shorter length it was measured at (None: measured at M).
    ``predicted_rps`` is the rate a constant-service-time model of the timed medians predicted (None:
    the search did not start from a prediction)."""

    rps: float
    _: KW_ONLY
    share: float
    max_batch: int
    max_wait_ms: float
    requests: int  # counted requests in the trial at ``rps``
    duration_s: float  # that trial's counted duration
    batching: str  # "static" or "continuous"
    target_ms: float  # the latency (text generation: TTFT) target each request had to meet
    attainment: float | None = None
    attainment_low: float | None = None
    attainment_high: float | None = None
    itl_target_ms: float | None = None  # text generation: the mean inter-token target
    tokens: int | None = None
    capped_tokens: int | None = None
    static_rps: float | None = None
    trials: int | None = None  # trials of this setting
    search_requests: int | None = None  # counted requests over the whole search
    search_seconds: float | None = None
    curve: tuple[tuple[float, float, float | None], ...] = ()
    # The rate predicted for this setting from the timed batch times (where the search started).
    predicted_rps: float | None = None
    # "served": the figure is a real trial's; "simulated": the measured batch times on a virtual clock
    # answered, because a real trial at that rate could not count enough requests in its time.
    method: str = "served"


@dataclass(frozen=True)
class Measurement(_Record):
    """Every figure of one measured model: quality on the held-out split (accuracy and macro-F1 for a
    classifier, perplexity and exact match for a causal LM), latency over the batch sweep, and what the
    model costs to keep and to produce."""

    latency: tuple[LatencyPoint, ...]
    accuracy: float | None = None
    macro_f1: float | None = None
    perplexity: float | None = None
    exact_match: float | None = None
    size_bytes: int | None = None
    parameters: int | None = None
    nonzero_parameters: int | None = None
    peak_memory_bytes: int | None = None
    produce_seconds: float | None = None
    device_hours: float | None = None
    goodput: Goodput | None = None  # None: not measured (a row from before the serving scenario)

    def at(self, batch_size: int) -> LatencyPoint | None:
        return next((point for point in self.latency if point.batch_size == batch_size), None)
