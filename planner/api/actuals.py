"""/api/v1/requests/<pk>/actuals/: an approved switch's review — its frozen prediction and the months of
actual figures — and, for managers, new months as JSON or a CSV file (the page's rules and services)."""

from __future__ import annotations

from typing import Any, TypedDict

from django.core.files import File
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from planner import selectors
from planner.models import PocRequest
from planner.reviews import services
from planner.reviews.access import require_actuals
from planner.reviews.actuals_csv import ActualsFileError
from planner.reviews.figures import Review
from planner.reviews.forms import ActualForm, ActualsImportForm


class _Digits(TypedDict):
    max_digits: int
    decimal_places: int


MONEY: _Digits = {"max_digits": 26, "decimal_places": 6}


class ActualInSerializer(serializers.Serializer):
    month = serializers.CharField(help_text="As 2025-03.")
    requests = serializers.IntegerField(min_value=0)
    serving_cost = serializers.DecimalField(max_digits=16, decimal_places=2, min_value=0)


class ActualsInSerializer(serializers.Serializer):
    months = ActualInSerializer(many=True, required=False)
    file = serializers.FileField(required=False, help_text="Or a CSV: month, requests, serving_cost.")


class ReviewMonthSerializer(serializers.Serializer):
    month = serializers.DateField()
    requests = serializers.IntegerField()
    serving_cost = serializers.DecimalField(max_digits=16, decimal_places=2)
    counterfactual_cost = serializers.DecimalField(**MONEY)
    actual_savings = serializers.DecimalField(**MONEY)
    predicted_savings = serializers.DecimalField(**MONEY)
    actual_cash_flow = serializers.DecimalField(**MONEY)
    predicted_cash_flow = serializers.DecimalField(**MONEY)


class ReviewSerializer(serializers.Serializer):
    candidate_label = serializers.CharField(source="prediction.candidate_label")
    currency = serializers.CharField()
    approved_at = serializers.DateTimeField(source="prediction.approved_at")
    predicted_monthly_savings = serializers.DecimalField(source="prediction.monthly_savings", **MONEY)
    one_time_cost = serializers.DecimalField(source="prediction.one_time_cost", **MONEY)
    predicted_payback_months = serializers.DecimalField(
        source="prediction.payback_months", allow_null=True, **MONEY
    )
    actual_savings = serializers.DecimalField(**MONEY)
    predicted_savings = serializers.DecimalField(**MONEY)
    gap_pct = serializers.DecimalField(allow_null=True, **MONEY)
    payback_month = serializers.DateField(allow_null=True)
    months_to_go = serializers.DecimalField(allow_null=True, **MONEY)
    shortfall = serializers.BooleanField()
    months = ReviewMonthSerializer(many=True)


def _body(review: Review) -> dict[str, Any]:
    return ReviewSerializer(review).data


class RequestActuals(APIView):
    parser_classes = [JSONParser, MultiPartParser]

    def _review(self, request: Request, pk: int) -> tuple[PocRequest, Review]:
        try:
            poc_request = selectors.poc_request_get_for_user(user=request.user, pk=pk)
        except PocRequest.DoesNotExist:
            raise Http404("No such request") from None
        review = services.review_for(poc_request=poc_request)
        if review is None:
            raise Http404("This request has no approved switch to review")
        return poc_request, review

    @extend_schema(responses={200: ReviewSerializer})
    def get(self, request: Request, pk: int) -> Response:
        """The review: the prediction frozen at approval against the months entered."""
        return Response(_body(self._review(request, pk)[1]))

    @extend_schema(
        request={"application/json": ActualsInSerializer, "multipart/form-data": ActualsInSerializer},
        responses={200: ReviewSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        """Managers: add or replace months (``months`` as JSON, or a CSV ``file``); a month entered again
        replaces its figures. Nothing is saved when any month is refused."""
        poc_request, _review = self._review(request, pk)  # another team's request: 404 first
        require_actuals(request.user)
        upload = request.data.get("file")
        if isinstance(upload, File):  # the multipart parser's files; JSON holds none
            if upload.size > ActualsImportForm.MAX_BYTES:
                raise exceptions.ValidationError(
                    {"file": ["The file is over 1 MB: one line per month is far less."]}
                )
            try:
                review = services.actuals_import(
                    poc_request=poc_request, user=request.user, raw=upload.read()
                )
            except ActualsFileError as exc:
                raise exceptions.ValidationError({"file": exc.errors}) from None
            return Response(_body(review)) if review else Response(status=404)
        months = request.data.get("months")
        if not isinstance(months, list) or not months:
            raise exceptions.ValidationError({"months": ["Send a list of months, or a CSV file as 'file'."]})
        rows, errors = [], {}
        for i, entry in enumerate(months):
            form = ActualForm(entry if isinstance(entry, dict) else {})
            if form.is_valid():
                rows.append(form.row())
            else:
                errors[f"months.{i}"] = [str(m) for messages in form.errors.values() for m in messages]
        if errors:
            raise exceptions.ValidationError(errors)
        review = services.actuals_save(poc_request=poc_request, user=request.user, rows=rows)
        return Response(_body(review)) if review else Response(status=404)
