"""The search and the estimate on a request's page, as a view model: the trials in the order they ran,
the Pareto front of total cost over the horizon against quality with the targets, why the search
stopped, and each candidate's pre-flight estimate against its measurement (planner.estimates)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext as _

from planner import estimates, preflight, roi
from planner.models import Candidate, PocRequest, SearchTrial


def stop_reason_text(reason: str, summary: dict[str, Any]) -> str:
    texts = {
        "bound": _(
            "Stopped: no untried candidate can beat the best feasible one, even at the fast end of its estimate."
        ),
        "trials": _("Stopped: the budget of trials is spent."),
        "time": _("Stopped: the time budget is spent."),
        "exhausted": _("Stopped: every candidate of the search space was tried."),
    }
    if not reason:
        return _("The search is running.")
    return texts.get(reason, reason)


@dataclass(frozen=True)
class TrialRow:
    number: int
    label: str
    state: str
    candidate: Candidate | None
    params: dict[str, Any]
    cost: float | None
    feasible: bool | None
    estimate_ms: float | None
    measured_ms: float | None
    optimistic_cost: float | None
    error: str

    @property
    def estimate_error(self) -> float | None:
        if self.estimate_ms is None or not self.measured_ms:
            return None
        return preflight.relative_error(self.estimate_ms, self.measured_ms)


@dataclass(frozen=True)
class SearchView:
    trials: list[TrialRow]
    stop_reason: str
    stop_text: str
    summary: dict[str, Any]
    chart: dict[str, Any]
    calibration: Any


def pareto(points: list[dict[str, Any]], *, higher_is_better: bool) -> list[dict[str, Any]]:
    """The points no other point beats on both cost and quality, cheapest first."""
    ordered = sorted(points, key=lambda p: (p["cost"], -p["quality"] if higher_is_better else p["quality"]))
    front: list[dict[str, Any]] = []
    for point in ordered:
        if not front or (
            point["quality"] > front[-1]["quality"]
            if higher_is_better
            else point["quality"] < front[-1]["quality"]
        ):
            front.append(point)
    return front


def _chart(poc_request: PocRequest, report: roi.RoiReport | None) -> dict[str, Any]:
    generative = poc_request.is_generative
    points = []
    for row in report.rows if report else ():
        quality = row.perplexity if generative else row.accuracy
        if quality is None or row.total_cost_over_horizon is None or row.replicas is None:
            continue
        points.append(
            {
                "label": row.name,
                "cost": float(row.total_cost_over_horizon),
                "quality": float(quality),
                "feasible": row.feasible,
                "baseline": row.is_baseline,
            }
        )
    target = (
        report.perplexity_ceiling if generative and report else (report.accuracy_floor if report else None)
    )
    return {
        "metric": "perplexity" if generative else "accuracy",
        "currency": poc_request.currency,
        "points": points,
        "front": pareto(points, higher_is_better=not generative),
        "target": float(target) if target is not None else None,
    }


def search_view(*, poc_request: PocRequest, report: roi.RoiReport | None) -> SearchView | None:
    """The search section of a request's page; None for a request that listed its pipelines."""
    if poc_request.mode != PocRequest.Mode.SEARCH:
        return None
    trials = list(
        SearchTrial.objects.filter(request=poc_request).select_related("candidate").order_by("number")
    )
    rows = [
        TrialRow(
            number=t.number + 1,
            label=t.candidate.label if t.candidate else _label(t.params),
            state=t.state,
            candidate=t.candidate,
            params=t.params,
            cost=t.cost,
            feasible=t.feasible,
            estimate_ms=t.estimate_ms,
            measured_ms=estimates.measured_ms(t.candidate) if t.candidate else None,
            optimistic_cost=t.optimistic_cost,
            error=t.error,
        )
        for t in trials
    ]
    latest = poc_request.hardware.calibrations.order_by("-fitted_at", "-pk").first()
    return SearchView(
        trials=rows,
        stop_reason=poc_request.search_stop_reason,
        stop_text=stop_reason_text(poc_request.search_stop_reason, poc_request.search_summary),
        summary=poc_request.search_summary,
        chart=_chart(poc_request, report),
        calibration=latest,
    )


def _label(params: dict[str, Any]) -> str:
    from workers.search import pipeline_for

    return " → ".join(s["technique"] for s in pipeline_for(params)) or "baseline"


@dataclass(frozen=True)
class EstimateRow:
    label: str
    estimate_ms: float
    measured_ms: float | None
    bound: str

    @property
    def error(self) -> float | None:
        return preflight.relative_error(self.estimate_ms, self.measured_ms) if self.measured_ms else None


@dataclass(frozen=True)
class EstimateView:
    rows: list[EstimateRow]
    ranking: dict[str, Any]  # planner.estimates.as_json: the families ranked, for the chart script
    efficiency: float
    calibrated: bool
    mean_error: float | None


def _model_dir(poc_request: PocRequest) -> Any:
    from django import forms as django_forms

    from planner import model_sources
    from planner.forms import resolve_model_dir

    if poc_request.model_source == PocRequest.ModelSource.ARCHIVE:
        return model_sources.archive_dir(poc_request.pk)
    if poc_request.model_source != PocRequest.ModelSource.LOCAL:
        return None  # a Hub model: its files are on the worker
    try:
        return resolve_model_dir(poc_request.model_ref, poc_request.task)
    except django_forms.ValidationError:
        return None


def estimate_view(*, poc_request: PocRequest) -> EstimateView | None:
    """Each candidate's calibrated batch-1 estimate next to its measured median; None without peaks or a
    readable config."""
    model_dir = _model_dir(poc_request)
    peaks = estimates.peaks_for(poc_request.hardware)
    config = estimates.model_config(model_dir) if model_dir is not None else None
    if peaks is None or config is None:
        return None
    tokens = int(poc_request.search_summary.get("tokens") or estimates.demo_tokens(poc_request.task))
    rows = []
    for candidate in poc_request.candidates.all():
        est = estimates.candidate_estimate(candidate, config=config, peaks=peaks, tokens=tokens)
        rows.append(EstimateRow(candidate.label, est.latency_ms, estimates.measured_ms(candidate), est.bound))
    errors = [abs(r.error) for r in rows if r.error is not None]
    ranking = estimates.ranked(
        config=config,
        task=poc_request.task,
        peaks=peaks,
        traffic=estimates.traffic_for(poc_request),
        tokens=tokens,
    )
    return EstimateView(
        rows=rows,
        ranking=estimates.as_json(ranking, peaks=peaks, tokens=tokens),
        efficiency=peaks.efficiency,
        calibrated=peaks.calibrated,
        mean_error=sum(errors) / len(errors) if errors else None,
    )
