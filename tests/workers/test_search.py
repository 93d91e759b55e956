"""The search loop on a simulated objective with a known optimum (no model, no database)."""

import math

import pytest

from workers.search import (
    NO_FINISH,
    STOP_BOUND,
    STOP_EXHAUSTED,
    STOP_TIME,
    STOP_TRIALS,
    Budget,
    SearchSpace,
    TrialOutcome,
    pipeline_for,
    run_search,
)

SPACE = SearchSpace(
    student_layers=(0, 1, 2, 3, 4),
    epochs=(2.0, 4.0),
    ffn_amounts=(0.0, 0.25, 0.5),
    finishes=(NO_FINISH, "quantize.dynamic-int8", "runtime.openvino"),
)
BASELINE_COST = 1000.0


def speed(params):
    """Relative serving cost of a point: fewer layers, less feed-forward and int8 are cheaper."""
    layers = params["student_layers"] or 6
    finish = {NO_FINISH: 1.0, "quantize.dynamic-int8": 0.6, "runtime.openvino": 0.7}[params["finish"]]
    return layers / 6 * (1 - 0.5 * params["ffn_amount"]) * finish


def accuracy(params):
    """Small students lose accuracy; more epochs win some back; pruning costs a little."""
    layers = params["student_layers"] or 6
    lost = {1: 0.12, 2: 0.05, 3: 0.02, 4: 0.01, 6: 0.0}[layers]
    if params["student_layers"]:
        lost *= 1.0 if params["epochs"] == 2.0 else 0.4
    return 0.9 - lost - 0.03 * params["ffn_amount"]


def simulated(calls):
    def objective(record):
        calls.append(record.params)
        cost = 100 + BASELINE_COST * speed(record.params)
        kept = accuracy(record.params) / 0.9
        return TrialOutcome(cost=cost, feasible=kept >= 0.97, constraints=(0.97 - kept,), quality=kept)

    return objective


def optimistic(params):
    return (100 + BASELINE_COST * speed(params)) / 1.3


def optimum():
    feasible = [
        p for p in SPACE.points() if p["student_layers"] or p["ffn_amount"] or p["finish"] != NO_FINISH
    ]
    feasible = [p for p in feasible if accuracy(p) / 0.9 >= 0.97]
    return min(100 + BASELINE_COST * speed(p) for p in feasible)


def search(calls, **kwargs):
    arguments = {
        "space": SPACE,
        "budget": Budget(max_trials=40),
        "objective": simulated(calls),
        "optimistic": optimistic,
        "validate": lambda pipeline: None,
        "baseline": TrialOutcome(cost=BASELINE_COST, feasible=True, constraints=(0.0,)),
        "seed": 7,
    } | kwargs
    return run_search(**arguments)


def test_the_search_finds_the_known_optimum_within_its_budget():
    """One feasible point is the cheapest (a 2-layer student, 4 epochs, int8); cheaper ones miss the floor."""
    calls = []
    result = search(calls, seed=0)
    assert result.best is not None and result.best_cost == pytest.approx(optimum()) == pytest.approx(300.0)
    assert result.best.outcome.feasible and result.best.params["epochs"] == 4.0
    assert (
        result.stop_reason == STOP_TRIALS and len(calls) == 40
    )  # the cheaper infeasible points keep it going
    assert [t.number for t in result.trials] == list(range(len(result.trials)))
    assert len({tuple(sorted(c.items())) for c in calls}) == len(calls)  # no point measured twice


def test_the_search_stops_when_no_untried_point_can_beat_the_best():
    """With a floor every point meets, the cheapest structure is found and the rest cannot beat it even at
    their optimistic cost: the search stops on the bound, well before the budget."""
    calls = []

    def lenient(record):
        calls.append(record.params)
        return TrialOutcome(
            cost=100 + BASELINE_COST * speed(record.params), feasible=True, constraints=(-0.1,)
        )

    result = search(calls, objective=lenient, budget=Budget(max_trials=60))
    assert result.stop_reason == STOP_BOUND
    assert result.bound >= result.best_cost  # every untried point's optimistic cost is at or above the best
    assert result.best_cost == pytest.approx(min(100 + BASELINE_COST * speed(p) for p in SPACE.points()))
    assert len(calls) < 60 and len(calls) < len(SPACE.points()) - 1


def test_the_search_is_deterministic_with_a_seed():
    first, second = [], []
    search(first)
    search(second)
    assert first == second


def test_the_start_points_are_tried_first():
    calls = []
    start = [
        {"student_layers": 3, "epochs": 4.0, "ffn_amount": 0.5, "finish": "quantize.dynamic-int8"},
        {"student_layers": 2, "epochs": 2.0, "ffn_amount": 0.0, "finish": NO_FINISH},
        {"student_layers": 0, "epochs": 0.0, "ffn_amount": 0.5, "finish": NO_FINISH},  # no student, no epochs
    ]
    search(calls, start=start)
    assert calls[:3] == start


def test_the_budget_in_trials_stops_the_search():
    calls = []
    result = search(calls, budget=Budget(max_trials=3))
    assert len(calls) == 3 and result.stop_reason == STOP_TRIALS


def test_the_wall_time_budget_stops_the_search():
    ticks = iter(range(1000))
    calls = []
    result = search(calls, budget=Budget(max_seconds=2.5), clock=lambda: float(next(ticks)))
    assert result.stop_reason == STOP_TIME and len(calls) == 2


def test_invalid_pipelines_are_refused_before_they_are_measured():
    calls, seen = [], []

    def validate(pipeline):
        names = [s["technique"] for s in pipeline]
        return "openvino is not installed" if "runtime.openvino" in names else None

    result = search(calls, validate=validate, on_trial=seen.append)
    invalid = [t for t in result.trials if t.state == "invalid"]
    assert invalid and all("runtime.openvino" in t.error or t.error for t in invalid)
    assert all(c["finish"] != "runtime.openvino" for c in calls)
    assert seen == result.trials


def test_a_space_tried_entirely_stops_as_exhausted():
    small = SearchSpace(student_layers=(0, 2), epochs=(2.0,), ffn_amounts=(0.0,), finishes=(NO_FINISH,))
    calls = []
    result = search(calls, space=small, optimistic=lambda p: 0.0)
    assert result.stop_reason == STOP_EXHAUSTED and len(calls) == 1


def test_an_infeasible_baseline_leaves_the_bound_open_until_a_candidate_is_feasible():
    calls = []
    baseline = TrialOutcome(cost=None, feasible=False, constraints=(1.0,))
    result = search(calls, baseline=baseline, optimistic=lambda p: 0.0, budget=Budget(max_trials=5))
    assert result.stop_reason == STOP_TRIALS and len(calls) == 5 and math.isfinite(result.best_cost)


def test_pipeline_for_builds_the_registry_steps():
    params = {"student_layers": 2, "epochs": 4.0, "ffn_amount": 0.25, "finish": "quantize.half"}
    assert pipeline_for(params, distill={"max_length": 64}) == [
        {"technique": "distill.kd", "params": {"max_length": 64, "student_layers": 2, "epochs": 4.0}},
        {"technique": "prune.ffn", "params": {"amount": 0.25}},
        {"technique": "quantize.half", "params": {}},
    ]
    assert pipeline_for({"student_layers": 0, "epochs": 0.0, "ffn_amount": 0.0, "finish": NO_FINISH}) == []


def test_an_estimate_alone_never_stops_the_search_before_a_first_trial():
    """Every point's optimistic cost is above the current model's, but the estimate is a roofline guess until
    a measurement stands against it: the best-ranked point is measured, then the bound stops the search."""
    calls = []
    result = search(calls, optimistic=lambda p: 10 * BASELINE_COST)
    assert result.stop_reason == STOP_BOUND
    assert len(calls) == 1 and [t.state for t in result.trials] == ["measured"]
