"""The per-request dashboard as a view model: the ROI input built from the request and its measured
candidates, the rows of the candidates table, the headline cards, the what-if economics, and the
raw-figures page of one candidate. Every decision (feasible, which target a model misses, the batch size
behind the capacity) is roi's; this module only arranges it for the pages."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any

from django.conf import settings
from django.utils.translation import gettext_noop

from planner import roi
from planner.dashboard import charts, columns, wording
from planner.dashboard import latency as latency_view
from planner.models import Candidate, PocRequest
from planner.task_kinds import TaskKind, task_kind
from workers.record import Goodput, LatencyPoint, Measurement


def economics_for(poc_request: PocRequest) -> roi.Economics:
    hardware = poc_request.hardware
    grid = settings.GRID_KG_CO2_PER_KWH
    return roi.Economics(
        requests_per_day=Decimal(poc_request.requests_per_day),
        price_per_hour=hardware.price_per_hour,
        p95_target_ms=poc_request.p95_target_ms,
        accuracy_floor_pct_of_baseline=poc_request.accuracy_floor_pct,
        peak_factor=poc_request.peak_factor,
        target_utilisation=poc_request.target_utilisation,
        horizon_months=poc_request.horizon_months,
        engineering_hours=poc_request.engineering_hours,
        engineering_rate=poc_request.engineering_rate,
        power_watts=Decimal(hardware.power_watts) if hardware.power_watts else None,
        grid_kg_co2_per_kwh=grid if grid is not None and hardware.power_watts else None,
        maintenance_hours_per_month=poc_request.maintenance_hours_per_month,
        teacher_updates_per_year=Decimal(poc_request.teacher_updates_per_year),
        **task_kind(poc_request.task).economics_targets(poc_request),
    )


def _roi_point(p: LatencyPoint) -> roi.LatencyPoint:
    return roi.LatencyPoint(
        p.batch_size,
        p.p50_ms,
        p.p95_ms,
        p.p99_ms,
        # Text generation only: time to first token and inter-token latency.
        ttft_p50_ms=p.ttft_p50_ms,
        ttft_p95_ms=p.ttft_p95_ms,
        itl_p50_ms=p.itl_p50_ms,
        itl_p95_ms=p.itl_p95_ms,
        iterations=p.iterations,
        # Timing trust (None on points timed without it: roi then takes the figures as exact).
        **{name: getattr(p, name, None) for name in _TRUST_FIELDS},
    )


_TRUST_FIELDS = (
    "p50_low_ms",
    "p50_high_ms",
    "p95_low_ms",
    "p95_high_ms",
    "ttft_p95_low_ms",
    "ttft_p95_high_ms",
    "itl_p95_low_ms",
    "itl_p95_high_ms",
    "speedup",
    "speedup_low",
    "speedup_high",
    "unstable",
)


def measurement_for(candidate: Candidate) -> roi.ModelMeasurement:
    """roi's input for a measured candidate (``candidate.measurement`` must be set)."""
    m = candidate.measurement
    if m is None:
        raise ValueError(f"candidate {candidate.pk} is not measured")
    return roi_measurement(m, key=str(candidate.pk), name=candidate.label, is_baseline=candidate.is_baseline)


def roi_measurement(m: Measurement, *, key: str, name: str, is_baseline: bool) -> roi.ModelMeasurement:
    """roi's input for a measurement, stored or not (poc_benchmark reads one straight from the runner)."""
    return roi.ModelMeasurement(
        key=key,
        name=name,
        is_baseline=is_baseline,
        accuracy=m.accuracy,
        latency=[_roi_point(p) for p in m.latency],
        device_hours=m.device_hours,
        perplexity=m.perplexity,
        exact_match=m.exact_match,
        goodput=_roi_goodput(m.goodput),
    )


def _roi_goodput(g: Goodput | None) -> roi.Goodput | None:
    if g is None:
        return None
    return roi.Goodput(
        g.rps,
        g.max_batch,
        g.max_wait_ms,
        g.share,
        g.target_ms,
        g.itl_target_ms,
        g.tokens,
        g.capped_tokens,
        simulated=g.method == "simulated",
    )


def poc_request_roi(
    *, poc_request: PocRequest, economics: roi.Economics | None = None
) -> roi.RoiReport | None:
    """The ROI report over the measured candidates, or None until the baseline is measured.

    ``economics`` replaces the request's own (a what-if); the measurements are the same either way."""
    measured = [c for c in poc_request.candidates.all() if c.status == Candidate.Status.MEASURED]
    if not any(c.is_baseline for c in measured):
        return None
    return roi.evaluate([measurement_for(c) for c in measured], economics or economics_for(poc_request))


# ---------------------------------------------------------------------------------------------------------
# What-if economics

# The economics a manager may change on a dashboard. The measured figures (accuracy, latency) and the
# quality and p95 targets are not among them: changing those would be a different PoC, not a different
# scenario. A task adds its own (TaskKind.whatif_fields): text generation the length of a reply and the
# per-token target, which describe how the product uses the model.
WHATIF_FIELDS = (
    "requests_per_day",
    "peak_factor",
    "target_utilisation",
    "price_per_hour",
    "horizon_months",
    "engineering_hours",
    "engineering_rate",
    "grid_kg_co2_per_kwh",
    "maintenance_hours_per_month",
    "teacher_updates_per_year",
    "per_token_target_ms",
    "output_tokens_per_request",
)


def economics_with_overrides(*, poc_request: PocRequest, overrides: Mapping[str, Any]) -> roi.Economics:
    """The request's economics with some of WHATIF_FIELDS replaced; ValueError when the result is invalid
    (roi.Economics checks every figure again)."""
    unknown = sorted(set(overrides) - set(WHATIF_FIELDS))
    if unknown:
        raise ValueError(f"not a what-if figure: {', '.join(unknown)}")
    return dataclasses.replace(economics_for(poc_request), **overrides)


# ---------------------------------------------------------------------------------------------------------
# Comparisons with the baseline

NOT_FASTER_BELOW = 1.05  # a speedup under 5% is within run-to-run noise: not faster


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def candidate_comparisons(*, poc_request: PocRequest) -> dict[int, dict[str, Any]]:
    """Per measured candidate: the speedup at batch 1 (from the interleaved rounds; the ratio of the two p95s
    for a point measured before those existed) and the size ratio against the baseline, and a verdict when
    it is not faster ("smaller but not faster", "neither smaller nor faster") with the reasons the
    techniques give (unstructured sparsity, weight-only formats, …). No such verdict when either batch-1
    point is unstable: the speeds cannot be compared. For text generation the speedup is of the whole
    generation, and the perplexity change (0.05 = 5% higher) comes along."""
    measured = _timed_at_batch1(poc_request)
    baseline = next(((m, p) for c, m, p in measured if c.is_baseline), None)
    out: dict[int, dict[str, Any]] = {}
    if baseline is None:
        return out
    base, b1 = baseline
    for c, m, c1 in measured:
        if c.is_baseline:
            continue
        interleaved = c1.speedup is not None
        # Only a point measured before interleaved timing falls back to the ratio of the p95s.
        speedup = c1.speedup if interleaved else (b1.p95_ms / c1.p95_ms if b1.p95_ms and c1.p95_ms else None)
        size_ratio = (base.size_bytes or 0) / m.size_bytes if m.size_bytes else None
        verdict = ""
        # With an interleaved speedup interval, "not faster" needs all of it below the threshold; an
        # interval that straddles it gives no verdict (within noise).
        high = c1.speedup_high or speedup
        unstable = bool(c1.unstable or b1.unstable)
        # Marked, not translated: the verdict is a stable key in the data; the template translates it.
        if high is not None and high < NOT_FASTER_BELOW and not unstable:
            verdict = (
                gettext_noop("smaller but not faster")
                if size_ratio and size_ratio >= NOT_FASTER_BELOW
                else gettext_noop("not faster")
            )
            if size_ratio is not None and size_ratio < NOT_FASTER_BELOW:
                verdict = gettext_noop("neither smaller nor faster")
        perplexity_change = _ratio(m.perplexity, base.perplexity)
        out[c.pk] = {
            "speedup": speedup,
            "interleaved": interleaved,
            "size_ratio": size_ratio,
            "accuracy_kept": _ratio(m.accuracy, base.accuracy),
            "perplexity_change": None if perplexity_change is None else perplexity_change - 1,
            "verdict": verdict,
            "reasons": list(c.notes.get("caveats", [])) if verdict else [],
        }
    return out


def _timed_at_batch1(poc_request: PocRequest) -> list[tuple[Candidate, Measurement, LatencyPoint]]:
    """The measured candidates with a batch-1 point: each with its measurement and that point."""
    out = []
    for c in poc_request.candidates.all():
        m = c.measurement
        point = m.at(1) if m is not None else None
        if m is not None and point is not None:
            out.append((c, m, point))
    return out


# ---------------------------------------------------------------------------------------------------------
# The per-request dashboard


@dataclass(frozen=True)
class CandidateRow:
    candidate: Candidate
    measurement: Measurement | None  # None until measured
    figures: roi.ModelEconomics | None  # None until measured
    comparison: dict[str, Any] | None
    blockers: tuple[str, ...]  # the targets it misses, as sentences
    recommended: bool

    @property
    def batch1(self) -> LatencyPoint | None:
        return self.measurement.at(1) if self.measurement else None

    @property
    def unstable(self) -> LatencyPoint | None:
        """The first point of the sweep whose measurement stayed unstable; None when every one is clean."""
        points = self.measurement.latency if self.measurement else ()
        return next((p for p in points if p.unstable), None)


@dataclass(frozen=True)
class TableColumn:
    column: columns.Column
    header: str


@dataclass(frozen=True)
class TableCell:
    column: columns.Column
    value: Any  # the column's value (the CSV's); the cell template formats it
    shown: Any = None  # what the column's ``shown`` makes of the row (latency.Shown), when it has one


@dataclass(frozen=True)
class TableRow:
    row: CandidateRow
    cells: list[TableCell]


@dataclass(frozen=True)
class Headline:
    outcome: str  # roi.SWITCH, KEEP, BLOCKED or UNDECIDED (PocRequestSummary.Outcome)
    name: str | None
    baseline: roi.ModelEconomics
    chosen: roi.ModelEconomics | None  # the recommended model (the baseline when keeping it)
    accuracy_floor: Decimal | None  # None for text generation
    p95_target_ms: Decimal  # text generation: the TTFT target
    horizon_months: int
    # Text generation only.
    per_token_target_ms: Decimal | None = None
    perplexity_ceiling: Decimal | None = None
    perplexity_increase_pct: Decimal | None = None
    rerun: str | None = None  # undecided: what to re-run (roi.QUIET_HOST or MORE_ROUNDS)
    # The shown model's latency figures at batch 1 with their intervals and samples (latency.Shown).
    latency: Mapping[str, latency_view.Shown] = dataclasses.field(default_factory=dict)

    @property
    def shown(self) -> roi.ModelEconomics:
        """The model the quality and latency cards describe: the recommended one, else the current one."""
        return self.chosen or self.baseline

    @property
    def misses(self) -> dict[str, bool]:
        """Per blocker kind (roi.ACCURACY, P95, TTFT, ITL, PERPLEXITY), whether the shown model misses it;
        a quality relative to an unmeasured baseline counts as missed."""
        shown = self.shown
        kinds = (roi.ACCURACY, roi.P95, roi.TTFT, roi.ITL, roi.PERPLEXITY)
        out = {kind: shown.misses(kind) for kind in kinds}
        out[roi.ACCURACY] |= shown.misses(roi.BASELINE_ACCURACY)
        out[roi.PERPLEXITY] |= shown.misses(roi.BASELINE_PERPLEXITY)
        return out

    @property
    def uncertain(self) -> dict[str, bool]:
        """Per latency check (roi.P95, TTFT, ITL), whether the shown model's measurement cannot tell it."""
        return {kind: self.shown.uncertain(kind) for kind in (roi.P95, roi.TTFT, roi.ITL)}

    @property
    def accuracy_kept(self) -> Decimal | None:
        if self.chosen is None or not self.baseline.accuracy or self.chosen.accuracy is None:
            return None
        return self.chosen.accuracy / self.baseline.accuracy


@dataclass(frozen=True)
class RequestDashboard:
    poc_request: PocRequest
    task: TaskKind
    economics: roi.Economics
    report: roi.RoiReport | None
    rows: list[CandidateRow]
    headline: Headline | None
    reason: str
    blocking: list[str]
    cashflow_row: roi.ModelEconomics | None  # whose cash flow the third chart shows
    charts: dict[str, Any]
    measured: int
    has_power: bool
    is_whatif: bool
    # Undecided: the recommendation's sentences one by one (no recommendation; each pending model; what to
    # re-run), so the page can list them.
    undecided: list[str] = dataclasses.field(default_factory=list)

    @property
    def currency(self) -> str:
        return self.poc_request.currency

    @cached_property
    def search(self) -> Any:
        """The search section (planner.dashboard.search); None for a request that listed its pipelines."""
        from planner.dashboard.search import search_view

        return search_view(poc_request=self.poc_request, report=self.report)

    @cached_property
    def estimate(self) -> Any:
        """The pre-flight estimate against each candidate's measurement (planner.dashboard.search)."""
        from planner.dashboard.search import estimate_view

        return estimate_view(poc_request=self.poc_request)

    @property
    def is_generative(self) -> bool:
        return self.task.is_generative

    @cached_property
    def columns(self) -> list[TableColumn]:
        """The candidates table's columns with their headers (a manager's first, then the details)."""
        months = {"months": self.economics.horizon_months}
        return [
            TableColumn(c, str(c.label) % months if "%(" in str(c.label) else str(c.label))
            for c in columns.table_columns(self.task.columns, has_power=self.has_power)
        ]

    @cached_property
    def has_details(self) -> bool:
        return any(c.column.detail for c in self.columns)

    @cached_property
    def table(self) -> list[TableRow]:
        shown = [c.column for c in self.columns]
        return [
            TableRow(
                row, [TableCell(c, c.get(row, self), c.shown(row, self) if c.shown else None) for c in shown]
            )
            for row in self.rows
        ]


def poc_request_dashboard(
    *, poc_request: PocRequest, economics: roi.Economics | None = None
) -> RequestDashboard:
    """Everything the request page, its report and its CSV show; no queries beyond the prefetched
    candidates (``poc_request_get_for_user``)."""
    as_filed = economics_for(poc_request)
    # Controls submitted unchanged are not a scenario: the page then says nothing about a what-if.
    is_whatif = economics is not None and economics != as_filed
    economics = economics or as_filed
    report = poc_request_roi(poc_request=poc_request, economics=economics)
    comparisons = candidate_comparisons(poc_request=poc_request)
    candidates = list(poc_request.candidates.all())
    rec_key = report.recommendation.key if report else None
    rows = []
    for c in candidates:
        measurement = c.measurement
        figures = report.row(str(c.pk)) if report and measurement is not None else None
        rows.append(
            CandidateRow(
                candidate=c,
                measurement=measurement,
                figures=figures,
                comparison=comparisons.get(c.pk),
                blockers=wording.blocker_sentences(figures, report) if figures and report else (),
                recommended=figures is not None and figures.key == rec_key,
            )
        )
    headline, cashflow_row, reason, blocking = None, None, "", []
    if report:
        reason = wording.recommendation_sentence(report, poc_request.currency)
        blocking = wording.blocking_sentences(roi.blocking_targets(report))
        headline = _headline(report, {str(c.pk): c for c in candidates})
        cashflow_row = charts.cashflow_row(report)
    return RequestDashboard(
        poc_request=poc_request,
        task=task_kind(poc_request.task),
        economics=economics,
        report=report,
        rows=rows,
        headline=headline,
        reason=reason,
        blocking=blocking,
        cashflow_row=cashflow_row,
        charts=charts.chart_data(report, cashflow_row, poc_request.currency, bounds=_bounds(rows))
        if report
        else {},
        measured=sum(1 for c in candidates if c.status == Candidate.Status.MEASURED),
        has_power=economics.power_watts is not None,
        is_whatif=is_whatif,
        undecided=wording.undecided_parts(report) if report and report.recommendation.undecided else [],
    )


def _bounds(rows: list[CandidateRow]) -> dict[str, tuple[float | None, float | None]]:
    """Per measured model, the interval of the latency the Pareto chart plots (the p95 at batch 1; text
    generation: the TTFT p95)."""
    out = {}
    for row in rows:
        point = row.batch1
        if row.figures is not None and point is not None:
            if point.ttft_p95_ms is not None:
                out[row.figures.key] = (point.ttft_p95_low_ms, point.ttft_p95_high_ms)
            else:
                out[row.figures.key] = (point.p95_low_ms, point.p95_high_ms)
    return out


def _headline(report: roi.RoiReport, candidates: Mapping[str, Candidate]) -> Headline:
    rec = report.recommendation
    e = report.economics
    shown = report.row(rec.key) if rec.key else report.baseline
    measurement = candidates[shown.key].measurement
    point = measurement.at(1) if measurement else None
    figures = {
        "p95": latency_view.percentile(point, "p95"),
        "ttft": latency_view.percentile(point, "p95", "ttft_"),
        "itl": latency_view.percentile(point, "p95", "itl_"),
    }
    return Headline(
        outcome=rec.outcome,
        name=rec.name,
        baseline=report.baseline,
        chosen=report.row(rec.key) if rec.key else None,
        accuracy_floor=report.accuracy_floor,
        p95_target_ms=e.p95_target_ms,
        horizon_months=e.horizon_months,
        per_token_target_ms=e.per_token_target_ms,
        perplexity_ceiling=report.perplexity_ceiling,
        perplexity_increase_pct=e.perplexity_increase_pct if e.is_generative else None,
        rerun=rec.rerun,
        latency=figures,
    )


# ---------------------------------------------------------------------------------------------------------
# One candidate's raw figures


@dataclass(frozen=True)
class SweepRow:
    cells: list[str]
    meets: bool  # whether this batch size meets the latency targets (roi decides)
    unstable: bool = False  # its measurement stayed unstable

    @property
    def css_class(self) -> str:
        return " ".join(name for name, on in (("meets", self.meets), ("unstable", self.unstable)) if on)


@dataclass(frozen=True)
class CandidatePage:
    candidate: Candidate
    task: TaskKind
    measurement: Measurement | None
    quality: list[tuple[columns.Figure, str]]
    sweep_columns: tuple[columns.Figure, ...]
    sweep: list[SweepRow]

    @property
    def unstable(self) -> bool:
        return any(row.unstable for row in self.sweep)


def candidate_page(*, candidate: Candidate) -> CandidatePage:
    """What the raw-figures page shows: the quality figures and the batch sweep, each batch size marked
    when roi finds that it alone meets the request's latency targets."""
    task = task_kind(candidate.request.task)
    m = candidate.measurement
    economics = economics_for(candidate.request)
    sweep = []
    for point in m.latency if m else ():
        alone = roi.ModelMeasurement("", "", False, None, [_roi_point(point)])
        cells = [figure.shown(point) for figure in task.sweep_columns]
        meets = roi.capacity(alone, economics).batch_size is not None
        sweep.append(SweepRow(cells, meets, bool(point.unstable)))
    return CandidatePage(
        candidate=candidate,
        task=task,
        measurement=m,
        quality=[(f, f.shown(m) if m else "—") for f in task.quality_rows],
        sweep_columns=task.sweep_columns,
        sweep=sweep,
    )
