"""The pages' rules (planner.permissions) as DRF permission classes: the same checks and messages.
Which requests a user sees is the selectors' business: another team's request is not found (404)."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

from planner import permissions


class FilesRequests(BasePermission):
    """Reading is for every member; filing (POST) for requesters (planner.permissions.require_filing)."""

    def has_permission(self, request: Any, view: Any) -> bool:
        if request.method not in SAFE_METHODS:
            permissions.require_filing(request.user)
        return True


class ViewsPortfolio(BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        permissions.require_portfolio(request.user)
        return True


class Decides(BasePermission):
    """Checked on the request itself, after it was found, as the page does: another team's is 404 first."""

    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        permissions.require_decide(request.user)
        return True
