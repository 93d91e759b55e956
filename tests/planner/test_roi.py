"""Hand-checked figures for planner.roi (pure arithmetic: no database), and their English sentences from
planner.dashboard.wording."""

from dataclasses import replace as dataclass_replace
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import translation
from hypothesis import given, settings
from hypothesis import strategies as st

from planner import formatting, roi, services
from planner.dashboard import wording
from planner.models import PocRequest
from planner.roi import (
    Blocker,
    Economics,
    LatencyPoint,
    ModelMeasurement,
    capacity_rps,
    cost_per_million,
    evaluate,
    generation_capacity_rps,
    peak_rps,
    replicas_needed,
    request_ms,
)
from planner.templatetags import planner_format
from tests.planner.factories import measured_request, sweep

D = Decimal


def said(report, key):
    """The English sentences of a row's blockers, as the pages word them."""
    with translation.override("en"):
        return wording.blocker_sentences(report.row(key), report)


def reason(report, currency="USD"):
    with translation.override("en"):
        return wording.recommendation_sentence(report, currency)


def point(batch, p50, p95):
    return LatencyPoint(batch_size=batch, p50_ms=p50, p95_ms=p95, p99_ms=p95 + 1)


# Baseline: batch 1 -> 1/0.010 s = 100 rps; batch 4 -> 4/0.020 s = 200 rps (p95 30 ≤ 33);
# batch 8 would give 8/0.025 = 320 rps but its p95 of 50 ms is over the 33 ms target.
BASELINE = ModelMeasurement(
    key="1",
    name="baseline",
    is_baseline=True,
    accuracy=0.95,
    latency=[point(1, 10.0, 20.0), point(4, 20.0, 30.0), point(8, 25.0, 50.0)],
)
# int8: batch 1 -> 200 rps; batch 8 -> 8/0.020 = 400 rps (p95 30 ≤ 33).
INT8 = ModelMeasurement(
    key="2",
    name="quantize.dynamic-int8",
    is_baseline=False,
    accuracy=0.94,
    latency=[point(1, 5.0, 10.0), point(8, 20.0, 30.0)],
    device_hours=10.0,
)
# prune: every batch size is over 33 ms at p95.
PRUNE = ModelMeasurement(
    key="3",
    name="prune.magnitude",
    is_baseline=False,
    accuracy=0.90,
    latency=[point(1, 30.0, 40.0), point(4, 50.0, 60.0)],
    device_hours=1.0,
)


def economics(**overrides):
    values = dict(
        requests_per_day=D(8_640_000),  # 8,640,000 / 86,400 = 100 rps average
        peak_factor=D("2.5"),  # peak = 100 × 2.5 = 250 rps
        target_utilisation=D("0.5"),
        price_per_hour=D("3.6"),
        p95_target_ms=D(33),
        accuracy_floor_pct_of_baseline=D(98),  # 0.95 × 98 / 100 = 0.931
        engineering_hours=D(40),
        engineering_rate=D("130.5"),  # 40 × 130.5 = 5,220
        power_watts=D(300),
        grid_kg_co2_per_kwh=D("0.4"),
    )
    values.update(overrides)
    return Economics(**values)


# --- building blocks ---------------------------------------------------------------------------


def test_capacity_picks_best_batch_meeting_target_and_ignores_those_over_it():
    assert capacity_rps(BASELINE.latency, D(33)) == D(200)  # max(100, 200); batch 8 (320) excluded
    assert capacity_rps(INT8.latency, D(33)) == D(400)  # max(200, 400)
    # Target 20 ms: only batch 1 (p95 20, exactly on target) qualifies -> 100 rps.
    assert capacity_rps(BASELINE.latency, D(20)) == D(100)


def test_capacity_is_zero_when_nothing_meets_target():
    assert capacity_rps(PRUNE.latency, D(33)) == 0


def test_peak_rps():
    assert peak_rps(economics()) == D(250)  # 8,640,000 / 86,400 × 2.5


def test_replicas_ceil_and_floor_of_one():
    assert replicas_needed(D(250), D(200), D("0.5")) == 3  # 250 / 100 = 2.5 -> 3
    assert replicas_needed(D(200), D(200), D("0.5")) == 2  # 200 / 100 = 2 exactly -> 2
    assert replicas_needed(D("0.01"), D(100), D("0.7")) == 1  # 0.01 / 70 ≈ 0.0001 -> ceil 1
    assert replicas_needed(D(0), D(100), D("0.7")) == 1  # no traffic still needs one replica
    assert replicas_needed(D(250), D(0), D("0.5")) is None


def test_replicas_exact_fit_with_inexact_capacity_does_not_add_a_replica():
    capacity = capacity_rps([point(1, 3.0, 3.0)], D(33))  # 1000 / 3 = 333.33… (rounded Decimal)
    # 1400 / (1000/3 × 0.7) = 6 exactly, but the rounded division gives 6.000…001; that must not mean 7.
    assert replicas_needed(D(1400), capacity, D("0.7")) == 6


def test_cost_per_million():
    assert cost_per_million(D("3.6"), D(200), D("0.5")) == D(10)  # 3.6 / (200 × 0.5 × 3600) × 1e6
    assert cost_per_million(D("3.6"), D(400), D("0.5")) == D(5)  # 3.6 / 720,000 × 1e6
    assert cost_per_million(D("3.6"), D(0), D("0.5")) is None


# --- full evaluation ---------------------------------------------------------------------------


def test_full_report_figures():
    report = evaluate([BASELINE, INT8, PRUNE], economics())
    assert report.peak_rps == D(250)
    assert report.accuracy_floor == D("0.931")  # 0.95 × 98 / 100
    assert [r.key for r in report.rows] == ["1", "2", "3"]

    base = report.baseline
    assert base is report.row("1")
    assert base.capacity_rps == D(200)
    assert base.replicas == 3  # ceil(250 / (200 × 0.5)) = ceil(2.5)
    assert base.monthly_cost == D(7884)  # 3 × 3.6 × 730
    assert base.cost_per_million == D(10)
    assert base.monthly_savings == 0
    assert base.one_time_cost == 0  # keeping the current model costs nothing up front
    assert base.payback_months is None
    assert base.roi is None  # nothing invested
    assert base.total_cost_over_horizon == D(94608)  # 0 + 12 × 7,884
    assert base.energy_kwh_month == D(657)  # 3 × 300 × 730 / 1000
    assert base.co2_kg_month == D("262.8")  # 657 × 0.4
    assert base.feasible and base.blockers == ()
    assert base.p95_batch1_ms == D(20)

    int8 = report.row("2")
    assert int8.accuracy == D("0.94")
    assert int8.replicas == 2  # ceil(250 / (400 × 0.5)) = ceil(1.25)
    assert int8.monthly_cost == D(5256)  # 2 × 3.6 × 730
    assert int8.cost_per_million == D(5)
    assert int8.monthly_savings == D(2628)  # 7,884 − 5,256
    assert int8.one_time_cost == D(5256)  # 40 × 130.5 + 10 device-hours × 3.6 = 5,220 + 36
    assert int8.payback_months == D(2)  # 5,256 / 2,628
    assert int8.roi == D(5)  # (2,628 × 12 − 5,256) / 5,256 = 26,280 / 5,256
    assert int8.total_cost_over_horizon == D(68328)  # 5,256 + 12 × 5,256
    assert int8.energy_kwh_month == D(438)  # 2 × 300 × 730 / 1000
    assert int8.co2_kg_month == D("175.2")  # 438 × 0.4
    assert int8.feasible  # 0.94 ≥ 0.931 and p95 10 ms ≤ 33 ms

    prune = report.row("3")
    assert prune.capacity_rps == 0
    assert prune.replicas is None
    assert prune.monthly_cost is None
    assert prune.cost_per_million is None
    assert prune.monthly_savings is None
    assert prune.one_time_cost == D("5223.6")  # 5,220 + 1 × 3.6
    assert prune.payback_months is None
    assert prune.roi is None
    assert prune.total_cost_over_horizon is None
    assert prune.energy_kwh_month is None and prune.co2_kg_month is None
    assert not prune.feasible
    assert prune.blockers == (
        Blocker(roi.ACCURACY, D("0.9"), D("0.931"), roi.FRACTION),
        Blocker(roi.P95, D(40), D(33), roi.MS),
        Blocker(roi.NO_BATCH_SIZE, None, D(33), roi.MS),
    )
    assert prune.misses(roi.ACCURACY) and prune.misses(roi.P95) and not int8.misses(roi.P95)
    assert said(report, "3") == (
        "accuracy 90.0% is 3.1 points below the floor of 93.1%",  # (0.931 − 0.90) × 100
        "p95 at batch 1 is 40.0 ms, 7.0 ms over the 33 ms target",  # 40 − 33
        "no batch size meets the 33 ms p95 target",
    )

    rec = report.recommendation
    assert (rec.key, rec.name, rec.outcome, rec.keeps_baseline) == (
        "2",
        "quantize.dynamic-int8",
        "switch",
        False,
    )
    assert "68,328.00" in reason(report) and "94,608.00" in reason(report) and "2.0 months" in reason(report)


def test_energy_and_co2_are_none_without_power_or_grid():
    report = evaluate([BASELINE, INT8], economics(power_watts=None, grid_kg_co2_per_kwh=None))
    assert report.baseline.energy_kwh_month is None and report.baseline.co2_kg_month is None
    report = evaluate([BASELINE, INT8], economics(grid_kg_co2_per_kwh=None))
    assert report.baseline.energy_kwh_month == D(657)  # 3 × 300 × 730 / 1000
    assert report.baseline.co2_kg_month is None


def test_no_savings_means_no_payback():
    # Same latency as the baseline -> same replicas -> savings 0.
    same = ModelMeasurement("4", "runtime.same", False, 0.95, BASELINE.latency, device_hours=0.0)
    row = evaluate([BASELINE, same], economics()).row("4")
    assert row.monthly_savings == 0  # 7,884 − 7,884
    assert row.payback_months is None
    assert row.roi == D(-1)  # (0 × 12 − 5,220) / 5,220
    # Slower than the baseline -> negative savings, still no payback.
    slow = ModelMeasurement("5", "runtime.slow", False, 0.95, [point(1, 20.0, 30.0)])
    row = evaluate([BASELINE, slow], economics()).row("5")
    assert row.replicas == 10  # capacity 1 / 0.020 = 50 rps; 250 / (50 × 0.5) = 10
    assert row.monthly_savings == D(-18396)  # 7,884 − 10 × 3.6 × 730 = 7,884 − 26,280
    assert row.payback_months is None


def test_accuracy_floor_exactly_met_is_feasible():
    exact = ModelMeasurement("4", "exact", False, 0.931, INT8.latency)  # = 0.95 × 98 %
    assert evaluate([BASELINE, exact], economics()).row("4").feasible
    report = evaluate(
        [BASELINE, INT8], economics(accuracy_floor_pct_of_baseline=None, accuracy_floor_absolute=D("0.94"))
    )
    assert report.row("2").feasible  # 0.94 ≥ 0.94


def test_relative_versus_absolute_floor():
    relative = evaluate([BASELINE, INT8], economics())
    assert relative.accuracy_floor == D("0.931") and relative.row("2").feasible
    absolute = evaluate(
        [BASELINE, INT8], economics(accuracy_floor_pct_of_baseline=None, accuracy_floor_absolute=D("0.945"))
    )
    assert absolute.accuracy_floor == D("0.945")
    assert absolute.row("2").blockers == (Blocker(roi.ACCURACY, D("0.94"), D("0.945"), roi.FRACTION),)
    assert said(absolute, "2") == ("accuracy 94.0% is 0.5 points below the floor of 94.5%",)  # 94.5 − 94.0
    assert absolute.recommendation.key == "1"


def test_batch_one_not_measured_is_a_blocker():
    no_b1 = ModelMeasurement("4", "no-b1", False, 0.95, [point(8, 20.0, 30.0)])
    report = evaluate([BASELINE, no_b1], economics())
    row = report.row("4")
    assert row.capacity_rps == D(400)  # still costed: 8 / 0.020
    assert row.p95_batch1_ms is None
    assert not row.feasible and row.blockers == (Blocker(roi.P95, None, D(33), roi.MS),)
    assert said(report, "4") == ("p95 at batch 1 was not measured",)


def test_nothing_feasible_names_every_blocker_with_amount():
    report = evaluate(
        [BASELINE, INT8, PRUNE],
        economics(accuracy_floor_pct_of_baseline=None, accuracy_floor_absolute=D("0.96")),
    )
    rec = report.recommendation
    assert rec.key is None and rec.name is None and not rec.keeps_baseline and rec.outcome == roi.BLOCKED
    assert reason(report) == "No model meets the targets."
    assert said(report, "1") == ("accuracy 95.0% is 1.0 points below the floor of 96.0%",)  # 96 − 95
    assert said(report, "2") == ("accuracy 94.0% is 2.0 points below the floor of 96.0%",)
    assert said(report, "3")[:2] == (
        "accuracy 90.0% is 6.0 points below the floor of 96.0%",
        "p95 at batch 1 is 40.0 ms, 7.0 ms over the 33 ms target",  # 40 − 33
    )


def test_baseline_wins_when_switching_costs_too_much():
    report = evaluate([BASELINE, INT8], economics(engineering_rate=D(10_000)))
    # int8: one-time 40 × 10,000 + 36 = 400,036; total 400,036 + 63,072 = 463,108 > baseline 94,608.
    assert report.row("2").total_cost_over_horizon == D(463108)
    rec = report.recommendation
    assert (rec.key, rec.keeps_baseline, rec.outcome) == ("1", True, roi.KEEP)
    assert "Keep the current model" in reason(report) and "94,608.00" in reason(report)


def test_tie_on_total_cost_goes_to_higher_accuracy():
    # Same latency and device-hours -> identical totals (68,328); listed worse-first to rule out input order.
    worse = ModelMeasurement("4", "worse", False, 0.935, INT8.latency, device_hours=10.0)
    better = ModelMeasurement("5", "better", False, 0.945, INT8.latency, device_hours=10.0)
    report = evaluate([BASELINE, worse, better], economics())
    assert report.row("4").total_cost_over_horizon == report.row("5").total_cost_over_horizon == D(68328)
    assert report.recommendation.key == "5"


def test_floats_are_converted_via_str():
    e = economics(price_per_hour=3.6, target_utilisation=0.5, peak_factor=2.5)
    assert e.price_per_hour == D("3.6") and e.target_utilisation == D("0.5")
    assert evaluate([BASELINE, INT8], e).baseline.monthly_cost == D(7884)  # 3 × 3.6 × 730


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"requests_per_day": D(-1)}, "requests_per_day"),
        ({"price_per_hour": D("-0.01")}, "price_per_hour"),
        ({"p95_target_ms": D(0)}, "p95_target_ms"),
        ({"peak_factor": D("0.9")}, "peak_factor"),
        ({"target_utilisation": D(0)}, "target_utilisation"),
        ({"target_utilisation": D("1.1")}, "target_utilisation"),
        ({"horizon_months": 0}, "horizon_months"),
        ({"engineering_hours": D(-1)}, "engineering_hours"),
        ({"engineering_rate": D(-1)}, "engineering_rate"),
        ({"accuracy_floor_absolute": D("0.9")}, "exactly one"),  # both floors set
        ({"accuracy_floor_pct_of_baseline": None}, "exactly one"),  # neither set
        (
            {"accuracy_floor_pct_of_baseline": None, "accuracy_floor_absolute": D("1.5")},
            "accuracy_floor_absolute",
        ),
        ({"power_watts": D(-5)}, "power_watts"),
        ({"price_per_hour": D("NaN")}, "finite"),
    ],
)
def test_economics_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        economics(**overrides)


def test_exactly_one_baseline_and_unique_keys():
    with pytest.raises(ValueError, match="baseline"):
        evaluate([INT8], economics())
    with pytest.raises(ValueError, match="baseline"):
        evaluate([BASELINE, ModelMeasurement("9", "b2", True, 0.9, BASELINE.latency)], economics())
    with pytest.raises(ValueError, match="unique"):
        evaluate([BASELINE, INT8, INT8], economics())


# --- property ----------------------------------------------------------------------------------

latency_points = st.lists(
    st.builds(
        lambda b, p50, extra: point(b, p50, p50 + extra),
        st.sampled_from([1, 2, 4, 8, 16, 32]),
        st.floats(min_value=0.1, max_value=300, allow_nan=False),
        st.floats(min_value=0, max_value=100, allow_nan=False),
    ),
    min_size=1,
    max_size=5,
)
models = st.lists(
    st.tuples(st.floats(min_value=0, max_value=1), latency_points, st.floats(min_value=0, max_value=100)),
    min_size=1,
    max_size=5,
)


def money(lo, hi):
    return st.decimals(min_value=lo, max_value=hi, places=2, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    models=models,
    requests_per_day=money(0, 10**10),
    peak_factor=money(1, 10),
    utilisation=money(D("0.01"), 1),
    price=money(0, 100),
    target=money(1, 400),
    floor_pct=st.one_of(st.none(), money(50, 110)),
    floor_abs=money(0, 1),
    hours=money(0, 500),
    rate=money(0, 300),
)
def test_property_replicas_cover_peak_and_recommendation_is_feasible(
    models, requests_per_day, peak_factor, utilisation, price, target, floor_pct, floor_abs, hours, rate
):
    measurements = [
        ModelMeasurement(str(i), f"m{i}", i == 0, acc, latency, device_hours=dh)
        for i, (acc, latency, dh) in enumerate(models)
    ]
    e = Economics(
        requests_per_day=requests_per_day,
        peak_factor=peak_factor,
        target_utilisation=utilisation,
        price_per_hour=price,
        p95_target_ms=target,
        accuracy_floor_pct_of_baseline=floor_pct,
        accuracy_floor_absolute=None if floor_pct is not None else floor_abs,
        engineering_hours=hours,
        engineering_rate=rate,
    )
    report = evaluate(measurements, e)
    for row in report.rows:
        if row.capacity_rps > 0:
            # Allow 1e-20 relative: capacity is a rounded quotient, and an exact fit is not charged a replica.
            assert row.replicas * row.capacity_rps * e.target_utilisation >= report.peak_rps * (
                1 - D("1e-20")
            )
        else:
            assert row.replicas is None and row.total_cost_over_horizon is None
    rec = report.recommendation
    feasible = [r for r in report.rows if r.feasible]
    if rec.key is None:
        assert not feasible
    else:
        chosen = report.row(rec.key)
        assert chosen.feasible
        assert chosen.total_cost_over_horizon == min(r.total_cost_over_horizon for r in feasible)
        assert rec.keeps_baseline == chosen.is_baseline


# --- text generation (causal LM) ---------------------------------------------------------------


def gen_point(batch, ttft_p50, ttft_p95, itl_p50, itl_p95, new_tokens=32):
    """A generation latency point; its end-to-end p50 is what generating ``new_tokens`` took."""
    e2e = ttft_p50 + (new_tokens - 1) * itl_p50
    return LatencyPoint(
        batch_size=batch,
        p50_ms=e2e,
        p95_ms=e2e * 1.2,
        p99_ms=e2e * 1.3,
        ttft_p50_ms=ttft_p50,
        ttft_p95_ms=ttft_p95,
        itl_p50_ms=itl_p50,
        itl_p95_ms=itl_p95,
    )


# With M = 100 output tokens a request takes t(b) = TTFT p50 + 99 × ITL p50.
# Baseline: batch 1 -> 10 + 99 × 10 = 1,000 ms -> 1 rps; batch 4 -> 20 + 99 × 20 = 2,000 ms -> 4 / 2 s = 2 rps;
# batch 8 would give more but its TTFT p95 (300 ms) is over the 200 ms target.
LM_BASELINE = ModelMeasurement(
    key="1",
    name="baseline",
    is_baseline=True,
    accuracy=0.0,
    latency=[
        gen_point(1, 10.0, 15.0, 10.0, 12.0),
        gen_point(4, 20.0, 30.0, 20.0, 25.0),
        gen_point(8, 50.0, 300.0, 25.0, 30.0),
    ],
    perplexity=12.0,
)
# int8: perplexity 12.6 (5% above 12.0; the limit is +10% = 13.2). Batch 1 -> 5 + 99 × 5 = 500 ms -> 2 rps;
# batch 8 -> 10 + 99 × 10 = 1,000 ms -> 8 rps (TTFT p95 120 ≤ 200, ITL p95 15 ≤ 50).
LM_INT8 = ModelMeasurement(
    key="2",
    name="quantize.weight-only",
    is_baseline=False,
    accuracy=0.0,
    latency=[gen_point(1, 5.0, 8.0, 5.0, 7.0), gen_point(8, 10.0, 120.0, 10.0, 15.0)],
    device_hours=10.0,
    perplexity=12.6,
    exact_match=0.25,
)
# Too slow at every batch size and 20% worse: misses all three targets.
LM_PRUNED = ModelMeasurement(
    key="3",
    name="prune.layers → quantize.weight-only",
    is_baseline=False,
    accuracy=0.0,
    latency=[gen_point(1, 200.0, 250.0, 40.0, 60.0), gen_point(4, 300.0, 400.0, 50.0, 70.0)],
    device_hours=1.0,
    perplexity=14.4,
)


def lm_economics(**overrides):
    values = dict(
        task="causal-lm",
        requests_per_day=D(864_000),  # 864,000 / 86,400 = 10 rps average
        peak_factor=D(2),  # peak = 20 rps
        target_utilisation=D("0.5"),
        price_per_hour=D("3.6"),
        p95_target_ms=D(200),  # TTFT p95
        per_token_target_ms=D(50),  # ITL p95
        output_tokens_per_request=100,
        perplexity_increase_pct=D(10),
        engineering_hours=D(40),
        engineering_rate=D(100),  # 40 × 100 = 4,000
        power_watts=D(300),
        grid_kg_co2_per_kwh=D("0.4"),
    )
    values.update(overrides)
    return Economics(**values)


def test_generation_request_time_and_capacity():
    base_b1 = LM_BASELINE.latency[0]
    assert request_ms(base_b1, 100) == D(1000)  # 10 + 99 × 10
    assert request_ms(base_b1, 1) == D(10)  # the first token only
    # Batch 8 is out (TTFT p95 300 > 200), so batch 4's 2 rps beats batch 1's 1 rps.
    assert generation_capacity_rps(LM_BASELINE.latency, D(200), D(50), 100) == D(2)
    # With a 400 ms TTFT target batch 8 counts: 8 × 1000 / (50 + 99 × 25) = 8,000 / 2,525.
    assert generation_capacity_rps(LM_BASELINE.latency, D(400), D(50), 100) == D(8000) / D(2525)
    # A 21 ms per-token target leaves batch 1 only (ITL p95 12; batch 4's 25 is over): 1 rps.
    assert generation_capacity_rps(LM_BASELINE.latency, D(200), D(21), 100) == D(1)
    # One output token: batch 4 -> 4 × 1000 / 20 = 200 rps.
    assert generation_capacity_rps(LM_BASELINE.latency, D(200), D(50), 1) == D(200)
    assert generation_capacity_rps(LM_PRUNED.latency, D(200), D(50), 100) == 0


def test_generation_report_figures():
    report = evaluate([LM_BASELINE, LM_INT8, LM_PRUNED], lm_economics())
    assert report.peak_rps == D(20)
    assert report.accuracy_floor is None
    assert report.perplexity_ceiling == D("13.2")  # 12 × 1.10

    base = report.baseline
    assert base.capacity_rps == D(2)
    assert base.replicas == 20  # 20 / (2 × 0.5)
    assert base.monthly_cost == D(52560)  # 20 × 3.6 × 730
    assert base.cost_per_million == D(1000)  # 3.6 / (2 × 0.5 × 3,600) × 1e6
    assert base.cost_per_million_tokens == D(10)  # 1,000 / 100 tokens
    assert base.tokens_per_s_capacity == D(200)  # 2 rps × 100 tokens
    assert base.ttft_p95_batch1_ms == D(15) and base.itl_p95_batch1_ms == D(12)
    assert base.perplexity == D(12) and base.perplexity_change == 0
    assert base.one_time_cost == 0 and base.feasible and base.blockers == ()
    assert base.capacity_batch_size == 4
    assert base.total_cost_over_horizon == D(630720)  # 12 × 52,560
    assert base.energy_kwh_month == D(4380)  # 20 × 300 × 730 / 1000

    int8 = report.row("2")
    assert int8.capacity_rps == D(8)  # batch 8: 8 × 1000 / 1,000 ms
    assert int8.replicas == 5  # 20 / (8 × 0.5)
    assert int8.monthly_cost == D(13140)  # 5 × 3.6 × 730
    assert int8.cost_per_million == D(250)  # 3.6 / (8 × 0.5 × 3,600) × 1e6
    assert int8.cost_per_million_tokens == D("2.5")  # 250 / 100
    assert int8.tokens_per_s_capacity == D(800)
    assert int8.monthly_savings == D(39420)  # 52,560 − 13,140
    assert int8.one_time_cost == D(4036)  # 4,000 + 10 device-hours × 3.6
    assert int8.payback_months == D(4036) / D(39420)
    assert int8.roi == (D(39420) * 12 - D(4036)) / D(4036)
    assert int8.total_cost_over_horizon == D(161716)  # 4,036 + 12 × 13,140
    assert int8.perplexity_change == D("0.05")  # 12.6 / 12 − 1
    assert int8.exact_match == D("0.25")
    assert int8.feasible  # 12.6 ≤ 13.2, TTFT p95 8 ≤ 200, ITL p95 7 ≤ 50

    pruned = report.row("3")
    assert pruned.capacity_rps == 0 and pruned.replicas is None and pruned.cost_per_million_tokens is None
    assert pruned.capacity_batch_size is None
    assert pruned.one_time_cost == D("4003.6")  # 4,000 + 1 × 3.6
    assert pruned.blockers == (
        Blocker(roi.PERPLEXITY, D("14.4"), D("13.2"), roi.PLAIN),
        Blocker(roi.TTFT, D(250), D(200), roi.MS),
        Blocker(roi.ITL, D(60), D(50), roi.MS),
        Blocker(roi.NO_BATCH_SIZE, None, D(200), roi.MS),
    )
    assert said(report, "3") == (
        "perplexity 14.40 is 20.0% above the baseline's 12.00 (limit +10%)",  # 14.4 / 12 − 1
        "TTFT p95 at batch 1 is 250.0 ms, 50.0 ms over the 200 ms target",
        "inter-token p95 at batch 1 is 60.0 ms, 10.0 ms over the 50 ms per-token target",
        "no batch size meets the 200 ms TTFT and 50 ms per-token targets",
    )

    rec = report.recommendation
    assert (rec.key, rec.keeps_baseline) == ("2", False)
    assert reason(report) == (
        "Switch to quantize.weight-only: it keeps perplexity within +10% of the baseline's (13.20 at most) "
        "and meets the 200 ms TTFT and 50 ms per-token targets at the lowest 12-month total cost "
        "($161,716.00 vs $630,720.00 for the current model). It pays back in 0.1 months."
    )


def test_generation_output_length_changes_capacity_and_cost_per_token():
    short = evaluate([LM_BASELINE, LM_INT8], lm_economics(output_tokens_per_request=1)).row("2")
    # One token: batch 1 -> 1000 / 5 = 200 rps; batch 8 -> 8 × 1000 / 10 = 800 rps.
    assert short.capacity_rps == D(800)
    assert short.cost_per_million == short.cost_per_million_tokens == D("2.5")  # 3.6 / 1,440,000 × 1e6
    assert short.tokens_per_s_capacity == D(800)


def test_generation_per_token_and_ttft_blockers_alone():
    slow_tokens = ModelMeasurement(
        "4", "slow decode", False, 0.0, [gen_point(1, 5.0, 8.0, 40.0, 55.0)], perplexity=12.0
    )
    report = evaluate([LM_BASELINE, slow_tokens], lm_economics())
    assert report.row("4").blockers == (
        Blocker(roi.ITL, D(55), D(50), roi.MS),
        Blocker(roi.NO_BATCH_SIZE, None, D(200), roi.MS),
    )
    assert said(report, "4") == (
        "inter-token p95 at batch 1 is 55.0 ms, 5.0 ms over the 50 ms per-token target",
        "no batch size meets the 200 ms TTFT and 50 ms per-token targets",
    )
    slow_start = ModelMeasurement(
        "5", "slow start", False, 0.0, [gen_point(1, 150.0, 201.0, 5.0, 7.0)], perplexity=12.0
    )
    report = evaluate([LM_BASELINE, slow_start], lm_economics())
    assert said(report, "5")[0] == "TTFT p95 at batch 1 is 201.0 ms, 1.0 ms over the 200 ms target"


def test_generation_perplexity_limit_exactly_met_is_feasible_and_zero_allows_no_rise():
    at_limit = ModelMeasurement("4", "at limit", False, 0.0, LM_INT8.latency, perplexity=13.2)
    assert evaluate([LM_BASELINE, at_limit], lm_economics()).row("4").feasible
    report = evaluate([LM_BASELINE, LM_INT8], lm_economics(perplexity_increase_pct=D(0)))
    assert report.row("2").blockers == (Blocker(roi.PERPLEXITY, D("12.6"), D(12), roi.PLAIN),)
    assert said(report, "2") == ("perplexity 12.60 is 5.0% above the baseline's 12.00 (limit +0%)",)


def test_generation_timings_missing_are_blockers():
    # A point from a classification-style sweep (no TTFT/ITL) is not counted for generation.
    untimed = ModelMeasurement("4", "untimed", False, 0.0, [point(1, 5.0, 8.0)], perplexity=12.0)
    report = evaluate([LM_BASELINE, untimed], lm_economics())
    assert report.row("4").capacity_rps == 0
    assert report.row("4").blockers == (
        Blocker(roi.TTFT, None, D(200), roi.MS),
        Blocker(roi.ITL, None, D(50), roi.MS),
        Blocker(roi.NO_BATCH_SIZE, None, D(200), roi.MS),
    )
    assert said(report, "4") == (
        "TTFT at batch 1 was not measured",
        "inter-token latency at batch 1 was not measured",
        "no batch size meets the 200 ms TTFT and 50 ms per-token targets",
    )
    no_perplexity = ModelMeasurement("5", "no ppl", False, 0.0, LM_INT8.latency)
    report = evaluate([LM_BASELINE, no_perplexity], lm_economics())
    assert report.row("5").blockers == (Blocker(roi.PERPLEXITY, None, D("13.2"), roi.PLAIN),)
    assert said(report, "5") == ("perplexity was not measured",)
    base_unmeasured = ModelMeasurement("1", "baseline", True, 0.0, LM_BASELINE.latency)
    report = evaluate([base_unmeasured, LM_INT8], lm_economics())
    assert report.perplexity_ceiling is None
    assert report.row("2").blockers == (Blocker(roi.BASELINE_PERPLEXITY, D("12.6"), None, roi.PLAIN),)
    assert said(report, "2") == ("the baseline's perplexity was not measured",)
    assert report.recommendation.outcome == roi.BLOCKED


def test_generation_tie_on_total_cost_goes_to_lower_perplexity():
    worse = ModelMeasurement("4", "worse", False, 0.0, LM_INT8.latency, device_hours=10.0, perplexity=12.5)
    better = ModelMeasurement("5", "better", False, 0.0, LM_INT8.latency, device_hours=10.0, perplexity=12.3)
    report = evaluate([LM_BASELINE, worse, better], lm_economics())
    assert report.row("4").total_cost_over_horizon == report.row("5").total_cost_over_horizon
    assert report.recommendation.key == "5"


def test_generation_nothing_feasible_and_baseline_cannot_serve():
    report = evaluate([LM_BASELINE, LM_PRUNED], lm_economics(p95_target_ms=D(10)))
    rec = report.recommendation
    assert rec.key is None and rec.outcome == roi.BLOCKED
    assert said(report, "1")[0] == "TTFT p95 at batch 1 is 15.0 ms, 5.0 ms over the 10 ms target"
    # The baseline misses the TTFT target, int8 meets it: switching is the only way to serve.
    report = evaluate([LM_BASELINE, LM_INT8], lm_economics(p95_target_ms=D(10)))
    assert report.baseline.monthly_cost is None
    # int8 serves at batch 1 only (batch 8's TTFT p95 is 120 ms): 2 rps → 20 replicas; 4,036 + 12 × 52,560.
    assert reason(report).endswith(
        "($634,756.00); the current model cannot serve within the 10 ms TTFT and 50 ms per-token targets."
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"per_token_target_ms": None}, "per_token_target_ms must be set"),
        ({"per_token_target_ms": D(0)}, "per_token_target_ms must be > 0"),
        ({"output_tokens_per_request": 0}, "output_tokens_per_request"),
        ({"output_tokens_per_request": D(5)}, "output_tokens_per_request"),
        ({"perplexity_increase_pct": D(-1)}, "perplexity_increase_pct"),
        ({"task": "translation"}, "task must be one of"),
    ],
)
def test_generation_economics_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        lm_economics(**overrides)


def test_generation_needs_no_accuracy_floor_and_classification_ignores_the_lm_fields():
    assert lm_economics().accuracy_floor_pct_of_baseline is None
    assert lm_economics(accuracy_floor_pct_of_baseline=D(97)).is_generative
    # The same classification figures as before, whatever the (unused) generation settings say.
    plain = evaluate([BASELINE, INT8, PRUNE], economics())
    with_lm_fields = evaluate(
        [BASELINE, INT8, PRUNE], economics(output_tokens_per_request=7, perplexity_increase_pct=D(3))
    )
    assert plain.rows == with_lm_fields.rows and plain.recommendation == with_lm_fields.recommendation
    assert plain.row("2").cost_per_million_tokens is None and plain.row("2").perplexity is None


def test_generation_perplexity_must_be_positive():
    broken = ModelMeasurement("4", "broken", False, 0.0, LM_INT8.latency, perplexity=0.0)
    with pytest.raises(ValueError, match="perplexity of broken"):
        evaluate([LM_BASELINE, broken], lm_economics())


gen_points = st.lists(
    st.builds(
        lambda b, ttft, ttft_extra, itl, itl_extra: gen_point(
            b, ttft, ttft + ttft_extra, itl, itl + itl_extra
        ),
        st.sampled_from([1, 2, 4, 8, 16]),
        st.floats(min_value=0.1, max_value=500, allow_nan=False),
        st.floats(min_value=0, max_value=200, allow_nan=False),
        st.floats(min_value=0.01, max_value=100, allow_nan=False),
        st.floats(min_value=0, max_value=50, allow_nan=False),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(
    models=st.lists(
        st.tuples(st.floats(min_value=1, max_value=1000), gen_points, st.floats(min_value=0, max_value=10)),
        min_size=1,
        max_size=4,
    ),
    tokens=st.integers(min_value=1, max_value=4096),
    ttft_target=money(1, 600),
    itl_target=money(D("0.1"), 150),
    rise=money(0, 50),
    requests_per_day=money(0, 10**9),
)
def test_property_generation_costs_are_per_token_consistent_and_longer_replies_never_raise_capacity(
    models, tokens, ttft_target, itl_target, rise, requests_per_day
):
    measurements = [
        ModelMeasurement(str(i), f"m{i}", i == 0, 0.0, latency, device_hours=dh, perplexity=ppl)
        for i, (ppl, latency, dh) in enumerate(models)
    ]
    e = lm_economics(
        requests_per_day=requests_per_day,
        p95_target_ms=ttft_target,
        per_token_target_ms=itl_target,
        perplexity_increase_pct=rise,
        output_tokens_per_request=tokens,
    )
    report = evaluate(measurements, e)
    longer = evaluate(measurements, lm_economics(**{**e.__dict__, "output_tokens_per_request": tokens + 1}))
    for row in report.rows:
        assert row.tokens_per_s_capacity == row.capacity_rps * tokens
        assert longer.row(row.key).capacity_rps <= row.capacity_rps
        if row.cost_per_million is None:
            assert row.capacity_rps == 0 and row.cost_per_million_tokens is None
        else:
            assert row.cost_per_million_tokens == row.cost_per_million / tokens
        if row.feasible:
            assert row.capacity_rps > 0 and row.perplexity <= report.perplexity_ceiling
    rec = report.recommendation
    if rec.key is not None:
        feasible = [r for r in report.rows if r.feasible]
        assert report.row(rec.key).total_cost_over_horizon == min(r.total_cost_over_horizon for r in feasible)


# --- the one formatter: half up everywhere, "—" for what was not measured -------------------------------


def test_formatting_rounds_half_up_and_shows_missing_figures_as_a_dash():
    assert formatting.fixed(D("0.25"), 1) == "0.3"  # half-even would give 0.2
    assert formatting.fixed(2.25, 1) == "2.3"  # a float goes through str(): 2.25, not 2.2499…
    assert formatting.fixed(D("2523.245"), 2, grouped=True) == "2,523.25"
    assert f"{D('2523.245'):,.2f}" == "2,523.24"  # what Decimal's own format (half even) would show
    assert formatting.fixed(D("-0.04"), 1) == "0.0"  # not −0.0
    assert formatting.percent_text(D("0.12345"), 2) == "12.35%"
    assert formatting.change_text(D("0.0005")) == "+0.1%" and formatting.change_text(D("-0.0004")) == "±0.0%"
    assert formatting.measured_ms_text(D("7.255")) == "7.26 ms" and formatting.ms_text(D("33.0")) == "33 ms"
    for shown in (
        formatting.fixed(None, 1),
        formatting.percent_text(None),
        formatting.money_text(None, "USD"),
        formatting.ms_text(None),
        planner_format.pct(None),
        planner_format.number(None),
        planner_format.money(None, "USD"),
        planner_format.months(None),
    ):
        assert shown == "—"


def test_currency_places_jpy_has_no_decimals():
    assert formatting.currency_places("JPY") == 0 and formatting.currency_places("EUR") == 2
    assert formatting.money_text(D("2523.245"), "JPY") == "¥2,523"
    assert formatting.money_text(D("2523.5"), "JPY") == "¥2,524"  # half up
    assert formatting.money_text(D("2523.245"), "USD") == "$2,523.25"
    assert formatting.money_text(D("-3"), "EUR") == "−€3.00"
    assert formatting.quantize_money(D("2523.245"), "JPY") == D(2523)
    assert planner_format.money(D("2523.245"), "JPY") == "¥2,523"


def test_a_quarter_point_gap_and_a_half_tenth_target_round_up_in_the_sentences():
    # Floor 94.25%, int8 has 94.0%: 0.25 points below. Half even showed "0.2" and "94.2%".
    report = evaluate(
        [BASELINE, INT8], economics(accuracy_floor_pct_of_baseline=None, accuracy_floor_absolute=D("0.9425"))
    )
    assert report.row("2").blockers == (Blocker(roi.ACCURACY, D("0.94"), D("0.9425"), roi.FRACTION),)
    assert said(report, "2") == ("accuracy 94.0% is 0.3 points below the floor of 94.3%",)


def test_a_payback_of_two_and_a_quarter_months_shows_as_2_3_everywhere():
    # int8: one-time 40 × 146.925 + 10 × 3.6 = 5,877 + 36 = 5,913; savings 2,628; 5,913 / 2,628 = 2.25.
    report = evaluate([BASELINE, INT8], economics(engineering_rate=D("146.925")))
    int8 = report.row("2")
    assert int8.one_time_cost == D(5913) and int8.payback_months == D("2.25")
    assert reason(report).endswith(" It pays back in 2.3 months.")
    with translation.override("en"):
        assert planner_format.months(int8.payback_months) == "2.3 months"


def test_the_recommendation_sentence_and_the_page_round_money_the_same_way():
    # No traffic: one replica; 1 × 3.4565 × 730 = 2,523.245 a month, over a 1-month horizon.
    report = evaluate([BASELINE], economics(price_per_hour=D("3.4565"), horizon_months=1, requests_per_day=0))
    base = report.baseline
    assert base.total_cost_over_horizon == D("2523.245") and report.recommendation.outcome == roi.KEEP
    assert reason(report) == (
        "Keep the current model: no compressed candidate that meets the targets costs less over 1 month "
        "($2,523.25 for the current model)."
    )
    assert planner_format.money(base.total_cost_over_horizon, "USD") == "$2,523.25"
    assert "(¥2,523 for the current model)" in reason(report, "JPY")


# --- blocked, never "keep", when nothing meets the targets -----------------------------------------------


def test_an_unmeasured_baseline_accuracy_blocks_every_model_instead_of_keeping_the_baseline():
    # A relative floor of an unmeasured baseline cannot be known. Read as 0 (as it once was), the floor was
    # 0 and every model "met" it, so the baseline was kept (or a candidate chosen) on a floor of nothing.
    unmeasured = ModelMeasurement("1", "baseline", True, None, BASELINE.latency)
    report = evaluate([unmeasured, INT8], economics())
    assert report.accuracy_floor is None
    assert report.recommendation == roi.Recommendation(None, None, roi.BLOCKED)
    assert not report.recommendation.keeps_baseline
    assert report.baseline.accuracy is None  # None through, never 0
    assert report.baseline.blockers == (Blocker(roi.ACCURACY, None, None, roi.FRACTION),)
    assert report.row("2").blockers == (Blocker(roi.BASELINE_ACCURACY, D("0.94"), None, roi.FRACTION),)
    assert said(report, "1") == ("accuracy was not measured",)
    assert said(report, "2") == ("the baseline's accuracy was not measured",)
    assert reason(report) == "No model meets the targets."
    # Both are within the 33 ms target, so only the floor blocks; the best accuracy there is int8's.
    blocking = roi.blocking_targets(report)
    assert blocking == {"accuracy": {"floor": None, "best": "0.94", "candidate": "quantize.dynamic-int8"}}
    with translation.override("en"):
        assert wording.blocking_sentences(blocking) == [
            "Accuracy floor: the baseline's accuracy was not measured."
        ]


def test_when_the_baseline_and_every_candidate_miss_a_target_the_outcome_is_blocked():
    # Target 15 ms: the baseline (p95 20 ms at batch 1) misses it; int8 (10 ms) is fast but below the 96% floor.
    report = evaluate(
        [BASELINE, INT8],
        economics(
            p95_target_ms=D(15), accuracy_floor_pct_of_baseline=None, accuracy_floor_absolute=D("0.95")
        ),
    )
    assert report.recommendation.outcome == roi.BLOCKED and report.recommendation.blocked
    assert report.baseline.misses(roi.P95) and not report.baseline.misses(roi.ACCURACY)
    assert report.row("2").misses(roi.ACCURACY) and not report.row("2").misses(roi.P95)
    assert said(report, "1")[0] == "p95 at batch 1 is 20.0 ms, 5.0 ms over the 15 ms target"  # 20 − 15
    assert said(report, "2") == ("accuracy 94.0% is 1.0 points below the floor of 95.0%",)  # 95 − 94
    assert roi.blocking_targets(report) == {
        "p95": {"target_ms": "15", "best_ms": "20.0", "candidate": "baseline"},
        "accuracy": {"floor": "0.95", "best": "0.94", "candidate": "quantize.dynamic-int8"},
    }


@pytest.mark.django_db
def test_a_finished_request_whose_baseline_accuracy_is_missing_is_summarised_and_shown_as_blocked(
    client_logged_in, user, cpu_hardware
):
    poc_request = measured_request(
        owner=user, hardware=cpu_hardware, models=[(0.90, sweep(20)), (0.89, sweep(10))]
    )
    assert poc_request.summary.outcome == "keep"
    # Read as 0, the missing accuracy made the floor 0 × 97% = 0: the baseline "met" it and was kept.
    poc_request.candidates.filter(position=0).update(accuracy=None)
    services.poc_request_summary_refresh(request_id=poc_request.pk)
    poc_request.refresh_from_db()
    assert poc_request.summary.outcome == "blocked" and poc_request.summary.candidate_id is None
    body = client_logged_in.get(
        reverse("planner:request-detail", args=[poc_request.pk]), HTTP_ACCEPT_LANGUAGE="en"
    ).content.decode()
    assert "No candidate meets the targets" in body and "Keep the current model" not in body
    assert "accuracy was not measured" in body and "the baseline&#x27;s accuracy was not measured" in body


# --- unmeasured figures stay None -------------------------------------------------------------------------


def test_unmeasured_accuracy_and_device_hours_stay_none():
    no_accuracy = ModelMeasurement("4", "no accuracy", False, None, INT8.latency, device_hours=10.0)
    no_hours = ModelMeasurement("5", "no hours", False, 0.94, INT8.latency)  # device-hours not measured
    report = evaluate([BASELINE, no_accuracy, no_hours], economics())
    row = report.row("4")
    assert row.accuracy is None and not row.feasible
    assert row.blockers == (Blocker(roi.ACCURACY, None, D("0.931"), roi.FRACTION),)
    assert said(report, "4") == ("accuracy was not measured",)
    assert formatting.percent_text(row.accuracy) == "—"
    hours = report.row("5")
    assert hours.feasible and hours.monthly_savings == D(2628)  # costed: 7,884 − 5,256
    # The one-time cost is unknown (not 5,220 as if the compression run were free), and so is all after it.
    assert hours.one_time_cost is None and hours.payback_months is None and hours.roi is None
    assert hours.total_cost_over_horizon is None
    assert planner_format.money(hours.one_time_cost, "USD") == "—"
    # A model whose total is unknown ranks after every known one: the baseline (94,608) is kept.
    assert report.recommendation.outcome == roi.KEEP


# --- immediate payback -------------------------------------------------------------------------------------


def test_a_saving_switch_with_no_one_time_cost_pays_back_immediately():
    free = ModelMeasurement("2", "runtime.free", False, 0.94, INT8.latency, device_hours=0.0)
    report = evaluate([BASELINE, free], economics(engineering_hours=D(0)))
    row = report.row("2")
    assert row.one_time_cost == 0 and row.monthly_savings == D(2628)  # 7,884 − 5,256
    assert row.payback_months == 0 and row.pays_back_immediately
    assert row.roi is None  # nothing invested: no ratio
    assert row.total_cost_over_horizon == D(63072)  # 0 + 12 × 5,256
    assert report.recommendation.outcome == roi.SWITCH
    assert reason(report).endswith(
        "($63,072.00 vs $94,608.00 for the current model). It pays back immediately."
    )
    with translation.override("en"):
        assert planner_format.months(row.payback_months) == "immediately"
    with translation.override("ja"):
        assert wording.recommendation_sentence(report, "USD").endswith("すぐに投資を回収できます。")
        assert planner_format.months(row.payback_months) == "即時"
    # Saving nothing for free is not a payback at all.
    same = ModelMeasurement("3", "runtime.same", False, 0.95, BASELINE.latency, device_hours=0.0)
    row = evaluate([BASELINE, same], economics(engineering_hours=D(0))).row("3")
    assert row.payback_months is None and not row.pays_back_immediately


# --- capacity with its batch size --------------------------------------------------------------------------


def test_capacity_comes_with_the_batch_size_that_gives_it():
    e = economics()
    assert roi.capacity(BASELINE, e) == roi.Capacity(D(200), 4)  # batch 4: 4 / 0.020 s; batch 8 is over 33 ms
    assert roi.capacity(INT8, e) == roi.Capacity(D(400), 8)
    assert roi.capacity(PRUNE, e) == roi.Capacity(D(0), None)
    report = evaluate([BASELINE, INT8, PRUNE], e)
    assert [r.capacity_batch_size for r in report.rows] == [4, 8, None]
    assert roi.capacity(LM_INT8, lm_economics()) == roi.Capacity(D(8), 8)  # 8 × 1000 / 1,000 ms


# --- the currency of a request is its hardware's -----------------------------------------------------------


@pytest.mark.django_db
def test_a_request_in_another_currency_than_its_hardware_is_refused(user, cpu_hardware):
    assert cpu_hardware.currency == "USD"
    with pytest.raises(ValidationError) as refused:
        services.poc_request_create(
            owner=user,
            title="Euro",
            model_ref="demo",
            dataset_ref="demo",
            p95_target_ms=D(30),
            requests_per_day=1000,
            hardware=cpu_hardware,
            pipelines=[],
            currency="EUR",
        )
    assert refused.value.message_dict == {
        "currency": ["CPU, 2 vCPU is priced in USD; choose USD or another hardware profile."]
    }
    assert not PocRequest.objects.filter(title="Euro").exists()


# --- trust under noise: intervals, unstable measurements, too few samples ----------------------------------


def test_a_borderline_baseline_is_undecided_not_blocked():
    # Batch 1: p95 32 ms, interval 30–35 straddles 33 ms; batch 4: p95 30 (no bounds) meets it.
    base = ModelMeasurement(
        "1",
        "baseline",
        True,
        0.95,
        [LatencyPoint(1, 10.0, 32.0, 40.0, p95_low_ms=30.0, p95_high_ms=35.0), point(4, 20.0, 30.0)],
    )
    report = evaluate([base, PRUNE], economics())
    row = report.baseline
    assert (row.verdict, row.feasible, row.blockers) == (roi.UNDECIDED, False, ())
    assert row.undecided == (Blocker(roi.BORDERLINE, D(32), D(33), roi.MS, roi.P95, D(30), D(35)),)
    assert row.uncertain(roi.P95) and not row.misses(roi.P95)
    assert report.row("3").verdict == roi.INFEASIBLE  # prune clearly misses 33 ms (40 ms, no bounds)
    rec = report.recommendation
    assert (rec.outcome, rec.key, rec.pending, rec.rerun) == (roi.UNDECIDED, None, ("1",), roi.MORE_ROUNDS)
    assert not rec.blocked and roi.blocking_targets(report) == {}
    sentence = (
        "p95 at batch 1 is 32.0 ms (30.0–35.0), an interval that straddles the 33 ms target: borderline, "
    )
    sentence += "within the measurement's uncertainty"
    assert said(report, "1") == (sentence,)
    assert reason(report) == (
        f"No recommendation yet. The current model: {sentence}. Re-run the PoC with more rounds (raise "
        "MEASURE_MIN_ITERATIONS or MEASURE_MAX_ROUNDS) so the intervals narrow enough to decide."
    )


def test_an_unstable_baseline_is_undecided_and_says_re_measure_on_a_quiet_host():
    busy = "the host was busy (load 4.1 on 2 cores)"
    points = [dataclass_replace(p, unstable=busy) for p in BASELINE.latency]
    base = dataclass_replace(BASELINE, latency=points)
    report = evaluate([base, INT8], economics())
    # int8 is clearly feasible and cheaper, but an unstable baseline decides nothing: no switch.
    assert report.row("2").feasible
    rec = report.recommendation
    assert (rec.outcome, rec.pending, rec.rerun) == (roi.UNDECIDED, ("1",), roi.QUIET_HOST)
    assert report.baseline.undecided == (
        Blocker(roi.UNSTABLE, None, None, roi.PLAIN, reason=busy, batch_size=1),
    )
    text = reason(report)
    assert text.startswith(f"No recommendation yet. The current model: the measurement is unstable ({busy})")
    assert "Re-measure on a quiet host" in text


def _int8(*speedups):
    """INT8 with a speedup interval (estimate, low, high) at each of its two batch sizes."""
    points = [
        dataclass_replace(p, speedup=s, speedup_low=lo, speedup_high=hi)
        for p, (s, lo, hi) in zip(INT8.latency, speedups, strict=True)
    ]
    return dataclass_replace(INT8, latency=points)


def test_a_saving_inside_the_speedup_interval_keeps_the_current_model():
    # Baseline: 200 rps -> 250 / (200 × 0.5) = 2.5 -> 3 replicas -> 3 × 3.6 × 730 = 7,884/month;
    # 12 months: 94,608. int8 as measured: 400 rps -> 2 replicas -> 5,256/month; total 5,220 + 36 +
    # 12 × 5,256 = 68,328. At the slow end: batch 8's speedup 1.0 (0.5–1.2) halves its rate to 200 rps, batch
    # 1's 2.0 (1.9–2.1) gives 200 / (2.0 / 1.9) = 190 rps: 3 replicas, 5,256 + 94,608 = 99,864 > 94,608.
    report = evaluate([BASELINE, _int8((2.0, 1.9, 2.1), (1.0, 0.5, 1.2))], economics())
    int8 = report.row("2")
    assert int8.feasible and int8.total_cost_over_horizon == D(68_328)
    assert int8.slow_total_cost == D(99_864) and report.baseline.total_cost_over_horizon == D(94_608)
    rec = report.recommendation
    assert (rec.outcome, rec.key, rec.within_uncertainty) == (roi.KEEP, "1", "2")
    assert reason(report).endswith(
        "quantize.dynamic-int8 has a lower 12-month total cost at the measured figures ($68,328.00), but the "
        "saving is within the measurement's uncertainty: at the slow end of its interval it costs $99,864.00."
    )


def test_a_saving_that_holds_at_the_slow_end_switches():
    # Batch 8: 1.6 (1.55–1.65) -> 400 / (1.6 / 1.55) = 387.5 rps -> 250 / 193.75 = 1.29 -> 2 replicas: the
    # slow end costs the same 68,328 as the measured figures, well under the baseline's 94,608.
    report = evaluate([BASELINE, _int8((2.0, 1.9, 2.1), (1.6, 1.55, 1.65))], economics())
    assert report.row("2").slow_total_cost == D(68_328)
    rec = report.recommendation
    assert (rec.outcome, rec.key, rec.within_uncertainty) == (roi.SWITCH, "2", None)


def test_without_a_speedup_interval_the_p50_bounds_compare_slow_candidate_with_fast_baseline():
    # int8's batch 8 p50 20 ms (20–40): at the slow end 200 rps -> 3 replicas, total 99,864; the baseline's
    # fast end (no bounds) is its measured 94,608: the saving vanishes -> keep.
    points = [INT8.latency[0], dataclass_replace(INT8.latency[1], p50_low_ms=18.0, p50_high_ms=40.0)]
    report = evaluate([BASELINE, dataclass_replace(INT8, latency=points)], economics())
    assert report.row("2").slow_total_cost == D(99_864)
    assert report.recommendation.outcome == roi.KEEP


def test_an_unstable_candidate_is_never_recommended():
    unstable = dataclass_replace(_int8((2.0, 1.95, 2.05), (1.6, 1.55, 1.65)), key="2")
    unstable = dataclass_replace(
        unstable, latency=[dataclass_replace(p, unstable="figures too noisy") for p in unstable.latency]
    )
    report = evaluate([BASELINE, unstable], economics())
    assert report.row("2").verdict == roi.UNDECIDED and report.row("2").blockers == ()
    rec = report.recommendation
    assert (rec.outcome, rec.key, rec.within_uncertainty) == (roi.KEEP, "1", "2")
    assert reason(report).endswith(
        "quantize.dynamic-int8 might cost less, but whether it meets the targets is within the "
        "measurement's uncertainty: re-run it to decide."
    )
    # With a baseline that clearly misses (p95 40 ms, no bounds), the unstable candidate still is not chosen.
    slow_base = dataclass_replace(BASELINE, latency=[point(1, 30.0, 40.0)])
    rec = evaluate([slow_base, unstable], economics()).recommendation
    assert (rec.outcome, rec.pending, rec.rerun) == (roi.UNDECIDED, ("2",), roi.QUIET_HOST)


def test_a_p95_from_too_few_samples_is_undecided():
    base = ModelMeasurement(
        "1", "baseline", True, 0.95, [LatencyPoint(1, 10.0, None, None, iterations=50), point(4, 20.0, 30.0)]
    )
    report = evaluate([base, PRUNE], economics())
    assert report.baseline.undecided == (Blocker(roi.TOO_FEW_SAMPLES, D(50), D(100), roi.SAMPLES, roi.P95),)
    assert report.baseline.p95_batch1_ms is None
    assert report.recommendation.outcome == roi.UNDECIDED
    assert report.recommendation.rerun == roi.MORE_ROUNDS
    assert said(report, "1") == ("p95 at batch 1 was not reported: it rests on 50 samples, a p95 needs 100",)
    assert roi.samples_needed(D("0.95")) == 100 and roi.samples_needed(D("0.99")) == 500


def test_a_clear_miss_on_a_clean_interval_is_still_infeasible():
    # p95 40 ms (36–44) is clearly over 33 ms: infeasible, and with nothing else feasible, blocked.
    base = ModelMeasurement(
        "1", "baseline", True, 0.95, [LatencyPoint(1, 30.0, 40.0, 45.0, p95_low_ms=36.0, p95_high_ms=44.0)]
    )
    report = evaluate([base, PRUNE], economics())
    assert report.baseline.verdict == roi.INFEASIBLE and report.baseline.misses(roi.P95)
    assert report.recommendation.outcome == roi.BLOCKED


def _busy_host(unstable):
    """The busy-host run: the baseline's inter-token p95 at batch 1 came out 1,565 ms (p50 31 ms)."""
    e = Economics(
        requests_per_day=D(29_808_000),  # 345 rps at peak (peak factor 1)
        price_per_hour=D("0.096"),
        p95_target_ms=D(200),  # TTFT
        per_token_target_ms=D(100),
        output_tokens_per_request=11,
        target_utilisation=D(1),
        engineering_hours=D(40),
        engineering_rate=D(100),  # one-time 4,000
        task=roi.CAUSAL_LM,
    )
    busy = (
        "the host was busy (load 3.9 on 2 cores; other processes used 71% of the CPU)" if unstable else None
    )
    base = ModelMeasurement(
        "1",
        "baseline",
        True,
        None,
        [
            # Batch 1 misses 100 ms per token on these figures; batch 4: t = 50 + 10 × 35 = 400 ms -> 10 rps.
            LatencyPoint(1, 350.0, 1_700.0, 1_800.0, 40.0, 60.0, 31.0, 1_565.0, unstable=busy),
            LatencyPoint(4, 400.0, 500.0, 600.0, 50.0, 80.0, 35.0, 60.0, unstable=busy),
        ],
        perplexity=10.0,
    )
    # bf16: t = 48 + 10 × 38 = 428 ms -> 2.336 rps; 345 / 2.336 = 147.7 -> 148 replicas.
    bf16 = ModelMeasurement(
        "2",
        "quantize.half",
        False,
        None,
        [
            LatencyPoint(
                1, 428.0, 500.0, 520.0, 48.0, 60.0, 38.0, 45.0, itl_p95_low_ms=44.0, itl_p95_high_ms=46.0
            )
        ],
        device_hours=0.0,
        perplexity=10.0,
    )
    return evaluate([base, bf16], e)


def test_the_busy_host_run_no_longer_switches_to_the_dearer_model():
    # As observed: 345 / 10 = 34.5 -> 35 replicas × 0.096 × 730 = 2,452.80/month for the baseline;
    # bf16 148 × 0.096 × 730 = 10,371.84; ROI (−7,919.04 × 12 − 4,000) / 4,000 = −24.75712 (−2476%).
    before = _busy_host(unstable=False)
    assert before.baseline.monthly_cost == D("2452.800") and before.row("2").monthly_cost == D("10371.840")
    assert before.row("2").roi == D("-24.75712")
    assert before.recommendation.outcome == roi.SWITCH  # a clean 1,565 ms would indeed miss 100 ms
    # Flagged unstable, as the interleaved timing now flags it: no switch, no block, re-measure.
    after = _busy_host(unstable=True)
    assert after.baseline.verdict == roi.UNDECIDED and after.baseline.blockers == ()
    assert after.row("2").feasible and after.row("2").monthly_cost == D("10371.840")
    rec = after.recommendation
    assert (rec.outcome, rec.key, rec.pending, rec.rerun) == (roi.UNDECIDED, None, ("1",), roi.QUIET_HOST)
    assert "Re-measure on a quiet host" in reason(after)


def test_interval_and_speedup_text():
    assert formatting.interval_text(D("12.34"), D("11.87"), D("12.75")) == "12.3 ms (11.9–12.8)"
    assert formatting.interval_text(7.254, 7.1, None) == "7.25 ms"
    assert formatting.interval_text(None, 1, 2) == "—"
    assert formatting.speedup_text(1.455, 1.405, 1.515) == "1.46× (1.41–1.52)"
    assert formatting.speedup_text(1.5) == "1.50×" and formatting.speedup_text(None) == "—"


def test_a_percentile_is_shown_with_its_samples_and_refused_below_what_it_needs():
    with translation.override("en"):
        assert (
            wording.percentile_text(31.0, 1_200, "0.99", 29.84, 32.4) == "31.0 ms (29.8–32.4), 1,200 samples"
        )
        assert wording.percentile_text(31.0, 120, "0.99") == "too few samples (120 of the 500 a p99 needs)"
        assert wording.percentile_text(None, None, "0.95") == "too few samples (a p95 needs 100)"


# --- recurring cost: maintenance and re-producing the candidate at each teacher update --------------


def test_maintenance_enters_savings_payback_roi_and_total_but_not_the_serving_cost():
    # int8: 4 h/month × 130.5 = 522, plus 10 device-hours × 3.6 × 6 updates a year / 12 = 18: 540 a month.
    report = evaluate(
        [BASELINE, INT8], economics(maintenance_hours_per_month=D(4), teacher_updates_per_year=6)
    )
    base, int8 = report.baseline, report.row("2")
    assert base.monthly_maintenance == 0 and base.monthly_savings == 0  # keeping the model costs no upkeep
    assert int8.monthly_maintenance == D(540)
    assert int8.monthly_cost == D(5256)  # 2 replicas × 3.6 × 730: serving only
    assert int8.monthly_savings == D(2088)  # 7,884 − (5,256 + 540)
    assert int8.one_time_cost == D(5256)  # 40 × 130.5 + 10 × 3.6: unchanged
    assert int8.payback_months == D(5256) / D(2088)  # 2.517… months
    assert int8.roi == (D(2088) * 12 - D(5256)) / D(5256)  # 19,800 / 5,256 = 3.767…
    assert int8.total_cost_over_horizon == D(74808)  # 5,256 + 12 × (5,256 + 540)
    assert report.recommendation.key == "2"


def test_maintenance_defaults_to_nothing():
    int8 = evaluate([BASELINE, INT8], economics()).row("2")
    assert int8.monthly_maintenance == 0
    assert int8.monthly_savings == D(2628)  # 7,884 − 5,256, as without the recurring cost


def test_maintenance_that_eats_the_saving_keeps_the_current_model():
    # 25 h/month × 130.5 = 3,262.5 a month > the 2,628 the replicas save.
    report = evaluate([BASELINE, INT8], economics(maintenance_hours_per_month=D(25)))
    int8 = report.row("2")
    assert int8.monthly_savings == D("-634.5")
    assert int8.payback_months is None  # never
    assert int8.total_cost_over_horizon == D(107478)  # 5,256 + 12 × 8,518.5 > the baseline's 94,608
    assert report.recommendation.outcome == roi.KEEP


def test_teacher_updates_with_unmeasured_device_hours_leave_the_recurring_cost_unknown():
    unmeasured = dataclass_replace(INT8, device_hours=None)
    row = evaluate([BASELINE, unmeasured], economics(teacher_updates_per_year=4)).row("2")
    assert row.monthly_maintenance is None and row.monthly_savings is None
    assert row.total_cost_over_horizon is None
    # Without teacher updates only the hours count: 2 × 130.5 = 261 a month.
    row = evaluate([BASELINE, unmeasured], economics(maintenance_hours_per_month=2)).row("2")
    assert row.monthly_maintenance == D(261) and row.monthly_savings == D(2367)


def test_recurring_cost_inputs_may_not_be_negative():
    with pytest.raises(ValueError, match="teacher_updates_per_year must be ≥ 0"):
        economics(teacher_updates_per_year=-1)
    with pytest.raises(ValueError, match="maintenance_hours_per_month must be ≥ 0"):
        economics(maintenance_hours_per_month=D("-0.5"))


# --- capacity as goodput ------------------------------------------------------------------------------


def served(rps, batch, wait=2.0, target=33.0, **extra):
    return roi.Goodput(rps, batch, wait, 0.95, target, **extra)


def test_goodput_replaces_the_static_capacity_and_the_utilisation():
    """Peak 250 rps. int8's static capacity is 400 rps at batch 8 (× 0.5 utilisation: 2 replicas); served
    behind a batcher it sustains 180 rps: ceil(250 / (180 × 1)) = 2 replicas, cost per 1M requests
    3.6 / (180 × 3,600) × 10⁶ = 5.5556. The baseline sustains 80 rps: ceil(250 / 80) = 4 replicas
    (3 from its static 200 rps × 0.5), monthly 4 × 3.6 × 730 = 10,512; int8 2 × 3.6 × 730 = 5,256."""
    base = dataclass_replace(BASELINE, goodput=served(80, 4))
    int8 = dataclass_replace(INT8, goodput=served(180, 8))
    report = evaluate([base, int8], economics())
    b, q = report.row("1"), report.row("2")
    assert (q.capacity_rps, q.capacity_batch_size, q.static_capacity_rps) == (D(180), 8, D(400))
    assert (q.replicas, b.replicas) == (2, 4)
    assert q.cost_per_million.quantize(D("0.0001")) == D("5.5556")
    assert (b.monthly_cost, q.monthly_cost) == (D("10512.0"), D("5256.0"))
    assert q.goodput == int8.goodput and b.static_capacity_rps == D(200)
    # Headroom 0.5 where goodput counts: ceil(250 / 90) = 3.
    assert evaluate([base, int8], economics(goodput_headroom=D("0.5"))).row("2").replicas == 3


def test_without_goodput_or_under_other_targets_the_static_capacity_stands():
    report = evaluate([BASELINE, INT8], economics())
    assert report.row("2").goodput is None and report.row("2").capacity_rps == D(400)
    # A what-if with a 40 ms target: the goodput was measured for 33 ms, so int8 falls back to 400 rps × 0.5.
    int8 = dataclass_replace(INT8, goodput=served(180, 8))
    whatif = evaluate([BASELINE, int8], economics(p95_target_ms=D(40))).row("2")
    assert (whatif.goodput, whatif.capacity_rps, whatif.replicas) == (None, D(400), 2)


def test_generation_goodput_counts_only_at_the_measured_reply_length_and_targets():
    """Peak 20 rps; int8 sustains 5 replies/s at M = 100: ceil(20 / 5) = 4 replicas, 500 output tokens/s."""
    g = served(5, 8, target=200.0, itl_target_ms=50.0, tokens=100)
    int8 = dataclass_replace(LM_INT8, goodput=g)
    row = evaluate([LM_BASELINE, int8], lm_economics()).row("2")
    assert (row.capacity_rps, row.replicas, row.tokens_per_s_capacity) == (D(5), 4, D(500))
    shorter = evaluate([LM_BASELINE, int8], lm_economics(output_tokens_per_request=50)).row("2")
    assert shorter.goodput is None


def test_goodput_headroom_is_validated():
    with pytest.raises(ValueError, match="goodput_headroom"):
        economics(goodput_headroom=D("1.5"))


def test_capacity_sentence_names_the_share_the_target_and_the_batcher():
    int8 = dataclass_replace(INT8, goodput=served(412.4, 8))
    row = evaluate([BASELINE, int8], economics(p95_target_ms=D(33))).row("2")
    with translation.override("en"):
        assert wording.capacity_sentence(row) == (
            "sustains 412 req/s per replica with 95% of requests under 33 ms "
            "(batches of up to 8, waiting at most 2 ms)"
        )
        assert "optimistic upper bound" in wording.static_capacity_note(row)
        assert wording.capacity_sentence(evaluate([BASELINE, INT8], economics()).row("2")) is None


def test_a_simulated_goodput_says_so_in_its_sentence():
    int8 = dataclass_replace(INT8, goodput=dataclass_replace(served(6.2, 1), simulated=True))
    row = evaluate([BASELINE, int8], economics(p95_target_ms=D(33))).row("2")
    with translation.override("en"):
        sentence = wording.capacity_sentence(row)
    assert sentence.startswith("sustains 6.2 req/s per replica")
    assert sentence.endswith(
        "Simulated from the measured batch times: at this rate a served trial would take too long to "
        "count enough requests."
    )
    assert row.capacity_rps == pytest.approx(D("6.2"), abs=D("0.01"))  # the figure is used all the same
