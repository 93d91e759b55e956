from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.i18n import set_language

from planner import estimate_views, views
from planner.api import downloads as api_downloads
from planner.api import urls as api_urls
from planner.reviews import views as review_views

planner_patterns = [
    path("", views.request_list, name="request-list"),
    path("portfolio/", views.portfolio, name="portfolio"),
    path("portfolio.csv", views.portfolio_csv, name="portfolio-csv"),
    path("requests/new/", views.request_create, name="request-create"),
    path("estimate/", estimate_views.request_estimate, name="request-estimate"),
    path("requests/<int:pk>/", views.request_detail, name="request-detail"),
    path("requests/<int:pk>/report/", views.request_report, name="request-report"),
    path("requests/<int:pk>/candidates.csv", views.request_csv, name="request-csv"),
    path(
        "requests/<int:pk>/candidates/<int:candidate_pk>/",
        views.candidate_measurement,
        name="candidate-measurement",
    ),
    path(
        "requests/<int:pk>/candidates/<int:candidate_pk>/download/",
        api_downloads.candidate_download,
        name="candidate-download",
    ),
    path("requests/<int:pk>/progress/", views.request_progress, name="request-progress"),
    path("requests/<int:pk>/decision/", views.request_decide, name="request-decide"),
    path("requests/<int:pk>/cancel/", views.request_cancel, name="request-cancel"),
    path("requests/<int:pk>/review/", review_views.request_review, name="request-review"),
    path("techniques/", views.technique_list, name="technique-list"),
    path("hardware/", views.hardware_list, name="hardware-list"),
    path("hardware/new/", views.hardware_edit, name="hardware-create"),
    path("hardware/<int:hardware_pk>/", views.hardware_edit, name="hardware-edit"),
]

urlpatterns = [
    path("", include((planner_patterns, "planner"))),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The language switcher works on the login page too.
    path("i18n/setlang/", login_not_required(set_language), name="set_language"),
    path("admin/", admin.site.urls),
    # The REST API, its OpenAPI schema and its docs page (planner/api, docs/api.md).
    path("api/", include((api_urls.urlpatterns, "api"))),
]
