"""A search request on the worker: the rows around workers.search's loop.

Each trial the loop proposes becomes a Candidate row as soon as it is proposed (and a SearchTrial row
with its parameters and estimate), is produced and measured by the runner in the same process as every
other candidate (``CandidateFeed`` hands it to ``runner.run_poc``, whose prefix cache keeps the distilled
student for the next trials), and is judged by ``roi.evaluate`` against the baseline: its total over the
horizon, and its constraints (the quality floor or perplexity ceiling, the latency target). A resumed run
reuses the trials already measured instead of measuring them again.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.utils import timezone

from planner import estimates, preflight, roi
from planner.dashboard.request import economics_for, measurement_for
from planner.models import Candidate, PocRequest, SearchTrial
from plugins import registry
from plugins.base import ParamError
from plugins.model_info import ModelInfo
from workers import runner, search
from workers.runner import CandidateResult, CandidateSpec, PocSpec

logger = logging.getLogger(__name__)
#: How the model may finish, per device, in the order the form's estimate lists them.
FINISHES = {
    "cpu": ("quantize.dynamic-int8", "runtime.openvino", "runtime.onnxruntime", "quantize.half"),
    "cuda": ("quantize.half", "quantize.weight-only"),
}
DEFAULT_EPOCHS = (2.0, 4.0)
FFN_AMOUNTS = (0.0, 0.25, 0.5)
#: How many of the pre-flight ranking's points the study tries first.
START_POINTS = 3


class CandidateFeed:
    """The candidates of a running search: ``run_poc`` iterates it and measures each one pushed; the
    iteration ends when none is waiting. Its length (the progress line's denominator) is the budget."""

    def __init__(self, expected: int) -> None:
        self.waiting: collections.deque[CandidateSpec] = collections.deque()
        self.expected = max(1, expected)

    def push(self, candidate: CandidateSpec) -> None:
        self.waiting.append(candidate)

    def __iter__(self) -> Iterator[CandidateSpec]:
        while self.waiting:
            yield self.waiting.popleft()

    def __len__(self) -> int:
        return self.expected


def space_for(*, layers: int, device: str, task: str) -> search.SearchSpace:
    """Students of 1, 2, half and three quarters of the layers; the finishes that run on the device."""
    students = sorted({k for k in (1, 2, layers // 2, (3 * layers) // 4) if 0 < k < layers})
    finishes = [search.NO_FINISH] + [
        name
        for name in FINISHES.get(device, ())
        if name in registry.techniques() and not registry.get(name).refusal(device=device, task=task)
    ]
    return search.SearchSpace(
        student_layers=(0, *students),
        epochs=tuple(getattr(settings, "SEARCH_EPOCHS", DEFAULT_EPOCHS)),
        ffn_amounts=FFN_AMOUNTS,
        finishes=tuple(finishes),
    )


def outcome_for(poc_request: PocRequest, baseline: Candidate, candidate: Candidate) -> search.TrialOutcome:
    """roi's verdict on ``candidate`` against the baseline: total over the horizon and the constraints."""
    if candidate.status != Candidate.Status.MEASURED:
        return search.TrialOutcome(
            None, False, (1.0,), key=str(candidate.pk), error=candidate.error or "failed"
        )
    economics = economics_for(poc_request)
    models = [measurement_for(baseline)] + (
        [] if candidate.pk == baseline.pk else [measurement_for(candidate)]
    )
    report = roi.evaluate(models, economics)
    row = report.row(str(candidate.pk))
    target = float(poc_request.p95_target_ms)
    latency = float(row.p95_batch1_ms) if row.p95_batch1_ms is not None else math.inf
    if poc_request.is_generative:
        ceiling = report.perplexity_ceiling
        quality = candidate.perplexity
        quality_gap = (quality - float(ceiling)) / float(ceiling) if quality and ceiling else 1.0
        latency = float(row.ttft_p95_batch1_ms) if row.ttft_p95_batch1_ms is not None else math.inf
    else:
        floor = report.accuracy_floor
        quality = candidate.accuracy
        quality_gap = float(floor) - quality if quality is not None and floor is not None else 1.0
    total = row.total_cost_over_horizon
    return search.TrialOutcome(
        cost=float(total) if total is not None and row.replicas is not None else None,
        feasible=row.feasible,
        constraints=(quality_gap, min(1e6, (latency - target) / target)),
        quality=quality,
        latency_ms=None if math.isinf(latency) else latency,
        key=str(candidate.pk),
    )


@dataclasses.dataclass
class _Run:
    poc_request: PocRequest
    spec: PocSpec
    record: Callable[[Candidate, CandidateResult], None]
    feed: CandidateFeed
    progress: Callable[[float, str], None]
    results: Iterator[CandidateResult] | None = None

    def measure(self, candidate: Candidate) -> Candidate:
        """Hand one candidate to the runner (which loaded the model once, on the first) and record it."""
        if self.results is None:
            self.results = runner.run_poc(self.spec, self.progress)
        self.feed.push(CandidateSpec(key=str(candidate.pk), pipeline=candidate.pipeline))
        result = next(self.results)
        self.record(candidate, result)
        candidate.refresh_from_db()
        return candidate


def poc_request_search(
    *,
    poc_request: PocRequest,
    spec: PocSpec,
    progress: Callable[[float, str], None],
    record: Callable[[Candidate, CandidateResult], None],
) -> None:
    """Measure the baseline if needed, then search within the request's budget; store every trial, why the
    search stopped, and the hardware's calibration from this run's measurements."""
    model_dir = Path(spec.model_dir)
    config = estimates.model_config(model_dir) or {}
    task, device = poc_request.task, spec.device
    budget = search.Budget(
        max_trials=poc_request.search_max_trials,
        max_seconds=poc_request.search_max_minutes * 60 if poc_request.search_max_minutes else None,
    )
    feed = CandidateFeed((budget.max_trials or 10) + 1)
    # run_poc only iterates its candidates and asks their number, which is all an open-ended feed can say.
    candidates = cast("Sequence[CandidateSpec]", feed)
    run = _Run(
        poc_request,
        dataclasses.replace(spec, candidates=candidates, keep_prefixes=True),
        record,
        feed,
        progress,
    )
    baseline = poc_request.candidates.get(position=0)
    if baseline.status != Candidate.Status.MEASURED:
        baseline = run.measure(baseline)
    if baseline.status != Candidate.Status.MEASURED:
        return  # poc_request_finish fails the request: nothing can be compared
    texts = [e.text for e in runner.load_examples(spec.dataset, task)[:2000]]
    tokens = estimates.typical_tokens(texts)
    shape = preflight.ModelShape.from_config(config, task=task)
    peaks = estimates.peaks_for(poc_request.hardware)
    traffic = estimates.traffic_for(poc_request)
    model_info = ModelInfo.from_config(config, task=task) if config else None
    space = space_for(layers=shape.layers, device=device, task=task)
    distill = {"max_length": min(128, max(16, tokens * 2))}

    def estimate(params: dict[str, Any]) -> preflight.Estimate | None:
        if peaks is None:
            return None
        variant = preflight.variant_for(shape, search.pipeline_for(params, distill=distill))
        return preflight.estimate(
            variant,
            peaks,
            tokens=tokens,
            batch_sizes=settings.MEASURE_BATCH_SIZES,
            new_tokens=settings.MEASURE_NEW_TOKENS,
        )

    def optimistic(params: dict[str, Any]) -> float:
        est = estimate(params)
        return 0.0 if est is None else preflight.optimistic_cost(est, traffic)

    def validate(pipeline: list[dict[str, Any]]) -> str | None:
        try:
            registry.validate_pipeline(pipeline, device=device, task=task, model_info=model_info)
        except ParamError as exc:
            return str(exc)
        return None

    done = {
        tuple(t.params.get(k) for k in ("student_layers", "ffn_amount", "finish", "epochs")): t
        for t in poc_request.search_trials.select_related("candidate")
    }

    def objective(trial: search.TrialRecord) -> search.TrialOutcome:
        key = tuple(trial.params.get(k) for k in ("student_layers", "ffn_amount", "finish", "epochs"))
        earlier = done.get(key)
        if (
            earlier is not None
            and earlier.candidate is not None
            and earlier.candidate.status == Candidate.Status.MEASURED
        ):
            return outcome_for(poc_request, baseline, earlier.candidate)
        candidate = _candidate_propose(poc_request, trial, estimate(trial.params))
        return outcome_for(poc_request, baseline, run.measure(candidate))

    start = sorted(space.points(), key=optimistic)[:START_POINTS] if peaks is not None else []
    result = search.run_search(
        space=space,
        budget=budget,
        objective=objective,
        optimistic=optimistic,
        validate=validate,
        baseline=outcome_for(poc_request, baseline, baseline),
        start=start,
        seed=spec.seed,
        distill=distill,
        on_trial=lambda trial: _trial_store(poc_request, trial),
    )
    poc_request.search_stop_reason = result.stop_reason
    poc_request.search_summary = {
        "best_cost": result.best_cost,
        "best_candidate": result.best.outcome.key if result.best and result.best.outcome else None,
        "bound": None if result.bound is None or math.isinf(result.bound) else result.bound,
        "seconds": round(result.seconds, 1),
        "trials": len(result.trials),
        "tokens": tokens,
    }
    poc_request.save(update_fields=["search_stop_reason", "search_summary", "updated_at"])


def hardware_calibrate_after_run(*, poc_request: PocRequest, spec: PocSpec) -> None:
    """Fit the hardware's two calibration factors (roofline and overhead) on the run's measurements (planner.estimates); a failure is
    logged, never the run's."""
    try:
        texts = [e.text for e in runner.load_examples(spec.dataset, poc_request.task)[:2000]]
        estimates.hardware_calibrate(
            poc_request=poc_request, model_dir=Path(spec.model_dir), tokens=estimates.typical_tokens(texts)
        )
    except Exception:
        logger.exception("The estimate of request %s could not be calibrated", poc_request.pk)


def _candidate_propose(
    poc_request: PocRequest, trial: search.TrialRecord, est: preflight.Estimate | None
) -> Candidate:
    """The trial's candidate row, created as it is proposed (the page shows it pending), with its trial."""
    position = (
        poc_request.candidates.order_by("-position").values_list("position", flat=True).first() or 0
    ) + 1
    candidate = Candidate(request=poc_request, position=position, pipeline=trial.pipeline)
    candidate.full_clean(exclude=["request"])
    candidate.save()
    SearchTrial.objects.update_or_create(
        request=poc_request,
        number=trial.number,
        defaults={
            "params": trial.params,
            "candidate": candidate,
            "state": "running",
            "estimate_ms": est.latency_ms if est else None,
            "optimistic_cost": None
            if trial.optimistic is None or math.isinf(trial.optimistic)
            else trial.optimistic,
        },
    )
    return candidate


def _trial_store(poc_request: PocRequest, trial: search.TrialRecord) -> None:
    outcome = trial.outcome
    optimistic = None if trial.optimistic is None or math.isinf(trial.optimistic) else trial.optimistic
    SearchTrial.objects.update_or_create(
        request=poc_request,
        number=trial.number,
        defaults={
            "params": trial.params,
            "state": trial.state,
            "error": trial.error[:2000],
            "cost": outcome.cost if outcome else None,
            "feasible": outcome.feasible if outcome and not outcome.error else None,
            "constraints": list(outcome.constraints) if outcome else [],
            "optimistic_cost": optimistic,
            "created_at": timezone.now(),
        },
    )
