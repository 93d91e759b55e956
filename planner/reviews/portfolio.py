"""The portfolio's review sections over the requests a manager sees: realised against predicted savings of
the approved switches, the ones due for review, the flagged ones, and the recommendations that changed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from planner.models import PocRequest, RecommendationChange
from planner.reviews.figures import Review, review_figures
from planner.reviews.wording import change_reason

SHOWN = 20


@dataclass(frozen=True)
class Realised:
    """Per currency, over the approved switches with months entered: savings realised and predicted over
    those same months."""

    currency: str
    switches: int
    actual_savings: Decimal
    predicted_savings: Decimal

    @property
    def gap(self) -> Decimal | None:
        """(actual − predicted) / predicted, as a fraction; None without predicted savings."""
        if self.predicted_savings <= 0:
            return None
        return (self.actual_savings - self.predicted_savings) / self.predicted_savings


def _reviews(requests: QuerySet[PocRequest]) -> list[Review]:
    approved = (
        requests.filter(decision=PocRequest.Decision.APPROVED, prediction__isnull=False)
        .select_related("prediction")
        .prefetch_related("actuals")
    )
    share = settings.REVIEW_SHORTFALL_SHARE
    return [
        review_figures(prediction=r.prediction, actuals=list(r.actuals.all()), shortfall_share=share)
        for r in approved
    ]


def review_sections(*, requests: QuerySet[PocRequest]) -> dict[str, Any]:
    reviews = _reviews(requests)
    by_currency: dict[str, list[Review]] = {}
    for review in reviews:
        if review.months:
            by_currency.setdefault(review.currency, []).append(review)
    realised = [
        Realised(
            currency=currency,
            switches=len(group),
            actual_savings=sum((r.actual_savings for r in group), Decimal(0)),
            predicted_savings=sum((r.predicted_savings for r in group), Decimal(0)),
        )
        for currency, group in sorted(by_currency.items())
    ]
    # Due: last month's figures are not in yet (a switch approved before this month began).
    this_month = timezone.localdate().replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    due = [
        r
        for r in reviews
        if timezone.localtime(r.prediction.approved_at).date() < this_month
        and (not r.months or r.months[-1].month < last_month)
    ]
    changes = (
        RecommendationChange.objects.filter(request__in=requests.values("pk"))
        .select_related("request")
        .order_by("-detected_at")
    )
    latest: dict[int, dict[str, Any]] = {}
    for change in changes[: SHOWN * 5]:
        if change.request_id not in latest and len(latest) < SHOWN:
            decided = change.request.decided_at
            latest[change.request_id] = {
                "change": change,
                "reason": change_reason(change),
                "since_decision": decided is not None and change.detected_at > decided,
            }
    return {
        "realised": realised,
        "due": due[:SHOWN],
        "flagged": [r for r in reviews if r.prediction.shortfall_at is not None][:SHOWN],
        "changed": list(latest.values()),
        "changed_since_decision": sum(1 for c in latest.values() if c["since_decision"]),
    }
