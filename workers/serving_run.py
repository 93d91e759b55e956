"""The serving scenario of a measured candidate, in the worker: the model behind the dynamic batcher with
Poisson arrivals in real time (workers/serving.py), the goodput search over the rate and the batcher
settings (workers/goodput.py), started from the rates the timed batch times predict on a virtual clock,
which also answer where a real trial would be too slow to decide."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from workers.datasets import CAUSAL_LM
from workers.goodput import lognormal_service, search_goodput, simulated_trial
from workers.record import Goodput
from workers.serving import STATIC, RealClock, model_executor, run_trial

if TYPE_CHECKING:
    from workers.runner import PocSpec

Report = Any  # (fraction, message) -> None; may raise the runner's PocStopped, which is let through


def serve_goodput(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    latency: Sequence[Any],
    *,
    spec: PocSpec,
    config: Any,
    step_report: Report,
) -> tuple[Goodput | None, dict[str, float]]:
    """The serving scenario after the timing (workers/goodput.py): the candidate behind a dynamic batcher,
    Poisson arrivals in real time, the highest rate whose attainment holds over the batcher settings
    (max batch: each timed batch size; max wait: MEASURE_GOODPUT_MAX_WAITS_MS), reporting progress from 0.9
    to 1 (the report may raise ``PocStopped``: it is let through). None when not asked for."""
    policy = config.goodput
    if policy is None or spec.targets is None:
        return None, {}
    started = time.perf_counter()
    generative, targets = spec.task == CAUSAL_LM, spec.targets
    tokens = min(targets.tokens, policy.max_tokens) if generative else 1
    bounds = {p.batch_size: _static_bound(p, tokens) for p in latency}
    service_s, step_s = _service_times(latency, seed=spec.seed)
    simulated = simulated_trial(
        service_s, policy, targets=targets, step_s=step_s, tokens=tokens, seed=spec.seed
    )
    execute = model_executor(
        model,
        tokenizer,
        texts,
        device=spec.device,
        config=config,
        generative=generative,
        max_batch=max(bounds),
        warm_sizes=sorted(bounds),
    )
    clock, shown = RealClock(), {"setting": (0, 1)}

    def on_setting(position: int, count: int, setting: Any) -> None:
        shown["setting"] = (position, count)

    def trial(rate: float, setting: Any, decided: Any) -> Any:
        position, count = shown["setting"]
        step_report(
            0.9 + 0.1 * position / count,
            f"serving {rate:.1f} req/s in batches of up to {setting.max_batch}, "
            f"waiting at most {setting.max_wait_ms:g} ms",
        )
        return run_trial(
            rate,
            setting,
            execute,
            clock=clock,
            targets=targets,
            limits=policy.limits,
            seed=spec.seed,  # the same arrival pattern, scaled, at every rate
            decided=decided,
            tokens=tokens,
        )

    goodput = search_goodput(
        trial,
        bounds,
        policy,
        target_ms=targets.first_ms,
        itl_target_ms=targets.itl_ms if generative else None,
        tokens=targets.tokens if generative else None,
        capped_tokens=tokens if generative and tokens < targets.tokens else None,
        batching=STATIC,
        on_setting=on_setting,
        simulated=simulated,
    )
    return goodput, {"goodput_seconds": round(time.perf_counter() - started, 3)}


def _service_times(latency: Sequence[Any], *, seed: int) -> tuple[Any, Any]:
    """The timed batch times as a simulated batch's service time for any batch size
    (workers.goodput.lognormal_service: each size's measured median and p95), in seconds: a classifier's
    forward pass, or a generation's first token and each later one (None for a classifier)."""

    def seconds(name: str) -> dict[int, float]:
        return {p.batch_size: getattr(p, name) / 1000 for p in latency if getattr(p, name) is not None}

    if all(p.ttft_p50_ms is not None and p.itl_p50_ms is not None for p in latency):
        first = lognormal_service(seconds("ttft_p50_ms"), seconds("ttft_p95_ms"), seed)
        return first, lognormal_service(seconds("itl_p50_ms"), seconds("itl_p95_ms"), seed + 1)
    return lognormal_service(seconds("p50_ms"), seconds("p95_ms"), seed, mean_s=seconds("mean_ms")), None


def _static_bound(point: Any, tokens: int) -> float:
    """Requests/s with full batches back to back and no waiting: ``b ÷ median`` (text generation: the
    median time composed for a reply of ``tokens`` tokens), the optimistic upper bound on goodput."""
    if point.ttft_p50_ms is not None and point.itl_p50_ms is not None:
        return float(point.batch_size * 1000 / (point.ttft_p50_ms + (tokens - 1) * point.itl_p50_ms))
    return float(point.throughput_rps)
