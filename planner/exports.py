"""CSV exports of a request's candidates and of the portfolio.

Columns are stable English identifiers (spreadsheets and scripts key on them), whatever the UI language.
Money is the displayed amount (rounded half up to the currency's minor unit) without symbols or grouping,
with the currency in its own column; the file starts with a UTF-8 byte-order mark so that spreadsheet
programs read Japanese titles correctly.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from planner.models import PocRequest
from planner.selectors import RequestDashboard, describe_blocking
from planner.templatetags.planner_format import quantize_money, quantize_unit_cost

BOM = "\ufeff"

CANDIDATE_COLUMNS = [
    "request_id",
    "request_title",
    "scenario",
    "currency",
    "candidate_id",
    "candidate",
    "is_baseline",
    "status",
    "accuracy",
    "macro_f1",
    "p50_ms_batch1",
    "p95_ms_batch1",
    "p99_ms_batch1",
    "capacity_rps_per_replica",
    "capacity_batch_size",
    "replicas",
    "monthly_cost",
    "cost_per_1m_requests",
    "monthly_savings",
    "one_time_cost",
    "payback_months",
    "roi_over_horizon_pct",
    "total_cost_over_horizon",
    "energy_kwh_month",
    "co2_kg_month",
    "feasible",
    "recommended",
    "reasons",
    "size_bytes",
    "parameters",
    "nonzero_parameters",
    "device",
    "measured_at",
]

# Appended for text-generation requests (the columns above stay where they are; accuracy and macro_f1 are
# empty). Per-token costs keep two places more than the currency's minor unit (see quantize_unit_cost).
GENERATION_COLUMNS = [
    "perplexity",
    "perplexity_change_pct",
    "exact_match",
    "ttft_p50_ms_batch1",
    "ttft_p95_ms_batch1",
    "itl_p50_ms_batch1",
    "itl_p95_ms_batch1",
    "tokens_per_s_batch1",
    "output_tokens_per_request",
    "output_tokens_per_s_per_replica",
    "cost_per_1m_output_tokens",
    "peak_memory_bytes",
]

PORTFOLIO_COLUMNS = [
    "request_id",
    "title",
    "owner",
    "status",
    "hardware",
    "currency",
    "outcome",
    "recommended_candidate",
    "baseline_monthly_cost",
    "recommended_monthly_cost",
    "monthly_savings",
    "one_time_cost",
    "payback_months",
    "roi_over_horizon_pct",
    "horizon_months",
    "blocking",
    "created_at",
    "finished_at",
    "summary_computed_at",
    # Added later, at the end so that scripts reading columns by position keep working.
    "team",
    "decision",
    "decision_comment",
    "decided_by",
    "decided_at",
    "task",
]


def candidate_columns(dashboard: RequestDashboard) -> list[str]:
    """The header of a request's candidate export: the generation columns come with text generation."""
    return CANDIDATE_COLUMNS + (GENERATION_COLUMNS if dashboard.is_generative else [])


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(header: list[str], rows: Iterable[list[Any]]) -> Iterator[str]:
    """CSV text, line by line (for a streaming response)."""
    writer = csv.writer(_Echo())
    yield BOM + writer.writerow(header)
    for row in rows:
        yield writer.writerow([_cell(v) for v in row])


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    # A cell a spreadsheet would run as a formula (a title such as "=HYPERLINK(…)") is quoted as text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _money(value: Decimal | None, currency: str) -> Decimal | None:
    return None if value is None else quantize_money(value, currency)


def _fixed(value: Decimal | float | None, places: int) -> str | None:
    return None if value is None else f"{Decimal(str(value)):.{places}f}"


def candidate_rows(dashboard: RequestDashboard) -> Iterator[list[Any]]:
    poc_request, cur = dashboard.poc_request, dashboard.currency
    scenario = "what-if" if dashboard.is_whatif else "as filed"
    for row in dashboard.rows:
        c, f, b1 = row.candidate, row.figures, row.batch1 or {}
        extra = _generation_cells(dashboard, row) if dashboard.is_generative else []
        yield [
            poc_request.pk,
            poc_request.title,
            scenario,
            cur,
            c.pk,
            c.label,
            c.is_baseline,
            c.status,
            c.accuracy,
            c.macro_f1,
            b1.get("p50_ms"),
            b1.get("p95_ms"),
            b1.get("p99_ms"),
            _fixed(f.capacity_rps, 3) if f else None,
            row.capacity_batch,
            f.replicas if f else None,
            _money(f.monthly_cost, cur) if f else None,
            _money(f.cost_per_million, cur) if f else None,
            _money(f.monthly_savings, cur) if f else None,
            _money(f.one_time_cost, cur) if f else None,
            _fixed(f.payback_months, 2) if f else None,
            _fixed(f.roi * 100, 1) if f and f.roi is not None else None,
            _money(f.total_cost_over_horizon, cur) if f else None,
            _fixed(f.energy_kwh_month, 3) if f else None,
            _fixed(f.co2_kg_month, 3) if f else None,
            f.feasible if f else None,
            row.recommended,
            "; ".join(row.blockers) or c.error,
            c.size_bytes,
            c.parameters,
            c.nonzero_parameters,
            c.environment.get("device_name") or c.environment.get("device"),
            c.measured_at.isoformat() if c.measured_at else None,
            *extra,
        ]


def _generation_cells(dashboard: RequestDashboard, row: Any) -> list[Any]:
    c, f, b1, cur = row.candidate, row.figures, row.batch1 or {}, dashboard.currency
    change = (row.comparison or {}).get("perplexity_change")
    if c.is_baseline and c.perplexity is not None:
        change = 0.0
    return [
        c.perplexity,
        _fixed(change * 100, 1) if change is not None else None,
        c.exact_match,
        b1.get("ttft_p50_ms"),
        b1.get("ttft_p95_ms"),
        b1.get("itl_p50_ms"),
        b1.get("itl_p95_ms"),
        b1.get("tokens_per_s"),
        dashboard.economics.output_tokens_per_request,
        _fixed(f.tokens_per_s_capacity, 1) if f else None,
        quantize_unit_cost(f.cost_per_million_tokens, cur)
        if f and f.cost_per_million_tokens is not None
        else None,
        c.peak_memory_bytes,
    ]


def portfolio_rows(requests: Iterable[PocRequest]) -> Iterator[list[Any]]:
    """Rows of requests with their summary, owner, hardware, team and decider selected (one query)."""
    for r in requests:
        s = getattr(r, "summary", None)
        cur = r.currency
        yield [
            r.pk,
            r.title,
            r.owner.get_username(),
            r.status,
            r.hardware.name,
            cur,
            s.outcome if s else "pending",
            s.candidate_label if s else None,
            _money(s.baseline_monthly_cost, cur) if s else None,
            _money(s.monthly_cost, cur) if s else None,
            _money(s.monthly_savings, cur) if s else None,
            _money(s.one_time_cost, cur) if s else None,
            _fixed(s.payback_months, 2) if s else None,
            _fixed(s.roi * 100, 1) if s and s.roi is not None else None,
            r.horizon_months,
            " ".join(describe_blocking(s.blocking)) if s else None,
            r.created_at.isoformat(),
            r.finished_at.isoformat() if r.finished_at else None,
            s.computed_at.isoformat() if s else None,
            r.team.name,
            r.decision,
            r.decision_comment,
            r.decided_by.get_username() if r.decided_by else None,
            r.decided_at.isoformat() if r.decided_at else None,
            r.task,
        ]
