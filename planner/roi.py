"""Turn measured quality and latency into serving cost, savings, payback and a recommendation.

Pure arithmetic: no Django, torch or Celery, so every figure can be checked by hand. Money is ``Decimal``
throughout and is never rounded here; rounding is for display only.

Definitions (per measured model m, baseline included):

- feasible: accuracy ≥ floor and p95 at batch 1 ≤ the p95 target (batch 1 unmeasured ⇒ not feasible).
- capacity: best ``batch / p50`` (requests/s per replica) over batch sizes whose p95 meets the target.
- replicas: ``max(1, ceil(peak rps / (capacity × utilisation)))``; None when capacity is 0.
- monthly cost: ``replicas × price/hour × 730``; savings are measured against the baseline.
- one-time cost: ``engineering hours × rate + device-hours spent producing m × price/hour``.
  Exception: the baseline's one-time cost is 0, because keeping the current model needs no engineering
  work and no compression run. Its ROI is therefore None (nothing invested).
- payback: ``one-time / monthly savings`` when savings > 0; ROI over T months:
  ``(savings × T − one-time) / one-time``; total over horizon: ``one-time + T × monthly cost``.
- recommendation: the feasible model with the lowest total over the horizon; ties go to higher accuracy,
  then to the baseline (switching costs effort the figures do not show).

Text generation (``Economics.task == "causal-lm"``). A request is one generation of M output tokens
(``output_tokens_per_request``); each latency point also carries the time to first token (TTFT) and the
inter-token latency (ITL, one decode step) at its batch size. ``p95_target_ms`` is then the TTFT p95
target L and ``per_token_target_ms`` the ITL p95 target T; there is no accuracy floor (the floors are
ignored and may be unset). With B the baseline's perplexity and c the allowed rise in percent:

- feasible: perplexity ≤ ``B × (1 + c/100)``, TTFT p95 at batch 1 ≤ L and ITL p95 at batch 1 ≤ T
  (batch 1 unmeasured ⇒ not feasible).
- request time at batch b: ``t(b) = TTFT p50(b) + (M − 1) × ITL p50(b)`` ms: one measured prefill and
  first token, then M − 1 measured decode steps. It is composed from the two medians because M may differ
  from the number of tokens generated while measuring.
- capacity: best ``b × 1000 / t(b)`` (requests/s per replica) over batch sizes whose TTFT p95 ≤ L and
  ITL p95 ≤ T; 0 if none.
- replicas, monthly cost, savings, one-time cost, payback, ROI, energy and CO₂: as above.
- cost per 1M output tokens: ``cost per 1M requests / M``; output tokens/s per replica: ``capacity × M``.
- recommendation: as above, but ties go to the lower perplexity, then to the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from decimal import Decimal

HOURS_PER_MONTH = Decimal(730)
SECONDS_PER_DAY = Decimal(86_400)
# Capacity is itself a rounded quotient (e.g. 1000/3 ms), so an exact fit can come out as 3.000…01 replicas;
# a quotient this close (relatively) to a whole number is taken as that number rather than costing a replica.
_WHOLE_TOLERANCE = Decimal("1e-20")

# The tasks a request can have (the names of plugins.base.TASKS; repeated here to keep this module pure).
CLASSIFICATION = "sequence-classification"
CAUSAL_LM = "causal-lm"
TASKS = (CLASSIFICATION, CAUSAL_LM)
# Fields of Economics that are whole numbers or names, not Decimals.
_NOT_DECIMAL = ("horizon_months", "output_tokens_per_request", "task")


def _d(value: Decimal | float | int | str) -> Decimal:
    # str() first so that 0.1 becomes Decimal("0.1"), not the binary float's 55-digit expansion.
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


def _optional(value: Decimal | float | int | str | None) -> Decimal | None:
    return None if value is None else _d(value)


@dataclass(frozen=True)
class LatencyPoint:
    batch_size: int
    p50_ms: float  # for a causal LM: the whole generation (end to end)
    p95_ms: float
    p99_ms: float
    # Causal LMs only: time to first token, and inter-token latency (one decode step), at this batch size.
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    itl_p50_ms: float | None = None
    itl_p95_ms: float | None = None


@dataclass(frozen=True)
class ModelMeasurement:
    key: str
    name: str
    is_baseline: bool
    accuracy: float  # classification; 0 for causal LMs, which have no accuracy target
    latency: Sequence[LatencyPoint]
    device_hours: float = 0.0
    perplexity: float | None = None  # causal LMs: on held-out text, lower is better
    exact_match: float | None = None  # causal LMs with reference completions; shown, never a target


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
        pct, absolute = self.accuracy_floor_pct_of_baseline, self.accuracy_floor_absolute
        watts, grid = self.power_watts, self.grid_kg_co2_per_kwh
        per_token, tokens = self.per_token_target_ms, self.output_tokens_per_request
        rules = [
            (self.requests_per_day >= 0, "requests_per_day must be ≥ 0", self.requests_per_day),
            (self.price_per_hour >= 0, "price_per_hour must be ≥ 0", self.price_per_hour),
            (self.p95_target_ms > 0, "p95_target_ms must be > 0", self.p95_target_ms),
            (self.peak_factor >= 1, "peak_factor must be ≥ 1", self.peak_factor),
            (
                0 < self.target_utilisation <= 1,
                "target_utilisation must be in (0, 1]",
                self.target_utilisation,
            ),
            (
                isinstance(self.horizon_months, int) and self.horizon_months >= 1,
                "horizon_months must be a whole number ≥ 1",
                self.horizon_months,
            ),
            (self.engineering_hours >= 0, "engineering_hours must be ≥ 0", self.engineering_hours),
            (self.engineering_rate >= 0, "engineering_rate must be ≥ 0", self.engineering_rate),
            (pct is None or pct >= 0, "accuracy_floor_pct_of_baseline must be ≥ 0", pct),
            (absolute is None or 0 <= absolute <= 1, "accuracy_floor_absolute must be in [0, 1]", absolute),
            (watts is None or watts >= 0, "power_watts must be ≥ 0", watts),
            (grid is None or grid >= 0, "grid_kg_co2_per_kwh must be ≥ 0", grid),
            (
                not generative or per_token is not None,
                "per_token_target_ms must be set for a causal LM",
                per_token,
            ),
            (per_token is None or per_token > 0, "per_token_target_ms must be > 0", per_token),
            (
                isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 1,
                "output_tokens_per_request must be a whole number ≥ 1",
                tokens,
            ),
            (
                self.perplexity_increase_pct >= 0,
                "perplexity_increase_pct must be ≥ 0",
                self.perplexity_increase_pct,
            ),
        ]
        for ok, message, value in rules:
            if not ok:
                raise ValueError(f"{message}, got {value}")

    @property
    def is_generative(self) -> bool:
        return self.task == CAUSAL_LM


@dataclass(frozen=True)
class ModelEconomics:
    key: str
    name: str
    is_baseline: bool
    accuracy: Decimal
    p95_batch1_ms: Decimal | None  # causal LM: of the whole generation
    feasible: bool
    blockers: tuple[str, ...]
    capacity_rps: Decimal
    replicas: int | None
    monthly_cost: Decimal | None
    cost_per_million: Decimal | None
    monthly_savings: Decimal | None
    one_time_cost: Decimal
    payback_months: Decimal | None
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


@dataclass(frozen=True)
class Recommendation:
    key: str | None
    name: str | None
    keeps_baseline: bool
    reason: str


@dataclass(frozen=True)
class RoiReport:
    economics: Economics
    peak_rps: Decimal
    accuracy_floor: Decimal | None  # None for a causal LM
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


def capacity_rps(latency: Sequence[LatencyPoint], p95_target_ms: Decimal) -> Decimal:
    """Requests/s one replica sustains: the best batch size whose p95 meets the target (0 if none)."""
    target = _d(p95_target_ms)
    best = Decimal(0)
    for point in latency:
        if _d(point.p95_ms) > target:
            continue
        p50 = _d(point.p50_ms)
        if p50 <= 0:
            raise ValueError(f"p50 at batch {point.batch_size} must be > 0 ms, got {p50}")
        # Throughput uses the median batch time; p95 only decides which batch sizes are allowed.
        best = max(best, Decimal(point.batch_size) * 1000 / p50)
    return best


def _timed_for_generation(point: LatencyPoint) -> bool:
    return None not in (point.ttft_p50_ms, point.ttft_p95_ms, point.itl_p50_ms, point.itl_p95_ms)


def request_ms(point: LatencyPoint, output_tokens: int) -> Decimal:
    """Median time of one generation of ``output_tokens`` tokens at this batch size: TTFT p50, then
    ``output_tokens − 1`` decode steps at the ITL p50."""
    if not _timed_for_generation(point):
        raise ValueError(f"batch {point.batch_size} has no TTFT and inter-token timings")
    return _d(point.ttft_p50_ms) + (output_tokens - 1) * _d(point.itl_p50_ms)


def generation_capacity_rps(
    latency: Sequence[LatencyPoint], ttft_target_ms: Decimal, per_token_target_ms: Decimal, output_tokens: int
) -> Decimal:
    """Generations/s one replica sustains: the best ``b × 1000 / t(b)`` over batch sizes whose TTFT p95
    and inter-token p95 both meet their targets (0 if none). Points without generation timings are not
    counted."""
    ttft_target, itl_target = _d(ttft_target_ms), _d(per_token_target_ms)
    best = Decimal(0)
    for point in latency:
        if not _timed_for_generation(point):
            continue
        if _d(point.ttft_p95_ms) > ttft_target or _d(point.itl_p95_ms) > itl_target:
            continue
        t = request_ms(point, output_tokens)
        if t <= 0:
            raise ValueError(f"the request time at batch {point.batch_size} must be > 0 ms, got {t}")
        best = max(best, Decimal(point.batch_size) * 1000 / t)
    return best


def model_capacity_rps(m: ModelMeasurement, economics: Economics) -> Decimal:
    """The capacity of ``m`` under the targets of ``economics``, by its task."""
    e = economics
    if e.is_generative:
        return generation_capacity_rps(
            m.latency, e.p95_target_ms, e.per_token_target_ms, e.output_tokens_per_request
        )
    return capacity_rps(m.latency, e.p95_target_ms)


def peak_rps(economics: Economics) -> Decimal:
    return economics.requests_per_day / SECONDS_PER_DAY * economics.peak_factor


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


def perplexity_ceiling(baseline_perplexity: Decimal | None, increase_pct: Decimal) -> Decimal | None:
    """The highest perplexity a candidate may have: the baseline's raised by ``increase_pct`` percent."""
    if baseline_perplexity is None:
        return None
    return baseline_perplexity * (1 + increase_pct / 100)


def evaluate(measurements: Sequence[ModelMeasurement], economics: Economics) -> RoiReport:
    """Cost every measured model under ``economics`` and pick one. Exactly one must be the baseline."""
    baselines = [m for m in measurements if m.is_baseline]
    if len(baselines) != 1:
        raise ValueError(f"exactly one measurement must be the baseline, got {len(baselines)}")
    keys = [m.key for m in measurements]
    if len(set(keys)) != len(keys):
        raise ValueError("measurement keys must be unique")
    e = economics
    floor: Decimal | None = None
    ceiling: Decimal | None = None
    if e.is_generative:
        for m in measurements:
            if m.perplexity is not None and not (_d(m.perplexity).is_finite() and m.perplexity > 0):
                raise ValueError(f"perplexity of {m.name} must be a finite number > 0, got {m.perplexity}")
        ceiling = perplexity_ceiling(_optional(baselines[0].perplexity), e.perplexity_increase_pct)
    elif e.accuracy_floor_absolute is not None:
        floor = e.accuracy_floor_absolute
    else:
        floor = _d(baselines[0].accuracy) * e.accuracy_floor_pct_of_baseline / 100
    peak = peak_rps(e)
    base_replicas = replicas_needed(peak, model_capacity_rps(baselines[0], e), e.target_utilisation)
    base_monthly = None if base_replicas is None else base_replicas * e.price_per_hour * HOURS_PER_MONTH
    base_perplexity = _optional(baselines[0].perplexity)
    rows = tuple(_row(m, e, floor, ceiling, base_perplexity, peak, base_monthly) for m in measurements)
    return RoiReport(e, peak, floor, rows, _recommend(rows, e, floor, ceiling), ceiling)


def _row(
    m: ModelMeasurement,
    e: Economics,
    floor: Decimal | None,
    ceiling: Decimal | None,
    base_perplexity: Decimal | None,
    peak: Decimal,
    base_monthly: Decimal | None,
) -> ModelEconomics:
    accuracy = _d(m.accuracy)
    batch1 = next((p for p in m.latency if p.batch_size == 1), None)
    p95_batch1 = None if batch1 is None else _d(batch1.p95_ms)
    capacity = model_capacity_rps(m, e)
    replicas = replicas_needed(peak, capacity, e.target_utilisation)
    monthly = None if replicas is None else replicas * e.price_per_hour * HOURS_PER_MONTH
    savings = None if monthly is None or base_monthly is None else base_monthly - monthly
    if m.is_baseline:
        one_time = Decimal(0)
    else:
        one_time = e.engineering_hours * e.engineering_rate + _d(m.device_hours) * e.price_per_hour
    payback = one_time / savings if savings is not None and savings > 0 else None
    roi = None if savings is None or one_time == 0 else (savings * e.horizon_months - one_time) / one_time
    total = None if monthly is None else one_time + e.horizon_months * monthly
    energy = None
    if replicas is not None and e.power_watts is not None:
        energy = replicas * e.power_watts * HOURS_PER_MONTH / 1000
    co2 = None if energy is None or e.grid_kg_co2_per_kwh is None else energy * e.grid_kg_co2_per_kwh
    per_million = cost_per_million(e.price_per_hour, capacity, e.target_utilisation)
    generation: dict = {}
    if e.is_generative:
        perplexity = _optional(m.perplexity)
        ttft = _optional(batch1.ttft_p95_ms) if batch1 is not None else None
        itl = _optional(batch1.itl_p95_ms) if batch1 is not None else None
        tokens = e.output_tokens_per_request
        generation = {
            "perplexity": perplexity,
            "perplexity_change": (
                perplexity / base_perplexity - 1 if perplexity is not None and base_perplexity else None
            ),
            "exact_match": _optional(m.exact_match),
            "ttft_p95_batch1_ms": ttft,
            "itl_p95_batch1_ms": itl,
            "tokens_per_s_capacity": capacity * tokens,
            "cost_per_million_tokens": None if per_million is None else per_million / tokens,
        }
        blockers = _generation_blockers(perplexity, base_perplexity, ceiling, ttft, itl, capacity, e)
    else:
        blockers = _blockers(accuracy, floor, p95_batch1, capacity, e.p95_target_ms)
    return ModelEconomics(
        key=m.key,
        name=m.name,
        is_baseline=m.is_baseline,
        accuracy=accuracy,
        p95_batch1_ms=p95_batch1,
        feasible=not blockers,
        blockers=blockers,
        capacity_rps=capacity,
        replicas=replicas,
        monthly_cost=monthly,
        cost_per_million=per_million,
        monthly_savings=savings,
        one_time_cost=one_time,
        payback_months=payback,
        roi=roi,
        total_cost_over_horizon=total,
        energy_kwh_month=energy,
        co2_kg_month=co2,
        **generation,
    )


def _blockers(
    accuracy: Decimal, floor: Decimal, p95_batch1: Decimal | None, capacity: Decimal, target: Decimal
) -> tuple[str, ...]:
    blockers = []
    if accuracy < floor:
        gap = _amount((floor - accuracy) * 100)
        blockers.append(
            f"accuracy {percent_text(accuracy)} is {gap} points below the floor of {percent_text(floor)}"
        )
    if p95_batch1 is None:
        blockers.append("p95 at batch 1 was not measured")
    elif p95_batch1 > target:
        gap = _amount(p95_batch1 - target)
        blockers.append(f"p95 at batch 1 is {p95_batch1:.1f} ms, {gap} ms over the {ms_text(target)} target")
    if capacity == 0:
        blockers.append(f"no batch size meets the {ms_text(target)} p95 target")
    return tuple(blockers)


def _generation_blockers(
    perplexity: Decimal | None,
    base_perplexity: Decimal | None,
    ceiling: Decimal | None,
    ttft: Decimal | None,
    itl: Decimal | None,
    capacity: Decimal,
    e: Economics,
) -> tuple[str, ...]:
    blockers = []
    ttft_target, itl_target = e.p95_target_ms, e.per_token_target_ms
    if perplexity is None:
        blockers.append("perplexity was not measured")
    elif ceiling is None:
        blockers.append("the baseline's perplexity was not measured")
    elif perplexity > ceiling:
        rise = _amount((perplexity / base_perplexity - 1) * 100)
        blockers.append(
            f"perplexity {perplexity_text(perplexity)} is {rise}% above the baseline's "
            f"{perplexity_text(base_perplexity)} (limit +{number_text(e.perplexity_increase_pct)}%)"
        )
    if ttft is None:
        blockers.append("TTFT at batch 1 was not measured")
    elif ttft > ttft_target:
        gap = _amount(ttft - ttft_target)
        blockers.append(
            f"TTFT p95 at batch 1 is {ttft:.1f} ms, {gap} ms over the {ms_text(ttft_target)} target"
        )
    if itl is None:
        blockers.append("inter-token latency at batch 1 was not measured")
    elif itl > itl_target:
        gap = _amount(itl - itl_target)
        blockers.append(
            f"inter-token p95 at batch 1 is {itl:.1f} ms, {gap} ms over the {ms_text(itl_target)} "
            "per-token target"
        )
    if capacity == 0:
        blockers.append(
            f"no batch size meets the {ms_text(ttft_target)} TTFT and {ms_text(itl_target)} per-token targets"
        )
    return tuple(blockers)


def quality_rank(row: ModelEconomics, economics: Economics) -> Decimal:
    """Sorts better quality first: higher accuracy, or for a causal LM lower perplexity."""
    if economics.is_generative:
        return row.perplexity if row.perplexity is not None else Decimal("Infinity")
    return -row.accuracy


def _recommend(
    rows: tuple[ModelEconomics, ...], e: Economics, floor: Decimal | None, ceiling: Decimal | None
) -> Recommendation:
    feasible = [r for r in rows if r.feasible]
    if not feasible:
        details = " ".join(f"{r.name}: {'; '.join(r.blockers)}." for r in rows)
        return Recommendation(None, None, False, f"No model meets the targets. {details}")
    # Feasible implies batch 1 meets the target, so capacity > 0 and the total is known.
    best = min(feasible, key=lambda r: (r.total_cost_over_horizon, quality_rank(r, e), not r.is_baseline))
    if best.is_baseline:
        reason = (
            f"Keep the current model: no compressed candidate that meets the targets costs less over "
            f"{e.horizon_months} months ({_money(best.total_cost_over_horizon)} for the current model)."
        )
        return Recommendation(best.key, best.name, True, reason)
    base = next(r for r in rows if r.is_baseline)
    if e.is_generative:
        targets = (
            f"the {ms_text(e.p95_target_ms)} TTFT and {ms_text(e.per_token_target_ms)} per-token targets"
        )
        if base.total_cost_over_horizon is None:
            versus = f"; the current model cannot serve within {targets}"
        else:
            versus = f" vs {_money(base.total_cost_over_horizon)} for the current model"
        reason = (
            f"Switch to {best.name}: it keeps perplexity within +{number_text(e.perplexity_increase_pct)}% of "
            f"the baseline's ({perplexity_text(ceiling)} at most) and meets {targets} at the lowest "
            f"{e.horizon_months}-month total cost ({_money(best.total_cost_over_horizon)}{versus})."
        )
    else:
        if base.total_cost_over_horizon is None:
            versus = f"; the current model cannot serve within the {ms_text(e.p95_target_ms)} p95 target"
        else:
            versus = f" vs {_money(base.total_cost_over_horizon)} for the current model"
        reason = (
            f"Switch to {best.name}: it meets the {percent_text(floor)} accuracy floor and the "
            f"{ms_text(e.p95_target_ms)} p95 target at the lowest {e.horizon_months}-month total cost "
            f"({_money(best.total_cost_over_horizon)}{versus})."
        )
    if base.total_cost_over_horizon is not None and not base.feasible:
        reason += " The current model does not meet the targets."
    elif best.payback_months is not None:
        reason += f" It pays back in {best.payback_months:.1f} months."
    return Recommendation(best.key, best.name, False, reason)


# Display helpers for the sentences above (selectors words them in other languages with the same
# helpers); the numbers in the rows stay unrounded.
def percent_text(fraction: Decimal) -> str:
    return f"{fraction * 100:.1f}%"


def ms_text(value: Decimal) -> str:
    return f"{value.normalize():f} ms"


def number_text(value: Decimal) -> str:
    """A setting as a person typed it: 10, not 10.00 or 1E+1."""
    return f"{value.normalize():f}"


def perplexity_text(value: Decimal) -> str:
    return f"{value:.2f}"


def _amount(value: Decimal) -> str:
    shown = f"{value:.1f}"
    # A real but tiny gap must not read as "0.0 points below".
    return "less than 0.1" if shown == "0.0" else shown


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"
