"""How a model is measured: task accuracy, latency over a batch sweep, memory, size, environment.

Every candidate of a PoC goes through the same functions in the same process on the same device, so
the figures compare. Latency is timed against the baseline, kept loaded next to the candidate, in
interleaved rounds per batch size (workers/timing.py, docs/measurement.md), so a busy host slows both and
the speedup survives it. torch is imported here, so only worker processes import this module.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from plugins.base import Example
from workers.goodput import GoodputPolicy
from workers.record import LatencyPoint
from workers.timing import (
    Comparison,
    TimingPolicy,
    measure_speedup,
    percentile_fields,
    summarize_latency,
    trust_fields,
)
from workers.trust import CANDIDATE, LatencySummary

# The baseline a candidate is timed against: (model, tokenizer), both loaded on the PoC's device.
Reference = tuple[Any, Any]
# Progress after each interleaved round: (position of the batch size, batch size, attempt, rounds done).
RoundReport = Callable[[int, int, int, int], None]


@dataclass(frozen=True)
class MeasureConfig:
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    # How each batch size is timed against the baseline: warm-up, rounds, stopping, intervals, the unstable
    # rule and re-measuring (the MEASURE_* settings). Its min_samples is the classifier's floor.
    timing: TimingPolicy = field(default_factory=TimingPolicy)
    threads: int = 0  # 0: every core the process may use
    max_length: int = 128
    eval_batch_size: int = 32
    # Causal LMs: each timed iteration generates new_tokens tokens (greedy, KV cache on, end-of-text ignored
    # so every request is the same length) after a prompt of the eval text's first max_prompt_tokens tokens.
    # A generation takes seconds where a classifier's forward pass takes milliseconds, so its own sample
    # floor (timing.min_samples for generations; a TTFT p95 needs 100, see workers/stats.py).
    new_tokens: int = 32
    max_prompt_tokens: int = 64
    generation_min_iterations: int = 100
    # Perplexity reads the first lm_eval_texts held-out texts (the split's fixed order; 0 = all of them), in
    # batches of lm_eval_batch_size: a vocabulary of 50k makes every position's logits 200 KB.
    lm_eval_texts: int = 256
    lm_eval_batch_size: int = 8
    # The serving scenario after the timing (workers/goodput.py): None runs none (no goodput is stored).
    goodput: GoodputPolicy | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fix_threads(requested: int) -> int:
    """Pin torch's intra-op thread count so every candidate runs with the same parallelism."""
    threads = requested or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int, device: str) -> dict[str, torch.Tensor]:
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def evaluate_classifier(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    label2id: dict[str, int],
    *,
    device: str,
    max_length: int,
    batch_size: int,
) -> dict[str, float]:
    """Accuracy and macro-F1 on held-out examples."""
    gold: list[int] = []
    predicted: list[int] = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            logits = model(**_encode(tokenizer, [e.text for e in chunk], max_length, device)).logits
            predicted.extend(logits.argmax(dim=-1).tolist())
            gold.extend(label2id[str(e.label)] for e in chunk)
    return {
        "accuracy": _accuracy(gold, predicted),
        "macro_f1": macro_f1(gold, predicted, sorted(label2id.values())),
    }


def _accuracy(gold: Sequence[int], predicted: Sequence[int]) -> float:
    return sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold) if gold else 0.0


def macro_f1(gold: Sequence[int], predicted: Sequence[int], classes: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions."""
    scores = []
    for cls in classes:
        tp = sum(g == cls and p == cls for g, p in zip(gold, predicted, strict=True))
        fp = sum(g != cls and p == cls for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == cls and p != cls for g, p in zip(gold, predicted, strict=True))
        if tp + fp + fn == 0:
            continue  # class absent from both: it says nothing about this model
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of already sorted values."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * q
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def _timing_batches(
    encode: Callable[[list[str]], dict[str, torch.Tensor]],
    texts: Sequence[str],
    batch_size: int,
    *,
    count: int,
) -> list[dict[str, torch.Tensor]]:
    """Up to ``count`` batches of ``batch_size`` eval texts, in order and wrapping around, encoded before
    any clock starts (the figures are the model's, not the tokenizer's)."""
    return [
        encode([texts[(i * batch_size + j) % len(texts)] for j in range(batch_size)])
        for i in range(min(count, max(1, len(texts) // batch_size)))
    ]


def _mean_tokens(batches: Sequence[dict[str, torch.Tensor]]) -> float:
    """Real (unpadded) tokens per text over ``batches``."""
    return sum(int(b["attention_mask"].sum()) for b in batches) / sum(
        len(b["attention_mask"]) for b in batches
    )


def _percentiles(
    prefix: str, summary: LatencySummary, rows: Sequence[Sequence[float]], intervals: Sequence[str]
) -> dict[str, float | None]:
    """``percentile_fields``; a median with too few samples for its interval is the plain median."""
    found = percentile_fields(prefix, summary, intervals)
    if found[f"{prefix}p50_ms"] is None:
        found[f"{prefix}p50_ms"] = _percentile(sorted(t * 1000 for row in rows for t in row), 0.5)
    return found


def _point_fields(batch_size: int, comparison: Comparison, *, is_baseline: bool) -> dict[str, Any]:
    """The ``LatencyPoint`` fields every sweep has, from the candidate's side of the interleaved rounds:
    p50/p95/p99 with intervals, mean, throughput at the median, sample count, speedup and stability."""
    trust = comparison.trust
    summary = trust.candidate
    fields = _percentiles("", summary, comparison.run.candidate, intervals=("p50", "p95", "p99"))
    p50 = fields["p50_ms"]
    assert p50 is not None
    return {
        "batch_size": batch_size,
        **fields,
        "mean_ms": summary.mean_ms,
        "throughput_rps": batch_size / (p50 / 1000),
        "iterations": summary.samples,
        **trust_fields(trust, is_baseline=is_baseline),
    }


def _forward(model: Any, batches: Sequence[dict[str, torch.Tensor]], device: str) -> Callable[[], None]:
    """One timed unit of a classifier: a forward pass of the next batch, synchronized on CUDA."""
    cycle = itertools.cycle(batches)

    def run() -> None:
        model(**next(cycle))
        _sync(device)

    return run


def _encoder(
    config: MeasureConfig, device: str, *, generative: bool
) -> Callable[[Any, list[str]], dict[str, torch.Tensor]]:
    """How a model's tokenizer turns timing texts into a batch: truncated classifier inputs, or a causal
    LM's prompts (the first ``max_prompt_tokens`` tokens, left-padded)."""
    from plugins.training import encode_causal_lm

    if generative:
        return lambda tok, chunk: encode_causal_lm(
            tok, chunk, max_length=config.max_prompt_tokens, device=device, padding_side="left"
        )
    return lambda tok, chunk: _encode(tok, chunk, config.max_length, device)


def _interleaved(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    reference: Reference | None,
    batch_sizes: Sequence[int],
    policy: TimingPolicy,
    encode: Callable[[Any, list[str]], dict[str, torch.Tensor]],
    unit: Callable[[Any, Sequence[dict[str, torch.Tensor]]], Callable[[], object]],
    count: int,
    on_batch_size: Callable[[int, int], None] | None,
    on_round: RoundReport | None,
) -> Iterator[tuple[int, list[dict[str, torch.Tensor]], Comparison]]:
    """Per batch size: the model's timing batches, and its comparison with ``reference`` (the model
    itself when None) in interleaved rounds; each model reads its own tokenizer's encoding of the texts,
    made before any clock starts (the figures are the model's, not the tokenizer's)."""
    if not texts:
        raise ValueError("latency needs at least one eval text")
    base_model, base_tokenizer = reference if reference is not None else (model, tokenizer)
    with torch.inference_mode():
        for position, batch_size in enumerate(batch_sizes):
            if on_batch_size is not None:  # progress: which batch size is being timed
                on_batch_size(position, batch_size)
            batches, base_batches = (
                _timing_batches(functools.partial(encode, tok), texts, batch_size, count=count)
                for tok in (tokenizer, base_tokenizer)
            )

            def report(attempt: int, done: int, _p: int = position, _b: int = batch_size) -> None:
                if on_round is not None:
                    on_round(_p, _b, attempt, done)

            comparison = measure_speedup(
                unit(base_model, base_batches), unit(model, batches), policy=policy, on_round=report
            )
            yield batch_size, batches, comparison


def latency_sweep(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    device: str,
    config: MeasureConfig,
    reference: Reference | None = None,
    is_baseline: bool = False,
    on_batch_size: Callable[[int, int], None] | None = None,
    on_round: RoundReport | None = None,
) -> list[LatencyPoint]:
    """p50/p95/p99 with intervals, throughput and the speedup over ``reference`` per batch size, on
    batches of real eval texts at their real lengths, timed in interleaved rounds against ``reference``.

    ``reference`` is the baseline (model, tokenizer); without one, the model is timed against itself.
    ``is_baseline``: ``model`` is the baseline (its speedup is not stored; the interval of its ratio to
    itself still decides whether it is stable). The figures are the model's forward pass, which is what
    compression changes. ``on_round`` reports every round (it may raise to stop the run).
    """
    comparisons = _interleaved(
        model,
        tokenizer,
        texts,
        reference=reference,
        batch_sizes=config.batch_sizes,
        policy=config.timing,
        encode=_encoder(config, device, generative=False),
        unit=lambda m, batches: _forward(m, batches, device),
        count=32,
        on_batch_size=on_batch_size,
        on_round=on_round,
    )
    return [
        LatencyPoint(
            **_point_fields(batch_size, comparison, is_baseline=is_baseline or reference is None),
            mean_tokens=_mean_tokens(batches),
        )
        for batch_size, batches, comparison in comparisons
    ]


# --------------------------------------------------------------------------------------------------------
# Causal language models


def evaluate_causal_lm(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    device: str,
    max_length: int,
    batch_size: int,
    max_reference_examples: int = 64,
) -> dict[str, Any]:
    """Perplexity on held-out texts, and exact match where examples carry a reference completion.

    Perplexity is ``exp`` of the mean negative log-likelihood of every next token after the first, over
    all held-out texts together (each truncated to ``max_length`` tokens); every candidate keeps the
    original tokenizer, so the figures compare. Exact match: for up to ``max_reference_examples``
    examples with a reference, the greedy completion of the prompt, normalised (case, punctuation,
    whitespace), must begin with the normalised reference.
    """
    import math

    import torch.nn.functional as F

    from plugins.training import encode_causal_lm, next_token_labels

    total_nll = 0.0
    total_tokens = 0
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            chunk = [e.text for e in examples[start : start + batch_size]]
            batch = encode_causal_lm(tokenizer, chunk, max_length=max_length, device=device)
            logits = model(**batch).logits.float()
            targets = next_token_labels(batch)
            nll = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                targets.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total_nll += float(nll)
            total_tokens += int((targets != -100).sum())
    if total_tokens == 0:
        raise ValueError("perplexity needs held-out texts of at least two tokens")
    figures: dict[str, Any] = {
        "perplexity": math.exp(total_nll / total_tokens),
        "eval_tokens": total_tokens,
        "exact_match": None,
    }
    referenced = [e for e in examples if e.reference][:max_reference_examples]
    if referenced:
        hits = sum(
            _normalise(completion).startswith(_normalise(str(example.reference)))
            for example, completion in zip(
                referenced, _greedy_completions(model, tokenizer, referenced, device, max_length), strict=True
            )
        )
        figures["exact_match"] = hits / len(referenced)
        figures["reference_examples"] = len(referenced)
    return figures


def _normalise(text: str) -> str:
    import re
    import string

    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return re.sub(r"\s+", " ", text).strip()


def _greedy_completions(
    model: Any, tokenizer: Any, examples: Sequence[Example], device: str, max_length: int
) -> list[str]:
    from plugins.training import encode_causal_lm

    completions = []
    for example in examples:
        prompt = encode_causal_lm(tokenizer, [example.text], max_length=max_length, device=device)
        budget = len(tokenizer(str(example.reference), add_special_tokens=False).input_ids) + 2
        tokens = _generate(model, prompt, budget, device)[0]
        completions.append(tokenizer.decode(tokens, skip_special_tokens=True))
    return completions


def _generate(
    model: Any, batch: dict[str, torch.Tensor], new_tokens: int, device: str, on_token: Any = None
) -> torch.Tensor:
    """Greedy incremental decoding with the KV cache: one prefill pass over the (left-padded) prompts,
    then one pass per new token that reads only that token and the cache. Generates exactly
    ``new_tokens`` tokens (end-of-text is not a stop, so every request has the same length).
    ``on_token(index)`` is called after each token is known (synchronized on CUDA), for timing."""
    import inspect

    # transformers 5.24 renamed the cache argument and output from past_key_values to cache.
    cache_arg = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    tokens = [token]
    if on_token is not None:
        _sync(device)
        on_token(0)
    cache = getattr(out, cache_arg)
    position = positions[:, -1:]
    for index in range(1, new_tokens):
        mask = torch.cat([mask, torch.ones_like(token)], dim=-1)
        position = position + 1
        out = model(
            input_ids=token, attention_mask=mask, position_ids=position, use_cache=True, **{cache_arg: cache}
        )
        cache = getattr(out, cache_arg)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(token)
        if on_token is not None:
            _sync(device)
            on_token(index)
    return torch.cat(tokens, dim=-1)


def _generation(
    model: Any, batches: Sequence[dict[str, torch.Tensor]], new_tokens: int, device: str
) -> Callable[[], tuple[float, tuple[float, ...]]]:
    """One timed unit of a causal LM: a whole generation of the next prompt batch. It returns its time to
    first token and its inter-token gaps (seconds), read from token timestamps taken inside the unit, so
    TTFT and ITL come from the same interleaved rounds as the request time."""
    cycle = itertools.cycle(batches)

    def run() -> tuple[float, tuple[float, ...]]:
        marks: list[float] = []
        started = time.perf_counter()
        _generate(
            model, next(cycle), new_tokens, device, on_token=lambda _i: marks.append(time.perf_counter())
        )
        return marks[0] - started, tuple(b - a for a, b in itertools.pairwise(marks))

    return run


def _token_fields(comparison: Comparison, policy: TimingPolicy, new_tokens: int) -> dict[str, Any]:
    """TTFT and ITL percentiles of the candidate with the p95 intervals, from its units' token timestamps.
    Each round's samples stay together (the bootstrap resamples whole rounds)."""
    results: Sequence[Sequence[Any]] = comparison.outputs[CANDIDATE]
    ttft = [[r[0] for r in row] for row in results]
    found = _percentiles("ttft_", summarize_latency(ttft, policy=policy), ttft, intervals=("p95",))
    if new_tokens < 2:  # one new token: no decode step to time
        return {**found, "itl_p50_ms": 0.0, "itl_p95_ms": 0.0, "itl_p99_ms": 0.0}
    itl = [[gap for r in row for gap in r[1]] for row in results]
    return {**found, **_percentiles("itl_", summarize_latency(itl, policy=policy), itl, ("p95",))}


def generation_sweep(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    device: str,
    config: MeasureConfig,
    reference: Reference | None = None,
    is_baseline: bool = False,
    on_batch_size: Callable[[int, int], None] | None = None,
    on_round: RoundReport | None = None,
) -> list[LatencyPoint]:
    """Generation latency per batch size, timed in interleaved rounds against ``reference`` (as
    ``latency_sweep``): time to first token (TTFT), inter-token latency (ITL), the whole request with
    intervals, output tokens/s, and the speedup of the whole request, with the KV cache on.

    Prompts are the eval texts' first ``max_prompt_tokens`` tokens (shorter texts keep their real length),
    left-padded into batches; each timed iteration generates ``new_tokens`` tokens greedily. TTFT is the
    prefill pass plus picking the first token; each ITL sample is one incremental decoding step.
    """
    policy = replace(
        config.timing, min_samples=config.generation_min_iterations, warmup=min(config.timing.warmup, 2)
    )
    comparisons = _interleaved(
        model,
        tokenizer,
        texts,
        reference=reference,
        batch_sizes=config.batch_sizes,
        policy=policy,
        encode=_encoder(config, device, generative=True),
        unit=lambda m, batches: _generation(m, batches, config.new_tokens, device),
        count=8,
        on_batch_size=on_batch_size,
        on_round=on_round,
    )
    points = []
    for batch_size, batches, comparison in comparisons:
        request = _point_fields(batch_size, comparison, is_baseline=is_baseline or reference is None)
        points.append(
            LatencyPoint(
                **request,
                prompt_tokens=_mean_tokens(batches),
                new_tokens=config.new_tokens,
                **_token_fields(comparison, policy, config.new_tokens),
                tokens_per_s=batch_size * config.new_tokens / (request["p50_ms"] / 1000),
            )
        )
    return points


def peak_memory(
    model: Any, tokenizer: Any, texts: Sequence[str], *, device: str, config: MeasureConfig, generative: bool
) -> int | None:
    """Peak memory of ``model`` alone (CUDA max allocated, or the process's peak RSS): one untimed pass at
    each batch size on its largest timing batch. Taken apart from the interleaved timing, so the
    baseline's activations, timed in the same rounds, do not count towards the candidate's peak."""
    encode = _encoder(config, device, generative=generative)
    with torch.inference_mode(), PeakMemory(device) as memory:
        for batch_size in config.batch_sizes:
            batches = _timing_batches(
                lambda chunk: encode(tokenizer, chunk), texts, batch_size, count=8 if generative else 32
            )
            largest = [max(batches, key=lambda b: b["input_ids"].numel())]
            generation = _generation(model, largest, config.new_tokens, device)
            (generation if generative else _forward(model, largest, device))()
    return memory.peak_bytes


def count_parameters(model: Any) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting the weights of quantized layers too; tied weights once."""
    from plugins.formats import dense_tensors  # quantized weights dequantized by their save format

    total = nonzero = 0
    seen: set[int] = set()
    for key, tensor in dense_tensors(model):
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel()
        nonzero += int(torch.count_nonzero(tensor))
    return total, nonzero


class PeakMemory:
    """Peak memory while the block runs: CUDA max allocated, or the process's peak RSS on CPU.

    On Linux the RSS high-water mark is reset first (``/proc/self/clear_refs``), so the figure belongs to
    this block and not to whatever the process did before.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_bytes: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.startswith("cuda"):
            self.peak_bytes = int(torch.cuda.max_memory_allocated())
        else:
            self.peak_bytes = _rss_high_water_mark()


def _rss_high_water_mark() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
