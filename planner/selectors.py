"""Reads: the queries behind the pages, each scoped to what the user may see. What the pages make of the
rows (view models, charts, totals, wording, exports) lives in planner.dashboard."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from planner.models import Candidate, PocRequest, Team


def _member_team_ids(user: Any) -> QuerySet:
    """The ids of the user's teams, as a subquery (no query of its own)."""
    return Team.members.through.objects.filter(user_id=user.pk).values("team_id")


def poc_request_list_for_user(*, user: Any) -> QuerySet[PocRequest]:
    """The requests of the user's teams; every request for staff."""
    qs = PocRequest.objects.select_related("hardware", "owner", "team", "decided_by")
    return qs if user.is_staff else qs.filter(team_id__in=_member_team_ids(user))


def team_list_for_filing(*, user: Any) -> QuerySet[Team]:
    """The teams the user may file a request for: their own; every team for staff."""
    return Team.objects.all() if user.is_staff else Team.objects.filter(pk__in=_member_team_ids(user))


def poc_request_get_for_user(*, user: Any, pk: int) -> PocRequest:
    """The request with its candidates; 404 (DoesNotExist) when the user may not see it."""
    return poc_request_list_for_user(user=user).prefetch_related("candidates").get(pk=pk)


def candidate_get_for_user(*, user: Any, request_pk: int, pk: int) -> Candidate:
    """One candidate with its request; DoesNotExist when the user may not see the request."""
    qs = Candidate.objects.select_related("request__hardware", "request__owner", "request__team")
    if not user.is_staff:
        qs = qs.filter(request__team_id__in=_member_team_ids(user))
    return qs.get(request_id=request_pk, pk=pk)


def portfolio_requests(
    *, user: Any, status: str = "", owner_id: int | None = None, outcome: str = ""
) -> QuerySet[PocRequest]:
    """The requests the user may see, filtered, with their summaries (one query per page)."""
    qs = poc_request_list_for_user(user=user).select_related("summary")
    if status:
        qs = qs.filter(status=status)
    if owner_id:
        qs = qs.filter(owner_id=owner_id)
    if outcome == "pending":
        qs = qs.filter(summary__isnull=True)
    elif outcome:
        qs = qs.filter(summary__outcome=outcome)
    return qs


def portfolio_owners(*, user: Any) -> QuerySet:
    """Whose requests the user may filter by: the owners of the requests the user may see."""
    users = get_user_model().objects.order_by("username")
    if not user.is_staff:
        return users.filter(
            pk__in=PocRequest.objects.filter(team_id__in=_member_team_ids(user)).values("owner_id")
        )
    return users.filter(poc_requests__isnull=False).distinct()
