"""The pre-flight estimate: what a model and its compressed variants should cost to serve, in
milliseconds and money, from config.json and the hardware's published peaks alone, before anything runs.

Pure arithmetic (no Django, no torch), checked by hand in tests/planner/test_preflight.py.

Model (``ModelShape.from_config``): h hidden size, L layers, H attention heads of size d (KV heads for
grouped-query attention), f feed-forward size (three matrices when gated, as Llama-style decoders are,
else two), V vocabulary.

- parameters: embeddings ``V·h`` (+ a learned position table ``P·h``) + ``L·(2·h·H·d + 2·h·KV·d + m·h·f)``
  (m = 2 or 3) + the head (classification: ``h·h + h·labels``; causal LM: ``V·h`` unless tied).
- FLOPs for one request of s tokens (batch b): ``2·b·s·L·(attention + feed-forward matrices)`` +
  ``4·b·s²·H·d·L`` (scores and weighted sum) + the head (``2·b·(h·h + h·labels)``; a causal LM's LM head
  on the last position only: ``2·b·V·h``).
- bytes read: every matrix of the layers and the head once per forward pass, at the weights' bytes per
  parameter (fp32 4, bf16 2, int8 1, int4 0.5), plus the activations ``2·b·s·h·L·4`` (fp32 in, out).
- time of a forward pass, in two parts: ``a × max(FLOPs ÷ peak compute, bytes ÷ memory bandwidth)`` (the
  roofline part) ``+ b × L × per-layer overhead × the runtime's share`` (the overhead part: the framework's
  kernel launches and Python per layer, which dominate small models; a runtime such as OpenVINO or ONNX
  Runtime keeps only ``RUNTIME_OVERHEAD_SHARE`` of it). ``a`` (``Peaks.efficiency``) and ``b``
  (``Peaks.overhead``) are the hardware's fitted factors, 1 until a run on it has been measured.
- causal LM: time to first token = the forward pass over the prompt; each later token a forward pass of
  one token that reads every weight and the KV cache (``2·L·KV·d·context`` values); tokens/s = 1 ÷ that.
  The whole reply, TTFT ``+ (new tokens − 1) ×`` per token, keeps the same two parts (each the sum of
  its passes' parts).
- calibration (``fit_calibration``): over a run's (roofline ms, overhead ms, measured ms) triples at
  batch 1 (the parts at factors 1), the ``a, b ≥ FACTOR_FLOOR`` minimising ``Σ ((a·r + b·o − m) ÷ m)²``:
  the 2×2 normal equations in ``x = r ÷ m``, ``y = o ÷ m``; when their solution falls below the floor,
  the best by the same loss of the one-factor fits (``a`` with ``b = 1``, ``b`` with ``a = 1``, or one
  factor for both); when only one factor can be identified (one sample, or every sample with the same
  ratio of its parts), one factor for both (with one sample: measured ÷ estimated).
- cost (as planner.roi): replicas ``max(1, ceil(peak rps ÷ (capacity × u)))`` with capacity the best
  ``b ÷ time(b)`` over the batch sizes whose time meets the p95 target; total over the horizon
  ``one-time + T × replicas × price × 730`` (the baseline's one-time is 0).
- optimistic cost: the same with every time divided by (1 + ``ESTIMATE_SLACK``): what the search
  compares with the best measured cost before it spends a trial on a region.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

HOURS_PER_MONTH = 730
#: How far a measurement may fall below a calibrated estimate (the goal is ±30% after one calibration).
ESTIMATE_SLACK = 0.3
#: Bytes per weight for each storage the techniques produce.
DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}
#: Framework time per layer at batch 1 (ms): eager PyTorch dispatches a dozen operators per layer.
LAYER_OVERHEAD_MS = {"cpu": 0.08, "cuda": 0.06}
#: The share of the eager overhead a compiled runtime keeps (its graph runs without Python in between).
RUNTIME_OVERHEAD_SHARE = {"runtime.openvino": 0.3, "runtime.onnxruntime": 0.4, "runtime.vllm": 0.3}
#: The least a fitted factor may be (a part of the time never vanishes).
FACTOR_FLOOR = 0.05
GATED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo"})
LEARNED_POSITIONS = frozenset(
    {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "gpt2", "opt", "mpnet"}
)
CAUSAL_LM = "causal-lm"


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    positions: int
    labels: int
    gated: bool
    causal: bool
    tied: bool

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, task: str) -> ModelShape:
        def size(*names: str, default: int) -> int:
            for name in names:
                value = config.get(name)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
            return default

        hidden = size("hidden_size", "dim", "n_embd", "d_model", default=768)
        heads = size("num_attention_heads", "n_heads", "n_head", default=max(1, hidden // 64))
        model_type = str(config.get("model_type") or "")
        id2label = config.get("id2label")
        return cls(
            layers=size("num_hidden_layers", "n_layers", "n_layer", "num_layers", default=1),
            hidden=hidden,
            heads=heads,
            kv_heads=size("num_key_value_heads", default=heads),
            head_dim=size("head_dim", default=max(1, hidden // heads)),
            ffn=size("intermediate_size", "hidden_dim", "n_inner", "ffn_dim", default=4 * hidden),
            vocab=size("vocab_size", default=30_522),
            positions=size("max_position_embeddings", "n_positions", default=512)
            if model_type in LEARNED_POSITIONS
            else 0,
            labels=len(id2label)
            if isinstance(id2label, dict) and id2label
            else size("num_labels", default=2),
            gated=model_type in GATED_MODEL_TYPES,
            causal=task == CAUSAL_LM,
            tied=bool(config.get("tie_word_embeddings", task == CAUSAL_LM)),
        )

    @property
    def layer_parameters(self) -> int:
        attention = (
            2 * self.hidden * self.heads * self.head_dim + 2 * self.hidden * self.kv_heads * self.head_dim
        )
        return attention + (3 if self.gated else 2) * self.hidden * self.ffn

    @property
    def head_parameters(self) -> int:
        if self.causal:
            return self.vocab * self.hidden
        return self.hidden * self.hidden + self.hidden * self.labels

    @property
    def parameters(self) -> int:
        embeddings = (self.vocab + self.positions) * self.hidden
        head = 0 if self.causal and self.tied else self.head_parameters
        return embeddings + self.layers * self.layer_parameters + head

    def flops(self, tokens: int, batch: int = 1, *, last_only_head: bool = True) -> float:
        """Multiply-adds × 2 of one forward pass over ``tokens`` tokens for ``batch`` requests."""
        matrices = 2.0 * batch * tokens * self.layers * self.layer_parameters
        attention = 4.0 * batch * tokens * tokens * self.heads * self.head_dim * self.layers
        head = 2.0 * batch * self.head_parameters * (1 if last_only_head or not self.causal else tokens)
        return matrices + attention + head

    def bytes_read(self, tokens: int, batch: int, weight_bytes: float) -> float:
        weights = (self.layers * self.layer_parameters + self.head_parameters) * weight_bytes
        return weights + 2.0 * batch * tokens * self.hidden * self.layers * 4

    def weight_bytes(self) -> dict[str, int]:
        return {dtype: int(self.parameters * per) for dtype, per in DTYPE_BYTES.items()}


@dataclass(frozen=True)
class Peaks:
    """Published peaks of a hardware profile, with its two fitted factors: ``efficiency`` scales the
    roofline part of the time, ``overhead`` the per-layer framework overhead."""

    device: str
    fp32_tflops: float
    bf16_tflops: float
    int8_tops: float
    memory_gbps: float
    efficiency: float = 1.0
    overhead: float = 1.0

    @property
    def calibrated(self) -> bool:
        return self.efficiency != 1.0 or self.overhead != 1.0

    def compute(self, dtype: str) -> float:
        """Peak operations per second for matrices stored as ``dtype`` (weight-only int8/int4 dequantizes
        to the activations' type, so it computes at fp32 and only reads fewer bytes)."""
        tflops = {"bf16": self.bf16_tflops, "int8": self.int8_tops}.get(dtype, self.fp32_tflops)
        return max(tflops, 1e-6) * 1e12


@dataclass(frozen=True)
class Variant:
    """A candidate family as the estimate sees it: its shape, how its weights are stored and computed,
    and how much of the framework's per-layer overhead is left."""

    label: str
    shape: ModelShape
    compute_dtype: str = "fp32"
    weight_dtype: str = "fp32"
    overhead_share: float = 1.0


def variant_for(base: ModelShape, pipeline: Sequence[Mapping[str, Any]]) -> Variant:
    """The shape and storage a pipeline leaves, step by step (unknown techniques change nothing)."""
    shape, compute, weights, overhead = base, "fp32", "fp32", 1.0
    for step in pipeline:
        name, params = str(step.get("technique")), dict(step.get("params") or {})
        if name == "distill.kd":
            shape = replace(shape, layers=min(shape.layers, int(params.get("student_layers", 2))))
        elif name == "prune.layers":
            shape = replace(shape, layers=min(shape.layers, int(params.get("keep", 3))))
        elif name == "prune.ffn":
            shape = replace(shape, ffn=max(1, round(shape.ffn * (1 - float(params.get("amount", 0.5))))))
        elif name == "prune.heads":
            kept = max(1, round(shape.heads * (1 - float(params.get("amount", 0.5)))))
            shape = replace(shape, heads=kept, kv_heads=min(shape.kv_heads, kept))
        elif name == "quantize.dynamic-int8":
            compute, weights = "int8", "int8"
        elif name == "quantize.half":
            compute, weights = "bf16", "bf16"
        elif name == "quantize.weight-only":
            weights = "int4" if int(params.get("bits", 8)) == 4 else "int8"
        elif name in RUNTIME_OVERHEAD_SHARE:
            overhead = RUNTIME_OVERHEAD_SHARE[name]
            if str(params.get("quantization", "none")) in ("int8", "dynamic-int8", "static-int8"):
                compute, weights = "int8", "int8"
    label = " → ".join(str(s.get("technique")) for s in pipeline) or "baseline"
    return Variant(label, shape, compute, weights, overhead)


@dataclass(frozen=True)
class Estimate:
    label: str
    parameters: int
    weight_bytes: int
    flops: float
    latency_ms: float  # one request at batch 1 (text generation: the whole reply)
    batch_ms: dict[int, float]
    bound: str  # "compute", "memory" or "overhead": what dominates at batch 1
    ttft_ms: float | None = None
    itl_ms: float | None = None
    tokens_per_s: float | None = None
    # latency_ms in its two parts, each times its factor: roofline_ms + overhead_ms = latency_ms.
    roofline_ms: float = 0.0
    overhead_ms: float = 0.0


def _forward_ms(
    variant: Variant, peaks: Peaks, tokens: int, batch: int, *, decode: bool = False
) -> tuple[float, float, str]:
    """One forward pass: its roofline part, its overhead part (each times its factor), what dominates."""
    shape = variant.shape
    flops = shape.flops(tokens if not decode else 1, batch)
    if decode:  # one new token attends to the whole context
        flops += 4.0 * batch * tokens * shape.heads * shape.head_dim * shape.layers
    moved = shape.bytes_read(1 if decode else tokens, batch, DTYPE_BYTES[variant.weight_dtype])
    if decode:
        moved += 2.0 * batch * shape.layers * shape.kv_heads * shape.head_dim * tokens * 4
    compute_ms = flops / peaks.compute(variant.compute_dtype) * 1000
    memory_ms = moved / (max(peaks.memory_gbps, 1e-6) * 1e9) * 1000
    overhead_ms = shape.layers * LAYER_OVERHEAD_MS.get(peaks.device, 0.08) * variant.overhead_share
    parts = {
        "compute": compute_ms * peaks.efficiency,
        "memory": memory_ms * peaks.efficiency,
        "overhead": overhead_ms * peaks.overhead,
    }
    return max(parts["compute"], parts["memory"]), parts["overhead"], max(parts, key=lambda k: parts[k])


def estimate(
    variant: Variant,
    peaks: Peaks,
    *,
    tokens: int,
    batch_sizes: Sequence[int] = (1,),
    new_tokens: int = 32,
) -> Estimate:
    """The roofline estimate of one variant (see the module's docstring)."""
    shape = variant.shape
    batch_ms: dict[int, float] = {}
    ttft = itl = rate = None
    for batch in sorted(set(batch_sizes) | {1}):
        roofline, overhead, bound_b = _forward_ms(variant, peaks, tokens, batch)
        if shape.causal:
            step_roofline, step_overhead, _ = _forward_ms(
                variant, peaks, tokens + new_tokens // 2, batch, decode=True
            )
            if batch == 1:
                ttft, itl = roofline + overhead, step_roofline + step_overhead
                rate = 1000 / itl
            roofline += (new_tokens - 1) * step_roofline
            overhead += (new_tokens - 1) * step_overhead
        batch_ms[batch] = roofline + overhead
        if batch == 1:
            bound, parts = bound_b, (roofline, overhead)
    return Estimate(
        label=variant.label,
        parameters=shape.parameters,
        weight_bytes=int(shape.parameters * DTYPE_BYTES[variant.weight_dtype]),
        flops=shape.flops(tokens),
        latency_ms=batch_ms[1],
        batch_ms=batch_ms,
        bound=bound,
        ttft_ms=ttft,
        itl_ms=itl,
        tokens_per_s=rate,
        roofline_ms=parts[0],
        overhead_ms=parts[1],
    )


@dataclass(frozen=True)
class Traffic:
    """The request's economics the cost needs (floats: an estimate, never a bill)."""

    requests_per_day: float
    peak_factor: float
    utilisation: float
    price_per_hour: float
    horizon_months: int
    one_time: float  # engineering hours × rate (a candidate's; the baseline's is 0)
    p95_target_ms: float


def capacity_rps(est: Estimate, target_ms: float, slack: float = 0.0) -> float:
    """Best ``b ÷ time(b)`` over the batch sizes whose (optimistic) time meets the target; 0 if none does."""
    rates = [b * 1000 / (ms / (1 + slack)) for b, ms in est.batch_ms.items() if ms / (1 + slack) <= target_ms]
    return max(rates, default=0.0)


def total_cost(
    est: Estimate, traffic: Traffic, *, baseline: bool = False, slack: float = 0.0
) -> float | None:
    """Serving cost over the horizon plus the one-time cost; None when no batch size meets the target."""
    capacity = capacity_rps(est, traffic.p95_target_ms, slack)
    if capacity <= 0:
        return None
    peak = traffic.requests_per_day / 86_400 * traffic.peak_factor
    replicas = max(1, math.ceil(peak / (capacity * traffic.utilisation)))
    monthly = replicas * traffic.price_per_hour * HOURS_PER_MONTH
    return (0.0 if baseline else traffic.one_time) + traffic.horizon_months * monthly


def optimistic_cost(est: Estimate, traffic: Traffic, *, baseline: bool = False) -> float:
    """The lowest total a variant can plausibly measure (inf when even its fast end misses the target)."""
    cost = total_cost(est, traffic, baseline=baseline, slack=ESTIMATE_SLACK)
    return math.inf if cost is None else cost


@dataclass(frozen=True)
class RankedEstimate:
    pipeline: list[dict[str, Any]]
    estimate: Estimate
    cost: float | None
    optimistic: float


def rank(
    base: ModelShape,
    pipelines: Sequence[Sequence[Mapping[str, Any]]],
    peaks: Peaks,
    traffic: Traffic,
    *,
    tokens: int,
    batch_sizes: Sequence[int] = (1,),
    new_tokens: int = 32,
) -> list[RankedEstimate]:
    """The baseline and each pipeline, estimated and ordered by estimated total cost (unknown last)."""
    ranked = []
    for pipeline in [[], *pipelines]:
        variant = variant_for(base, pipeline)
        est = estimate(variant, peaks, tokens=tokens, batch_sizes=batch_sizes, new_tokens=new_tokens)
        baseline = not pipeline
        ranked.append(
            RankedEstimate(
                [dict(s) for s in pipeline],
                est,
                total_cost(est, traffic, baseline=baseline),
                optimistic_cost(est, traffic, baseline=baseline),
            )
        )
    return sorted(ranked, key=lambda r: (r.cost is None, r.cost or 0.0, len(r.pipeline)))


def family_pipelines(
    base: ModelShape, *, device: str, available: Sequence[str]
) -> list[list[dict[str, Any]]]:
    """The candidate families the form's estimate shows: distilled to fewer layers, pruned feed-forward,
    int8 and bf16 storage, and a compiled runtime, alone and combined with the smallest student."""
    present = set(available)
    finishes = [n for n in ("quantize.dynamic-int8", "quantize.half", "runtime.openvino") if n in present]
    if device != "cpu":
        finishes = [n for n in finishes if n == "quantize.half"]
    students = [k for k in sorted({1, 2, base.layers // 2, (3 * base.layers) // 4}) if 0 < k < base.layers]
    families: list[list[dict[str, Any]]] = []
    if "distill.kd" in present:
        families += [[{"technique": "distill.kd", "params": {"student_layers": k}}] for k in students]
    if "prune.ffn" in present:
        families += [[{"technique": "prune.ffn", "params": {"amount": a}}] for a in (0.3, 0.5)]
    families += [[{"technique": name}] for name in finishes]
    if students and "distill.kd" in present:
        small = {"technique": "distill.kd", "params": {"student_layers": students[len(students) // 2]}}
        families += [[small, {"technique": name}] for name in finishes]
    return families


def _loss(samples: Sequence[tuple[float, float]], a: float, b: float) -> float:
    """Σ (a·x + b·y − 1)² over (x, y) = (roofline ÷ measured, overhead ÷ measured)."""
    return sum((a * x + b * y - 1) ** 2 for x, y in samples)


def _one_factor(weights: Sequence[float], rest: Sequence[float]) -> float:
    """The k ≥ FACTOR_FLOOR minimising Σ (k·w + r − 1)²: Σ w·(1 − r) ÷ Σ w² (1 when every w is 0)."""
    denominator = sum(w * w for w in weights)
    if denominator <= 0:
        return 1.0
    return max(FACTOR_FLOOR, sum(w * (1 - r) for w, r in zip(weights, rest, strict=True)) / denominator)


def fit_calibration(samples: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """The (efficiency, overhead) factors fitted on (roofline ms, overhead ms, measured ms) triples, the
    parts taken at factors 1 (see the module's docstring); (1, 1) without a usable sample."""
    scaled = [(r / m, o / m) for r, o, m in samples if m > 0 and r >= 0 and o >= 0 and r + o > 0]
    if not scaled:
        return 1.0, 1.0
    xs, ys = [x for x, _ in scaled], [y for _, y in scaled]
    sxx, syy = sum(x * x for x in xs), sum(y * y for y in ys)
    sxy = sum(x * y for x, y in scaled)
    det = sxx * syy - sxy * sxy
    both = _one_factor([x + y for x, y in scaled], [0.0] * len(scaled))
    if len(scaled) < 2 or det <= 1e-9 * sxx * syy:  # only the sum of the parts is identified
        return both, both
    a = (syy * sum(xs) - sxy * sum(ys)) / det
    b = (sxx * sum(ys) - sxy * sum(xs)) / det
    if a >= FACTOR_FLOOR and b >= FACTOR_FLOOR:
        return a, b
    fits = [(_one_factor(xs, ys), 1.0), (1.0, _one_factor(ys, xs)), (both, both)]
    return min(fits, key=lambda f: _loss(scaled, *f))


def relative_error(estimated: float, measured: float) -> float:
    """(estimated − measured) ÷ measured: +0.3 is an estimate 30% too slow."""
    return (estimated - measured) / measured
