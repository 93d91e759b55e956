"""The portfolio's figures: the summary stored per finished request (see PocRequestSummary for why it is
stored), and the totals, outcome counts and blocked requests over the requests a manager may see."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum

from planner import roi
from planner.dashboard import wording
from planner.models import PocRequest, PocRequestSummary


def summary_figures(*, report: roi.RoiReport) -> dict[str, Any]:
    """The PocRequestSummary fields derived from a request's ROI report (amounts not yet rounded)."""
    rec = report.recommendation
    chosen = report.row(rec.key) if rec.key else None
    return {
        "outcome": rec.outcome,
        "candidate_id": int(rec.key) if rec.key else None,
        "candidate_label": rec.name or "",
        "baseline_monthly_cost": report.baseline.monthly_cost,
        "monthly_cost": chosen.monthly_cost if chosen else None,
        "monthly_savings": chosen.monthly_savings if chosen else None,
        "one_time_cost": chosen.one_time_cost if chosen else None,
        "payback_months": chosen.payback_months if chosen else None,
        "roi": chosen.roi if chosen else None,
        "blocking": roi.blocking_targets(report),
    }


@dataclass(frozen=True)
class PortfolioTotal:
    """Totals over the requests with a recommendation (switch or keep), in one currency.

    A recommendation whose current model cannot serve within its target has no savings figure (there is no
    current cost to save against): it counts in ``switching`` and ``one_time_cost`` but not in the
    before/after costs, the savings or the payback, so that before − after = savings exactly."""

    currency: str
    requests: int
    switching: int
    baseline_monthly_cost: Decimal  # what the priced requests cost now
    monthly_cost: Decimal  # what they would cost with the recommended models
    monthly_savings: Decimal
    one_time_cost: Decimal  # of every recommended switch
    priced_one_time_cost: Decimal  # of the switches with a savings figure: the payback's numerator
    without_baseline_cost: int

    @property
    def payback_months(self) -> Decimal | None:
        return self.priced_one_time_cost / self.monthly_savings if self.monthly_savings > 0 else None

    @property
    def annual_savings(self) -> Decimal:
        return self.monthly_savings * 12


def portfolio_totals(*, requests: QuerySet[PocRequest]) -> list[PortfolioTotal]:
    """Per currency (amounts in different currencies are never added), over the requests with a
    recommendation: what they cost now, with the recommended models, the difference and the one-time cost."""
    zero = Decimal(0)
    recommended = [PocRequestSummary.Outcome.SWITCH, PocRequestSummary.Outcome.KEEP]
    priced = Q(summary__monthly_savings__isnull=False)
    rows = (
        requests.filter(summary__outcome__in=recommended)
        .order_by()
        .values("currency")
        .annotate(
            n=Count("pk"),
            switching=Count("pk", filter=Q(summary__outcome=PocRequestSummary.Outcome.SWITCH)),
            baseline=Sum("summary__baseline_monthly_cost", filter=priced),
            cost=Sum("summary__monthly_cost", filter=priced),
            savings=Sum("summary__monthly_savings"),
            one_time=Sum("summary__one_time_cost"),
            priced_one_time=Sum("summary__one_time_cost", filter=priced),
            no_baseline=Count("pk", filter=~priced),
        )
        .order_by("currency")
    )
    return [
        PortfolioTotal(
            currency=r["currency"],
            requests=r["n"],
            switching=r["switching"],
            baseline_monthly_cost=r["baseline"] or zero,
            monthly_cost=r["cost"] or zero,
            monthly_savings=r["savings"] or zero,
            one_time_cost=r["one_time"] or zero,
            priced_one_time_cost=r["priced_one_time"] or zero,
            without_baseline_cost=r["no_baseline"],
        )
        for r in rows
    ]


def portfolio_outcome_counts(*, requests: QuerySet[PocRequest]) -> dict[str, int]:
    """How many requests have each outcome; "pending" for those not finished (no summary yet)."""
    counts = {o: 0 for o in PocRequestSummary.Outcome.values} | {"pending": 0}
    for row in requests.order_by().values("summary__outcome").annotate(n=Count("pk")):
        counts[row["summary__outcome"] or "pending"] += row["n"]
    return counts


def portfolio_blocked(*, requests: QuerySet[PocRequest], limit: int) -> list[dict[str, Any]]:
    """Requests whose targets no model meets, each with its blocking targets as sentences."""
    blocked = requests.filter(summary__outcome=PocRequestSummary.Outcome.BLOCKED)[:limit]
    return [{"request": r, "lines": wording.blocking_sentences(r.summary.blocking)} for r in blocked]
