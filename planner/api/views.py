"""The API's views: thin, over the pages' selectors, services, form and permissions."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, generics, serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from planner import selectors, services
from planner.api import serializers as s
from planner.api.downloads import candidate_archive_response
from planner.api.errors import ERRORS
from planner.api.filing import form_data, form_errors
from planner.api.permissions import Decides, FilesRequests, ViewsPortfolio
from planner.dashboard import portfolio as portfolio_figures
from planner.forms import DecisionForm, PocRequestForm
from planner.models import Candidate, HardwareProfile, PocRequest
from plugins import registry
from plugins.base import ParamError


def _filters(request: Request) -> dict[str, Any]:
    query = s.RequestFilterSerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data


def _filtered(request: Request) -> Any:
    f = _filters(request)
    qs = selectors.portfolio_requests(
        user=request.user, status=f.get("status", ""), owner_id=f.get("owner"), outcome=f.get("outcome", "")
    )
    if "task" in f:
        qs = qs.filter(task=f["task"])
    if "team" in f:
        qs = qs.filter(team_id=f["team"])
    return qs


class RequestListCreate(generics.ListAPIView):
    """The requests of your teams (every team's for staff), newest first; POST files one."""

    permission_classes = [IsAuthenticated, FilesRequests]
    serializer_class = s.PocRequestListSerializer

    def get_queryset(self) -> Any:
        return _filtered(self.request)

    @extend_schema(
        parameters=[s.RequestFilterSerializer],
        responses={200: s.PocRequestListSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request={
            "multipart/form-data": s.RequestCreateSerializer,
            "application/json": s.RequestCreateSerializer,
        },
        responses={201: s.PocRequestSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        teams = list(selectors.team_list_for_filing(user=request.user))
        if not teams:
            raise exceptions.PermissionDenied(
                "You are not in a team yet: ask an administrator to add you to a team."
            )
        data, files, pipelines = form_data(request.data)
        form = PocRequestForm(data, files, teams=teams)
        if not form.is_valid():
            raise form_errors(form, pipelines=pipelines)
        try:
            poc_request = services.poc_request_create(owner=request.user, **form.service_kwargs())
        except ParamError as exc:
            raise exceptions.ValidationError(
                {"pipelines" if pipelines else "candidates": [str(exc)]}
            ) from None
        poc_request = selectors.poc_request_get_for_user(user=request.user, pk=poc_request.pk)
        body = s.PocRequestSerializer(poc_request, context={"request": request}).data
        return Response(body, status=201, headers={"Location": body["links"]["self"]})


def _request(request: Request, pk: int) -> PocRequest:
    try:
        return selectors.poc_request_get_for_user(user=request.user, pk=pk)
    except PocRequest.DoesNotExist:
        raise Http404("No such request") from None


def _detail(request: Request, pk: int) -> Response:
    return Response(s.PocRequestSerializer(_request(request, pk), context={"request": request}).data)


class RequestDetail(APIView):
    @extend_schema(responses={200: s.PocRequestSerializer, **ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        """A request with its progress, its candidates' states and, once finished, its recommendation."""
        return _detail(request, pk)


class RequestCancel(APIView):
    @extend_schema(request=None, responses={200: s.PocRequestSerializer, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        """Stop a request (its owner): at once if queued, else at the worker's next safe point."""
        services.poc_request_cancel(request_id=_request(request, pk).pk, user=request.user)
        return _detail(request, pk)


class RequestDecision(APIView):
    permission_classes = [IsAuthenticated, Decides]

    @extend_schema(request=s.DecisionSerializer, responses={200: s.PocRequestSerializer, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        """A manager approves or rejects a finished request's recommendation (a comment is required to reject)."""
        poc_request = _request(request, pk)
        self.check_object_permissions(request, poc_request)
        form = DecisionForm({k: request.data.get(k) for k in ("decision", "comment") if k in request.data})
        if not form.is_valid():
            raise exceptions.ValidationError(
                {
                    "non_field_errors" if k == "__all__" else k: [str(m) for m in v]
                    for k, v in form.errors.items()
                }
            )
        try:
            services.poc_request_decide(
                poc_request=poc_request,
                user=request.user,
                decision=form.cleaned_data["decision"],
                comment=form.cleaned_data["comment"],
            )
        except DjangoValidationError as exc:
            if hasattr(exc, "error_dict"):
                raise exceptions.ValidationError(
                    {"comment" if k == "decision_comment" else k: v for k, v in exc.message_dict.items()}
                ) from None
            raise exceptions.ValidationError({"non_field_errors": exc.messages}) from None
        return _detail(request, pk)


class CandidateList(APIView):
    @extend_schema(responses={200: s.CandidateSerializer(many=True), **ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        """Every candidate of a request (the baseline first) with its measurements and their intervals."""
        poc_request = _request(request, pk)
        return Response(
            s.CandidateSerializer(poc_request.candidates.all(), many=True, context={"request": request}).data
        )


def _candidate(request: Request, pk: int, candidate_pk: int) -> Candidate:
    try:
        return selectors.candidate_get_for_user(user=request.user, request_pk=pk, pk=candidate_pk)
    except Candidate.DoesNotExist:
        raise Http404("No such candidate") from None


class CandidateDetail(APIView):
    @extend_schema(responses={200: s.CandidateSerializer, **ERRORS})
    def get(self, request: Request, pk: int, candidate_pk: int) -> Response:
        candidate = _candidate(request, pk, candidate_pk)
        return Response(s.CandidateSerializer(candidate, context={"request": request}).data)


class CandidateDownload(APIView):
    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY, **ERRORS})
    def get(self, request: Request, pk: int, candidate_pk: int) -> StreamingHttpResponse:
        """The measured candidate as a .zip: weights as saved, tokenizer, and a README.md model card."""
        return candidate_archive_response(_candidate(request, pk, candidate_pk))


class TechniqueList(APIView):
    @extend_schema(responses={200: s.TechniqueSerializer(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        """The installed techniques with their parameter schemas (what ``params`` and pipelines take)."""
        rows = [
            {
                "name": name,
                "title": cls.title,
                "family": cls.family,
                "version": registry.version_of(name),
                "description": (cls.__doc__ or "").strip(),
                "devices": list(cls.devices),
                "tasks": list(cls.tasks),
                "params": [p.describe() for p in cls.params],
            }
            for name, cls in registry.techniques().items()
        ]
        return Response(s.TechniqueSerializer(rows, many=True).data)


class HardwareList(generics.ListAPIView):
    """The hardware profiles a request may run on, with their prices."""

    serializer_class = s.HardwareSerializer
    queryset = HardwareProfile.objects.all()
    pagination_class = None

    @extend_schema(responses={200: s.HardwareSerializer(many=True), **ERRORS})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class Portfolio(generics.ListAPIView):
    """Managers: the requests of their teams with their recommendations, the outcome counts, and the totals
    per currency (over every request the filters select, not only this page)."""

    permission_classes = [IsAuthenticated, ViewsPortfolio]
    serializer_class = s.PocRequestListSerializer

    def get_queryset(self) -> Any:
        return _filtered(self.request)

    @extend_schema(
        parameters=[s.RequestFilterSerializer],
        responses={
            200: inline_serializer(
                "PortfolioPage",
                {
                    "count": serializers.IntegerField(),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": s.PocRequestListSerializer(many=True),
                    "counts": serializers.DictField(child=serializers.IntegerField()),
                    "totals": s.PortfolioTotalSerializer(many=True),
                },
            ),
            **ERRORS,
        },
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().get(request, *args, **kwargs)
        requests = self.get_queryset()
        response.data["counts"] = portfolio_figures.portfolio_outcome_counts(requests=requests)
        totals = portfolio_figures.portfolio_totals(requests=requests)
        response.data["totals"] = s.PortfolioTotalSerializer(totals, many=True).data
        return response
