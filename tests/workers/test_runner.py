import pytest

from workers.measure import MeasureConfig
from workers.runner import CandidateSpec, PocError, PocSpec, run_poc

FAST = MeasureConfig(batch_sizes=(1, 4), min_iterations=5, min_seconds=0, warmup=1, threads=1)


def _spec(tiny_model_dir, data, tmp_path, candidates):
    return PocSpec(
        task="sequence-classification",
        model_dir=str(tiny_model_dir),
        dataset=str(data),
        device="cpu",
        candidates=candidates,
        artifacts_dir=str(tmp_path),
        measure=FAST,
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
    )
    results = list(run_poc(spec, lambda f, m: progress.append((f, m))))

    assert [r.key for r in results] == ["base", "int8"]
    assert all(r.ok for r in results), [r.error for r in results]
    base, int8 = (r.figures for r in results)
    for figures in (base, int8):
        assert 0 <= figures["accuracy"] <= 1 and 0 <= figures["macro_f1"] <= 1
        assert [p["batch_size"] for p in figures["latency"]] == [1, 4]
        for point in figures["latency"]:
            assert 0 < point["p50_ms"] <= point["p95_ms"] <= point["p99_ms"]
            assert point["iterations"] >= 5
            assert point["throughput_rps"] == pytest.approx(point["batch_size"] / point["p50_ms"] * 1000)
        assert figures["size_bytes"] > 0 and figures["peak_memory_bytes"] > 0
    assert base["parameters"] == int8["parameters"]  # int8 keeps every weight, in fewer bits
    assert int8["size_bytes"] < base["size_bytes"]
    assert base["produce_seconds"] == 0 and int8["produce_seconds"] > 0
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
    assert not bad.ok and "ran out of memory" in bad.error
    assert base.ok


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
    assert b.figures["produce_seconds"] >= 0.3  # the reused step's time still counts for b
