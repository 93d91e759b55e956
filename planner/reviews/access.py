"""Who may see and enter a review. Seeing it is the request's team's (the selectors: another team's
request is not found); entering actual figures is for managers, as deciding is."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.utils.translation import gettext as _


def can_enter_actuals(user: Any) -> bool:
    return user.is_staff or user.has_perm("planner.decide_pocrequest")


def require_actuals(user: Any) -> None:
    if not can_enter_actuals(user):
        raise PermissionDenied(_("Only a manager of the request's team can enter actual figures."))
