"""Requests with measured candidates, made through the functions the worker uses (no worker, no torch)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from planner import services
from planner.models import PocRequest
from workers.execution import candidate_record_result, poc_request_finish
from workers.record import LatencyPoint, Measurement
from workers.runner import CandidateResult

INT8 = [{"technique": "quantize.dynamic-int8"}]


def join_team(user, team: str, *roles: str):
    """Make the user a member of the team (created if needed) with these roles (the groups of migration
    0005: requester, manager, engineer); returns the user, reloaded so that permissions are not cached."""
    from django.contrib.auth.models import Group

    from planner.models import Team

    Team.objects.get_or_create(name=team)[0].members.add(user)
    groups = list(Group.objects.filter(name__in=roles))
    assert len(groups) == len(roles), f"unknown roles in {roles}: the groups come from migration 0005"
    user.groups.add(*groups)
    return type(user).objects.get(pk=user.pk)


def sweep(p95_batch1_ms: float, *, batch_sizes=(1, 8)) -> list[dict[str, Any]]:
    """A batch sweep whose batch-b time grows like sqrt(b): batching pays, and p95 = 1.25 × p50."""
    points = []
    for b in batch_sizes:
        p95 = p95_batch1_ms * b**0.5
        points.append(
            {
                "batch_size": b,
                "p50_ms": p95 * 0.8,
                "p95_ms": p95,
                "p99_ms": p95 * 1.1,
                "mean_ms": p95 * 0.85,
                "throughput_rps": b * 1000 / (p95 * 0.8),
                "iterations": 100,
                "mean_tokens": 20.0,
            }
        )
    return points


def points(latency: list[dict[str, Any]]) -> tuple[LatencyPoint, ...]:
    """A sweep as the stored dicts (``sweep``, ``gen_sweep``) turned into the runner's latency points."""
    return tuple(LatencyPoint.from_json(p) for p in latency)


def record(candidate, *, accuracy: float, latency: list[dict], size: int = 4_000_000, device_hours=0.01):
    candidate_record_result(
        candidate=candidate,
        result=CandidateResult(
            str(candidate.pk),
            ok=True,
            measurement=Measurement(
                accuracy=accuracy,
                macro_f1=accuracy - 0.01,
                latency=points(latency),
                size_bytes=size,
                parameters=1000,
                nonzero_parameters=900,
                peak_memory_bytes=10**8,
                produce_seconds=36.0,
                device_hours=device_hours,
            ),
            environment={"device": "cpu", "device_name": "test CPU", "threads": 1, "torch": "2.x"},
            notes={},
        ),
    )


def measured_request(
    *,
    owner,
    hardware,
    title: str = "Tickets",
    models: list[tuple[float, list[dict]]],
    p95_target_ms: Decimal = Decimal(30),
    accuracy_floor_pct: Decimal = Decimal(97),
    requests_per_day: int = 8_640_000,
    finish: bool = True,
    **economics: Any,
) -> PocRequest:
    """A request whose models ((accuracy, latency sweep), the baseline first) are measured; finished and
    summarised for the portfolio unless finish=False."""
    poc_request = services.poc_request_create(
        owner=owner,
        title=title,
        model_ref="demo",
        dataset_ref="demo",
        p95_target_ms=p95_target_ms,
        accuracy_floor_pct=accuracy_floor_pct,
        requests_per_day=requests_per_day,
        hardware=hardware,
        pipelines=[INT8] * (len(models) - 1),
        **economics,
    )
    for candidate, (accuracy, latency) in zip(poc_request.candidates.all(), models, strict=True):
        record(candidate, accuracy=accuracy, latency=latency)
    if finish:
        poc_request_finish(request_id=poc_request.pk)
        services.poc_request_summary_refresh(request_id=poc_request.pk)
    poc_request.refresh_from_db()
    return poc_request


# --- text generation --------------------------------------------------------------------------------

WEIGHT_ONLY = [{"technique": "quantize.weight-only"}]


def gen_sweep(points, *, new_tokens: int = 32) -> list[dict[str, Any]]:
    """A generation sweep as the worker stores it, from (batch, TTFT p50, TTFT p95, ITL p50, ITL p95) in ms;
    the end-to-end times are those of generating ``new_tokens`` tokens."""
    out = []
    for batch, ttft_p50, ttft_p95, itl_p50, itl_p95 in points:
        e2e = ttft_p50 + (new_tokens - 1) * itl_p50
        out.append(
            {
                "batch_size": batch,
                "p50_ms": e2e,
                "p95_ms": e2e * 1.2,
                "p99_ms": e2e * 1.3,
                "mean_ms": e2e * 1.05,
                "throughput_rps": batch * 1000 / e2e,
                "iterations": 10,
                "prompt_tokens": 24.0,
                "new_tokens": new_tokens,
                "ttft_p50_ms": ttft_p50,
                "ttft_p95_ms": ttft_p95,
                "ttft_p99_ms": ttft_p95 * 1.1,
                "itl_p50_ms": itl_p50,
                "itl_p95_ms": itl_p95,
                "itl_p99_ms": itl_p95 * 1.1,
                "tokens_per_s": batch * new_tokens * 1000 / e2e,
            }
        )
    return out


def record_generation(
    candidate,
    *,
    perplexity: float,
    latency: list[dict],
    exact_match: float | None = None,
    size: int = 270_000_000,
    device_hours=0.01,
):
    """A causal-LM result with the figures the worker reports (no accuracy or macro-F1)."""
    candidate_record_result(
        candidate=candidate,
        result=CandidateResult(
            str(candidate.pk),
            ok=True,
            measurement=Measurement(
                perplexity=perplexity,
                exact_match=exact_match,
                latency=points(latency),
                size_bytes=size,
                parameters=134_515_008,
                nonzero_parameters=134_515_008,
                peak_memory_bytes=6 * 10**8,
                produce_seconds=36.0,
                device_hours=device_hours,
            ),
            environment={
                "device": "cpu",
                "device_name": "test CPU",
                "threads": 1,
                "torch": "2.x",
                "perplexity_tokens": 4096,
            },
            notes={},
        ),
    )


def measured_generation_request(
    *,
    owner,
    hardware,
    title: str = "Support replies",
    models: list[tuple[float, list[dict]]],
    exact_match: float | None = None,
    p95_target_ms: Decimal = Decimal(200),
    per_token_target_ms: Decimal = Decimal(50),
    output_tokens_per_request: int = 100,
    perplexity_increase_pct: Decimal = Decimal(10),
    requests_per_day: int = 864_000,
    finish: bool = True,
    **economics: Any,
) -> PocRequest:
    """A text-generation request whose models ((perplexity, generation sweep), the baseline first) are
    measured; finished and summarised for the portfolio unless finish=False."""
    poc_request = services.poc_request_create(
        owner=owner,
        title=title,
        task=PocRequest.Task.CAUSAL_LM,
        model_ref="demo",
        dataset_ref="demo",
        p95_target_ms=p95_target_ms,
        per_token_target_ms=per_token_target_ms,
        output_tokens_per_request=output_tokens_per_request,
        perplexity_increase_pct=perplexity_increase_pct,
        requests_per_day=requests_per_day,
        hardware=hardware,
        pipelines=[WEIGHT_ONLY] * (len(models) - 1),
        **economics,
    )
    for candidate, (perplexity, latency) in zip(poc_request.candidates.all(), models, strict=True):
        record_generation(
            candidate,
            perplexity=perplexity,
            latency=latency,
            exact_match=None if candidate.is_baseline else exact_match,
        )
    if finish:
        poc_request_finish(request_id=poc_request.pk)
        services.poc_request_summary_refresh(request_id=poc_request.pk)
    poc_request.refresh_from_db()
    return poc_request
