"""Who may do what.

Roles are groups holding model permissions (migration 0005): *requester* files requests, *manager* sees the
portfolio and decides on recommendations, *engineer* manages hardware profiles. Which requests a user sees
is a matter of team membership, enforced by the selectors (``selectors.poc_request_list_for_user``): a
request of another team is not found (404) rather than forbidden, so its id reveals nothing. Staff may do
everything and see every team's requests.

These checks use ``user.has_perm``, which loads a user's permissions once per request (two queries) and
caches them on the user object.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.utils.translation import gettext as _

from planner.models import PocRequest


def can_file_requests(user: Any) -> bool:
    return user.is_staff or user.has_perm("planner.add_pocrequest")


def can_view_portfolio(user: Any) -> bool:
    return user.is_staff or user.has_perm("planner.view_portfolio")


def can_decide(user: Any, poc_request: PocRequest | None = None) -> bool:
    """Whether the user may approve or reject recommendations (of this request, when given: it must be
    finished). The request must come from ``poc_request_get_for_user``, which already checked the team."""
    allowed = user.is_staff or user.has_perm("planner.decide_pocrequest")
    return allowed and (poc_request is None or poc_request.status == PocRequest.Status.SUCCEEDED)


def can_manage_hardware(user: Any, action: str = "change") -> bool:
    """Engineers (and staff) add and change hardware profiles on the planner's hardware page."""
    return user.is_staff or user.has_perm(f"planner.{action}_hardwareprofile")


def require_portfolio(user: Any) -> None:
    if not can_view_portfolio(user):
        raise PermissionDenied(
            _(
                "The portfolio is for managers. Your team's requests are listed on the Requests page; ask "
                "an administrator for the manager role if you need the portfolio."
            )
        )


def require_filing(user: Any) -> None:
    if not can_file_requests(user):
        raise PermissionDenied(
            _("You cannot file requests. Ask an administrator to add you to a team with the requester role.")
        )


def require_decide(user: Any) -> None:
    if not (user.is_staff or user.has_perm("planner.decide_pocrequest")):
        raise PermissionDenied(_("Only a manager of the request's team can approve or reject it."))


def require_hardware(user: Any, action: str = "change") -> None:
    if not can_manage_hardware(user, action):
        raise PermissionDenied(
            _("Hardware profiles are managed by engineers; ask an administrator for the engineer role.")
        )
