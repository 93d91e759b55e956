"""How a model is measured: task accuracy, latency over a batch sweep, memory, size, environment.

Every candidate of a PoC goes through the same functions in the same process on the same device, so
the figures compare. torch is imported here, so only worker processes import this module.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from plugins.base import Example


@dataclass(frozen=True)
class MeasureConfig:
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    # Timed iterations per batch size: at least min_iterations and min_seconds, unless that would take
    # longer than max_seconds; then at least floor_iterations, so a slow large batch cannot stall a PoC.
    min_iterations: int = 100
    min_seconds: float = 2.0
    max_seconds: float = 60.0
    floor_iterations: int = 20
    warmup: int = 5
    threads: int = 0  # 0: every core the process may use
    max_length: int = 128
    eval_batch_size: int = 32
    # Causal LMs: each timed iteration generates new_tokens tokens (greedy, KV cache on, end-of-text ignored
    # so every request is the same length) after a prompt of the eval text's first max_prompt_tokens tokens.
    # A generation takes seconds where a classifier's forward pass takes milliseconds, so its own floor.
    new_tokens: int = 32
    max_prompt_tokens: int = 64
    generation_min_iterations: int = 10
    # Perplexity reads the first lm_eval_texts held-out texts (the split's fixed order; 0 = all of them), in
    # batches of lm_eval_batch_size: a vocabulary of 50k makes every position's logits 200 KB.
    lm_eval_texts: int = 256
    lm_eval_batch_size: int = 8

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


def _quantiles_ms(prefix: str, seconds: Sequence[float]) -> dict[str, float]:
    """``{prefix}_p50_ms``, ``_p95_ms`` and ``_p99_ms`` of timings given in seconds."""
    ordered = sorted(t * 1000 for t in seconds)
    return {f"{prefix}_p{q}_ms": _percentile(ordered, q / 100) for q in (50, 95, 99)}


def _batch_timings(batch_size: int, seconds: Sequence[float]) -> dict[str, Any]:
    """The latency point of one batch size from its timed runs (seconds): p50/p95/p99 and mean in ms, and
    the throughput at the median."""
    ordered = sorted(t * 1000 for t in seconds)
    p50 = _percentile(ordered, 0.50)
    return {
        "batch_size": batch_size,
        "p50_ms": p50,
        "p95_ms": _percentile(ordered, 0.95),
        "p99_ms": _percentile(ordered, 0.99),
        "mean_ms": sum(ordered) / len(ordered),
        "throughput_rps": batch_size / (p50 / 1000),
        "iterations": len(ordered),
    }


def _mean_tokens(batches: Sequence[dict[str, torch.Tensor]]) -> float:
    """Real (unpadded) tokens per text over ``batches``."""
    return sum(int(b["attention_mask"].sum()) for b in batches) / sum(
        len(b["attention_mask"]) for b in batches
    )


def latency_sweep(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    device: str,
    config: MeasureConfig,
    on_batch_size: Callable[[int, int], None] | None = None,
) -> list[dict[str, float]]:
    """p50/p95/p99 and throughput per batch size, on batches of real eval texts at their real lengths.

    Tokenization happens before the clock starts: the figures are the model's forward pass, which is
    what compression changes.
    """
    if not texts:
        raise ValueError("latency needs at least one eval text")
    points = []
    with torch.inference_mode():
        for position, batch_size in enumerate(config.batch_sizes):
            if on_batch_size is not None:  # progress: which batch size is being timed
                on_batch_size(position, batch_size)
            batches = _timing_batches(
                lambda chunk: _encode(tokenizer, chunk, config.max_length, device),
                texts,
                batch_size,
                count=32,
            )
            for i in range(config.warmup):
                model(**batches[i % len(batches)])
            _sync(device)
            timings: list[float] = []
            started = time.perf_counter()
            while True:
                batch = batches[len(timings) % len(batches)]
                t0 = time.perf_counter()
                model(**batch)
                _sync(device)
                timings.append(time.perf_counter() - t0)
                elapsed = time.perf_counter() - started
                enough = len(timings) >= config.min_iterations and elapsed >= config.min_seconds
                too_long = elapsed >= config.max_seconds and len(timings) >= config.floor_iterations
                if enough or too_long:
                    break
            points.append({**_batch_timings(batch_size, timings), "mean_tokens": _mean_tokens(batches)})
    return points


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


def generation_sweep(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    device: str,
    config: MeasureConfig,
    on_batch_size: Callable[[int, int], None] | None = None,
) -> list[dict[str, float]]:
    """Generation latency per batch size: time to first token (TTFT), inter-token latency (ITL), the whole
    request, and output tokens/s, with the KV cache on.

    Prompts are the eval texts' first ``max_prompt_tokens`` tokens (shorter texts keep their real length),
    left-padded into batches; each timed iteration generates ``new_tokens`` tokens greedily. TTFT is the
    prefill pass plus picking the first token; each ITL sample is one incremental decoding step.
    Tokenization happens before the clock starts.
    """
    from plugins.training import encode_causal_lm

    if not texts:
        raise ValueError("latency needs at least one eval text")

    def prompts(chunk: list[str]) -> dict[str, torch.Tensor]:
        return encode_causal_lm(
            tokenizer, chunk, max_length=config.max_prompt_tokens, device=device, padding_side="left"
        )

    points = []
    with torch.inference_mode():
        for position, batch_size in enumerate(config.batch_sizes):
            if on_batch_size is not None:  # progress: which batch size is being timed
                on_batch_size(position, batch_size)
            batches = _timing_batches(prompts, texts, batch_size, count=8)
            for i in range(min(config.warmup, 2)):
                _generate(model, batches[i % len(batches)], config.new_tokens, device)
            _sync(device)
            ttft: list[float] = []
            itl: list[float] = []
            e2e: list[float] = []
            started = time.perf_counter()
            while True:
                batch = batches[len(e2e) % len(batches)]
                marks: list[float] = []
                t0 = time.perf_counter()
                _generate(
                    model,
                    batch,
                    config.new_tokens,
                    device,
                    on_token=lambda _i, _marks=marks: _marks.append(time.perf_counter()),
                )
                ttft.append(marks[0] - t0)
                itl.extend(b - a for a, b in zip(marks, marks[1:], strict=False))
                e2e.append(marks[-1] - t0)
                elapsed = time.perf_counter() - started
                floor = min(config.floor_iterations, config.generation_min_iterations)
                enough = len(e2e) >= config.generation_min_iterations and elapsed >= config.min_seconds
                too_long = elapsed >= config.max_seconds and len(e2e) >= floor
                if enough or too_long:
                    break
            request = _batch_timings(batch_size, e2e)
            points.append(
                {
                    **request,
                    "prompt_tokens": _mean_tokens(batches),
                    "new_tokens": config.new_tokens,
                    **_quantiles_ms("ttft", ttft),
                    **_quantiles_ms("itl", itl or [0.0]),  # one new token: no decode step to time
                    "tokens_per_s": batch_size * config.new_tokens / (request["p50_ms"] / 1000),
                }
            )
    return points


def count_parameters(model: Any) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting the weights of quantized layers too; tied weights once."""
    from plugins.quantize import dense_tensors

    total = nonzero = 0
    seen: set[int] = set()
    for module in model.modules():
        for key, tensor in dense_tensors(module):
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


def device_description(device: str) -> dict[str, Any]:
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        return {
            "device": device,
            "device_name": props.name,
            "gpu_memory_bytes": int(props.total_memory),
            "cuda": torch.version.cuda,
            "driver": _nvidia_driver(),
        }
    return {"device": "cpu", "device_name": _cpu_model(), "cpu_count": os.cpu_count()}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as f:
            return f.readline().strip()
    except OSError:
        return None


def software_versions() -> dict[str, str]:
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "quantized_engine": torch.backends.quantized.engine,
    }
