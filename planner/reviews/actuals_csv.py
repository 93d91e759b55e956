"""Months of actual figures from a CSV file (month, requests, serving_cost): every row is checked, and a
file with any bad row is refused whole, each bad row named by its line number and what is wrong with it."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from django.utils import timezone
from django.utils.translation import gettext as _

COLUMNS = ("month", "requests", "serving_cost")
MAX_ROWS = 1200  # a century of months
MAX_REQUESTS = 10**15
MAX_COST = Decimal("1e14")


@dataclass(frozen=True)
class ActualRow:
    month: date
    requests: int
    serving_cost: Decimal


class ActualsFileError(Exception):
    """The file was refused; ``errors`` says why, line by line ("line 3: …")."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def parse_month(text: str) -> date | None:
    """'2025-03' (or a date in it, '2025-03-31') as the first day of that month; None if it is neither."""
    parts = text.strip().split("-")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        return None
    try:
        day = date(int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else 1)
    except ValueError:
        return None
    return day.replace(day=1)


def check_actual(month: date, requests: int, serving_cost: Decimal) -> list[str]:
    """What is wrong with one month's figures (empty when nothing is)."""
    errors = []
    if month > timezone.localdate().replace(day=1):
        errors.append(_("%(month)s has not begun yet") % {"month": month.strftime("%Y-%m")})
    if not 0 <= requests <= MAX_REQUESTS:
        errors.append(_("requests must be between 0 and %(max)s") % {"max": f"{MAX_REQUESTS:,}"})
    if not (serving_cost.is_finite() and 0 <= serving_cost < MAX_COST):
        errors.append(_("serving_cost must be an amount ≥ 0"))
    elif serving_cost != serving_cost.quantize(Decimal("0.01")):
        errors.append(_("serving_cost may have at most 2 decimal places"))
    return errors


def _row(values: dict[str, str]) -> tuple[ActualRow | None, list[str]]:
    errors = []
    month = parse_month(values.get("month") or "")
    if month is None:
        errors.append(_("month must look like 2025-03, got %(value)r") % {"value": values.get("month") or ""})
    raw_requests = (values.get("requests") or "").strip().replace(",", "").replace("_", "")
    requests = int(raw_requests) if raw_requests.isdigit() else None
    if requests is None:
        errors.append(
            _("requests must be a whole number ≥ 0, got %(value)r") % {"value": values.get("requests") or ""}
        )
    try:
        cost: Decimal | None = Decimal((values.get("serving_cost") or "").strip().replace(",", ""))
    except InvalidOperation:
        cost = None
        errors.append(
            _("serving_cost must be an amount like 1234.50, got %(value)r")
            % {"value": values.get("serving_cost") or ""}
        )
    if month is None or requests is None or cost is None:
        return None, errors
    errors += check_actual(month, requests, cost)
    return (None if errors else ActualRow(month, requests, cost)), errors


def parse_actuals(raw: bytes) -> list[ActualRow]:
    """The file's rows; ActualsFileError with every problem (header, then line by line) otherwise."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ActualsFileError([_("The file is not UTF-8 text: save the CSV as UTF-8.")]) from None
    reader = csv.DictReader(io.StringIO(text))
    found = [name.strip() for name in reader.fieldnames or []]
    if not set(COLUMNS) <= set(found):
        raise ActualsFileError(
            [
                _("The CSV needs the columns %(needed)s; found: %(found)s")
                % {"needed": ", ".join(COLUMNS), "found": ", ".join(found) or _("nothing")}
            ]
        )
    rows: list[ActualRow] = []
    errors: list[str] = []
    seen: dict[date, int] = {}  # month: the line it is on
    for values in reader:
        line = reader.line_num
        values = {(k or "").strip(): (v or "") for k, v in values.items() if isinstance(v, str)}
        if not any(values.values()):
            continue  # a blank line
        row, problems = _row(values)
        if row is not None and row.month in seen:
            problems = [
                _("%(month)s is already on line %(line)s")
                % {"month": row.month.strftime("%Y-%m"), "line": seen[row.month]}
            ]
        errors += [_("line %(line)s: %(problem)s") % {"line": line, "problem": p} for p in problems]
        if row is not None and not problems:
            seen[row.month] = line
            rows.append(row)
        if len(rows) + len(errors) > MAX_ROWS:
            raise ActualsFileError([_("The file has more than %(max)s rows.") % {"max": MAX_ROWS}])
    if errors:
        raise ActualsFileError(errors)
    if not rows:
        raise ActualsFileError([_("The file has no rows: one line per month after the header.")])
    return rows
