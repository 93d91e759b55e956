"""Turn measured accuracy and latency into serving cost, savings, payback and a recommendation.

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


def _d(value: Decimal | float | int | str) -> Decimal:
    # str() first so that 0.1 becomes Decimal("0.1"), not the binary float's 55-digit expansion.
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


@dataclass(frozen=True)
class LatencyPoint:
    batch_size: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class ModelMeasurement:
    key: str
    name: str
    is_baseline: bool
    accuracy: float
    latency: Sequence[LatencyPoint]
    device_hours: float = 0.0


@dataclass(frozen=True)
class Economics:
    """The user's traffic, prices and targets. Numbers may be given as int, str or float; they are stored
    as Decimal. Exactly one of the two accuracy floors must be set."""

    requests_per_day: Decimal
    price_per_hour: Decimal
    p95_target_ms: Decimal
    accuracy_floor_pct_of_baseline: Decimal | None = None
    accuracy_floor_absolute: Decimal | None = None
    peak_factor: Decimal = Decimal(1)
    target_utilisation: Decimal = Decimal("0.7")
    horizon_months: int = 12
    engineering_hours: Decimal = Decimal(0)
    engineering_rate: Decimal = Decimal(0)
    power_watts: Decimal | None = None
    grid_kg_co2_per_kwh: Decimal | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "horizon_months" or value is None:
                continue
            value = _d(value)
            if not value.is_finite():
                raise ValueError(f"{f.name} must be a finite number, got {value}")
            object.__setattr__(self, f.name, value)
        if (self.accuracy_floor_pct_of_baseline is None) == (self.accuracy_floor_absolute is None):
            raise ValueError("set exactly one of accuracy_floor_pct_of_baseline and accuracy_floor_absolute")
        pct, absolute = self.accuracy_floor_pct_of_baseline, self.accuracy_floor_absolute
        watts, grid = self.power_watts, self.grid_kg_co2_per_kwh
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
        ]
        for ok, message, value in rules:
            if not ok:
                raise ValueError(f"{message}, got {value}")


@dataclass(frozen=True)
class ModelEconomics:
    key: str
    name: str
    is_baseline: bool
    accuracy: Decimal
    p95_batch1_ms: Decimal | None
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
    accuracy_floor: Decimal
    rows: tuple[ModelEconomics, ...]
    recommendation: Recommendation

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


def evaluate(measurements: Sequence[ModelMeasurement], economics: Economics) -> RoiReport:
    """Cost every measured model under ``economics`` and pick one. Exactly one must be the baseline."""
    baselines = [m for m in measurements if m.is_baseline]
    if len(baselines) != 1:
        raise ValueError(f"exactly one measurement must be the baseline, got {len(baselines)}")
    keys = [m.key for m in measurements]
    if len(set(keys)) != len(keys):
        raise ValueError("measurement keys must be unique")
    e = economics
    if e.accuracy_floor_absolute is not None:
        floor = e.accuracy_floor_absolute
    else:
        floor = _d(baselines[0].accuracy) * e.accuracy_floor_pct_of_baseline / 100
    peak = peak_rps(e)
    base_replicas = replicas_needed(
        peak, capacity_rps(baselines[0].latency, e.p95_target_ms), e.target_utilisation
    )
    base_monthly = None if base_replicas is None else base_replicas * e.price_per_hour * HOURS_PER_MONTH
    rows = tuple(_row(m, e, floor, peak, base_monthly) for m in measurements)
    return RoiReport(e, peak, floor, rows, _recommend(rows, e, floor))


def _row(
    m: ModelMeasurement, e: Economics, floor: Decimal, peak: Decimal, base_monthly: Decimal | None
) -> ModelEconomics:
    accuracy = _d(m.accuracy)
    p95_batch1 = next((_d(p.p95_ms) for p in m.latency if p.batch_size == 1), None)
    capacity = capacity_rps(m.latency, e.p95_target_ms)
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
        cost_per_million=cost_per_million(e.price_per_hour, capacity, e.target_utilisation),
        monthly_savings=savings,
        one_time_cost=one_time,
        payback_months=payback,
        roi=roi,
        total_cost_over_horizon=total,
        energy_kwh_month=energy,
        co2_kg_month=co2,
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


def _recommend(rows: tuple[ModelEconomics, ...], e: Economics, floor: Decimal) -> Recommendation:
    feasible = [r for r in rows if r.feasible]
    if not feasible:
        details = " ".join(f"{r.name}: {'; '.join(r.blockers)}." for r in rows)
        return Recommendation(None, None, False, f"No model meets the targets. {details}")
    # Feasible implies batch 1 meets the target, so capacity > 0 and the total is known.
    best = min(feasible, key=lambda r: (r.total_cost_over_horizon, -r.accuracy, not r.is_baseline))
    if best.is_baseline:
        reason = (
            f"Keep the current model: no compressed candidate that meets the targets costs less over "
            f"{e.horizon_months} months ({_money(best.total_cost_over_horizon)} for the current model)."
        )
        return Recommendation(best.key, best.name, True, reason)
    base = next(r for r in rows if r.is_baseline)
    if base.total_cost_over_horizon is None:
        versus = f"; the current model cannot serve within the {ms_text(e.p95_target_ms)} p95 target"
    else:
        versus = f" vs {_money(base.total_cost_over_horizon)} for the current model"
    reason = (
        f"Switch to {best.name}: it meets the {percent_text(floor)} accuracy floor and the {ms_text(e.p95_target_ms)} "
        f"p95 target at the lowest {e.horizon_months}-month total cost "
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


def _amount(value: Decimal) -> str:
    shown = f"{value:.1f}"
    # A real but tiny gap must not read as "0.0 points below".
    return "less than 0.1" if shown == "0.0" else shown


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"
