"""The search for the cheapest candidate that meets the targets: a plain function over an injectable
objective, so it runs on a simulated objective in tests and on real candidates in a worker.

Optuna's TPE sampler (seeded) proposes a point of the technique space (``SearchSpace``): a student size
and its distillation epochs, a feed-forward pruning amount, and how the model finishes (a quantizer, a
runtime, or nothing), with multivariate TPE over the whole space (a student size and its epochs interact).
Each point becomes a pipeline, is checked by ``validate`` (the registry's pipeline
rules and the model-aware checks) before anything is produced, and is measured by ``objective`` as a
full candidate. Its value is the total cost over the horizon; the targets are constraints (≤ 0 is met),
set on each trial with ``Trial.set_constraint`` (Optuna 5's replacement for the sampler's
``constraints_func``, which reads the same values), so TPE learns where the feasible, cheap region is. The pre-flight
ranking seeds the study (``enqueue_trial``).

The search stops when the budget is spent (trials or wall time), when every point was tried, or when no
untried point can beat the best feasible measured cost: each point's *optimistic* cost (the pre-flight
estimate's fast end, ``planner.preflight.optimistic_cost``; a point whose structure was measured uses the
measured cost instead) is at or above it.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NO_FINISH = "none"
# Why a search stopped (SearchResult.stop_reason, stored on the request).
STOP_BOUND = "bound"
STOP_TRIALS = "trials"
STOP_TIME = "time"
STOP_EXHAUSTED = "exhausted"
#: Proposals that were invalid or repeats, per trial of the budget, before the search gives up on TPE.
MAX_PROPOSALS_PER_TRIAL = 20

Params = dict[str, Any]


@dataclass(frozen=True)
class SearchSpace:
    student_layers: tuple[int, ...]  # 0: no distillation
    epochs: tuple[float, ...]
    ffn_amounts: tuple[float, ...]  # 0: no pruning
    finishes: tuple[str, ...]  # NO_FINISH, a quantize.* or a runtime.* technique

    def points(self) -> list[Params]:
        """Every point of the space (epochs only where there is a student)."""
        found = []
        for k, a, f in itertools.product(self.student_layers, self.ffn_amounts, self.finishes):
            for e in self.epochs if k else (0.0,):
                found.append({"student_layers": k, "epochs": e, "ffn_amount": a, "finish": f})
        return found


def pipeline_for(
    params: Mapping[str, Any], *, distill: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The pipeline a point of the space stands for ([] is the baseline)."""
    steps: list[dict[str, Any]] = []
    if params["student_layers"]:
        extra = dict(distill or {})
        steps.append(
            {
                "technique": "distill.kd",
                "params": {**extra, "student_layers": params["student_layers"], "epochs": params["epochs"]},
            }
        )
    if params["ffn_amount"]:
        steps.append({"technique": "prune.ffn", "params": {"amount": params["ffn_amount"]}})
    if params["finish"] != NO_FINISH:
        steps.append({"technique": params["finish"], "params": {}})
    return steps


def structure_key(params: Mapping[str, Any]) -> tuple[Any, ...]:
    """What the serving cost depends on (epochs change quality and production time, not the shape)."""
    return (params["student_layers"], params["ffn_amount"], params["finish"])


def point_key(params: Mapping[str, Any]) -> tuple[Any, ...]:
    return (*structure_key(params), params["epochs"] if params["student_layers"] else 0.0)


@dataclass(frozen=True)
class TrialOutcome:
    """What the objective measured: the total cost over the horizon (None: no batch size meets the
    latency target), whether every target is met, and each constraint (≤ 0 met)."""

    cost: float | None
    feasible: bool
    constraints: tuple[float, ...]
    quality: float | None = None
    latency_ms: float | None = None
    key: str = ""  # the candidate's id, for the caller
    error: str = ""  # the candidate failed; nothing was measured


@dataclass
class TrialRecord:
    number: int
    params: Params
    pipeline: list[dict[str, Any]]
    state: str  # "measured", "failed", "invalid"
    outcome: TrialOutcome | None = None
    optimistic: float | None = None
    error: str = ""


@dataclass
class SearchResult:
    trials: list[TrialRecord] = field(default_factory=list)
    best: TrialRecord | None = None
    best_cost: float | None = None  # the best feasible cost, the baseline's included
    stop_reason: str = ""
    bound: float | None = None  # the lowest optimistic cost left when the search stopped
    seconds: float = 0.0


@dataclass(frozen=True)
class Budget:
    max_trials: int | None = None
    max_seconds: float | None = None


Objective = Callable[[TrialRecord], TrialOutcome]
Validate = Callable[[list[dict[str, Any]]], str | None]  # the refusal, or None when the pipeline is valid


def run_search(
    *,
    space: SearchSpace,
    budget: Budget,
    objective: Objective,
    optimistic: Callable[[Params], float],
    validate: Validate,
    baseline: TrialOutcome,
    start: Sequence[Params] = (),
    seed: int = 0,
    distill: Mapping[str, Any] | None = None,
    on_trial: Callable[[TrialRecord], None] = lambda record: None,
    clock: Callable[[], float] = time.monotonic,
) -> SearchResult:
    """Search ``space`` until the budget is spent or no untried point can beat the best feasible cost.

    ``baseline`` is the measured current model (feasible or not: keeping it is the first choice to beat).
    ``start`` points are tried first (the pre-flight ranking), ``optimistic(params)`` bounds what a point
    can cost, ``on_trial`` sees every record as soon as it is known (stored by the caller)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if budget.max_trials is None and budget.max_seconds is None:
        raise ValueError("a search needs a budget: a number of trials, a wall time, or both")
    started = clock()
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    points = space.points()
    untried = {point_key(p): p for p in points}
    measured_cost: dict[tuple[Any, ...], float] = {}
    result = SearchResult()
    if baseline.feasible and baseline.cost is not None:
        result.best_cost = baseline.cost
    untried.pop(point_key({"student_layers": 0, "epochs": 0.0, "ffn_amount": 0.0, "finish": NO_FINISH}), None)
    for params in start:
        if point_key(params) in untried:
            # Epochs are drawn for every point (``_suggest``); without a student any value stands for none.
            drawn = {**params, "epochs": params["epochs"] if params["student_layers"] else space.epochs[0]}
            study.enqueue_trial(drawn, skip_if_exists=True)
    penalty = 10 * max(baseline.cost or 1.0, 1.0)
    proposals = 0
    while True:
        reason, bound = _stop_reason(result, budget, untried, measured_cost, optimistic, clock() - started)
        result.bound = bound
        if reason:
            result.stop_reason = reason
            break
        proposals += 1
        if proposals > MAX_PROPOSALS_PER_TRIAL * max(1, len(points)):
            result.stop_reason = STOP_EXHAUSTED
            break
        trial = study.ask()
        params = _suggest(trial, space)
        key = point_key(params)
        if key not in untried:  # a repeat, or the baseline: tell TPE what is known, measure nothing
            _tell_known(study, trial, key, result, penalty)
            continue
        del untried[key]
        record = TrialRecord(len(result.trials), params, pipeline_for(params, distill=distill), "measured")
        record.optimistic = optimistic(params)
        refusal = validate(record.pipeline)
        if refusal:
            record.state, record.error = "invalid", refusal
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            result.trials.append(record)
            on_trial(record)
            continue
        outcome = objective(record)
        record.outcome = outcome
        trial.set_user_attr("key", key)
        if outcome.error:
            record.state, record.error = "failed", outcome.error
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            _constrain(trial, outcome.constraints)
            study.tell(trial, outcome.cost if outcome.cost is not None else penalty)
            measured_cost[structure_key(params)] = outcome.cost if outcome.cost is not None else math.inf
            if (
                outcome.feasible
                and outcome.cost is not None
                and (result.best_cost is None or outcome.cost < result.best_cost)
            ):
                result.best, result.best_cost = record, outcome.cost
        result.trials.append(record)
        on_trial(record)
    result.seconds = clock() - started
    return result


def _constrain(trial: Any, constraints: Sequence[float]) -> None:
    for position, value in enumerate(constraints):
        trial.set_constraint(f"target{position}", float(value))


def _suggest(trial: Any, space: SearchSpace) -> Params:
    """A point of the space; epochs are always drawn (a fixed space suits multivariate TPE) and mean
    nothing without a student."""
    k = trial.suggest_categorical("student_layers", list(space.student_layers))
    epochs = trial.suggest_categorical("epochs", list(space.epochs))
    return {
        "student_layers": k,
        "epochs": epochs if k else 0.0,
        "ffn_amount": trial.suggest_categorical("ffn_amount", list(space.ffn_amounts)),
        "finish": trial.suggest_categorical("finish", list(space.finishes)),
    }


def _tell_known(study: Any, trial: Any, key: tuple[Any, ...], result: SearchResult, penalty: float) -> None:
    import optuna

    done = next((t for t in result.trials if point_key(t.params) == key and t.outcome is not None), None)
    if done is None or done.outcome is None or done.outcome.error:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    _constrain(trial, done.outcome.constraints)
    study.tell(trial, done.outcome.cost if done.outcome.cost is not None else penalty)


def _stop_reason(
    result: SearchResult,
    budget: Budget,
    untried: Mapping[tuple[Any, ...], Params],
    measured_cost: Mapping[tuple[Any, ...], float],
    optimistic: Callable[[Params], float],
    elapsed: float,
) -> tuple[str, float | None]:
    """Why the search stops now ("" to go on), and the lowest optimistic cost of the untried points."""
    bounds = [max(optimistic(p), measured_cost.get(structure_key(p), -math.inf)) for p in untried.values()]
    bound = min(bounds, default=None)
    if not untried:
        return STOP_EXHAUSTED, bound
    produced = sum(1 for t in result.trials if t.state != "invalid")
    # The bound is a roofline estimate, trusted only once a measured trial has been set against it: the
    # first (best-ranked) trial always runs, so a search never stops on an uncalibrated estimate alone.
    if produced and result.best_cost is not None and bound is not None and bound >= result.best_cost:
        return STOP_BOUND, bound
    if budget.max_trials is not None and produced >= budget.max_trials:
        return STOP_TRIALS, bound
    if budget.max_seconds is not None and elapsed >= budget.max_seconds:
        return STOP_TIME, bound
    return "", bound
