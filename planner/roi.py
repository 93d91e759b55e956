"""Turn measured quality and latency into serving cost, savings, payback and a recommendation.

Pure arithmetic: no Django, torch or Celery, so every figure can be checked by hand. Money is ``Decimal``
throughout and is never rounded here; rounding is for display only (planner.formatting). Nothing here is
a sentence: a missed target is a ``Blocker`` (kind, measured value, limit, unit) and the recommendation
an outcome (switch, keep, blocked, undecided); planner.dashboard.wording puts both into words. The
capacity of one replica from its batch sweep, the replicas and the cost per million requests are
planner.capacity's, the dataclasses and names planner.roi_types' (both re-exported here).

Unmeasured figures are None, never 0: a model whose quality (accuracy or perplexity) or batch-1 latency
was not measured misses that target (a blocker whose ``measured`` is None), and a candidate whose
device-hours were not measured has an unknown one-time cost, so its payback, ROI and total are None too.

Definitions (per measured model m, baseline included):

- feasible: no blocker (and nothing undecided, see below), i.e. accuracy ≥ floor and p95 at batch 1 ≤ the p95 target, and some batch size
  meets the target. The floor is absolute, or a percentage of the baseline's accuracy (None, and so a
  blocker for every model, when the baseline's accuracy was not measured).
- capacity (requests/s per replica): *goodput* where measured under these targets (``goodput_for``;
  docs/measurement.md), with the batcher's max batch; else (older rows, a what-if with other targets) the
  *static* capacity, best ``batch / p50`` over batch sizes whose p95 meets the target, with that batch size
  (the first on a tie; 0 and none if none does): an optimistic upper bound, kept as ``static_capacity_rps``.
- replicas: ``max(1, ceil(peak rps / (capacity × u)))``, u the goodput headroom (``goodput_headroom``,
  default 1) where goodput counts, else the target utilisation; None when capacity is 0.
- monthly cost: ``replicas × price/hour × 730``; savings are measured against the baseline.
- one-time cost: ``engineering hours × rate + device-hours spent producing m × price/hour``.
  Exception: the baseline's one-time cost is 0, because keeping the current model needs no engineering
  work and no compression run. Its ROI is therefore None (nothing invested).
- maintenance a month (optional; 0 for the baseline): ``maintenance hours a month × rate + device-hours
  spent producing m × price/hour × teacher updates a year / 12`` (each update of the teacher means
  producing m again). Savings are ``monthly cost(baseline) − (monthly cost(m) + maintenance(m))``; payback,
  ROI and the totals use those savings and ``monthly cost + maintenance``; the monthly cost stays serving
  only. With teacher updates but unmeasured device-hours, maintenance, savings and total are None.
- payback: ``one-time / monthly savings`` when savings > 0 (None, "never", otherwise). A switch that saves
  money and costs nothing up front pays back immediately: payback 0 and ``pays_back_immediately``; its ROI
  is None (a return on nothing invested is not a number).
- ROI over T months: ``(savings × T − one-time) / one-time``; total over horizon: ``one-time + T × monthly
  cost``.
- recommendation: among the feasible models *including the baseline*, the one with the lowest total over
  the horizon (a model whose total is unknown ranks after every known one); ties go to higher accuracy,
  then to the baseline (switching costs effort the figures do not show). Outcome: ``keep`` when that is
  the baseline, ``switch`` otherwise. When no model is feasible — the baseline included — the outcome is
  ``blocked`` (never ``keep``): each row's blockers say which target blocks it and by how much, and
  ``blocking_targets`` says how close the best model came to each target. The rules under noise below
  refine this; on measurements without intervals they give exactly these decisions.

Trust under noise (docs/measurement.md). A latency point may carry 95% intervals (``p95_low_ms`` …
``itl_p95_high_ms``), a speedup against the baseline from interleaved rounds with its interval, the
number of samples behind its percentiles, and ``unstable`` (why the measurement could not be trusted). A
point without bounds is taken as exact, as a clean measurement's would be.

- A latency check (p95 at batch 1 against L; text generation: TTFT and inter-token) *meets* when the
  interval's upper bound ≤ L, *misses* when its lower bound > L, and is *borderline* when the interval
  straddles L. A p95 left blank for too few samples (fewer than ``samples_needed(0.95)`` = 100) is
  undecided (TOO_FEW_SAMPLES: measured = the samples, limit = those needed). A model any of whose points
  is unstable is undecided on every latency target whatever its figures (one UNSTABLE blocker with the
  reason); its quality still counts. Batch 1 not timed at all is a miss, as before.
- verdict: ``infeasible`` when some target is clearly missed (quality, a latency miss on a clean
  measurement, or no batch size meets the targets even at the fast end of the intervals); otherwise
  ``undecided`` when a check is borderline, too few samples or unstable (``undecided`` holds why);
  otherwise ``feasible`` (``feasible`` is True only then: clearly feasible).
- capacity on three sides (planner.capacity): the measured figures (what every cost shown uses), the
  slow end (a batch size counts when each p95's upper bound meets its target; its rate divided by
  ``speedup / speedup_low``, or ``p50_high / p50`` without a speedup interval) and the fast end (lower
  bounds, ``p50 / p50_low``). ``slow_total_cost`` and ``fast_total_cost`` are the totals on those sides.
- a switch to a clearly feasible candidate c *holds* when the current model clearly misses a target, or
  when c's total at its slow end still ranks before the current model's (as above: total, quality,
  baseline) — against the current model's measured total when c has a speedup interval (which already
  holds both models' noise), else against the current model's fast-end total. When the current model is
  undecided, a switch holds only so (the saving then stands whichever way its measurement falls), never
  when it is unstable, and never when its measured total is unknown.
- recommendation: the best (as above) of the candidates whose switch holds and, when it is clearly
  feasible, the current model. ``within_uncertainty`` names a cheaper model at the measured figures that
  was not chosen (its saving is inside the intervals, or it is undecided). An undecided or unstable model
  is never recommended. With nothing to choose: ``undecided`` when the current model is undecided, or
  it clearly misses and some candidate is undecided — ``pending`` lists the undecided models (the current
  one first) and ``rerun`` says what to re-run (QUIET_HOST when one is unstable, else MORE_ROUNDS) — and
  ``blocked`` otherwise. So an undecided current model is never ``blocked`` and never replaced because it
  seemed to miss a target.

Text generation (``Economics.task == "causal-lm"``). A request is one generation of M output tokens
(``output_tokens_per_request``); each latency point also carries the time to first token (TTFT) and the
inter-token latency (ITL, one decode step) at its batch size. ``p95_target_ms`` is then the TTFT p95
target L and ``per_token_target_ms`` the ITL p95 target T; there is no accuracy floor (the floors are
ignored and may be unset). With B the baseline's perplexity and c the allowed rise in percent:

- feasible: perplexity ≤ ``B × (1 + c/100)``, TTFT p95 at batch 1 ≤ L and ITL p95 at batch 1 ≤ T
  (batch 1 unmeasured ⇒ not feasible; B unmeasured ⇒ no model is feasible).
- request time at batch b: ``t(b) = TTFT p50(b) + (M − 1) × ITL p50(b)`` ms: one measured prefill and
  first token, then M − 1 measured decode steps. It is composed from the two medians because M may differ
  from the number of tokens generated while measuring.
- static capacity: best ``b × 1000 / t(b)`` over batch sizes whose TTFT p95 ≤ L and ITL p95 ≤ T; 0 if
  none. Goodput (at this M, L, T) counts a request whose TTFT from arrival ≤ L and mean token gap ≤ T.
- replicas, monthly cost, savings, one-time cost, payback, ROI, energy and CO₂: as above.
- cost per 1M output tokens: ``cost per 1M requests / M``; output tokens/s per replica: ``capacity × M``.
- recommendation: as above, but ties go to the lower perplexity, then to the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

# The capacity arithmetic of one replica, re-exported: roi is the one place callers take it from.
from planner.capacity import FAST, POINT, SLOW, as_decimal, classification_capacity, generation_capacity
from planner.capacity import Capacity as Capacity
from planner.capacity import Goodput as Goodput
from planner.capacity import LatencyPoint as LatencyPoint
from planner.capacity import Number as Number
from planner.capacity import capacity_rps as capacity_rps
from planner.capacity import cost_per_million as cost_per_million
from planner.capacity import generation_capacity_rps as generation_capacity_rps
from planner.capacity import goodput_for as goodput_for
from planner.capacity import interval as interval
from planner.capacity import replicas_needed as replicas_needed
from planner.capacity import request_ms as request_ms
from planner.capacity import samples_needed as samples_needed
from planner.capacity import utilisation as utilisation

# The inputs, outputs and names, re-exported likewise.
from planner.roi_types import ACCURACY as ACCURACY
from planner.roi_types import BASELINE_ACCURACY as BASELINE_ACCURACY
from planner.roi_types import BASELINE_PERPLEXITY as BASELINE_PERPLEXITY
from planner.roi_types import BLOCKED as BLOCKED
from planner.roi_types import BORDERLINE as BORDERLINE
from planner.roi_types import CAUSAL_LM as CAUSAL_LM
from planner.roi_types import CLASSIFICATION as CLASSIFICATION
from planner.roi_types import FEASIBLE as FEASIBLE
from planner.roi_types import FRACTION as FRACTION
from planner.roi_types import INFEASIBLE as INFEASIBLE
from planner.roi_types import ITL as ITL
from planner.roi_types import KEEP as KEEP
from planner.roi_types import MORE_ROUNDS as MORE_ROUNDS
from planner.roi_types import MS as MS
from planner.roi_types import NO_BATCH_SIZE as NO_BATCH_SIZE
from planner.roi_types import P95 as P95
from planner.roi_types import PERPLEXITY as PERPLEXITY
from planner.roi_types import PLAIN as PLAIN
from planner.roi_types import QUIET_HOST as QUIET_HOST
from planner.roi_types import SAMPLES as SAMPLES
from planner.roi_types import SWITCH as SWITCH
from planner.roi_types import TASKS as TASKS
from planner.roi_types import TOO_FEW_SAMPLES as TOO_FEW_SAMPLES
from planner.roi_types import TTFT as TTFT
from planner.roi_types import UNDECIDED as UNDECIDED
from planner.roi_types import UNSTABLE as UNSTABLE
from planner.roi_types import Blocker as Blocker
from planner.roi_types import Economics as Economics
from planner.roi_types import ModelEconomics as ModelEconomics
from planner.roi_types import ModelMeasurement as ModelMeasurement
from planner.roi_types import Recommendation as Recommendation
from planner.roi_types import RoiReport as RoiReport

HOURS_PER_MONTH = Decimal(730)
SECONDS_PER_DAY = Decimal(86_400)
P95_QUANTILE = Decimal("0.95")
_d = as_decimal


def _optional(value: Number | None) -> Decimal | None:
    return None if value is None else _d(value)


# ---------------------------------------------------------------------------------------------------------
# What differs between the two tasks: the quality rule, the latency targets at batch 1, the capacity.


@dataclass(frozen=True)
class _Check:
    """One latency target at batch 1: the measured p95 and its interval against the target."""

    kind: str  # P95, TTFT or ITL
    target: Decimal
    value: Decimal | None  # None: not measured (``timed`` False) or too few samples (``timed`` True)
    low: Decimal | None
    high: Decimal | None
    timed: bool  # batch 1 was timed for this figure (its median is there)


def _check(
    kind: str, target: Decimal, value: Number | None, low: Number | None, high: Number | None
) -> _Check:
    bounds = interval(value, low, high)
    lower, upper = bounds if bounds else (None, None)
    return _Check(kind, target, _optional(value), lower, upper, timed=True)


@dataclass(frozen=True)
class _TaskRule:
    quality_kind: str  # ACCURACY or PERPLEXITY
    baseline_quality_kind: str
    quality_unit: str
    higher_is_better: bool
    quality: Callable[[ModelMeasurement], Decimal | None]
    limit: Callable[[Decimal | None, Economics], Decimal | None]  # from the baseline's quality
    latency_at_batch1: Callable[[LatencyPoint | None, Economics], list[_Check]]
    capacity: Callable[[Sequence[LatencyPoint], Economics, str], Capacity]

    def quality_blocker(self, quality: Decimal | None, limit: Decimal | None) -> Blocker | None:
        if quality is None:
            return Blocker(self.quality_kind, None, limit, self.quality_unit)
        if limit is None:
            return Blocker(self.baseline_quality_kind, quality, None, self.quality_unit)
        misses = quality < limit if self.higher_is_better else quality > limit
        return Blocker(self.quality_kind, quality, limit, self.quality_unit) if misses else None

    def rank(self, row: ModelEconomics) -> Decimal:
        """Sorts better quality first; unmeasured quality last."""
        quality = row.accuracy if self.quality_kind == ACCURACY else row.perplexity
        if quality is None:
            return Decimal("Infinity")
        return -quality if self.higher_is_better else quality


def _accuracy_floor(baseline_accuracy: Decimal | None, e: Economics) -> Decimal | None:
    if e.accuracy_floor_absolute is not None:
        return e.accuracy_floor_absolute
    if baseline_accuracy is None or e.accuracy_floor_pct_of_baseline is None:
        return None  # relative to an accuracy that was not measured: unknown
    return baseline_accuracy * e.accuracy_floor_pct_of_baseline / 100


def _classification_latency(b1: LatencyPoint | None, e: Economics) -> list[_Check]:
    if b1 is None:
        return [_Check(P95, e.p95_target_ms, None, None, None, timed=False)]
    return [_check(P95, e.p95_target_ms, b1.p95_ms, b1.p95_low_ms, b1.p95_high_ms)]


def _generation_latency(b1: LatencyPoint | None, e: Economics) -> list[_Check]:
    ttft_target, itl_target = e.p95_target_ms, e.itl_target_ms
    if b1 is None:
        return [_Check(k, t, None, None, None, False) for k, t in ((TTFT, ttft_target), (ITL, itl_target))]
    ttft = _check(TTFT, ttft_target, b1.ttft_p95_ms, b1.ttft_p95_low_ms, b1.ttft_p95_high_ms)
    itl = _check(ITL, itl_target, b1.itl_p95_ms, b1.itl_p95_low_ms, b1.itl_p95_high_ms)
    return [
        ttft if b1.ttft_p50_ms is not None else _Check(TTFT, ttft_target, None, None, None, False),
        itl if b1.itl_p50_ms is not None else _Check(ITL, itl_target, None, None, None, False),
    ]


_RULES = {
    CLASSIFICATION: _TaskRule(
        ACCURACY,
        BASELINE_ACCURACY,
        FRACTION,
        True,
        quality=lambda m: _optional(m.accuracy),
        limit=_accuracy_floor,
        latency_at_batch1=_classification_latency,
        capacity=lambda latency, e, side: classification_capacity(latency, e.p95_target_ms, side),
    ),
    CAUSAL_LM: _TaskRule(
        PERPLEXITY,
        BASELINE_PERPLEXITY,
        PLAIN,
        False,
        quality=lambda m: _optional(m.perplexity),
        limit=lambda base, e: perplexity_ceiling(base, e.perplexity_increase_pct),
        latency_at_batch1=_generation_latency,
        capacity=lambda latency, e, side: generation_capacity(
            latency, e.p95_target_ms, e.itl_target_ms, e.output_tokens_per_request, side
        ),
    ),
}


def capacity(m: ModelMeasurement, e: Economics, side: str = POINT, static: bool = False) -> Capacity:
    """The capacity of ``m`` under the targets of ``e`` with the batch size behind it: its goodput where
    measured under them (the same on every side), else (or when ``static``) the static capacity on ``side``
    (POINT, SLOW or FAST) of the measurements' intervals."""
    g = None if static else goodput_for(m, e)
    return _RULES[e.task].capacity(m.latency, e, side) if g is None else Capacity(_d(g.rps), g.max_batch)


# ---------------------------------------------------------------------------------------------------------
# Costs


def peak_rps(economics: Economics) -> Decimal:
    return economics.requests_per_day / SECONDS_PER_DAY * economics.peak_factor


def perplexity_ceiling(baseline_perplexity: Decimal | None, increase_pct: Decimal) -> Decimal | None:
    """The highest perplexity a candidate may have: the baseline's raised by ``increase_pct`` percent."""
    if baseline_perplexity is None:
        return None
    return baseline_perplexity * (1 + increase_pct / 100)


def _monthly(replicas: int | None, e: Economics) -> Decimal | None:
    return None if replicas is None else replicas * e.price_per_hour * HOURS_PER_MONTH


def maintenance(m: ModelMeasurement, e: Economics) -> Decimal | None:
    """The recurring cost a month of serving ``m`` instead of the current model (see the definitions)."""
    if m.is_baseline:
        return Decimal(0)
    upkeep = e.maintenance_hours_per_month * e.engineering_rate
    if not e.teacher_updates_per_year:
        return upkeep
    if m.device_hours is None:
        return None
    return upkeep + _d(m.device_hours) * e.price_per_hour * e.teacher_updates_per_year / 12


def evaluate(measurements: Sequence[ModelMeasurement], economics: Economics) -> RoiReport:
    """Cost every measured model under ``economics`` and pick one. Exactly one must be the baseline."""
    baselines = [m for m in measurements if m.is_baseline]
    if len(baselines) != 1:
        raise ValueError(f"exactly one measurement must be the baseline, got {len(baselines)}")
    keys = [m.key for m in measurements]
    if len(set(keys)) != len(keys):
        raise ValueError("measurement keys must be unique")
    e, rule, baseline = economics, _RULES[economics.task], baselines[0]
    if e.is_generative:
        for m in measurements:
            if m.perplexity is not None and not (_d(m.perplexity).is_finite() and m.perplexity > 0):
                raise ValueError(f"perplexity of {m.name} must be a finite number > 0, got {m.perplexity}")
    limit = rule.limit(rule.quality(baseline), e)
    peak = peak_rps(e)
    base_monthly = _monthly(replicas_needed(peak, capacity(baseline, e).rps, utilisation(baseline, e)), e)
    base_perplexity = _optional(baseline.perplexity)
    rows = tuple(_row(m, e, rule, limit, base_perplexity, peak, base_monthly) for m in measurements)
    floor = None if e.is_generative else limit
    ceiling = limit if e.is_generative else None
    return RoiReport(e, peak, floor, rows, _recommend(rows, measurements, rule), ceiling)


def _row(
    m: ModelMeasurement,
    e: Economics,
    rule: _TaskRule,
    limit: Decimal | None,
    base_perplexity: Decimal | None,
    peak: Decimal,
    base_monthly: Decimal | None,
) -> ModelEconomics:
    batch1 = next((p for p in m.latency if p.batch_size == 1), None)
    cap, served, load = capacity(m, e), goodput_for(m, e), utilisation(m, e)
    replicas = replicas_needed(peak, cap.rps, load)
    monthly = _monthly(replicas, e)
    upkeep = maintenance(m, e)
    running = None if monthly is None or upkeep is None else monthly + upkeep  # serving + maintenance
    savings = None if running is None or base_monthly is None else base_monthly - running
    one_time: Decimal | None
    if m.is_baseline:
        one_time = Decimal(0)
    elif m.device_hours is None:
        one_time = None  # not measured: the compression run's cost is unknown, not free
    else:
        one_time = e.engineering_hours * e.engineering_rate + _d(m.device_hours) * e.price_per_hour
    payback = one_time / savings if one_time is not None and savings is not None and savings > 0 else None
    roi = None
    if one_time is not None and savings is not None and one_time != 0:
        roi = (savings * e.horizon_months - one_time) / one_time
    total = None if running is None or one_time is None else one_time + e.horizon_months * running
    # The costs that do not depend on the capacity: the one-time cost and the maintenance over the horizon.
    fixed = None if one_time is None or upkeep is None else one_time + e.horizon_months * upkeep
    slow_total, fast_total = (_total_on(side, m, e, peak, fixed) for side in (SLOW, FAST))
    energy = None
    if replicas is not None and e.power_watts is not None:
        energy = replicas * e.power_watts * HOURS_PER_MONTH / 1000
    co2 = None if energy is None or e.grid_kg_co2_per_kwh is None else energy * e.grid_kg_co2_per_kwh
    per_million = cost_per_million(e.price_per_hour, cap.rps, load)
    checks = rule.latency_at_batch1(batch1, e)
    blockers, undecided = _blockers(m, checks, rule, limit, e, capacity(m, e, FAST).rps == 0)
    perplexity = _optional(m.perplexity) if e.is_generative else None
    latencies = {check.kind: check.value for check in checks}
    tokens = e.output_tokens_per_request
    return ModelEconomics(
        key=m.key,
        name=m.name,
        is_baseline=m.is_baseline,
        accuracy=_optional(m.accuracy),
        p95_batch1_ms=None if batch1 is None else _optional(batch1.p95_ms),
        feasible=not blockers and not undecided,
        blockers=blockers,
        capacity_rps=cap.rps,
        capacity_batch_size=cap.batch_size,
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
        perplexity=perplexity,
        perplexity_change=(
            perplexity / base_perplexity - 1 if perplexity is not None and base_perplexity else None
        ),
        exact_match=_optional(m.exact_match) if e.is_generative else None,
        ttft_p95_batch1_ms=latencies.get(TTFT),
        itl_p95_batch1_ms=latencies.get(ITL),
        tokens_per_s_capacity=cap.rps * tokens if e.is_generative else None,
        cost_per_million_tokens=per_million / tokens if e.is_generative and per_million is not None else None,
        verdict=INFEASIBLE if blockers else UNDECIDED if undecided else FEASIBLE,
        undecided=undecided,
        slow_total_cost=slow_total,
        fast_total_cost=fast_total,
        monthly_maintenance=upkeep,
        goodput=served,
        static_capacity_rps=capacity(m, e, static=True).rps,
    )


def _total_on(
    side: str, m: ModelMeasurement, e: Economics, peak: Decimal, one_time: Decimal | None
) -> Decimal | None:
    """The total over the horizon with the capacity on ``side`` of the intervals."""
    monthly = _monthly(replicas_needed(peak, capacity(m, e, side).rps, utilisation(m, e)), e)
    return None if monthly is None or one_time is None else one_time + e.horizon_months * monthly


def _latency_blocker(check: _Check, samples: int | None) -> tuple[Blocker | None, Blocker | None]:
    """(a clear miss, or why it cannot be told) for one latency check on a clean measurement."""
    if not check.timed:
        return Blocker(check.kind, None, check.target, MS), None  # not measured: a miss, as before
    if check.value is None or check.low is None or check.high is None:
        needed = Decimal(samples_needed(P95_QUANTILE))
        count = None if samples is None else Decimal(samples)
        return None, Blocker(TOO_FEW_SAMPLES, count, needed, SAMPLES, about=check.kind)
    if check.high <= check.target:
        return None, None
    if check.low > check.target:
        return Blocker(check.kind, check.value, check.target, MS), None
    return None, Blocker(BORDERLINE, check.value, check.target, MS, check.kind, check.low, check.high)


def _blockers(
    m: ModelMeasurement,
    checks: list[_Check],
    rule: _TaskRule,
    limit: Decimal | None,
    e: Economics,
    no_capacity: bool,
) -> tuple[tuple[Blocker, ...], tuple[Blocker, ...]]:
    """Every target ``m`` clearly misses, in a fixed order (quality, each latency target at batch 1,
    capacity), and every check that cannot be told from its measurement. An unstable measurement misses
    no latency target and is undecided on all of them (one UNSTABLE blocker) whatever its figures."""
    out, undecided = [], []
    quality = rule.quality_blocker(rule.quality(m), limit)
    if quality is not None:
        out.append(quality)
    unstable = next((p for p in m.latency if p.unstable), None)
    batch1 = next((p for p in m.latency if p.batch_size == 1), None)
    for check in checks:
        if unstable is not None and check.timed:
            continue
        miss, unsure = _latency_blocker(check, None if batch1 is None else batch1.iterations)
        out += [miss] if miss else []
        undecided += [unsure] if unsure else []
    if unstable is not None:
        undecided.append(
            Blocker(UNSTABLE, None, None, PLAIN, reason=unstable.unstable, batch_size=unstable.batch_size)
        )
    elif no_capacity:
        # Not even at the fast end of the intervals does a batch size meet the targets.
        out.append(Blocker(NO_BATCH_SIZE, None, e.p95_target_ms, MS))
    return tuple(out), tuple(undecided)


def _unstable(row: ModelEconomics) -> bool:
    return any(b.kind == UNSTABLE for b in row.undecided)


def quality_rank(row: ModelEconomics, economics: Economics) -> Decimal:
    """Sorts better quality first: higher accuracy, or for a causal LM lower perplexity."""
    return _RULES[economics.task].rank(row)


def _recommend(
    rows: tuple[ModelEconomics, ...], measurements: Sequence[ModelMeasurement], rule: _TaskRule
) -> Recommendation:
    base = next(r for r in rows if r.is_baseline)
    relative = {m.key for m in measurements if any(p.speedup_low is not None for p in m.latency)}

    def order(r: ModelEconomics, total: Decimal | None) -> tuple[bool, Decimal, Decimal, bool]:
        return (total is None, total if total is not None else Decimal(0), rule.rank(r), not r.is_baseline)

    def holds(c: ModelEconomics) -> bool:
        """Whether switching to ``c`` beats the baseline even at the slow end of c's intervals (against the
        baseline's fast end, unless c's speedup interval already holds both models' noise)."""
        if base.verdict == INFEASIBLE:
            return True
        if base.verdict == UNDECIDED and (_unstable(base) or base.total_cost_over_horizon is None):
            return False
        reference = base.fast_total_cost
        if base.verdict == FEASIBLE and c.key in relative:
            reference = base.total_cost_over_horizon
        return order(c, c.slow_total_cost) < order(base, reference)

    clear = [r for r in rows if r.feasible and not r.is_baseline]
    chosen = [c for c in clear if holds(c)] + ([base] if base.feasible else [])
    if not chosen:
        pending = [r for r in rows if r.verdict == UNDECIDED]
        if base.verdict == UNDECIDED or (pending and base.verdict == INFEASIBLE):
            pending.sort(key=lambda r: not r.is_baseline)
            unstable = any(_unstable(r) for r in pending)
            keys = tuple(r.key for r in pending)
            return Recommendation(
                None, None, UNDECIDED, pending=keys, rerun=QUIET_HOST if unstable else MORE_ROUNDS
            )
        return Recommendation(None, None, BLOCKED)
    best = min(chosen, key=lambda r: order(r, r.total_cost_over_horizon))
    # A model cheaper at the measured figures that was not chosen: its saving is inside the intervals.
    tempting = [
        r
        for r in rows
        if r.verdict != INFEASIBLE
        and not r.is_baseline
        and order(r, r.total_cost_over_horizon) < order(best, best.total_cost_over_horizon)
    ]
    within = min(tempting, key=lambda r: order(r, r.total_cost_over_horizon)).key if tempting else None
    return Recommendation(
        best.key, best.name, KEEP if best.is_baseline else SWITCH, within_uncertainty=within
    )


# ---------------------------------------------------------------------------------------------------------
# Why a request is blocked, as plain JSON (Decimals as strings) that the portfolio stores.


def blocking_targets(report: RoiReport) -> dict[str, dict[str, str | None]]:
    """When no model meets the targets: which target blocks, and how close the best model came.

    A model that met both would be feasible, so every model that keeps the accuracy floor misses the
    latency target (then "p95" says how fast the fastest of them is) and every model within the latency
    target misses the floor (then "accuracy" says how accurate the most accurate of them is; its "best"
    is None when no such model's accuracy was measured, its "floor" None when the floor is relative to an
    unmeasured baseline). Empty when some model is feasible."""
    if not report.recommendation.blocked:
        return {}
    if report.economics.is_generative:
        return _generation_blocking_targets(report)
    floor, target = report.accuracy_floor, report.economics.p95_target_ms
    accurate = [r for r in report.rows if not (r.misses(ACCURACY) or r.misses(BASELINE_ACCURACY))]
    fast = [r for r in report.rows if not r.misses(P95)]
    out: dict[str, dict[str, str | None]] = {}
    if accurate or not fast:
        timed = [(r.p95_batch1_ms, r) for r in accurate or report.rows if r.p95_batch1_ms is not None]
        best = min(timed, key=lambda pair: pair[0])[1] if timed else None
        out["p95"] = {
            "target_ms": str(target),
            "best_ms": _text(best.p95_batch1_ms) if best else None,
            "candidate": best.name if best else None,
        }
    if fast or not accurate:
        scored = [(r.accuracy, r) for r in fast or report.rows if r.accuracy is not None]
        most = max(scored, key=lambda pair: pair[0])[1] if scored else None
        out["accuracy"] = {
            "floor": _text(floor),
            "best": _text(most.accuracy) if most else None,
            "candidate": most.name if most else None,
        }
    return out


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _generation_blocking_targets(report: RoiReport) -> dict[str, dict[str, str | None]]:
    """blocking_targets for text generation: "latency" (the model that keeps the perplexity limit and comes
    closest to both latency targets) and "perplexity" (the lowest perplexity within the latency targets)."""
    e, ceiling = report.economics, report.perplexity_ceiling
    ttft_target, itl_target = e.p95_target_ms, e.itl_target_ms
    good = [r for r in report.rows if not (r.misses(PERPLEXITY) or r.misses(BASELINE_PERPLEXITY))]
    fast = [r for r in report.rows if not (r.misses(TTFT) or r.misses(ITL))]
    out: dict[str, dict[str, str | None]] = {}
    if good or not fast:
        # Closest to meeting both: the smallest worse ratio of a latency to its target.
        timed = [
            (max(r.ttft_p95_batch1_ms / ttft_target, r.itl_p95_batch1_ms / itl_target), r)
            for r in good or report.rows
            if r.ttft_p95_batch1_ms is not None and r.itl_p95_batch1_ms is not None
        ]
        best = min(timed, key=lambda pair: pair[0])[1] if timed else None
        out["latency"] = {
            "ttft_target_ms": str(ttft_target),
            "itl_target_ms": str(itl_target),
            "ttft_ms": _text(best.ttft_p95_batch1_ms) if best else None,
            "itl_ms": _text(best.itl_p95_batch1_ms) if best else None,
            "candidate": best.name if best else None,
        }
    if fast or not good:
        measured = [(r.perplexity, r) for r in fast or report.rows if r.perplexity is not None]
        lowest = min(measured, key=lambda pair: pair[0])[1] if measured else None
        out["perplexity"] = {
            "ceiling": _text(ceiling),
            "baseline": _text(report.baseline.perplexity),
            "increase_pct": str(e.perplexity_increase_pct),
            "best": _text(lowest.perplexity) if lowest else None,
            "candidate": lowest.name if lowest else None,
        }
    return out
