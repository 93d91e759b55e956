"""Hand-checked figures for planner.roi (pure arithmetic: no database, no Django)."""

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.roi import (
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

D = Decimal


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
        "accuracy 90.0% is 3.1 points below the floor of 93.1%",  # (0.931 − 0.90) × 100
        "p95 at batch 1 is 40.0 ms, 7.0 ms over the 33 ms target",  # 40 − 33
        "no batch size meets the 33 ms p95 target",
    )

    rec = report.recommendation
    assert (rec.key, rec.name, rec.keeps_baseline) == ("2", "quantize.dynamic-int8", False)
    assert "68,328.00" in rec.reason and "94,608.00" in rec.reason and "2.0 months" in rec.reason


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
    assert absolute.row("2").blockers == (
        "accuracy 94.0% is 0.5 points below the floor of 94.5%",
    )  # 94.5 − 94.0
    assert absolute.recommendation.key == "1"


def test_batch_one_not_measured_is_a_blocker():
    no_b1 = ModelMeasurement("4", "no-b1", False, 0.95, [point(8, 20.0, 30.0)])
    row = evaluate([BASELINE, no_b1], economics()).row("4")
    assert row.capacity_rps == D(400)  # still costed: 8 / 0.020
    assert row.p95_batch1_ms is None
    assert not row.feasible and row.blockers == ("p95 at batch 1 was not measured",)


def test_nothing_feasible_names_every_blocker_with_amount():
    report = evaluate(
        [BASELINE, INT8, PRUNE],
        economics(accuracy_floor_pct_of_baseline=None, accuracy_floor_absolute=D("0.96")),
    )
    rec = report.recommendation
    assert rec.key is None and rec.name is None and not rec.keeps_baseline
    assert "baseline: accuracy 95.0% is 1.0 points below the floor of 96.0%." in rec.reason  # 96 − 95
    assert "quantize.dynamic-int8: accuracy 94.0% is 2.0 points below the floor of 96.0%." in rec.reason
    assert "prune.magnitude: accuracy 90.0% is 6.0 points below the floor of 96.0%; " in rec.reason
    assert "p95 at batch 1 is 40.0 ms, 7.0 ms over the 33 ms target" in rec.reason  # 40 − 33


def test_baseline_wins_when_switching_costs_too_much():
    report = evaluate([BASELINE, INT8], economics(engineering_rate=D(10_000)))
    # int8: one-time 40 × 10,000 + 36 = 400,036; total 400,036 + 63,072 = 463,108 > baseline 94,608.
    assert report.row("2").total_cost_over_horizon == D(463108)
    rec = report.recommendation
    assert (rec.key, rec.keeps_baseline) == ("1", True)
    assert "Keep the current model" in rec.reason and "94,608.00" in rec.reason


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
    assert pruned.one_time_cost == D("4003.6")  # 4,000 + 1 × 3.6
    assert pruned.blockers == (
        "perplexity 14.40 is 20.0% above the baseline's 12.00 (limit +10%)",  # 14.4 / 12 − 1
        "TTFT p95 at batch 1 is 250.0 ms, 50.0 ms over the 200 ms target",
        "inter-token p95 at batch 1 is 60.0 ms, 10.0 ms over the 50 ms per-token target",
        "no batch size meets the 200 ms TTFT and 50 ms per-token targets",
    )

    rec = report.recommendation
    assert (rec.key, rec.keeps_baseline) == ("2", False)
    assert rec.reason == (
        "Switch to quantize.weight-only: it keeps perplexity within +10% of the baseline's (13.20 at most) "
        "and meets the 200 ms TTFT and 50 ms per-token targets at the lowest 12-month total cost "
        "(161,716.00 vs 630,720.00 for the current model). It pays back in 0.1 months."
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
    row = evaluate([LM_BASELINE, slow_tokens], lm_economics()).row("4")
    assert row.blockers == (
        "inter-token p95 at batch 1 is 55.0 ms, 5.0 ms over the 50 ms per-token target",
        "no batch size meets the 200 ms TTFT and 50 ms per-token targets",
    )
    slow_start = ModelMeasurement(
        "5", "slow start", False, 0.0, [gen_point(1, 150.0, 201.0, 5.0, 7.0)], perplexity=12.0
    )
    row = evaluate([LM_BASELINE, slow_start], lm_economics()).row("5")
    assert row.blockers[0] == "TTFT p95 at batch 1 is 201.0 ms, 1.0 ms over the 200 ms target"


def test_generation_perplexity_limit_exactly_met_is_feasible_and_zero_allows_no_rise():
    at_limit = ModelMeasurement("4", "at limit", False, 0.0, LM_INT8.latency, perplexity=13.2)
    assert evaluate([LM_BASELINE, at_limit], lm_economics()).row("4").feasible
    row = evaluate([LM_BASELINE, LM_INT8], lm_economics(perplexity_increase_pct=D(0))).row("2")
    assert row.blockers == ("perplexity 12.60 is 5.0% above the baseline's 12.00 (limit +0%)",)


def test_generation_timings_missing_are_blockers():
    # A point from a classification-style sweep (no TTFT/ITL) is not counted for generation.
    untimed = ModelMeasurement("4", "untimed", False, 0.0, [point(1, 5.0, 8.0)], perplexity=12.0)
    row = evaluate([LM_BASELINE, untimed], lm_economics()).row("4")
    assert row.capacity_rps == 0
    assert row.blockers == (
        "TTFT at batch 1 was not measured",
        "inter-token latency at batch 1 was not measured",
        "no batch size meets the 200 ms TTFT and 50 ms per-token targets",
    )
    no_perplexity = ModelMeasurement("5", "no ppl", False, 0.0, LM_INT8.latency)
    assert evaluate([LM_BASELINE, no_perplexity], lm_economics()).row("5").blockers == (
        "perplexity was not measured",
    )
    base_unmeasured = ModelMeasurement("1", "baseline", True, 0.0, LM_BASELINE.latency)
    report = evaluate([base_unmeasured, LM_INT8], lm_economics())
    assert report.perplexity_ceiling is None
    assert report.row("2").blockers == ("the baseline's perplexity was not measured",)


def test_generation_tie_on_total_cost_goes_to_lower_perplexity():
    worse = ModelMeasurement("4", "worse", False, 0.0, LM_INT8.latency, device_hours=10.0, perplexity=12.5)
    better = ModelMeasurement("5", "better", False, 0.0, LM_INT8.latency, device_hours=10.0, perplexity=12.3)
    report = evaluate([LM_BASELINE, worse, better], lm_economics())
    assert report.row("4").total_cost_over_horizon == report.row("5").total_cost_over_horizon
    assert report.recommendation.key == "5"


def test_generation_nothing_feasible_and_baseline_cannot_serve():
    report = evaluate([LM_BASELINE, LM_PRUNED], lm_economics(p95_target_ms=D(10)))
    rec = report.recommendation
    assert rec.key is None
    assert "baseline: TTFT p95 at batch 1 is 15.0 ms, 5.0 ms over the 10 ms target; " in rec.reason
    # The baseline misses the TTFT target, int8 meets it: switching is the only way to serve.
    report = evaluate([LM_BASELINE, LM_INT8], lm_economics(p95_target_ms=D(10)))
    assert report.baseline.monthly_cost is None
    assert report.recommendation.reason.endswith(
        "; the current model cannot serve within the 10 ms TTFT and 50 ms per-token targets)."
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
