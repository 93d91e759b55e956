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
    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 1000,
        "tie_word_embeddings": True,
    }
    s = ModelShape.from_config(config, task="causal-lm")
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


def test_the_efficiency_factor_is_the_geometric_mean_of_measured_over_estimated():
    assert preflight.fit_efficiency([(1.0, 2.0), (4.0, 2.0)]) == pytest.approx(1.0)
    assert preflight.fit_efficiency([(1.0, 3.0), (2.0, 6.0)]) == pytest.approx(3.0)
    assert preflight.fit_efficiency([]) == 1.0
    calibrated = Peaks(**{**PEAKS.__dict__, "efficiency": 3.0})
    base = estimate(variant_for(shape(), []), PEAKS, tokens=32).latency_ms
    assert estimate(variant_for(shape(), []), calibrated, tokens=32).latency_ms == pytest.approx(3 * base)
    assert preflight.relative_error(1.3, 1.0) == pytest.approx(0.3)


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
