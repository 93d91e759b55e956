"""/api/v1/ (token or session authentication), /api/schema/ (OpenAPI 3) and /api/docs/ (Swagger UI)."""

from __future__ import annotations

from typing import Any

from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerSplitView

from planner.api import actuals, views


def _token(view: Any) -> Any:
    """API views authenticate themselves (a token): the site's login redirect does not apply to them."""
    view.login_required = False
    return view


api_patterns = [
    path("requests/", _token(views.RequestListCreate.as_view()), name="request-list"),
    path("requests/<int:pk>/", _token(views.RequestDetail.as_view()), name="request-detail"),
    path("requests/<int:pk>/cancel/", _token(views.RequestCancel.as_view()), name="request-cancel"),
    path("requests/<int:pk>/decision/", _token(views.RequestDecision.as_view()), name="request-decision"),
    path("requests/<int:pk>/candidates/", _token(views.CandidateList.as_view()), name="candidate-list"),
    path("requests/<int:pk>/actuals/", _token(actuals.RequestActuals.as_view()), name="request-actuals"),
    path(
        "requests/<int:pk>/candidates/<int:candidate_pk>/",
        _token(views.CandidateDetail.as_view()),
        name="candidate-detail",
    ),
    path(
        "requests/<int:pk>/candidates/<int:candidate_pk>/download/",
        _token(views.CandidateDownload.as_view()),
        name="candidate-download",
    ),
    path("techniques/", _token(views.TechniqueList.as_view()), name="technique-list"),
    path("hardware/", _token(views.HardwareList.as_view()), name="hardware-list"),
    path("portfolio/", _token(views.Portfolio.as_view()), name="portfolio"),
]

urlpatterns = [
    path("v1/", include(api_patterns)),
    path("schema/", _token(SpectacularJSONAPIView.as_view()), name="schema"),
    # A page for people: the site's login applies; its script and styles are files under static/ (CSP).
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api:schema", template_name="planner/api_docs.html"),
        name="docs",
    ),
]
