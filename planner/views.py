from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from planner import selectors, services
from planner.forms import DEFAULTS, PocRequestForm
from planner.models import HardwareProfile, PocRequest
from plugins import registry
from plugins.base import ParamError


@require_GET
def request_list(request: HttpRequest) -> HttpResponse:
    poc_requests = selectors.poc_request_list_for_user(user=request.user)[:200]
    return render(request, "planner/request_list.html", {"poc_requests": poc_requests})


@require_http_methods(["GET", "POST"])
def request_create(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = PocRequestForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                poc_request = services.poc_request_create(owner=request.user, **form.service_kwargs())
            except ParamError as exc:
                form.add_error("techniques", str(exc))
            else:
                messages.success(request, "Request filed; the worker measures the baseline first.")
                return redirect("planner:request-detail", pk=poc_request.pk)
    else:
        initial = {**DEFAULTS, "hardware": HardwareProfile.objects.filter(device_kind="cpu").first()}
        form = PocRequestForm(initial=initial)
    return render(request, "planner/request_form.html", {"form": form})


def _get_request(request: HttpRequest, pk: int) -> PocRequest:
    try:
        return selectors.poc_request_get_for_user(user=request.user, pk=pk)
    except PocRequest.DoesNotExist:
        raise Http404("No such request") from None


@require_GET
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    poc_request = _get_request(request, pk)
    report = selectors.poc_request_roi(poc_request=poc_request)
    comparisons = selectors.candidate_comparisons(poc_request=poc_request)
    rows = [
        {
            "candidate": c,
            "roi": report.row(str(c.pk)) if report and c.status == c.Status.MEASURED else None,
            "comparison": comparisons.get(c.pk),
            "batch1": c.latency_at(1),
        }
        for c in poc_request.candidates.all()
    ]
    return render(
        request,
        "planner/request_detail.html",
        {"poc_request": poc_request, "report": report, "rows": rows},
    )


@require_GET
def request_progress(request: HttpRequest, pk: int) -> JsonResponse:
    poc_request = _get_request(request, pk)
    return JsonResponse(
        {
            "status": poc_request.status,
            "progress": poc_request.progress,
            "message": poc_request.progress_message,
            "error": poc_request.error,
            "candidates": {str(c.pk): c.status for c in poc_request.candidates.all()},
        }
    )


@require_GET
def technique_list(request: HttpRequest) -> HttpResponse:
    techniques = [
        {"cls": cls, "version": registry.version_of(name), "params": [p.describe() for p in cls.params]}
        for name, cls in registry.techniques().items()
    ]
    return render(
        request, "planner/technique_list.html", {"techniques": techniques, "broken": registry.broken()}
    )
