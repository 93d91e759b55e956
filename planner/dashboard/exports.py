"""CSV exports of a request's candidates and of the portfolio.

Columns are stable English identifiers (spreadsheets and scripts key on them), whatever the UI language.
A request's candidate columns are its task's column list (planner.dashboard.columns), the same list the
candidates table shows. Money is the displayed amount (rounded half up to the currency's minor unit)
without symbols or grouping, with the currency in its own column; the file starts with a UTF-8
byte-order mark so that spreadsheet programs read Japanese titles correctly.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import Any

from planner import formatting
from planner.dashboard import columns, wording
from planner.dashboard.request import RequestDashboard
from planner.models import PocRequest

BOM = "\ufeff"

# The classification header (text generation appends its own columns: planner.dashboard.columns).
CANDIDATE_COLUMNS = columns.csv_header(columns.CLASSIFICATION_COLUMNS)

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
    """The header of a request's candidate export."""
    return columns.csv_header(dashboard.task.columns)


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


def _money(value: Any, currency: str) -> Any:
    return None if value is None else formatting.quantize_money(value, currency)


def _fixed(value: Any, places: int) -> str | None:
    return None if value is None else formatting.fixed(value, places)


def candidate_rows(dashboard: RequestDashboard) -> Iterator[list[Any]]:
    shown = [c for c in dashboard.task.columns if c.csv]
    for row in dashboard.rows:
        yield [column.get(row, dashboard) for column in shown]


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
            " ".join(wording.blocking_sentences(s.blocking)) if s else None,
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
