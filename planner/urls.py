from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from planner import views

planner_patterns = [
    path("", views.request_list, name="request-list"),
    path("requests/new/", views.request_create, name="request-create"),
    path("requests/<int:pk>/", views.request_detail, name="request-detail"),
    path("requests/<int:pk>/progress/", views.request_progress, name="request-progress"),
    path("techniques/", views.technique_list, name="technique-list"),
]

urlpatterns = [
    path("", include((planner_patterns, "planner"))),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
