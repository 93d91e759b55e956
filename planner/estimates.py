"""The pre-flight estimate for a request or a form (planner.preflight's arithmetic over the rows), and its
calibration per hardware profile after a run: the two factors (one for the roofline part of the time, one
for the per-layer overhead) fitted on the run's measurements, stored as a HardwareCalibration and used by
every later estimate on that hardware. No torch: the web calls it."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.conf import settings

from planner import preflight
from planner.models import Candidate, HardwareCalibration, HardwareProfile, PocRequest
from plugins import registry

#: Tokens per word of English text for a WordPiece/BPE tokenizer (a typical ratio; the estimate only).
TOKENS_PER_WORD = 1.3


def typical_tokens(texts: Sequence[str], *, cap: int = 128) -> int:
    """The data's typical length in tokens: the median word count × TOKENS_PER_WORD, at most ``cap`` (the
    measurement truncates there) and at least 8."""
    words = [len(t.split()) for t in texts if t.strip()]
    if not words:
        return min(cap, 64)
    return max(8, min(cap, round(statistics.median(words) * TOKENS_PER_WORD) + 2))


def peaks_for(hardware: HardwareProfile) -> preflight.Peaks | None:
    """The profile's published peaks with its latest fitted factors; None when the peaks are not set."""
    if not hardware.peak_fp32_tflops or not hardware.memory_bandwidth_gbps:
        return None
    latest = hardware.calibrations.order_by("-fitted_at", "-pk").first()
    return preflight.Peaks(
        device=hardware.device_kind,
        fp32_tflops=hardware.peak_fp32_tflops,
        bf16_tflops=hardware.peak_bf16_tflops or hardware.peak_fp32_tflops,
        int8_tops=hardware.peak_int8_tops or hardware.peak_fp32_tflops,
        memory_gbps=hardware.memory_bandwidth_gbps,
        efficiency=latest.efficiency if latest else 1.0,
        overhead=latest.overhead if latest else 1.0,
    )


def model_config(model_dir: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def demo_tokens(task: str) -> int:
    from workers.datasets import DataError, load_demo_examples

    try:
        return typical_tokens([e.text for e in load_demo_examples()])
    except DataError:
        return 64
    except Exception:  # the demo package missing or damaged: the estimate still shows, at a typical length
        return 64 if task != preflight.CAUSAL_LM else settings.MEASURE_MAX_PROMPT_TOKENS


def traffic_for(poc_request: PocRequest) -> preflight.Traffic:
    return preflight.Traffic(
        requests_per_day=float(poc_request.requests_per_day),
        peak_factor=float(poc_request.peak_factor),
        utilisation=float(poc_request.target_utilisation),
        price_per_hour=float(poc_request.hardware.price_per_hour),
        horizon_months=poc_request.horizon_months,
        one_time=float(poc_request.engineering_hours * poc_request.engineering_rate),
        p95_target_ms=float(poc_request.p95_target_ms),
    )


def ranked(
    *, config: dict[str, Any], task: str, peaks: preflight.Peaks, traffic: preflight.Traffic, tokens: int
) -> list[preflight.RankedEstimate]:
    shape = preflight.ModelShape.from_config(config, task=task)
    families = preflight.family_pipelines(shape, device=peaks.device, available=list(registry.techniques()))
    return preflight.rank(
        shape,
        families,
        peaks,
        traffic,
        tokens=tokens,
        batch_sizes=settings.MEASURE_BATCH_SIZES,
        new_tokens=settings.MEASURE_NEW_TOKENS,
    )


def as_json(
    rows: Sequence[preflight.RankedEstimate], *, peaks: preflight.Peaks, tokens: int
) -> dict[str, Any]:
    """The estimate as the form's and the request page's script draw it."""
    baseline = next(r for r in rows if not r.pipeline)
    return {
        "tokens": tokens,
        "efficiency": round(peaks.efficiency, 4),
        "overhead": round(peaks.overhead, 4),
        "calibrated": peaks.calibrated,
        "parameters": baseline.estimate.parameters,
        # The baseline's weights stored in each dtype.
        "weight_bytes": {k: int(baseline.estimate.parameters * v) for k, v in preflight.DTYPE_BYTES.items()},
        "flops": baseline.estimate.flops,
        "rows": [
            {
                "label": r.estimate.label,
                "latency_ms": round(r.estimate.latency_ms, 3),
                "bound": r.estimate.bound,
                "tokens_per_s": round(r.estimate.tokens_per_s, 1) if r.estimate.tokens_per_s else None,
                "weight_bytes": r.estimate.weight_bytes,
                "total_cost": round(r.cost, 2) if r.cost is not None else None,
            }
            for r in rows
        ],
    }


def request_estimate(
    poc_request: PocRequest, model_dir: Path, texts: Sequence[str] | None = None
) -> dict[str, Any] | None:
    """The estimate for a filed request (None when its hardware has no peaks or its config is unreadable)."""
    peaks = peaks_for(poc_request.hardware)
    config = model_config(model_dir)
    if peaks is None or config is None:
        return None
    tokens = typical_tokens(texts) if texts else demo_tokens(poc_request.task)
    rows = ranked(
        config=config, task=poc_request.task, peaks=peaks, traffic=traffic_for(poc_request), tokens=tokens
    )
    return as_json(rows, peaks=peaks, tokens=tokens)


def measured_ms(candidate: Candidate) -> float | None:
    """The batch-1 median a measured candidate's estimate is compared with (text generation: of the whole
    generation)."""
    point = candidate.latency_at(1) if candidate.status == Candidate.Status.MEASURED else None
    value = point.get("p50_ms") if point else None
    return float(value) if value else None


def candidate_estimate(
    candidate: Candidate, *, config: dict[str, Any], peaks: preflight.Peaks, tokens: int
) -> preflight.Estimate:
    shape = preflight.ModelShape.from_config(config, task=candidate.request.task)
    variant = preflight.variant_for(shape, candidate.pipeline)
    return preflight.estimate(variant, peaks, tokens=tokens, new_tokens=settings.MEASURE_NEW_TOKENS)


def hardware_calibrate(
    *, poc_request: PocRequest, model_dir: Path, tokens: int
) -> HardwareCalibration | None:
    """Fit the hardware's two factors on this run's measured candidates (planner.preflight.fit_calibration,
    the estimate's parts taken at factors 1) and store them with the mean error of the previous calibration
    and of this one on these candidates; None when nothing could be compared."""
    peaks = peaks_for(poc_request.hardware)
    config = model_config(model_dir)
    if peaks is None or config is None:
        return None
    raw = dataclasses.replace(peaks, efficiency=1.0, overhead=1.0)
    samples = []
    for candidate in poc_request.candidates.all():
        measured = measured_ms(candidate)
        if measured is not None:
            est = candidate_estimate(candidate, config=config, peaks=raw, tokens=tokens)
            samples.append((est.roofline_ms, est.overhead_ms, measured))
    if not samples:
        return None
    efficiency, overhead = preflight.fit_calibration(samples)

    def error(a: float, b: float) -> float:
        return statistics.fmean(abs(preflight.relative_error(a * r + b * o, m)) for r, o, m in samples)

    calibration = HardwareCalibration(
        hardware=poc_request.hardware,
        request=poc_request,
        efficiency=efficiency,
        overhead=overhead,
        samples=len(samples),
        error_before=error(peaks.efficiency, peaks.overhead),
        error_after=error(efficiency, overhead),
    )
    calibration.full_clean()
    calibration.save()
    return calibration
