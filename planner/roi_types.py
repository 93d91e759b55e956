"""The inputs and outputs of planner.roi as frozen dataclasses, and the names of what they carry (blocker
kinds, verdicts, outcomes). planner.roi re-exports every name here: callers take them from roi, whose
docstring is the specification. Pure: no Django, torch or Celery."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from decimal import Decimal

from planner.capacity import Goodput, LatencyPoint, Number, as_decimal

# The tasks a request can have (the names of plugins.base.TASKS; repeated here to keep this module pure).
CLASSIFICATION = "sequence-classification"
CAUSAL_LM = "causal-lm"
TASKS = (CLASSIFICATION, CAUSAL_LM)
# Fields of Economics that are whole numbers or names, not Decimals; and those that must not be negative.
_NOT_DECIMAL = ("horizon_months", "output_tokens_per_request", "task")
_NOT_NEGATIVE = (
    "requests_per_day",
    "price_per_hour",
    "engineering_hours",
    "engineering_rate",
    "accuracy_floor_pct_of_baseline",
    "power_watts",
    "grid_kg_co2_per_kwh",
    "perplexity_increase_pct",
    "maintenance_hours_per_month",
    "teacher_updates_per_year",
)

# What a Blocker is about. Accuracy in fractions (0..1), latencies in ms, perplexity as a plain number.
ACCURACY = "accuracy"
BASELINE_ACCURACY = "baseline_accuracy"  # a floor relative to a baseline whose accuracy was not measured
P95 = "p95"
TTFT = "ttft"
ITL = "itl"
PERPLEXITY = "perplexity"
BASELINE_PERPLEXITY = "baseline_perplexity"  # the baseline's perplexity was not measured: no limit
NO_BATCH_SIZE = "no_batch_size"  # limit: the p95 target (text generation: the TTFT target) in ms
# Why a model is undecided (ModelEconomics.undecided); ``about`` names the check (P95, TTFT, ITL).
BORDERLINE = "borderline"  # the interval [low, high] straddles the limit; measured: the point figure
UNSTABLE = "unstable"  # the measurement is marked unstable (``reason``), whatever its figures
TOO_FEW_SAMPLES = (
    "too_few_samples"  # the p95 was not reported: measured = samples (None: unknown), limit = needed
)
FRACTION, MS, PLAIN, SAMPLES = "fraction", "ms", "", "samples"  # Blocker units

# A model's verdict: clearly meets every target, clearly misses one, or cannot be told from the measurements.
FEASIBLE = "feasible"
INFEASIBLE = "infeasible"
UNDECIDED = "undecided"  # also a recommendation outcome

# Recommendation outcomes (the values of PocRequestSummary.Outcome).
SWITCH = "switch"
KEEP = "keep"
BLOCKED = "blocked"
# What to re-run when the outcome is UNDECIDED.
QUIET_HOST = "quiet_host"  # an unstable measurement: re-measure on a quiet (or dedicated) host
MORE_ROUNDS = "more_rounds"  # a borderline figure, or too few samples: more rounds narrow the interval

_d = as_decimal


def _optional(value: Number | None) -> Decimal | None:
    return None if value is None else _d(value)


@dataclass(frozen=True)
class ModelMeasurement:
    key: str
    name: str
    is_baseline: bool
    accuracy: float | None  # classification; None when not measured (causal LMs have no accuracy target)
    latency: Sequence[LatencyPoint]
    device_hours: float | None = None  # spent producing the model; None when not measured
    perplexity: float | None = None  # causal LMs: on held-out text, lower is better
    exact_match: float | None = None  # causal LMs with reference completions; shown, never a target
    goodput: Goodput | None = None  # the serving scenario's capacity; None: not measured (static capacity)


@dataclass(frozen=True)
class Economics:
    """The user's traffic, prices and targets. Numbers may be given as int, str or float; they are stored
    as Decimal. For classification exactly one of the two accuracy floors must be set; for a causal LM
    the floors are not used, and the per-token target must be set."""

    requests_per_day: Decimal
    price_per_hour: Decimal
    p95_target_ms: Decimal  # causal LM: the TTFT p95 target
    accuracy_floor_pct_of_baseline: Decimal | None = None
    accuracy_floor_absolute: Decimal | None = None
    peak_factor: Decimal = Decimal(1)
    target_utilisation: Decimal = Decimal("0.7")
    horizon_months: int = 12
    engineering_hours: Decimal = Decimal(0)
    engineering_rate: Decimal = Decimal(0)
    power_watts: Decimal | None = None
    grid_kg_co2_per_kwh: Decimal | None = None
    task: str = CLASSIFICATION
    per_token_target_ms: Decimal | None = None  # causal LM: the inter-token latency p95 target
    output_tokens_per_request: int = 128  # causal LM: M
    perplexity_increase_pct: Decimal = Decimal(10)  # causal LM: c, the allowed rise over the baseline
    # Where goodput was measured it replaces target_utilisation: goodput already holds the queueing a busy
    # replica sees, so a replica may run at it (1) unless headroom for bursts is asked for (below 1).
    goodput_headroom: Decimal = Decimal(1)
    # Recurring cost of a compressed model (0: none): engineering hours a month, and how often the teacher
    # is updated (each update means producing the candidate again).
    maintenance_hours_per_month: Decimal = Decimal(0)
    teacher_updates_per_year: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _NOT_DECIMAL or value is None:
                continue
            value = _d(value)
            if not value.is_finite():
                raise ValueError(f"{f.name} must be a finite number, got {value}")
            object.__setattr__(self, f.name, value)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task}")
        generative = self.task == CAUSAL_LM
        if not generative and (self.accuracy_floor_pct_of_baseline is None) == (
            self.accuracy_floor_absolute is None
        ):
            raise ValueError("set exactly one of accuracy_floor_pct_of_baseline and accuracy_floor_absolute")

        def check(ok: bool, message: str, value: object) -> None:
            if not ok:
                raise ValueError(f"{message}, got {value}")

        for name in _NOT_NEGATIVE:
            value = getattr(self, name)
            check(value is None or value >= 0, f"{name} must be ≥ 0", value)
        check(self.p95_target_ms > 0, "p95_target_ms must be > 0", self.p95_target_ms)
        check(self.peak_factor >= 1, "peak_factor must be ≥ 1", self.peak_factor)
        utilisation, absolute = self.target_utilisation, self.accuracy_floor_absolute
        check(0 < utilisation <= 1, "target_utilisation must be in (0, 1]", utilisation)
        headroom = self.goodput_headroom
        check(0 < headroom <= 1, "goodput_headroom must be in (0, 1]", headroom)
        check(absolute is None or 0 <= absolute <= 1, "accuracy_floor_absolute must be in [0, 1]", absolute)
        for name in ("horizon_months", "output_tokens_per_request"):
            value = getattr(self, name)
            whole = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            check(whole, f"{name} must be a whole number ≥ 1", value)
        per_token = self.per_token_target_ms
        check(
            not generative or per_token is not None, "per_token_target_ms must be set for a causal LM", None
        )
        check(per_token is None or per_token > 0, "per_token_target_ms must be > 0", per_token)

    @property
    def is_generative(self) -> bool:
        return self.task == CAUSAL_LM

    @property
    def itl_target_ms(self) -> Decimal:
        """The per-token target of a causal LM (validated to be set for one)."""
        if self.per_token_target_ms is None:
            raise ValueError("per_token_target_ms is only set for a causal LM")
        return self.per_token_target_ms


@dataclass(frozen=True)
class Blocker:
    """One target a model misses: ``measured`` against ``limit`` (both in ``unit``). ``measured`` None: the
    figure was not measured (for NO_BATCH_SIZE, which has no figure of its own, it is always None);
    ``limit`` None: the limit is relative to a baseline figure that was not measured."""

    kind: str
    measured: Decimal | None
    limit: Decimal | None
    unit: str
    about: str | None = None  # BORDERLINE, TOO_FEW_SAMPLES: the check (P95, TTFT or ITL)
    low: Decimal | None = None  # BORDERLINE: the measured interval
    high: Decimal | None = None
    reason: str | None = None  # UNSTABLE: why, as the measurement states it
    batch_size: int | None = None  # UNSTABLE: the first batch size marked unstable


@dataclass(frozen=True)
class ModelEconomics:
    key: str
    name: str
    is_baseline: bool
    accuracy: Decimal | None  # None when not measured
    p95_batch1_ms: Decimal | None  # causal LM: of the whole generation
    feasible: bool  # clearly feasible: verdict == FEASIBLE
    blockers: tuple[Blocker, ...]  # the targets it clearly misses
    capacity_rps: Decimal
    capacity_batch_size: int | None
    replicas: int | None
    monthly_cost: Decimal | None
    cost_per_million: Decimal | None
    monthly_savings: Decimal | None
    one_time_cost: Decimal | None  # None when the device-hours were not measured
    payback_months: Decimal | None  # 0: pays back immediately; None: never (or unknown)
    roi: Decimal | None
    total_cost_over_horizon: Decimal | None
    energy_kwh_month: Decimal | None
    co2_kg_month: Decimal | None
    # Causal LMs only (None for classification).
    perplexity: Decimal | None = None
    perplexity_change: Decimal | None = None  # relative to the baseline: 0.12 = 12% higher
    exact_match: Decimal | None = None
    ttft_p95_batch1_ms: Decimal | None = None
    itl_p95_batch1_ms: Decimal | None = None
    tokens_per_s_capacity: Decimal | None = None  # output tokens/s per replica at the capacity
    cost_per_million_tokens: Decimal | None = None  # per 1M output tokens
    # Trust under noise.
    verdict: str = FEASIBLE  # FEASIBLE, INFEASIBLE or UNDECIDED
    undecided: tuple[Blocker, ...] = ()  # BORDERLINE, UNSTABLE, TOO_FEW_SAMPLES: why it cannot be told
    slow_total_cost: Decimal | None = None  # total over the horizon at the slow end of the intervals
    fast_total_cost: Decimal | None = None  # … and at the fast end
    # Capacity as goodput: the serving scenario's result when it was measured under these targets (then
    # capacity_rps is its rate, capacity_batch_size its max batch, and the replicas use goodput_headroom),
    # else None; static_capacity_rps is the static ``batch ÷ median`` figure, an optimistic upper bound.
    goodput: Goodput | None = None
    static_capacity_rps: Decimal | None = None
    # The recurring cost a month (0 for the baseline; None when the device-hours it needs are unmeasured);
    # monthly_savings, payback, ROI and the totals include it, monthly_cost (serving only) does not.
    monthly_maintenance: Decimal | None = Decimal(0)

    def misses(self, kind: str) -> bool:
        """Whether a blocker of this kind (ACCURACY, P95, TTFT, …) stands in the way of this model."""
        return any(b.kind == kind for b in self.blockers)

    def uncertain(self, kind: str) -> bool:
        """Whether the check of this kind (P95, TTFT, ITL) cannot be told from the measurement: borderline,
        too few samples, or an unstable measurement."""
        return any(b.about == kind or b.kind == UNSTABLE for b in self.undecided)

    @property
    def pays_back_immediately(self) -> bool:
        """Saves money and costs nothing up front (payback 0; the ROI is then None, not infinite)."""
        return self.payback_months == 0


@dataclass(frozen=True)
class Recommendation:
    key: str | None  # None when blocked or undecided
    name: str | None
    outcome: str  # SWITCH, KEEP, BLOCKED or UNDECIDED
    # KEEP or SWITCH: a model that costs less at the measured figures but was not chosen, because its saving
    # is inside the intervals (it is feasible) or because it is itself undecided.
    within_uncertainty: str | None = None
    # UNDECIDED: the models whose measurements decide it (the baseline first), and what to re-run.
    pending: tuple[str, ...] = ()
    rerun: str | None = None  # QUIET_HOST or MORE_ROUNDS

    @property
    def keeps_baseline(self) -> bool:
        return self.outcome == KEEP

    @property
    def blocked(self) -> bool:
        return self.outcome == BLOCKED

    @property
    def undecided(self) -> bool:
        return self.outcome == UNDECIDED


@dataclass(frozen=True)
class RoiReport:
    economics: Economics
    peak_rps: Decimal
    accuracy_floor: Decimal | None  # None for a causal LM, or a relative floor of an unmeasured baseline
    rows: tuple[ModelEconomics, ...]
    recommendation: Recommendation
    perplexity_ceiling: Decimal | None = None  # causal LM: B × (1 + c/100); None if B is unmeasured

    def row(self, key: str) -> ModelEconomics:
        for row in self.rows:
            if row.key == key:
                return row
        raise KeyError(key)

    @property
    def baseline(self) -> ModelEconomics:
        return next(row for row in self.rows if row.is_baseline)
