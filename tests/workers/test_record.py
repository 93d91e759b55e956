"""The typed measurement: its JSON mapping, rows stored before a field existed, and the one mapping onto
the candidate's columns, through PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal

import pytest

from planner.models import Candidate, PocRequest
from workers.record import LatencyPoint, Measurement

CLASSIFIER_POINT = LatencyPoint(
    batch_size=1,
    p50_ms=8.0,
    p95_ms=10.0,
    p99_ms=11.0,
    mean_ms=8.5,
    iterations=100,
    throughput_rps=125.0,
    mean_tokens=20.5,
)
GENERATION_POINT = LatencyPoint(
    batch_size=4,
    p50_ms=400.0,
    p95_ms=480.0,
    p99_ms=520.0,
    mean_ms=410.0,
    iterations=10,
    throughput_rps=10.0,
    prompt_tokens=24.0,
    new_tokens=32,
    ttft_p50_ms=40.0,
    ttft_p95_ms=45.0,
    ttft_p99_ms=50.0,
    itl_p50_ms=11.0,
    itl_p95_ms=12.0,
    itl_p99_ms=13.0,
    tokens_per_s=320.0,
)
CLASSIFIER = Measurement(
    latency=(CLASSIFIER_POINT, dataclasses.replace(CLASSIFIER_POINT, batch_size=8, p50_ms=30.0)),
    accuracy=0.9,
    macro_f1=0.88,
    size_bytes=4_000_000,
    parameters=1000,
    nonzero_parameters=900,
    peak_memory_bytes=10**8,
    produce_seconds=36.0,
    device_hours=0.01,
)
GENERATION = Measurement(
    latency=(GENERATION_POINT,),
    perplexity=12.5,
    exact_match=0.25,
    size_bytes=270_000_000,
    parameters=134_515_008,
    nonzero_parameters=134_515_008,
    peak_memory_bytes=6 * 10**8,
    produce_seconds=0.0,
    device_hours=0.0,
)


@pytest.mark.parametrize("measurement", [CLASSIFIER, GENERATION], ids=["classifier", "generation"])
def test_a_measurement_survives_json_and_back(measurement):
    stored = json.loads(json.dumps(measurement.to_json()))
    assert Measurement.from_json(stored) == measurement


def test_to_json_leaves_out_what_was_not_measured():
    stored = CLASSIFIER.to_json()
    assert "perplexity" not in stored and "exact_match" not in stored
    assert stored["latency"][0] == {
        "batch_size": 1,
        "p50_ms": 8.0,
        "p95_ms": 10.0,
        "p99_ms": 11.0,
        "mean_ms": 8.5,
        "iterations": 100,
        "throughput_rps": 125.0,
        "mean_tokens": 20.5,
    }


def test_a_row_stored_before_the_optional_fields_existed_reads_back_with_their_defaults():
    old_point = {
        "batch_size": 1,
        "p50_ms": 8,  # JSON keeps 8.0 as 8
        "p95_ms": 10.0,
        "p99_ms": 11.0,
        "mean_ms": 8.5,
        "throughput_rps": 125.0,
        "iterations": 100,
        "retired_figure": "ignored",
    }
    measurement = Measurement.from_json({"latency": [old_point], "accuracy": 0.9, "macro_f1": None})
    point = measurement.at(1)
    assert point.p50_ms == 8.0 and isinstance(point.p50_ms, float)
    assert point.mean_tokens is None and point.ttft_p95_ms is None and point.tokens_per_s is None
    assert measurement.accuracy == 0.9 and measurement.macro_f1 is None and measurement.size_bytes is None
    assert measurement.at(8) is None


def test_a_point_without_its_required_figures_is_refused():
    with pytest.raises(TypeError, match="p50_ms"):
        LatencyPoint.from_json({"batch_size": 1, "p95_ms": 10.0, "p99_ms": 11.0, "mean_ms": 8.5})
    with pytest.raises(TypeError, match="iterations"):
        LatencyPoint.from_json({"batch_size": 1, "p50_ms": 8.0, "mean_ms": 8.5, "throughput_rps": 125.0})


TIMED_POINT = dataclasses.replace(
    CLASSIFIER_POINT,
    p99_ms=None,  # 100 samples: too few for a p99
    p50_low_ms=7.8,
    p50_high_ms=8.2,
    p95_low_ms=9.5,
    p95_high_ms=10.6,
    speedup=1.46,
    speedup_low=1.41,
    speedup_high=1.52,
    rounds=10,
    unstable="the host was busy (load 4.1 on 2 cores; other processes used 62% of the CPU)",
    load_avg=4.1,
    other_cpu_share=0.62,
)


def test_a_timed_point_keeps_its_intervals_speedup_and_verdict_and_leaves_out_a_missing_p99():
    stored = json.loads(json.dumps(TIMED_POINT.to_json()))
    assert "p99_ms" not in stored and "p99_low_ms" not in stored and stored["speedup_low"] == 1.41
    assert stored["unstable"].startswith("the host was busy") and stored["rounds"] == 10
    point = LatencyPoint.from_json(stored)
    assert point == TIMED_POINT and point.p99_ms is None
    # A point stored before the intervals existed reads back with none of them: not clean, just unknown.
    old = LatencyPoint.from_json(CLASSIFIER_POINT.to_json())
    assert old.speedup is None and old.p95_low_ms is None and old.unstable is None and old.rounds is None


def test_at_finds_the_point_of_a_batch_size():
    assert CLASSIFIER.at(8).p50_ms == 30.0 and CLASSIFIER.at(1) is CLASSIFIER_POINT


def _candidate(user, hardware, **fields) -> Candidate:
    """An unsaved baseline candidate of a new request."""
    poc_request = PocRequest.objects.create(
        owner=user,
        team=user.teams.first(),
        title="round trip",
        model_ref="demo",
        dataset_ref="demo",
        p95_target_ms=Decimal(30),
        accuracy_floor_pct=Decimal(97),
        requests_per_day=1000,
        hardware=hardware,
    )
    return Candidate(request=poc_request, position=0, pipeline=[], **fields)


@pytest.mark.django_db
@pytest.mark.parametrize("measurement", [CLASSIFIER, GENERATION], ids=["classifier", "generation"])
def test_set_measurement_and_measurement_round_trip_through_the_database(user, cpu_hardware, measurement):
    candidate = _candidate(user, cpu_hardware)
    candidate.set_measurement(measurement)
    candidate.save()
    stored = Candidate.objects.get(pk=candidate.pk)
    assert stored.measurement is None  # still pending: nothing measured to show

    stored.status = Candidate.Status.MEASURED
    stored.save(update_fields=["status"])
    stored = Candidate.objects.get(pk=candidate.pk)
    assert stored.measurement == measurement
    # The columns other code still reads hold the same figures.
    assert stored.accuracy == measurement.accuracy and stored.perplexity == measurement.perplexity
    assert stored.latency_at(measurement.latency[0].batch_size) == measurement.latency[0].to_json()


@pytest.mark.django_db
def test_set_measurement_clears_figures_the_new_measurement_lacks(user, cpu_hardware):
    candidate = _candidate(user, cpu_hardware, status=Candidate.Status.MEASURED)
    candidate.set_measurement(CLASSIFIER)
    candidate.set_measurement(GENERATION)
    candidate.save()
    stored = Candidate.objects.get(pk=candidate.pk)
    assert stored.accuracy is None and stored.macro_f1 is None
    assert stored.measurement == GENERATION
