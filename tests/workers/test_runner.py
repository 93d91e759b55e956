import dataclasses

import pytest

from workers.hostload import HostMonitor
from workers.measure import MeasureConfig
from workers.record import Measurement
from workers.runner import CandidateSpec, PocError, PocSpec, PocStopped, run_poc
from workers.timing import TimingPolicy

# 10 rounds of 10 iterations of each model per batch size: the 100 samples a p95 needs.
TIMING = TimingPolicy(
    warmup=1, iterations_per_round=10, min_rounds=10, max_rounds=10, remeasure=0, resamples=500
)
FAST = MeasureConfig(batch_sizes=(1, 4), timing=TIMING, threads=1)
# 500 samples, what a p99 needs (a tiny model's forward pass is about a millisecond).
WITH_P99 = dataclasses.replace(FAST, timing=dataclasses.replace(TIMING, iterations_per_round=50))


def _spec(tiny_model_dir, data, tmp_path, candidates, measure=FAST):
    return PocSpec(
        task="sequence-classification",
        model_dir=str(tiny_model_dir),
        dataset=str(data),
        device="cpu",
        candidates=candidates,
        artifacts_dir=str(tmp_path),
        measure=measure,
    )


def host_at(share: float, load: float = 1.0, cpus: int = 2):
    """A host monitor factory whose counters show other processes using ``share`` of the machine."""
    state = {"reads": 0}

    def read_stat() -> str:
        state["reads"] += 1
        busy = int(share * 1000) * state["reads"]
        return f"cpu  {busy} 0 0 {1000 * state['reads'] - busy} 0 0 0 0 0 0\n"

    return lambda: HostMonitor(
        read_stat=read_stat, read_load=lambda: load, own_cpu=lambda: 0.0, cpu_count=cpus
    )


def test_runner_measures_baseline_and_int8_and_reports_progress(tiny_model_dir, tiny_csv_path, tmp_path):
    progress = []
    spec = _spec(
        tiny_model_dir,
        tiny_csv_path,
        tmp_path,
        [
            CandidateSpec("base", []),
            CandidateSpec("int8", [{"technique": "quantize.dynamic-int8", "params": {"per_channel": True}}]),
        ],
        measure=WITH_P99,
    )
    results = list(run_poc(spec, lambda f, m: progress.append((f, m))))

    assert [r.key for r in results] == ["base", "int8"]
    assert all(r.ok for r in results), [r.error for r in results]
    base, int8 = (r.measurement for r in results)
    for measured in (base, int8):
        assert 0 <= measured.accuracy <= 1 and 0 <= measured.macro_f1 <= 1
        assert measured.perplexity is None and measured.exact_match is None
        assert [p.batch_size for p in measured.latency] == [1, 4]
        for point in measured.latency:
            assert 0 < point.p50_ms <= point.p95_ms <= point.p99_ms
            assert point.iterations == 500 and point.mean_tokens > 0 and point.ttft_p95_ms is None
            assert point.throughput_rps == pytest.approx(point.batch_size / point.p50_ms * 1000)
        assert measured.size_bytes > 0 and measured.peak_memory_bytes > 0
    assert base.parameters == int8.parameters  # int8 keeps every weight, in fewer bits
    assert int8.size_bytes < base.size_bytes
    assert base.produce_seconds == 0 and int8.produce_seconds > 0
    env = results[1].environment
    assert env["threads"] == 1 and env["device"] == "cpu" and env["torch"] and env["eval_examples"] == 12
    assert env["plugins"]["quantize.dynamic-int8"].startswith("roi-planner")
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (tmp_path / "candidate-int8" / "roi_planner.json").is_file()


def test_runner_refuses_data_whose_labels_the_model_does_not_know(tiny_model_dir, tmp_path):
    data = tmp_path / "other.csv"
    data.write_text("text,label\n" + "".join(f"row {i},{'pos' if i % 2 else 'neg'}\n" for i in range(20)))
    spec = _spec(tiny_model_dir, data, tmp_path, [CandidateSpec("base", [])])
    with pytest.raises(
        PocError, match="does not predict the data's labels neg, pos; its labels are: cooking"
    ):
        list(run_poc(spec, lambda f, m: None))


def test_a_failing_technique_fails_its_candidate_only(tiny_model_dir, tiny_csv_path, tmp_path):
    from plugins import registry
    from plugins.base import Technique

    class Exhausting(Technique):
        """Runs out of memory, as a big model on a small machine would."""

        name = "test.exhausting"
        title = "Exhausting"
        family = "prune"

        def apply(self, model, ctx, params):
            raise MemoryError

    registry.register(Exhausting)
    try:
        spec = _spec(
            tiny_model_dir,
            tiny_csv_path,
            tmp_path,
            [
                CandidateSpec("bad", [{"technique": "test.exhausting"}]),
                CandidateSpec("base", []),
            ],
        )
        bad, base = run_poc(spec, lambda f, m: None)
    finally:
        registry.unregister("test.exhausting")
    assert not bad.ok and "ran out of memory" in bad.error and bad.measurement is None
    assert base.ok and base.measurement is not None


def test_a_shared_prefix_is_produced_once_and_charged_to_every_candidate(
    tiny_model_dir, tiny_csv_path, tmp_path
):
    import time

    from plugins import registry
    from plugins.base import Technique

    calls = []

    class SlowIdentity(Technique):
        """Stands in for an expensive step such as distillation."""

        name = "test.slow"
        title = "Slow"
        family = "distill"

        def apply(self, model, ctx, params):
            calls.append(1)
            time.sleep(0.3)
            return model

    registry.register(SlowIdentity)
    try:
        spec = _spec(
            tiny_model_dir,
            tiny_csv_path,
            tmp_path,
            [
                CandidateSpec("a", [{"technique": "test.slow"}, {"technique": "quantize.dynamic-int8"}]),
                CandidateSpec("b", [{"technique": "test.slow"}, {"technique": "prune.magnitude"}]),
            ],
        )
        a, b = run_poc(spec, lambda f, m: None)
    finally:
        registry.unregister("test.slow")
    assert a.ok and b.ok and len(calls) == 1
    assert b.measurement.produce_seconds >= 0.3  # the reused step's time still counts for b


def test_every_stored_point_carries_its_intervals_speedup_and_status(
    tiny_model_dir, tiny_csv_path, tmp_path, monkeypatch
):
    """A quiet host (no CPU counters) and a generous width: clean. The baseline row is timed against a
    second copy of itself: its figures and verdict are there, its speedup is not."""
    monkeypatch.setattr("workers.timing.HostMonitor", lambda: HostMonitor(read_stat=lambda: None))
    relaxed = dataclasses.replace(FAST, timing=dataclasses.replace(TIMING, unstable_width=100.0))
    spec = _spec(
        tiny_model_dir,
        tiny_csv_path,
        tmp_path,
        [CandidateSpec("base", []), CandidateSpec("int8", [{"technique": "quantize.dynamic-int8"}])],
        measure=relaxed,
    )
    progress = []
    base, int8 = (r.measurement for r in run_poc(spec, lambda f, m: progress.append((f, m))))
    for measured in (base, int8):
        assert Measurement.from_json(measured.to_json()) == measured  # what the row stores and reads back
        for point in measured.latency:
            assert point.iterations == 100 and point.rounds == 10
            assert point.p50_low_ms <= point.p50_ms <= point.p50_high_ms
            assert point.p95_low_ms <= point.p95_ms <= point.p95_high_ms
            assert point.p99_ms is None and point.p99_low_ms is None  # 100 samples: too few for a p99
            assert point.unstable is None and point.other_cpu_share is None and point.load_avg >= 0
            assert point.throughput_rps == pytest.approx(point.batch_size / point.p50_ms * 1000)
    assert all(p.speedup is None and p.speedup_low is None for p in base.latency)
    for point in int8.latency:
        assert 0 < point.speedup_low <= point.speedup <= point.speedup_high
    # Every round moves the progress line: 10 per batch size and candidate, in order.
    rounds = [f for f, m in progress if "measuring latency at batch size" in m]
    assert len(rounds) >= 2 * 2 * 10 and rounds == sorted(rounds)


def test_a_host_that_stays_busy_is_re_measured_then_stored_unstable_with_the_reason(
    tiny_model_dir, tiny_csv_path, tmp_path, monkeypatch
):
    monkeypatch.setattr("workers.timing.HostMonitor", host_at(0.6, load=3.5))
    again = dataclasses.replace(
        FAST, batch_sizes=(1,), timing=dataclasses.replace(TIMING, remeasure=1, remeasure_pause_s=0)
    )
    spec = _spec(
        tiny_model_dir,
        tiny_csv_path,
        tmp_path,
        [CandidateSpec("int8", [{"technique": "quantize.dynamic-int8"}])],
        measure=again,
    )
    progress = []
    (result,) = run_poc(spec, lambda f, m: progress.append(m))
    point = result.measurement.at(1)
    assert "the host was busy (load 3.5 on 2 cores; other processes used 60% of the CPU)" in point.unstable
    assert point.other_cpu_share == pytest.approx(0.6) and point.load_avg == 3.5
    assert point.speedup is not None and point.iterations == 100  # the kept attempt's figures
    # Both attempts ran their 10 rounds (each reports), after the batch size's own report.
    assert sum("measuring latency at batch size 1" in m for m in progress) == 1 + 2 * 10


def test_a_stop_during_the_timing_rounds_ends_the_run(tiny_model_dir, tiny_csv_path, tmp_path):
    def report(fraction, message):
        if "at batch size 4" in message:
            raise PocStopped

    spec = _spec(tiny_model_dir, tiny_csv_path, tmp_path, [CandidateSpec("base", [])])
    with pytest.raises(PocStopped):
        list(run_poc(spec, report))
