"""The pre-flight estimate's arithmetic against hand-computed cases (planner/preflight.py)."""

import math

import pytest

from planner import preflight
from planner.preflight import ModelShape, Peaks, Traffic, estimate, variant_for

# A BERT-like classifier small enough to compute by hand: h=64, L=2, 4 heads of 16, f=256, V=1000.
CONFIG = {
    "model_type": "bert",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "vocab_size": 1000,
    "max_position_embeddings": 128,
    "id2label": {"0": "a", "1": "b", "2": "c"},
}
# A Llama-like causal LM: h=64, L=2, 4 heads of 16 (2 KV heads), gated f=128, V=1000, tied head.
LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 1000,
    "tie_word_embeddings": True,
}
# 1 TFLOP/s fp32, 4 TOP/s int8, 2 TFLOP/s bf16, 10 GB/s.
PEAKS = Peaks(device="cpu", fp32_tflops=1.0, bf16_tflops=2.0, int8_tops=4.0, memory_gbps=10.0)


def shape():
    return ModelShape.from_config(CONFIG, task="sequence-classification")


def test_parameters_by_hand():
    s = shape()
    # attention 4·h² = 16,384; feed-forward 2·h·f = 32,768 → 49,152 per layer.
    assert s.layer_parameters == 4 * 64 * 64 + 2 * 64 * 256 == 49_152
    # head: pooler h² + h·labels = 4,096 + 192.
    assert s.head_parameters == 4_288
    # embeddings (V + P)·h = 1,128 · 64 = 72,192.
    assert s.parameters == 72_192 + 2 * 49_152 + 4_288 == 174_784
    assert s.weight_bytes() == {"fp32": 699_136, "bf16": 349_568, "int8": 174_784, "int4": 87_392}


def test_flops_at_the_data_length_by_hand():
    s = shape()
    # s=32 tokens: 2·32·2·49,152 + 4·32²·64·2 + 2·4,288 = 6,291,456 + 524,288 + 8,576.
    assert s.flops(32) == 6_291_456 + 524_288 + 8_576 == 6_824_320


def test_roofline_latency_by_hand():
    est = estimate(variant_for(shape(), []), PEAKS, tokens=32, batch_sizes=(1, 4))
    compute_ms = 6_824_320 / 1e12 * 1000  # 0.00682 ms
    bytes_read = (2 * 49_152 + 4_288) * 4 + 2 * 32 * 64 * 2 * 4  # weights + activations = 443,904
    memory_ms = bytes_read / 10e9 * 1000  # 0.0444 ms: memory-bound
    overhead_ms = 2 * preflight.LAYER_OVERHEAD_MS["cpu"]  # 0.16 ms
    assert est.latency_ms == pytest.approx(max(compute_ms, memory_ms) + overhead_ms)
    assert est.bound == "overhead" and est.parameters == 174_784
    assert est.batch_ms[4] > est.batch_ms[1]


def test_candidate_families_change_the_shape_and_the_bytes():
    base = shape()
    distilled = variant_for(base, [{"technique": "distill.kd", "params": {"student_layers": 1}}])
    assert distilled.shape.layers == 1
    pruned = variant_for(base, [{"technique": "prune.ffn", "params": {"amount": 0.5}}])
    assert pruned.shape.ffn == 128
    int8 = variant_for(base, [{"technique": "quantize.dynamic-int8"}])
    assert (int8.compute_dtype, int8.weight_dtype) == ("int8", "int8")
    half = variant_for(base, [{"technique": "quantize.half"}])
    assert half.weight_dtype == "bf16"
    runtime = variant_for(base, [{"technique": "runtime.openvino"}])
    assert runtime.overhead_share == preflight.RUNTIME_OVERHEAD_SHARE["runtime.openvino"]
    slow = estimate(variant_for(base, []), PEAKS, tokens=32).latency_ms
    assert estimate(distilled, PEAKS, tokens=32).latency_ms < slow
    assert estimate(runtime, PEAKS, tokens=32).latency_ms < slow


def test_causal_lm_tokens_per_second_by_hand():
    s = ModelShape.from_config(LLAMA, task="causal-lm")
    # attention 2·h·H·d + 2·h·KV·d = 8,192 + 4,096; gated feed-forward 3·h·f = 24,576.
    assert s.layer_parameters == 36_864
    assert s.parameters == 64_000 + 2 * 36_864  # tied LM head
    peaks = Peaks(device="cuda", fp32_tflops=1.0, bf16_tflops=1.0, int8_tops=1.0, memory_gbps=1.0)
    est = estimate(variant_for(s, []), peaks, tokens=16, new_tokens=4)
    # One decoded token at context 16 + 2: reads the layers and the LM head (2·36,864 + 64,000)·4 bytes,
    # the activations 2·1·64·2·4 and the KV cache 2·2·2·16·18·4 — memory-bound at 1 GB/s.
    moved = (2 * 36_864 + 64_000) * 4 + 2 * 64 * 2 * 4 + 2 * 2 * 2 * 16 * 18 * 4
    per_token = moved / 1e9 * 1000 + 2 * preflight.LAYER_OVERHEAD_MS["cuda"]
    assert est.itl_ms == pytest.approx(per_token)
    assert est.tokens_per_s == pytest.approx(1000 / per_token)
    assert est.latency_ms == pytest.approx(est.ttft_ms + 3 * per_token)


def test_cost_and_the_optimistic_bound_by_hand():
    est = estimate(variant_for(shape(), []), PEAKS, tokens=32, batch_sizes=(1, 4))
    traffic = Traffic(
        requests_per_day=8_640_000,  # 100 rps average, 200 at peak
        peak_factor=2,
        utilisation=0.5,
        price_per_hour=1.0,
        horizon_months=12,
        one_time=4000,
        p95_target_ms=50,
    )
    capacity = max(b * 1000 / ms for b, ms in est.batch_ms.items())
    replicas = max(1, math.ceil(200 / (capacity * 0.5)))
    assert preflight.total_cost(est, traffic) == pytest.approx(4000 + 12 * replicas * 730)
    assert preflight.total_cost(est, traffic, baseline=True) == pytest.approx(12 * replicas * 730)
    assert preflight.optimistic_cost(est, traffic) <= preflight.total_cost(est, traffic)
    missed = Traffic(**{**traffic.__dict__, "p95_target_ms": 0.001})
    assert preflight.total_cost(est, missed) is None and preflight.optimistic_cost(est, missed) == math.inf


def test_the_two_factors_scale_the_roofline_and_the_overhead_parts():
    base = estimate(variant_for(shape(), []), PEAKS, tokens=32)
    assert base.roofline_ms + base.overhead_ms == pytest.approx(base.latency_ms)
    assert base.overhead_ms == pytest.approx(2 * preflight.LAYER_OVERHEAD_MS["cpu"])
    calibrated = Peaks(**{**PEAKS.__dict__, "efficiency": 3.0, "overhead": 0.5})
    assert calibrated.calibrated and not PEAKS.calibrated
    est = estimate(variant_for(shape(), []), calibrated, tokens=32)
    assert est.latency_ms == pytest.approx(3 * base.roofline_ms + 0.5 * base.overhead_ms)
    assert (est.roofline_ms, est.overhead_ms) == pytest.approx((3 * base.roofline_ms, 0.5 * base.overhead_ms))
    # Uncalibrated the overhead (0.16 ms) dominates the memory time (0.0444 ms); calibrated, the memory
    # time (× 3 = 0.133 ms) dominates the overhead (× 0.5 = 0.08 ms).
    assert base.bound == "overhead" and est.bound == "memory"
    assert preflight.relative_error(1.3, 1.0) == pytest.approx(0.3)


def test_calibration_recovers_the_factors_that_made_the_samples():
    # m = 2·r + 0.5·o, exactly.
    samples = [(1.0, 1.0, 2.5), (2.0, 1.0, 4.5), (1.0, 4.0, 4.0)]
    assert preflight.fit_calibration(samples) == pytest.approx((2.0, 0.5))


def test_two_factors_fit_where_one_cannot():
    # (1, 1) → 2.5 and (1, 4) → 4: a + b = 2.5, a + 4b = 4 → a = 2, b = 0.5, no error left. One factor
    # for both (x + y = 0.8 and 1.25): k = 2.05 ÷ 2.2025 = 0.9308, which leaves −25.5% and +16.3%.
    samples = [(1.0, 1.0, 2.5), (1.0, 4.0, 4.0)]
    a, b = preflight.fit_calibration(samples)
    assert (a, b) == pytest.approx((2.0, 0.5))

    def mean_error(a, b):
        return sum(abs(preflight.relative_error(a * r + b * o, m)) for r, o, m in samples) / len(samples)

    k = 2.05 / 2.2025
    assert mean_error(a, b) == pytest.approx(0, abs=1e-12)
    assert mean_error(k, k) == pytest.approx((abs(2 * k - 2.5) / 2.5 + abs(5 * k - 4) / 4) / 2)
    assert mean_error(k, k) > 0.2


def test_one_sample_or_one_ratio_scales_both_parts_alike():
    assert preflight.fit_calibration([(2.0, 3.0, 10.0)]) == pytest.approx((2.0, 2.0))  # 10 ÷ 5
    # Both samples have overhead = 2 × roofline: only the sum is identified.
    assert preflight.fit_calibration([(1.0, 2.0, 6.0), (2.0, 4.0, 12.0)]) == pytest.approx((2.0, 2.0))
    assert preflight.fit_calibration([]) == (1.0, 1.0)
    assert preflight.fit_calibration([(1.0, 1.0, 0.0), (0.0, 0.0, 5.0)]) == (1.0, 1.0)


def test_a_factor_below_the_floor_falls_back_to_the_best_one_factor_fit():
    # (1, 1) → 1 and (2, 1) → 0.5: exactly a = −0.5, b = 1.5. In x = r ÷ m, y = o ÷ m: (1, 1), (4, 2).
    # a alone (b = 1): Σx(1−y) ÷ Σx² = −4/17 → the floor 0.05, loss 0.05² + 1.2² = 1.4425;
    # b alone (a = 1): −6/5 → 0.05, loss 0.05² + 3.1² = 9.6125; one factor: 8 ÷ 40 = 0.2, loss 0.36 + 0.04.
    assert preflight.fit_calibration([(1.0, 1.0, 1.0), (2.0, 1.0, 0.5)]) == pytest.approx((0.2, 0.2))
    # (0.1, 1) → 1 and (0.2, 1) → 0.98: exactly a = −0.2, b = 1.02. a alone: Σx(1−y) < 0 → 0.05, loss
    # 0.005² + (0.0102 + 1.0204 − 1)² = 0.00096; b alone: 0.8388, loss 0.0073; one factor: 0.8579, 0.0057.
    fitted = preflight.fit_calibration([(0.1, 1.0, 1.0), (0.2, 1.0, 0.98)])
    assert fitted == pytest.approx((preflight.FACTOR_FLOOR, 1.0))


def test_the_calibration_of_a_generation_covers_the_first_token_and_every_later_one():
    s = ModelShape.from_config(LLAMA, task="causal-lm")
    peaks = Peaks(device="cuda", fp32_tflops=1.0, bf16_tflops=1.0, int8_tops=1.0, memory_gbps=1.0)
    eager = estimate(variant_for(s, []), peaks, tokens=16, new_tokens=4)
    served = estimate(variant_for(s, [{"technique": "runtime.vllm"}]), peaks, tokens=16, new_tokens=4)
    # Every pass (the prompt's and three decoded tokens) has 2 layers × 0.06 ms of overhead (× 0.3 served).
    assert eager.overhead_ms == pytest.approx(4 * 2 * preflight.LAYER_OVERHEAD_MS["cuda"])
    assert served.overhead_ms == pytest.approx(0.3 * eager.overhead_ms)
    assert eager.roofline_ms == pytest.approx(served.roofline_ms)
    assert eager.roofline_ms + eager.overhead_ms == pytest.approx(eager.latency_ms)
    samples = [
        (e.roofline_ms, e.overhead_ms, 2.0 * e.roofline_ms + 0.5 * e.overhead_ms) for e in (eager, served)
    ]
    assert preflight.fit_calibration(samples) == pytest.approx((2.0, 0.5))
    fitted = Peaks(**{**peaks.__dict__, "efficiency": 2.0, "overhead": 0.5})
    again = estimate(variant_for(s, []), fitted, tokens=16, new_tokens=4)
    assert again.latency_ms == pytest.approx(samples[0][2])
    assert again.ttft_ms + 3 * again.itl_ms == pytest.approx(again.latency_ms)


def test_the_ranking_puts_the_cheapest_estimate_first():
    traffic = Traffic(8_640_000, 2, 0.5, 1.0, 12, 4000, 50)
    families = preflight.family_pipelines(
        shape(),
        device="cpu",
        available=["distill.kd", "prune.ffn", "quantize.dynamic-int8", "runtime.openvino"],
    )
    assert [{"technique": "distill.kd", "params": {"student_layers": 1}}] in families
    ranked = preflight.rank(shape(), families, PEAKS, traffic, tokens=32, batch_sizes=(1, 4))
    costs = [r.cost for r in ranked if r.cost is not None]
    assert costs == sorted(costs) and any(not r.pipeline for r in ranked)


@pytest.mark.django_db
def test_the_forms_estimate_answers_with_a_reason_when_it_cannot_estimate(client_logged_in):
    """The live preview of the form: an incomplete form is an answer (200 and the reason), not an error
    the browser would log."""
    from django.urls import reverse

    response = client_logged_in.get(reverse("planner:request-estimate"), {"model_ref": "demo"})
    assert response.status_code == 200
    assert response.json()["error"] == "Choose the serving hardware to see an estimate."


@pytest.mark.django_db
def test_calibrating_on_eager_and_runtime_candidates_lowers_the_estimates_error(user, cpu_hardware, tmp_path):
    """A run on a tiny model, measured for eager PyTorch and for OpenVINO candidates: its small matrices
    run far below the hardware's peaks while the runtime cuts the per-layer overhead as guessed. One factor
    for both parts leaves the estimate more than 30% off; the two fitted factors bring it within ±30%."""
    import json as json_module

    from planner import estimates
    from planner.models import Candidate, HardwareCalibration
    from tests.planner.factories import measured_request, sweep

    (tmp_path / "config.json").write_text(json_module.dumps(CONFIG), encoding="utf-8")
    pipelines = [
        [],
        [{"technique": "runtime.openvino"}],
        [{"technique": "distill.kd", "params": {"student_layers": 1}}],
        [{"technique": "distill.kd", "params": {"student_layers": 1}}, {"technique": "runtime.openvino"}],
    ]
    poc_request = measured_request(
        owner=user, hardware=cpu_hardware, models=[(0.9, sweep(1.0))] * len(pipelines), finish=False
    )
    peaks = estimates.peaks_for(cpu_hardware)
    measured = []
    for candidate, pipeline in zip(poc_request.candidates.all(), pipelines, strict=True):
        Candidate.objects.filter(pk=candidate.pk).update(pipeline=pipeline)
        candidate.pipeline = pipeline
        est = estimates.candidate_estimate(candidate, config=CONFIG, peaks=peaks, tokens=32)
        # The machine: the roofline part 40× slower than its peaks, the per-layer overhead as guessed,
        # and 0.05 ms per call neither part models.
        ms = 40 * est.roofline_ms + est.overhead_ms + 0.05
        measured.append((est.roofline_ms, est.overhead_ms, ms))
        # The sweep's batch-1 p50 is 0.8 × its p95.
        Candidate.objects.filter(pk=candidate.pk).update(latency=sweep(ms / 0.8))
    # A previous calibration that scaled both parts alike by the geometric mean of measured ÷ estimated.
    ratios = [m / (r + o) for r, o, m in measured]
    single = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
    HardwareCalibration.objects.create(
        hardware=cpu_hardware, efficiency=single, overhead=single, samples=4, error_before=1, error_after=1
    )

    calibration = estimates.hardware_calibrate(poc_request=poc_request, model_dir=tmp_path, tokens=32)

    assert calibration is not None and calibration.samples == 4
    expected_before = sum(abs(single * (r + o) - m) / m for r, o, m in measured) / 4
    assert calibration.error_before == pytest.approx(expected_before)
    assert calibration.error_before > preflight.ESTIMATE_SLACK > calibration.error_after
    assert calibration.efficiency > 10 * calibration.overhead
    assert "overhead" in str(calibration)
    peaks = estimates.peaks_for(cpu_hardware)
    assert (peaks.efficiency, peaks.overhead) == (calibration.efficiency, calibration.overhead)
    ranked = estimates.ranked(
        config=CONFIG,
        task="sequence-classification",
        peaks=peaks,
        traffic=estimates.traffic_for(poc_request),
        tokens=32,
    )
    assert estimates.as_json(ranked, peaks=peaks, tokens=32)["calibrated"] is True
