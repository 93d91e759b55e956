"""The columns of a request's candidates: one list per task, from which both the candidates table and the
CSV export are made, and the figures of the batch sweep on a candidate's raw-figures page.

A ``Column`` is a stable English CSV name and a getter (the CSV's value); a column with a label shows in
the table too, in the cell template ``cell`` (planner/templates/planner/dashboard/cells/<cell>.html), which
gets the value as ``value``, what ``shown`` makes of the row (a figure with its interval: latency.Shown) as
``shown``, ``detail`` (an engineer's column: hidden until asked for), and the row as ``row``, ``c``, ``m``,
``r``, ``cmp`` and ``b1``. The table puts
the columns in the order of their ``group`` (a manager's first), then of the list; the CSV keeps the
list's order. A ``Figure`` is one figure of a latency point (or of a measurement) with its display; a
sweep figure marked ``by_batch`` also goes to the CSV as ``<name>_by_batch`` ("1: 8.5; 8: 24.0"); its
``display`` (when set) shows the whole point's figure, interval and samples included, on the page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext_lazy as _

from planner import formatting
from planner.dashboard import latency
from planner.templatetags import planner_format as show

if TYPE_CHECKING:
    from planner.dashboard.request import CandidateRow, RequestDashboard

# Table groups, in the order the table shows them; DETAILS are behind "Show the engineer's figures".
WHO, QUALITY, MONEY, VERDICT, DETAILS = range(5)


@dataclass(frozen=True)
class Column:
    name: str
    get: Callable[[CandidateRow, RequestDashboard], Any]
    label: Any = None  # a lazy translation; None: in the CSV only
    cell: str = "value"
    group: int = DETAILS
    numeric: bool = True
    csv: bool = True
    needs_power: bool = False  # shown only when the hardware has a power figure
    printed: bool = True  # False: a link or control, left out of the printed report
    shown: Callable[[CandidateRow, RequestDashboard], Any] | None = None  # the cell's ``shown``

    @property
    def template(self) -> str:
        return f"planner/dashboard/cells/{self.cell}.html"

    @property
    def detail(self) -> bool:
        return self.group == DETAILS

    @property
    def header_class(self) -> str:
        flags = (("num", self.numeric), ("no-print", not self.printed), ("detail", self.detail))
        return " ".join(name for name, on in flags if on)


@dataclass(frozen=True)
class Figure:
    name: str
    label: Any
    get: Callable[[Any], Any]
    text: Callable[[Any], str] = str
    by_batch: bool = False  # a sweep figure the CSV carries for every batch size
    missing: Any = None  # what to show instead of the dash when the figure is None
    display: Callable[[Any], Any] | None = None  # the page's text of the whole point (interval, samples)

    def shown(self, source: Any) -> str:
        if self.display is not None:
            return str(self.display(source))
        value = self.get(source)
        if value is None:
            return str(self.missing) if self.missing is not None else formatting.MISSING
        return self.text(value)


# --- getters --------------------------------------------------------------------------------------------


def _measured(name: str) -> Callable[[CandidateRow, RequestDashboard], Any]:
    return lambda row, d: getattr(row.measurement, name) if row.measurement else None


def _batch1(name: str) -> Callable[[CandidateRow, RequestDashboard], Any]:
    return lambda row, d: getattr(row.batch1, name) if row.batch1 else None


def _percentile(name: str, prefix: str = "") -> Callable[[CandidateRow, RequestDashboard], Any]:
    return lambda row, d: latency.percentile(row.batch1, name, prefix)


def _p99_batch1(row: CandidateRow, d: RequestDashboard) -> Any:
    """A p99 from fewer samples than it needs is left out of the CSV as well as the table."""
    shown = latency.percentile(row.batch1, "p99")
    return None if shown.refused or row.batch1 is None else row.batch1.p99_ms


def _speedup(row: CandidateRow, d: RequestDashboard) -> Any:
    return latency.speedup(row.batch1, row.comparison, is_baseline=row.candidate.is_baseline)


def _unstable(name: str) -> Callable[[CandidateRow, RequestDashboard], Any]:
    return lambda row, d: getattr(row.unstable, name) if row.unstable else None


def _itl_samples(row: CandidateRow, d: RequestDashboard) -> Any:
    return latency.samples_of(row.batch1, "itl_") if row.batch1 else None


def _trust_columns(generative: bool) -> tuple[Column, ...]:
    """The CSV's columns of the timing's trust at batch 1 (intervals, samples, speedup, host, verdict)."""
    bounds = ["p50", "p95", "p99"] + (["ttft_p95", "itl_p95"] if generative else [])
    return (
        Column("verdict", lambda row, d: row.figures.verdict if row.figures else None),
        Column("samples_batch1", _batch1("iterations")),
        *([Column("itl_samples_batch1", _itl_samples)] if generative else []),
        *[
            Column(f"{name}_{side}_ms_batch1", _batch1(f"{name}_{side}_ms"))
            for name in bounds
            for side in ("low", "high")
        ],
        Column("speedup_batch1", _batch1("speedup")),
        Column("speedup_low_batch1", _batch1("speedup_low")),
        Column("speedup_high_batch1", _batch1("speedup_high")),
        Column("rounds_batch1", _batch1("rounds")),
        Column("load_avg_batch1", _batch1("load_avg")),
        Column("other_cpu_share_batch1", _batch1("other_cpu_share")),
        Column("unstable", _unstable("unstable")),
        Column("unstable_batch_size", _unstable("batch_size")),
    )


def _fixed(value: Any, places: int) -> str | None:
    return None if value is None else formatting.fixed(value, places)


def _figure(name: str, places: int | None = None, *, scale: int = 1) -> Callable:
    def get(row: CandidateRow, d: RequestDashboard) -> Any:
        value = getattr(row.figures, name) if row.figures else None
        if value is None or places is None:
            return value
        return _fixed(value * scale, places)

    return get


def _goodput_wait(row: CandidateRow) -> Any:
    served = row.figures.goodput if row.figures else None
    return None if served is None else served.max_wait_ms


def _money(name: str) -> Callable:
    def get(row: CandidateRow, d: RequestDashboard) -> Any:
        value = getattr(row.figures, name) if row.figures else None
        return None if value is None else formatting.quantize_money(value, d.currency)

    return get


def _unit_cost(row: CandidateRow, d: RequestDashboard) -> Any:
    value = row.figures.cost_per_million_tokens if row.figures else None
    return None if value is None else formatting.quantize_unit_cost(value, d.currency)


def _perplexity_change(row: CandidateRow, d: RequestDashboard) -> str | None:
    change = (row.comparison or {}).get("perplexity_change")
    if row.candidate.is_baseline and row.measurement and row.measurement.perplexity is not None:
        change = 0.0
    return None if change is None else _fixed(change * 100, 1)


def _device(row: CandidateRow, d: RequestDashboard) -> Any:
    env = row.candidate.environment
    return env.get("device_name") or env.get("device")


def _by_batch(figure: Figure) -> Column:
    def get(row: CandidateRow, d: RequestDashboard) -> str | None:
        points = row.measurement.latency if row.measurement else ()
        cells = [f"{p.batch_size}: {figure.get(p)}" for p in points if figure.get(p) is not None]
        return "; ".join(cells) or None

    return Column(f"{figure.name}_by_batch", get)


# --- the batch sweep and the quality figures of the raw-figures page ----------------------------------


def _point(name: str) -> Callable[[Any], Any]:
    return lambda point: getattr(point, name)


BATCH = Figure("batch_size", _("Batch"), _point("batch_size"))
ITERATIONS = Figure("iterations", _("Iterations"), _point("iterations"), by_batch=True)


def _shown(name: str, prefix: str = "") -> Callable[[Any], Any]:
    return lambda point: latency.percentile(point, name, prefix)


# The timing's trust, the last figures of both sweeps.
TRUST_SWEEP = (
    Figure(
        "speedup",
        _("Speedup"),
        _point("speedup"),
        by_batch=True,
        display=lambda point: latency.speedup(point, None, is_baseline=False),
    ),
    Figure("host", _("Host during timing"), _point("load_avg"), display=latency.host_text),
    Figure("unstable", _("Verdict"), _point("unstable"), display=latency.unstable_text),
)

CLASSIFICATION_SWEEP = (
    BATCH,
    Figure("p50_ms", "p50", _point("p50_ms"), show.ms, display=_shown("p50")),
    Figure("p95_ms", "p95", _point("p95_ms"), show.ms, display=_shown("p95")),
    Figure("p99_ms", "p99", _point("p99_ms"), show.ms, display=_shown("p99")),
    Figure("mean_ms", _("Mean"), _point("mean_ms"), show.ms, by_batch=True),
    Figure("throughput_rps", _("Throughput (req/s)"), _point("throughput_rps"), show.number),
    ITERATIONS,
    Figure("mean_tokens", _("Mean tokens"), _point("mean_tokens"), show.number),
    *TRUST_SWEEP,
)

GENERATION_SWEEP = (
    BATCH,
    Figure("prompt_tokens", _("Prompt tokens"), _point("prompt_tokens"), show.number),
    Figure("new_tokens", _("New tokens"), _point("new_tokens")),
    Figure("ttft_p50_ms", _("TTFT p50"), _point("ttft_p50_ms"), show.ms),
    Figure("ttft_p95_ms", _("TTFT p95"), _point("ttft_p95_ms"), show.ms, display=_shown("p95", "ttft_")),
    Figure("ttft_p99_ms", _("TTFT p99"), _point("ttft_p99_ms"), show.ms, display=_shown("p99", "ttft_")),
    Figure("itl_p50_ms", _("Inter-token p50"), _point("itl_p50_ms"), show.ms),
    Figure("itl_p95_ms", _("Inter-token p95"), _point("itl_p95_ms"), show.ms, display=_shown("p95", "itl_")),
    Figure("itl_p99_ms", _("Inter-token p99"), _point("itl_p99_ms"), show.ms, display=_shown("p99", "itl_")),
    Figure("p50_ms", _("Whole reply p50"), _point("p50_ms"), show.ms, display=_shown("p50")),
    Figure("p95_ms", _("Whole reply p95"), _point("p95_ms"), show.ms, display=_shown("p95")),
    Figure("mean_ms", _("Whole reply mean"), _point("mean_ms"), show.ms, by_batch=True),
    Figure("tokens_per_s", _("Output tokens/s"), _point("tokens_per_s"), show.number),
    ITERATIONS,
    *TRUST_SWEEP,
)

CLASSIFICATION_QUALITY = (
    Figure("accuracy", _("Accuracy"), _point("accuracy"), lambda v: show.pct(v, 2)),
    Figure("macro_f1", _("Macro-F1"), _point("macro_f1"), lambda v: show.pct(v, 2)),
)
GENERATION_QUALITY = (
    Figure("perplexity", _("Perplexity"), _point("perplexity"), lambda v: show.number(v, 3)),
    Figure(
        "exact_match",
        _("Exact match"),
        _point("exact_match"),
        show.pct,
        missing=_("no reference completions in the data"),
    ),
)


# --- the candidates ---------------------------------------------------------------------------------------


def task_columns(generative: bool, sweep: Sequence[Figure]) -> tuple[Column, ...]:
    """The columns both tasks share, in the CSV's order; the table labels differ by task."""

    def shown(column: Column, table: bool) -> Column:
        return column if table else replace(column, label=None)

    classification = not generative
    return (
        Column("request_id", lambda row, d: d.poc_request.pk),
        Column("request_title", lambda row, d: d.poc_request.title),
        Column("scenario", lambda row, d: "what-if" if d.is_whatif else "as filed"),
        Column("currency", lambda row, d: d.currency),
        Column("candidate_id", lambda row, d: row.candidate.pk),
        Column("candidate", lambda row, d: row.candidate.label, _("Candidate"), "candidate", WHO, False),
        Column("is_baseline", lambda row, d: row.candidate.is_baseline),
        Column("status", lambda row, d: row.candidate.status, _("Status"), "status", WHO, False),
        shown(Column("accuracy", _measured("accuracy"), _("Accuracy"), "accuracy", QUALITY), classification),
        shown(Column("macro_f1", _measured("macro_f1"), _("Macro-F1"), "pct"), classification),
        shown(
            Column("p50_ms_batch1", _batch1("p50_ms"), "p50", "percentile", shown=_percentile("p50")),
            classification,
        ),
        shown(
            Column(
                "p95_ms_batch1", _batch1("p95_ms"), "p95", "percentile", QUALITY, shown=_percentile("p95")
            ),
            classification,
        ),
        shown(
            Column("p99_ms_batch1", _p99_batch1, "p99", "percentile", shown=_percentile("p99")),
            classification,
        ),
        Column(
            "speedup",
            lambda row, d: None,
            _("Speedup (whole reply)") if generative else _("Speedup"),
            "speedup",
            csv=False,
            shown=_speedup,
        ),
        Column(
            "capacity_rps_per_replica",
            _figure("capacity_rps", 3),
            _("Capacity at the targets (req/s per replica)")
            if generative
            else _("Capacity at the target (req/s per replica)"),
            "capacity_goodput_generation" if generative else "capacity_goodput",
        ),
        Column("capacity_batch_size", _figure("capacity_batch_size")),
        # Goodput (the capacity where measured): its batcher's max wait; the static figure is its upper bound.
        Column("goodput_max_wait_ms", lambda row, d: _goodput_wait(row)),
        Column("static_capacity_rps_per_replica", _figure("static_capacity_rps", 3)),
        Column("replicas", _figure("replicas"), _("Replicas"), "count"),
        Column("monthly_cost", _money("monthly_cost"), _("Monthly cost"), "money", MONEY),
        Column("cost_per_1m_requests", _money("cost_per_million"), _("Cost per 1M requests"), "money"),
        Column("monthly_savings", _money("monthly_savings"), _("Monthly savings"), "savings", MONEY),
        Column("one_time_cost", _money("one_time_cost"), _("One-time cost"), "money", MONEY),
        Column("payback_months", _figure("payback_months", 2), _("Payback"), "payback", MONEY),
        Column(
            "roi_over_horizon_pct", _figure("roi", 1, scale=100), _("ROI over %(months)s mo"), "roi", MONEY
        ),
        Column("total_cost_over_horizon", _money("total_cost_over_horizon")),
        Column(
            "energy_kwh_month",
            _figure("energy_kwh_month", 3),
            _("Energy (kWh/month)"),
            "number1",
            needs_power=True,
        ),
        Column("co2_kg_month", _figure("co2_kg_month", 3), _("CO₂ (kg/month)"), "number1", needs_power=True),
        Column(
            "feasible",
            lambda row, d: row.figures.feasible if row.figures else None,
            _("Feasible"),
            "feasible",
            VERDICT,
            False,
        ),
        Column("recommended", lambda row, d: row.recommended),
        Column("reasons", lambda row, d: "; ".join(row.blockers) or row.candidate.error),
        Column("size_bytes", _measured("size_bytes"), _("Size"), "size"),
        Column("size_ratio", lambda row, d: None, _("Size ratio"), "size_ratio", csv=False),
        Column("parameters", _measured("parameters")),
        Column("nonzero_parameters", _measured("nonzero_parameters")),
        Column("device", _device),
        Column("measured_at", lambda row, d: c.isoformat() if (c := row.candidate.measured_at) else None),
        Column(
            "raw_figures",
            lambda row, d: None,
            _("Measurement"),
            "raw",
            VERDICT,
            False,
            csv=False,
            printed=False,
        ),
        *[_by_batch(figure) for figure in sweep if figure.by_batch],
        *_trust_columns(generative),
    )


CLASSIFICATION_COLUMNS = task_columns(False, CLASSIFICATION_SWEEP)

# Text generation appends its own columns (the shared ones stay where they are; accuracy and macro-F1 are
# empty). Per-token costs keep two places more than the currency's minor unit (see quantize_unit_cost).
GENERATION_COLUMNS = (
    *task_columns(True, GENERATION_SWEEP),
    Column("perplexity", _measured("perplexity"), _("Perplexity"), "perplexity", QUALITY),
    Column("perplexity_change_pct", _perplexity_change),
    Column("exact_match", _measured("exact_match"), _("Exact match"), "pct"),
    Column("ttft_p50_ms_batch1", _batch1("ttft_p50_ms"), _("TTFT p50"), "ms"),
    Column(
        "ttft_p95_ms_batch1",
        _batch1("ttft_p95_ms"),
        _("TTFT p95"),
        "percentile",
        QUALITY,
        shown=_percentile("p95", "ttft_"),
    ),
    Column("itl_p50_ms_batch1", _batch1("itl_p50_ms"), _("Inter-token p50"), "ms"),
    Column(
        "itl_p95_ms_batch1",
        _batch1("itl_p95_ms"),
        _("Inter-token p95"),
        "percentile",
        QUALITY,
        shown=_percentile("p95", "itl_"),
    ),
    Column(
        "tokens_per_s_batch1", _batch1("tokens_per_s"), _("Output tokens/s by batch size"), "tokens_per_s"
    ),
    Column("output_tokens_per_request", lambda row, d: d.economics.output_tokens_per_request),
    Column("output_tokens_per_s_per_replica", _figure("tokens_per_s_capacity", 1)),
    Column("cost_per_1m_output_tokens", _unit_cost, _("Cost per 1M output tokens"), "unit_money", MONEY),
    Column("peak_memory_bytes", _measured("peak_memory_bytes"), _("Peak memory"), "size"),
)


def csv_header(columns: Sequence[Column]) -> list[str]:
    return [c.name for c in columns if c.csv]


def table_columns(columns: Sequence[Column], *, has_power: bool) -> list[Column]:
    """The columns the candidates table shows, a manager's first (a stable sort keeps the list's order)."""
    shown = [c for c in columns if c.label is not None and (has_power or not c.needs_power)]
    return sorted(shown, key=lambda c: c.group)
