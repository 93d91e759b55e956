"""The review of an approved switch: the frozen prediction against the months entered since. Arithmetic
only (the rows in, frozen dataclasses out), so every figure can be checked by hand.

For month i with R_i requests served and a serving bill S_i:

- predicted requests a month: ``requests per day × 730 / 24`` (the ROI's 730-hour month);
- what the current model would have cost that month (the counterfactual): the predicted baseline monthly
  cost scaled by the traffic, ``baseline monthly cost × R_i / predicted requests a month``;
- actual savings_i: ``counterfactual_i − S_i − predicted maintenance a month``; predicted savings_i: the
  predicted monthly savings;
- cumulative cash flow after n months: ``−one-time cost + Σ savings`` (actual and predicted alike);
- gap: ``(Σ actual savings − Σ predicted savings) / Σ predicted savings × 100`` over the months entered;
- payback reached: the first month whose actual cumulative cash flow is ≥ 0; otherwise months still to go:
  ``−cumulative cash flow / average actual savings a month`` (None when the average is not > 0);
- shortfall: ``Σ actual savings < share × Σ predicted savings`` (share: REVIEW_SHORTFALL_SHARE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from planner.models import MonthlyActual, SwitchPrediction

HOURS_PER_MONTH = Decimal(730)


def predicted_requests_per_month(requests_per_day: int) -> Decimal:
    return Decimal(requests_per_day) * HOURS_PER_MONTH / 24


@dataclass(frozen=True)
class ReviewMonth:
    month: date
    requests: int
    serving_cost: Decimal
    counterfactual_cost: Decimal  # the current model's bill at this month's traffic
    actual_savings: Decimal
    predicted_savings: Decimal
    actual_cash_flow: Decimal  # cumulative, after this month
    predicted_cash_flow: Decimal


@dataclass(frozen=True)
class Review:
    prediction: SwitchPrediction
    months: tuple[ReviewMonth, ...]
    actual_savings: Decimal  # Σ over the months entered
    predicted_savings: Decimal
    gap_pct: Decimal | None  # None before a month is entered, or with no predicted savings
    payback_month: date | None  # the month the actual cash flow reached 0
    months_to_go: Decimal | None  # when not reached: at the average actual savings so far
    shortfall: bool

    @property
    def currency(self) -> str:
        return self.prediction.currency

    @property
    def gap(self) -> Decimal | None:
        """The gap as a fraction (-0.25: a quarter below the prediction), for the percent formatting."""
        return None if self.gap_pct is None else self.gap_pct / 100

    @property
    def last_month(self) -> date | None:
        return self.months[-1].month if self.months else None

    @property
    def cash_flow(self) -> Decimal:
        return self.months[-1].actual_cash_flow if self.months else -self.prediction.one_time_cost

    def chart(self) -> dict[str, object]:
        """The chart's data (plotted by review.js): both cumulative cash flows by month since approval,
        the predicted one over the horizon (or as far as the months entered, if further)."""
        p = self.prediction
        length = max(p.horizon_months, len(self.months))
        predicted = [-p.one_time_cost + n * p.monthly_savings for n in range(length + 1)]
        actual = [-p.one_time_cost] + [m.actual_cash_flow for m in self.months]
        # Month 0 is the approval; the months entered by name, the rest of the horizon by number.
        labels = ["0"] + [m.month.strftime("%Y-%m") for m in self.months]
        labels += [str(n) for n in range(len(self.months) + 1, length + 1)]
        return {
            "currency": p.currency,
            "labels": labels,
            "predicted": [float(v) for v in predicted],
            "actual": [float(v) for v in actual],
        }


def review_figures(
    *, prediction: SwitchPrediction, actuals: Sequence[MonthlyActual], shortfall_share: Decimal
) -> Review:
    per_month = predicted_requests_per_month(prediction.requests_per_day)
    actual_flow = predicted_flow = -prediction.one_time_cost
    months, payback = [], None
    for row in sorted(actuals, key=lambda a: a.month):
        counterfactual = prediction.baseline_monthly_cost * Decimal(row.requests) / per_month
        saved = counterfactual - row.serving_cost - prediction.monthly_maintenance
        actual_flow += saved
        predicted_flow += prediction.monthly_savings
        if payback is None and actual_flow >= 0:
            payback = row.month
        months.append(
            ReviewMonth(
                month=row.month,
                requests=row.requests,
                serving_cost=row.serving_cost,
                counterfactual_cost=counterfactual,
                actual_savings=saved,
                predicted_savings=prediction.monthly_savings,
                actual_cash_flow=actual_flow,
                predicted_cash_flow=predicted_flow,
            )
        )
    actual = sum((m.actual_savings for m in months), Decimal(0))
    predicted = prediction.monthly_savings * len(months)
    gap = (actual - predicted) / predicted * 100 if months and predicted > 0 else None
    to_go = None
    if payback is None and months and actual > 0:
        to_go = -actual_flow / (actual / len(months))
    return Review(
        prediction=prediction,
        months=tuple(months),
        actual_savings=actual,
        predicted_savings=predicted,
        gap_pct=gap,
        payback_month=payback,
        months_to_go=to_go,
        shortfall=bool(months) and predicted > 0 and actual < shortfall_share * predicted,
    )
