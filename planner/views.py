from __future__ import annotations

import dataclasses

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.choices import BaseChoiceIterator
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from planner import permissions, selectors, services
from planner.dashboard import exports
from planner.dashboard import portfolio as portfolio_figures
from planner.dashboard.request import RequestDashboard, candidate_page, poc_request_dashboard
from planner.dashboard_forms import PortfolioFilterForm, WhatIfForm
from planner.forms import DEFAULTS, DecisionForm, HardwareProfileForm, PocRequestForm
from planner.models import Candidate, HardwareProfile, PocRequest
from plugins import registry
from plugins.base import ParamError
from workers.record import Measurement

PORTFOLIO_PAGE_SIZE = 50
MEASUREMENT_FIELDS = [f.name for f in dataclasses.fields(Measurement)]
BLOCKED_SHOWN = 20


def _portfolio(request: HttpRequest) -> tuple[PortfolioFilterForm, QuerySet[PocRequest]]:
    form = PortfolioFilterForm(request.GET or None, owners=selectors.portfolio_owners(user=request.user))
    return form, selectors.portfolio_requests(user=request.user, **form.filters())


@require_GET
def request_list(request: HttpRequest) -> HttpResponse:
    """Home: managers and staff get the portfolio; everyone else the requests of their teams."""
    if permissions.can_view_portfolio(request.user):
        query = request.GET.urlencode()
        return redirect(reverse("planner:portfolio") + (f"?{query}" if query else ""))
    poc_requests = selectors.poc_request_list_for_user(user=request.user).select_related("summary")
    page = Paginator(poc_requests, PORTFOLIO_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "planner/team_requests.html",
        {
            "page": page,
            # Said only when there is nothing to list: one query fewer on every other page.
            # (LoginRequiredMiddleware lets only signed-in users this far.)
            "has_team": page.paginator.count > 0
            or (request.user.is_authenticated and request.user.teams.exists()),
            "can_file": permissions.can_file_requests(request.user),
        },
    )


@require_GET
def portfolio(request: HttpRequest) -> HttpResponse:
    """The portfolio: every request of the manager's teams, with its recommendation and the totals."""
    permissions.require_portfolio(request.user)
    form, poc_requests = _portfolio(request)
    page = Paginator(poc_requests, PORTFOLIO_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "planner/request_list.html",
        {
            "filter_form": form,
            "page": page,
            "totals": portfolio_figures.portfolio_totals(requests=poc_requests),
            "counts": portfolio_figures.portfolio_outcome_counts(requests=poc_requests),
            "blocked": portfolio_figures.portfolio_blocked(requests=poc_requests, limit=BLOCKED_SHOWN),
            "blocked_shown": BLOCKED_SHOWN,
        },
    )


@require_GET
def portfolio_csv(request: HttpRequest) -> StreamingHttpResponse:
    permissions.require_portfolio(request.user)
    _form, poc_requests = _portfolio(request)
    rows = exports.portfolio_rows(poc_requests.iterator(chunk_size=500))
    return _csv_response(exports.csv_lines(exports.PORTFOLIO_COLUMNS, rows), "portfolio")


def _csv_response(lines, name: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    return response


@require_http_methods(["GET", "POST"])
def request_create(request: HttpRequest) -> HttpResponse:
    permissions.require_filing(request.user)
    teams = list(selectors.team_list_for_filing(user=request.user))
    if not teams:
        raise PermissionDenied(_("You are not in a team yet: ask an administrator to add you to a team."))
    if request.method == "POST":
        form = PocRequestForm(request.POST, request.FILES, teams=teams)
        if form.is_valid():
            try:
                poc_request = services.poc_request_create(owner=request.user, **form.service_kwargs())
            except ParamError as exc:
                form.add_error("candidates", str(exc))
            except ValidationError as exc:
                # The service checks the model again (its files may have changed since the form read them):
                # its refusal goes next to the field it names, or above the form, never a server error.
                for field, errors in exc.update_error_dict({}).items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                messages.success(request, _("Request filed; the worker measures the baseline first."))
                return redirect("planner:request-detail", pk=poc_request.pk)
    else:
        initial = {**DEFAULTS, "hardware": HardwareProfile.objects.filter(device_kind="cpu").first()}
        if request.GET.get("task") in PocRequest.Task.values:  # a link straight to one task's form
            initial["task"] = request.GET["task"]
        form = PocRequestForm(initial=initial, teams=teams)
    return render(request, "planner/request_form.html", {"form": localise_form(form)})


def localise_form(form: PocRequestForm) -> PocRequestForm:
    """The request form's labels, help texts and choices in the reader's language (see form_strings)."""
    for field in form.fields.values():
        if field.label:
            field.label = _(str(field.label))
        if field.help_text:
            field.help_text = _(str(field.help_text))
        if isinstance(field, forms.ChoiceField) and not hasattr(field, "queryset"):
            choices = field.choices  # as Django keeps them: a list of pairs, or a lazy iterator over them
            if isinstance(choices, list | BaseChoiceIterator) and choices:
                field.choices = [(value, _localise_choice(str(label))) for value, label in choices]
    return form


def _localise_choice(label: str) -> str:
    prefix = "Local: "  # planner.forms labels the models under MODELS_ROOT this way
    if not label:
        return label  # gettext("") would return the catalogue's header
    if label.startswith(prefix):
        return _("Local: %(name)s") % {"name": label.removeprefix(prefix)}
    return _(label)


def _get_request(request: HttpRequest, pk: int) -> PocRequest:
    try:
        return selectors.poc_request_get_for_user(user=request.user, pk=pk)
    except PocRequest.DoesNotExist:
        raise Http404("No such request") from None


def _dashboard(request: HttpRequest, pk: int) -> tuple[RequestDashboard, WhatIfForm]:
    """The request's dashboard, under the what-if economics in the query string when they are valid (when
    they are not, the form says why next to the control and the page shows the request's own figures)."""
    poc_request = _get_request(request, pk)
    whatif = WhatIfForm(request.GET, poc_request=poc_request)
    economics = whatif.economics if whatif.is_bound and whatif.is_valid() else None
    return poc_request_dashboard(poc_request=poc_request, economics=economics), whatif


@require_GET
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dashboard, whatif = _dashboard(request, pk)
    return _render_detail(request, dashboard, whatif)


def _render_detail(
    request: HttpRequest,
    dashboard: RequestDashboard,
    whatif: WhatIfForm,
    decision_form: DecisionForm | None = None,
) -> HttpResponse:
    """The request page; with the decision form for a manager who may decide on it now."""
    poc_request = dashboard.poc_request
    if decision_form is None and permissions.can_decide(request.user, poc_request):
        decision_form = DecisionForm(initial={"comment": poc_request.decision_comment})
    return render(
        request,
        "planner/request_detail.html",
        {
            "poc_request": poc_request,
            "dashboard": dashboard,
            "whatif": whatif,
            "decision_form": decision_form,
        },
    )


@require_POST
def request_decide(request: HttpRequest, pk: int) -> HttpResponse:
    """A manager of the request's team approves or rejects its recommendation, with a comment."""
    poc_request = _get_request(request, pk)  # another team's request: 404, whoever asks
    permissions.require_decide(request.user)
    form = DecisionForm(request.POST)
    if form.is_valid():
        try:
            services.poc_request_decide(
                poc_request=poc_request,
                user=request.user,
                decision=form.cleaned_data["decision"],
                comment=form.cleaned_data["comment"],
            )
        except ValidationError as exc:
            errors: list[tuple[str | None, list[str]]] = (
                list(exc.message_dict.items()) if hasattr(exc, "error_dict") else [(None, exc.messages)]
            )
            for field, field_errors in errors:
                form.add_error("comment" if field == "decision_comment" else None, field_errors)
            poc_request = _get_request(request, pk)  # as stored, not as the refused call left it
        else:
            messages.success(request, _("Decision recorded."))
            return redirect("planner:request-detail", pk=pk)
    dashboard = poc_request_dashboard(poc_request=poc_request)
    return _render_detail(request, dashboard, WhatIfForm(None, poc_request=poc_request), form)


@require_POST
def request_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """The owner stops a request: at once if it has not started, else at the worker's next safe point."""
    poc_request = _get_request(request, pk)  # another team's request: 404, whoever asks
    poc_request = services.poc_request_cancel(request_id=poc_request.pk, user=request.user)
    if poc_request.status == PocRequest.Status.CANCELLED:
        messages.success(request, _("Request cancelled; what was measured is kept."))
    elif poc_request.is_active:
        messages.info(
            request, _("Cancelling: the worker stops at its next safe point and keeps what it measured.")
        )
    else:
        messages.info(request, _("This request had already ended; nothing to cancel."))
    return redirect("planner:request-detail", pk=pk)


@require_GET
def request_report(request: HttpRequest, pk: int) -> HttpResponse:
    """The dashboard as a printable page (print stylesheet; "Save as PDF" in the browser)."""
    dashboard, whatif = _dashboard(request, pk)
    return render(
        request,
        "planner/request_report.html",
        {
            "poc_request": dashboard.poc_request,
            "dashboard": dashboard,
            "whatif": whatif,
            "now": timezone.now(),
        },
    )


@require_GET
def request_csv(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    dashboard, _whatif = _dashboard(request, pk)
    suffix = "-what-if" if dashboard.is_whatif else ""
    lines = exports.csv_lines(exports.candidate_columns(dashboard), exports.candidate_rows(dashboard))
    return _csv_response(lines, f"request-{pk}-candidates{suffix}")


@require_GET
def candidate_measurement(request: HttpRequest, pk: int, candidate_pk: int) -> HttpResponse:
    """The raw measurement of one candidate: the batch sweep, sizes, memory and the environment."""
    try:
        candidate = selectors.candidate_get_for_user(user=request.user, request_pk=pk, pk=candidate_pk)
    except Candidate.DoesNotExist:
        raise Http404(_("No such candidate")) from None
    if request.GET.get("format") == "json":
        m = candidate.measurement
        figures = m.to_json() if m else {"latency": candidate.latency}
        return JsonResponse(
            {
                "request": candidate.request_id,
                "candidate": candidate.pk,
                "pipeline": candidate.pipeline,
                "status": candidate.status,
                "error": candidate.error,
                "task": candidate.request.task,
                **{name: figures.get(name) for name in MEASUREMENT_FIELDS},
                "environment": candidate.environment,
                "notes": candidate.notes,
                "measured_at": candidate.measured_at,
            },
            json_dumps_params={"ensure_ascii": False, "indent": 2},
        )
    return render(
        request,
        "planner/candidate_measurement.html",
        {
            "page": candidate_page(candidate=candidate),
            "candidate": candidate,
            "poc_request": candidate.request,
        },
    )


@require_GET
def request_progress(request: HttpRequest, pk: int) -> JsonResponse:
    poc_request = _get_request(request, pk)
    return JsonResponse(
        {
            "task": poc_request.task,
            "status": poc_request.status,
            "progress": poc_request.progress,
            "message": poc_request.progress_message,
            "error": poc_request.error,
            "candidates": {str(c.pk): c.status for c in poc_request.candidates.all()},
        }
    )


@require_GET
def hardware_list(request: HttpRequest) -> HttpResponse:
    """Hardware profiles, for engineers to keep prices and power figures current."""
    permissions.require_hardware(request.user)
    return render(request, "planner/hardware_list.html", {"profiles": HardwareProfile.objects.all()})


@require_http_methods(["GET", "POST"])
def hardware_edit(request: HttpRequest, hardware_pk: int | None = None) -> HttpResponse:
    permissions.require_hardware(request.user, action="change" if hardware_pk else "add")
    hardware = get_object_or_404(HardwareProfile, pk=hardware_pk) if hardware_pk else None
    form = HardwareProfileForm(request.POST or None, instance=hardware)
    if request.method == "POST" and form.is_valid():
        saved = services.hardware_profile_save(hardware=form.save(commit=False))
        messages.success(request, _("Saved %(name)s.") % {"name": saved.name})
        return redirect("planner:hardware-list")
    return render(request, "planner/hardware_form.html", {"form": form, "hardware": hardware})


@require_GET
def technique_list(request: HttpRequest) -> HttpResponse:
    techniques = [
        {"cls": cls, "version": registry.version_of(name), "params": [p.describe() for p in cls.params]}
        for name, cls in registry.techniques().items()
    ]
    return render(
        request, "planner/technique_list.html", {"techniques": techniques, "broken": registry.broken()}
    )
