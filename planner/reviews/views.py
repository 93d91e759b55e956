"""The review page of a request: its approved switch's prediction against the months entered, a form for
one month, a CSV import, and the comparison with its re-runs."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from planner import selectors
from planner.models import PocRequest
from planner.reviews import services
from planner.reviews.access import can_enter_actuals, require_actuals
from planner.reviews.actuals_csv import ActualsFileError
from planner.reviews.forms import ActualForm, ActualsImportForm


def _request(request: HttpRequest, pk: int) -> PocRequest:
    try:
        return selectors.poc_request_get_for_user(user=request.user, pk=pk)
    except PocRequest.DoesNotExist:
        raise Http404("No such request") from None


def runs_compared(poc_request: PocRequest) -> list[PocRequest]:
    """The request, the run it re-ran and its re-runs, oldest first, with their summaries (one query)."""
    ids = {poc_request.pk} | set(poc_request.reruns.values_list("pk", flat=True))
    if poc_request.rerun_of_id:
        ids.add(poc_request.rerun_of_id)
    if len(ids) == 1:
        return []
    return list(PocRequest.objects.filter(pk__in=ids).select_related("summary").order_by("created_at"))


@require_http_methods(["GET", "POST"])
def request_review(request: HttpRequest, pk: int) -> HttpResponse:
    poc_request = _request(request, pk)  # another team's request: 404, whoever asks
    actual_form, import_form, file_errors = ActualForm(), ActualsImportForm(), []
    if request.method == "POST":
        require_actuals(request.user)
        if services.review_for(poc_request=poc_request) is None:
            raise Http404("This request has no approved switch to review")
        if "file" in request.FILES:
            import_form = ActualsImportForm(request.POST, request.FILES)
            if import_form.is_valid():
                try:
                    services.actuals_import(
                        poc_request=poc_request,
                        user=request.user,
                        raw=import_form.cleaned_data["file"].read(),
                    )
                except ActualsFileError as exc:
                    file_errors = exc.errors
                else:
                    messages.success(request, _("Months imported."))
                    return redirect("planner:request-review", pk=pk)
        else:
            actual_form = ActualForm(request.POST)
            if actual_form.is_valid():
                services.actuals_save(poc_request=poc_request, user=request.user, rows=[actual_form.row()])
                messages.success(request, _("Month recorded."))
                return redirect("planner:request-review", pk=pk)
    review = services.review_for(poc_request=poc_request)
    context: dict[str, Any] = {
        "poc_request": poc_request,
        "review": review,
        "chart": review.chart() if review else None,
        "can_enter": can_enter_actuals(request.user) and review is not None,
        "actual_form": actual_form,
        "import_form": import_form,
        "file_errors": file_errors,
        "runs": runs_compared(poc_request),
        "shortfall_share": settings.REVIEW_SHORTFALL_SHARE,
    }
    status = 400 if file_errors or actual_form.errors or import_form.errors else 200
    return render(request, "planner/review.html", context, status=status)
