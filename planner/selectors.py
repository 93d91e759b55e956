"""Reads. Views call these; each returns what a page needs in a bounded number of queries."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet, Sum
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop, ngettext

from planner import roi
from planner.models import Candidate, PocRequest, PocRequestSummary, Team
from planner.roi import ms_text, number_text, percent_text, perplexity_text
from planner.templatetags.planner_format import money, quantize_money, quantize_unit_cost


def _member_team_ids(user: Any) -> QuerySet:
    """The ids of the user's teams, as a subquery (no query of its own)."""
    return Team.members.through.objects.filter(user_id=user.pk).values("team_id")


def poc_request_list_for_user(*, user: Any) -> QuerySet[PocRequest]:
    """The requests of the user's teams; every request for staff."""
    qs = PocRequest.objects.select_related("hardware", "owner", "team", "decided_by")
    return qs if user.is_staff else qs.filter(team_id__in=_member_team_ids(user))


def team_list_for_filing(*, user: Any) -> QuerySet[Team]:
    """The teams the user may file a request for: their own; every team for staff."""
    return Team.objects.all() if user.is_staff else Team.objects.filter(pk__in=_member_team_ids(user))


def poc_request_get_for_user(*, user: Any, pk: int) -> PocRequest:
    """The request with its candidates; 404 (DoesNotExist) when the user may not see it."""
    return poc_request_list_for_user(user=user).prefetch_related("candidates").get(pk=pk)


def economics_for(poc_request: PocRequest) -> roi.Economics:
    hardware = poc_request.hardware
    grid = settings.GRID_KG_CO2_PER_KWH
    generation = {}
    if poc_request.is_generative:
        generation = {
            "task": roi.CAUSAL_LM,
            "per_token_target_ms": poc_request.per_token_target_ms,
            "output_tokens_per_request": poc_request.output_tokens_per_request,
            "perplexity_increase_pct": poc_request.perplexity_increase_pct,
        }
    return roi.Economics(
        requests_per_day=Decimal(poc_request.requests_per_day),
        price_per_hour=hardware.price_per_hour,
        p95_target_ms=poc_request.p95_target_ms,
        accuracy_floor_pct_of_baseline=poc_request.accuracy_floor_pct,
        peak_factor=poc_request.peak_factor,
        target_utilisation=poc_request.target_utilisation,
        horizon_months=poc_request.horizon_months,
        engineering_hours=poc_request.engineering_hours,
        engineering_rate=poc_request.engineering_rate,
        power_watts=Decimal(hardware.power_watts) if hardware.power_watts else None,
        grid_kg_co2_per_kwh=grid if grid is not None and hardware.power_watts else None,
        **generation,
    )


def measurement_for(candidate: Candidate) -> roi.ModelMeasurement:
    return roi.ModelMeasurement(
        key=str(candidate.pk),
        name=candidate.label,
        is_baseline=candidate.is_baseline,
        accuracy=candidate.accuracy or 0.0,
        latency=[
            roi.LatencyPoint(
                p["batch_size"],
                p["p50_ms"],
                p["p95_ms"],
                p["p99_ms"],
                # Text generation only: time to first token and inter-token latency.
                ttft_p50_ms=p.get("ttft_p50_ms"),
                ttft_p95_ms=p.get("ttft_p95_ms"),
                itl_p50_ms=p.get("itl_p50_ms"),
                itl_p95_ms=p.get("itl_p95_ms"),
            )
            for p in candidate.latency
        ],
        device_hours=candidate.device_hours or 0.0,
        perplexity=candidate.perplexity,
        exact_match=candidate.exact_match,
    )


def poc_request_roi(
    *, poc_request: PocRequest, economics: roi.Economics | None = None
) -> roi.RoiReport | None:
    """The ROI report over the measured candidates, or None until the baseline is measured.

    ``economics`` replaces the request's own (a what-if); the measurements are the same either way."""
    measured = [c for c in poc_request.candidates.all() if c.status == Candidate.Status.MEASURED]
    if not any(c.is_baseline for c in measured):
        return None
    return roi.evaluate([measurement_for(c) for c in measured], economics or economics_for(poc_request))


NOT_FASTER_BELOW = 1.05  # a speedup under 5% is within run-to-run noise: not faster


def candidate_comparisons(*, poc_request: PocRequest) -> dict[int, dict[str, Any]]:
    """Per measured candidate: p95 speedup at batch 1 and size ratio against the baseline, and a verdict
    when it is not faster ("smaller but not faster", "neither smaller nor faster") with the reasons the
    techniques give (unstructured sparsity, weight-only formats, …). For text generation the speedup is of
    the whole generation's p95, and the perplexity change (0.05 = 5% higher) comes along."""
    candidates = list(poc_request.candidates.all())
    baseline = next((c for c in candidates if c.is_baseline and c.status == Candidate.Status.MEASURED), None)
    out: dict[int, dict[str, Any]] = {}
    if baseline is None or not baseline.latency_at(1):
        return out
    base_p95 = baseline.latency_at(1)["p95_ms"]
    for c in candidates:
        if c.status != Candidate.Status.MEASURED or c.is_baseline or not c.latency_at(1):
            continue
        speedup = base_p95 / c.latency_at(1)["p95_ms"]
        size_ratio = (baseline.size_bytes or 0) / c.size_bytes if c.size_bytes else None
        verdict = ""
        # Marked, not translated: the verdict is a stable key in the data; the template translates it.
        if speedup < NOT_FASTER_BELOW:
            verdict = (
                gettext_noop("smaller but not faster")
                if size_ratio and size_ratio >= NOT_FASTER_BELOW
                else gettext_noop("not faster")
            )
            if size_ratio is not None and size_ratio < NOT_FASTER_BELOW:
                verdict = gettext_noop("neither smaller nor faster")
        out[c.pk] = {
            "speedup": speedup,
            "size_ratio": size_ratio,
            "accuracy_kept": c.accuracy / baseline.accuracy
            if baseline.accuracy and c.accuracy is not None
            else None,
            "perplexity_change": c.perplexity / baseline.perplexity - 1
            if baseline.perplexity and c.perplexity is not None
            else None,
            "verdict": verdict,
            "reasons": list(c.notes.get("caveats", [])) if verdict else [],
        }
    return out


# ---------------------------------------------------------------------------------------------------------
# What-if economics

# The economics a manager may change on a dashboard. The measured figures (accuracy, latency) and the
# quality and p95 targets are not among them: changing those would be a different PoC, not a different
# scenario. Text generation adds the length of a reply and the per-token target, which describe how the
# product uses the model (a chat streams tokens to a reader; a batch job only needs the whole reply).
WHATIF_FIELDS = (
    "requests_per_day",
    "peak_factor",
    "target_utilisation",
    "price_per_hour",
    "horizon_months",
    "engineering_hours",
    "engineering_rate",
    "grid_kg_co2_per_kwh",
    "per_token_target_ms",
    "output_tokens_per_request",
)
GENERATION_WHATIF_FIELDS = ("per_token_target_ms", "output_tokens_per_request")


def economics_with_overrides(*, poc_request: PocRequest, overrides: Mapping[str, Any]) -> roi.Economics:
    """The request's economics with some of WHATIF_FIELDS replaced; ValueError when the result is invalid
    (roi.Economics checks every figure again)."""
    unknown = sorted(set(overrides) - set(WHATIF_FIELDS))
    if unknown:
        raise ValueError(f"not a what-if figure: {', '.join(unknown)}")
    return dataclasses.replace(economics_for(poc_request), **overrides)


# ---------------------------------------------------------------------------------------------------------
# Sentences. roi.py explains its figures in English; the pages say the same things in the reader's
# language, from the same numbers (a test checks that the English matches roi.py word for word).


def _gap(value: Decimal) -> str:
    shown = f"{value:.1f}"
    # A real but tiny gap must not read as "0.0 points below".
    return _("less than 0.1") if shown == "0.0" else shown


def describe_blockers(*, row: roi.ModelEconomics, report: roi.RoiReport) -> tuple[str, ...]:
    """Why ``row`` misses the targets, one sentence per target (empty when it is feasible)."""
    if report.economics.is_generative:
        return _describe_generation_blockers(row=row, report=report)
    floor, target = report.accuracy_floor, report.economics.p95_target_ms
    out = []
    if row.accuracy < floor:
        out.append(
            _("accuracy %(accuracy)s is %(gap)s points below the floor of %(floor)s")
            % {
                "accuracy": percent_text(row.accuracy),
                "gap": _gap((floor - row.accuracy) * 100),
                "floor": percent_text(floor),
            }
        )
    if row.p95_batch1_ms is None:
        out.append(_("p95 at batch 1 was not measured"))
    elif row.p95_batch1_ms > target:
        out.append(
            _("p95 at batch 1 is %(p95)s ms, %(gap)s ms over the %(target)s target")
            % {
                "p95": f"{row.p95_batch1_ms:.1f}",
                "gap": _gap(row.p95_batch1_ms - target),
                "target": ms_text(target),
            }
        )
    if row.capacity_rps == 0:
        out.append(_("no batch size meets the %(target)s p95 target") % {"target": ms_text(target)})
    return tuple(out)


def _describe_generation_blockers(*, row: roi.ModelEconomics, report: roi.RoiReport) -> tuple[str, ...]:
    e, ceiling, base = report.economics, report.perplexity_ceiling, report.baseline.perplexity
    ttft_target, itl_target = e.p95_target_ms, e.per_token_target_ms
    out = []
    if row.perplexity is None:
        out.append(_("perplexity was not measured"))
    elif ceiling is None:
        out.append(_("the baseline's perplexity was not measured"))
    elif row.perplexity > ceiling:
        out.append(
            _(
                "perplexity %(perplexity)s is %(rise)s%% above the baseline's %(baseline)s (limit +%(limit)s%%)"
            )
            % {
                "perplexity": perplexity_text(row.perplexity),
                "rise": _gap((row.perplexity / base - 1) * 100),
                "baseline": perplexity_text(base),
                "limit": number_text(e.perplexity_increase_pct),
            }
        )
    if row.ttft_p95_batch1_ms is None:
        out.append(_("TTFT at batch 1 was not measured"))
    elif row.ttft_p95_batch1_ms > ttft_target:
        out.append(
            _("TTFT p95 at batch 1 is %(ttft)s ms, %(gap)s ms over the %(target)s target")
            % {
                "ttft": f"{row.ttft_p95_batch1_ms:.1f}",
                "gap": _gap(row.ttft_p95_batch1_ms - ttft_target),
                "target": ms_text(ttft_target),
            }
        )
    if row.itl_p95_batch1_ms is None:
        out.append(_("inter-token latency at batch 1 was not measured"))
    elif row.itl_p95_batch1_ms > itl_target:
        out.append(
            _("inter-token p95 at batch 1 is %(itl)s ms, %(gap)s ms over the %(target)s per-token target")
            % {
                "itl": f"{row.itl_p95_batch1_ms:.1f}",
                "gap": _gap(row.itl_p95_batch1_ms - itl_target),
                "target": ms_text(itl_target),
            }
        )
    if row.capacity_rps == 0:
        out.append(
            _("no batch size meets the %(ttft)s TTFT and %(per_token)s per-token targets")
            % {"ttft": ms_text(ttft_target), "per_token": ms_text(itl_target)}
        )
    return tuple(out)


def blocking_targets(*, report: roi.RoiReport) -> dict[str, dict[str, str | None]]:
    """When no model meets the targets: which target blocks, and how close the best model came.

    A model that met both would be feasible, so every model that keeps the accuracy floor misses the
    latency target (then "p95" says how fast the fastest of them is) and every model within the latency
    target misses the floor (then "accuracy" says how accurate the most accurate of them is). Plain JSON
    (Decimals as strings), so the portfolio can store it. Empty when some model is feasible."""
    if report.recommendation.key is not None:
        return {}
    if report.economics.is_generative:
        return _generation_blocking_targets(report=report)
    floor, target = report.accuracy_floor, report.economics.p95_target_ms
    accurate = [r for r in report.rows if r.accuracy >= floor]
    fast = [r for r in report.rows if r.p95_batch1_ms is not None and r.p95_batch1_ms <= target]
    out: dict[str, dict[str, str | None]] = {}
    if accurate or not fast:
        timed = [r for r in accurate or report.rows if r.p95_batch1_ms is not None]
        best = min(timed, key=lambda r: r.p95_batch1_ms) if timed else None
        out["p95"] = {
            "target_ms": str(target),
            "best_ms": str(best.p95_batch1_ms) if best else None,
            "candidate": best.name if best else None,
        }
    if fast or not accurate:
        best = max(fast or report.rows, key=lambda r: r.accuracy)
        out["accuracy"] = {"floor": str(floor), "best": str(best.accuracy), "candidate": best.name}
    return out


def _generation_blocking_targets(*, report: roi.RoiReport) -> dict[str, dict[str, str | None]]:
    """blocking_targets for text generation: "latency" (the model that keeps the perplexity limit and comes
    closest to both latency targets) and "perplexity" (the lowest perplexity within the latency targets)."""
    e, ceiling = report.economics, report.perplexity_ceiling
    ttft_target, itl_target = e.p95_target_ms, e.per_token_target_ms

    def timed(r: roi.ModelEconomics) -> bool:
        return r.ttft_p95_batch1_ms is not None and r.itl_p95_batch1_ms is not None

    good = [
        r for r in report.rows if r.perplexity is not None and ceiling is not None and r.perplexity <= ceiling
    ]
    fast = [
        r
        for r in report.rows
        if timed(r) and r.ttft_p95_batch1_ms <= ttft_target and r.itl_p95_batch1_ms <= itl_target
    ]
    out: dict[str, dict[str, str | None]] = {}
    if good or not fast:
        candidates = [r for r in good or report.rows if timed(r)]
        # Closest to meeting both: the smallest worse ratio of a latency to its target.
        best = (
            min(
                candidates,
                key=lambda r: max(r.ttft_p95_batch1_ms / ttft_target, r.itl_p95_batch1_ms / itl_target),
            )
            if candidates
            else None
        )
        out["latency"] = {
            "ttft_target_ms": str(ttft_target),
            "itl_target_ms": str(itl_target),
            "ttft_ms": str(best.ttft_p95_batch1_ms) if best else None,
            "itl_ms": str(best.itl_p95_batch1_ms) if best else None,
            "candidate": best.name if best else None,
        }
    if fast or not good:
        measured = [r for r in fast or report.rows if r.perplexity is not None]
        best = min(measured, key=lambda r: r.perplexity) if measured else None
        baseline = report.baseline.perplexity
        out["perplexity"] = {
            "ceiling": str(ceiling) if ceiling is not None else None,
            "baseline": str(baseline) if baseline is not None else None,
            "increase_pct": str(e.perplexity_increase_pct),
            "best": str(best.perplexity) if best else None,
            "candidate": best.name if best else None,
        }
    return out


def describe_blocking(blocking: Mapping[str, Mapping[str, str | None]]) -> list[str]:
    """blocking_targets() as sentences (the portfolio passes the stored JSON)."""
    lines = []
    p95 = blocking.get("p95")
    if p95:
        target = Decimal(p95["target_ms"])
        if p95["best_ms"] is None:
            lines.append(
                _("p95 latency target %(target)s: no candidate's p95 at batch 1 was measured.")
                % {"target": ms_text(target)}
            )
        else:
            best = Decimal(p95["best_ms"])
            lines.append(
                _(
                    "p95 latency target %(target)s: the fastest model that keeps the accuracy floor "
                    "(%(name)s) takes %(best)s ms at batch 1, %(gap)s ms over."
                )
                % {
                    "target": ms_text(target),
                    "name": p95["candidate"],
                    "best": f"{best:.1f}",
                    "gap": _gap(best - target),
                }
            )
    accuracy = blocking.get("accuracy")
    if accuracy:
        floor, best = Decimal(accuracy["floor"]), Decimal(accuracy["best"])
        lines.append(
            _(
                "Accuracy floor %(floor)s: the most accurate model within the latency target (%(name)s) "
                "reaches %(best)s, %(gap)s points below."
            )
            % {
                "floor": percent_text(floor),
                "name": accuracy["candidate"],
                "best": percent_text(best),
                "gap": _gap((floor - best) * 100),
            }
        )
    lines += _describe_generation_blocking(blocking)
    return lines


def _describe_generation_blocking(blocking: Mapping[str, Mapping[str, str | None]]) -> list[str]:
    lines = []
    latency = blocking.get("latency")
    if latency:
        targets = {
            "ttft_target": ms_text(Decimal(latency["ttft_target_ms"])),
            "itl_target": ms_text(Decimal(latency["itl_target_ms"])),
        }
        if latency["ttft_ms"] is None:
            lines.append(
                _(
                    "Latency targets %(ttft_target)s TTFT and %(itl_target)s per token: no candidate's "
                    "TTFT and inter-token latency at batch 1 were measured."
                )
                % targets
            )
        else:
            lines.append(
                _(
                    "Latency targets %(ttft_target)s TTFT and %(itl_target)s per token: the model that keeps "
                    "the perplexity limit and comes closest (%(name)s) takes %(ttft)s ms to the first token "
                    "and %(itl)s ms per token at batch 1 (p95)."
                )
                % {
                    **targets,
                    "name": latency["candidate"],
                    "ttft": f"{Decimal(latency['ttft_ms']):.1f}",
                    "itl": f"{Decimal(latency['itl_ms']):.1f}",
                }
            )
    perplexity = blocking.get("perplexity")
    if perplexity:
        if perplexity["ceiling"] is None:
            lines.append(_("Perplexity limit: the baseline's perplexity was not measured."))
        elif perplexity["best"] is None:
            lines.append(
                _("Perplexity limit %(ceiling)s: no candidate's perplexity was measured.")
                % {"ceiling": perplexity_text(Decimal(perplexity["ceiling"]))}
            )
        else:
            best, baseline = Decimal(perplexity["best"]), Decimal(perplexity["baseline"])
            lines.append(
                _(
                    "Perplexity limit %(ceiling)s (+%(limit)s%% over the baseline's %(baseline)s): the best "
                    "model within the latency targets (%(name)s) reaches %(best)s, %(rise)s%% above the "
                    "baseline."
                )
                % {
                    "ceiling": perplexity_text(Decimal(perplexity["ceiling"])),
                    "limit": number_text(Decimal(perplexity["increase_pct"])),
                    "baseline": perplexity_text(baseline),
                    "name": perplexity["candidate"],
                    "best": perplexity_text(best),
                    "rise": _gap((best / baseline - 1) * 100),
                }
            )
    return lines


def recommendation_text(*, report: roi.RoiReport, currency: str) -> str:
    """roi.py's recommendation, in the reader's language and with money shown in the request's currency."""
    rec, e = report.recommendation, report.economics
    if rec.key is None:
        return _("No model meets the targets.")
    best, base = report.row(rec.key), report.baseline
    figures = {
        "name": best.name,
        "floor": percent_text(report.accuracy_floor) if report.accuracy_floor is not None else "",
        "target": ms_text(e.p95_target_ms),
        "months": e.horizon_months,
        "total": money(best.total_cost_over_horizon, currency),
        "baseline_total": money(base.total_cost_over_horizon, currency),
    }
    if rec.keeps_baseline:
        return (
            ngettext(
                "Keep the current model: no compressed candidate that meets the targets costs less over "
                "%(months)s month (%(total)s for the current model).",
                "Keep the current model: no compressed candidate that meets the targets costs less over "
                "%(months)s months (%(total)s for the current model).",
                e.horizon_months,
            )
            % figures
        )
    if e.is_generative:
        text = _generation_switch_text(report=report, figures=figures)
    elif base.total_cost_over_horizon is None:
        text = (
            _(
                "Switch to %(name)s: it meets the %(floor)s accuracy floor and the %(target)s p95 target at the "
                "lowest %(months)s-month total cost (%(total)s); the current model cannot serve within the "
                "%(target)s p95 target."
            )
            % figures
        )
    else:
        text = (
            _(
                "Switch to %(name)s: it meets the %(floor)s accuracy floor and the %(target)s p95 target at the "
                "lowest %(months)s-month total cost (%(total)s vs %(baseline_total)s for the current model)."
            )
            % figures
        )
    if base.total_cost_over_horizon is not None and not base.feasible:
        text += " " + _("The current model does not meet the targets.")
    elif best.payback_months is not None:
        text += " " + _("It pays back in %(payback)s months.") % {"payback": f"{best.payback_months:.1f}"}
    return text


def _generation_switch_text(*, report: roi.RoiReport, figures: dict[str, Any]) -> str:
    e = report.economics
    figures = {
        **figures,
        "limit": number_text(e.perplexity_increase_pct),
        "ceiling": perplexity_text(report.perplexity_ceiling),
        "per_token": ms_text(e.per_token_target_ms),
    }
    if report.baseline.total_cost_over_horizon is None:
        return (
            _(
                "Switch to %(name)s: it keeps perplexity within +%(limit)s%% of the baseline's (%(ceiling)s at "
                "most) and meets the %(target)s TTFT and %(per_token)s per-token targets at the lowest "
                "%(months)s-month total cost (%(total)s); the current model cannot serve within the "
                "%(target)s TTFT and %(per_token)s per-token targets."
            )
            % figures
        )
    return (
        _(
            "Switch to %(name)s: it keeps perplexity within +%(limit)s%% of the baseline's (%(ceiling)s at most) "
            "and meets the %(target)s TTFT and %(per_token)s per-token targets at the lowest %(months)s-month "
            "total cost (%(total)s vs %(baseline_total)s for the current model)."
        )
        % figures
    )


# ---------------------------------------------------------------------------------------------------------
# The per-request dashboard


@dataclass(frozen=True)
class CandidateRow:
    candidate: Candidate
    figures: roi.ModelEconomics | None  # None until measured
    comparison: dict[str, Any] | None
    batch1: dict[str, Any] | None
    capacity_batch: int | None  # the batch size that gives the capacity at the p95 target
    blockers: tuple[str, ...]
    recommended: bool


@dataclass(frozen=True)
class Headline:
    outcome: str  # PocRequestSummary.Outcome
    name: str | None
    baseline: roi.ModelEconomics
    chosen: roi.ModelEconomics | None  # the recommended model (the baseline when keeping it)
    accuracy_floor: Decimal | None  # None for text generation
    p95_target_ms: Decimal  # text generation: the TTFT target
    horizon_months: int
    # Text generation only.
    is_generative: bool = False
    per_token_target_ms: Decimal | None = None
    perplexity_ceiling: Decimal | None = None
    perplexity_increase_pct: Decimal | None = None

    @property
    def accuracy_kept(self) -> Decimal | None:
        if self.chosen is None or not self.baseline.accuracy:
            return None
        return self.chosen.accuracy / self.baseline.accuracy


@dataclass(frozen=True)
class RequestDashboard:
    poc_request: PocRequest
    economics: roi.Economics
    report: roi.RoiReport | None
    rows: list[CandidateRow]
    headline: Headline | None
    reason: str
    blocking: list[str]
    cashflow_row: roi.ModelEconomics | None  # whose cash flow the third chart shows
    charts: dict[str, Any]
    measured: int
    has_power: bool
    is_whatif: bool

    @property
    def currency(self) -> str:
        return self.poc_request.currency

    @property
    def is_generative(self) -> bool:
        return self.economics.is_generative


def capacity_batch_size(latency: list[dict[str, Any]], economics: roi.Economics) -> int | None:
    """The batch size behind the capacity: for classification the best batch ÷ p50 among those whose p95
    meets the target (roi.capacity_rps); for text generation roi.generation_capacity_rps's best batch."""
    if economics.is_generative:
        return _generation_capacity_batch_size(latency, economics)
    p95_target_ms = economics.p95_target_ms
    best, best_rps = None, Decimal(0)
    for point in latency:
        if Decimal(str(point["p95_ms"])) > p95_target_ms or point["p50_ms"] <= 0:
            continue
        rps = Decimal(point["batch_size"]) * 1000 / Decimal(str(point["p50_ms"]))
        if rps > best_rps:
            best, best_rps = point["batch_size"], rps
    return best


def _generation_capacity_batch_size(latency: list[dict[str, Any]], e: roi.Economics) -> int | None:
    best, best_rps = None, Decimal(0)
    for point in latency:
        single = [
            roi.LatencyPoint(
                point["batch_size"],
                point["p50_ms"],
                point["p95_ms"],
                point["p99_ms"],
                ttft_p50_ms=point.get("ttft_p50_ms"),
                ttft_p95_ms=point.get("ttft_p95_ms"),
                itl_p50_ms=point.get("itl_p50_ms"),
                itl_p95_ms=point.get("itl_p95_ms"),
            )
        ]
        rps = roi.generation_capacity_rps(
            single, e.p95_target_ms, e.per_token_target_ms, e.output_tokens_per_request
        )
        if rps > best_rps:
            best, best_rps = point["batch_size"], rps
    return best


def pareto_front(points: list[tuple[float, float]]) -> set[int]:
    """Indexes of the points no other point beats on both latency (lower) and accuracy (higher)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_accuracy = set(), float("-inf")
    for i in order:
        if points[i][1] > best_accuracy:
            front.add(i)
            best_accuracy = points[i][1]
    return front


def poc_request_dashboard(
    *, poc_request: PocRequest, economics: roi.Economics | None = None
) -> RequestDashboard:
    """Everything the request page, its report and its CSV show; no queries beyond the prefetched
    candidates (``poc_request_get_for_user``)."""
    as_filed = economics_for(poc_request)
    # Controls submitted unchanged are not a scenario: the page then says nothing about a what-if.
    is_whatif = economics is not None and economics != as_filed
    economics = economics or as_filed
    report = poc_request_roi(poc_request=poc_request, economics=economics)
    comparisons = candidate_comparisons(poc_request=poc_request)
    candidates = list(poc_request.candidates.all())
    rec_key = report.recommendation.key if report else None
    rows = []
    for c in candidates:
        figures = report.row(str(c.pk)) if report and c.status == Candidate.Status.MEASURED else None
        rows.append(
            CandidateRow(
                candidate=c,
                figures=figures,
                comparison=comparisons.get(c.pk),
                batch1=c.latency_at(1),
                capacity_batch=capacity_batch_size(c.latency, economics) if figures else None,
                blockers=describe_blockers(row=figures, report=report) if figures else (),
                recommended=figures is not None and figures.key == rec_key,
            )
        )
    headline, cashflow_row, reason, blocking = None, None, "", []
    if report:
        reason = recommendation_text(report=report, currency=poc_request.currency)
        blocking = describe_blocking(blocking_targets(report=report))
        headline = _headline(report)
        cashflow_row = _cashflow_row(report)
    return RequestDashboard(
        poc_request=poc_request,
        economics=economics,
        report=report,
        rows=rows,
        headline=headline,
        reason=reason,
        blocking=blocking,
        cashflow_row=cashflow_row,
        charts=_chart_data(report, cashflow_row, poc_request.currency) if report else {},
        measured=sum(1 for c in candidates if c.status == Candidate.Status.MEASURED),
        has_power=economics.power_watts is not None,
        is_whatif=is_whatif,
    )


def _outcome(report: roi.RoiReport) -> str:
    rec = report.recommendation
    if rec.key is None:
        return PocRequestSummary.Outcome.BLOCKED
    return PocRequestSummary.Outcome.KEEP if rec.keeps_baseline else PocRequestSummary.Outcome.SWITCH


def _headline(report: roi.RoiReport) -> Headline:
    rec = report.recommendation
    e = report.economics
    return Headline(
        outcome=_outcome(report),
        name=rec.name,
        baseline=report.baseline,
        chosen=report.row(rec.key) if rec.key else None,
        accuracy_floor=report.accuracy_floor,
        p95_target_ms=e.p95_target_ms,
        horizon_months=e.horizon_months,
        is_generative=e.is_generative,
        per_token_target_ms=e.per_token_target_ms,
        perplexity_ceiling=report.perplexity_ceiling,
        perplexity_increase_pct=e.perplexity_increase_pct if e.is_generative else None,
    )


def _cashflow_row(report: roi.RoiReport) -> roi.ModelEconomics | None:
    """The recommended candidate; when the advice is to keep the current model, the best feasible
    compressed candidate instead, so the chart shows why switching does not pay."""
    rec = report.recommendation
    if rec.key and not rec.keeps_baseline:
        row = report.row(rec.key)
    else:
        feasible = [r for r in report.rows if r.feasible and not r.is_baseline]
        row = (
            min(feasible, key=lambda r: (r.total_cost_over_horizon, roi.quality_rank(r, report.economics)))
            if feasible
            else None
        )
    return row if row is not None and row.monthly_savings is not None else None


def _chart_data(
    report: roi.RoiReport, cashflow_row: roi.ModelEconomics | None, currency: str
) -> dict[str, Any]:
    """What dashboard.js plots. Money goes as strings of the displayed (rounded) amount; latency and
    accuracy as floats, which only position points."""
    rec_key = report.recommendation.key
    if report.economics.is_generative:
        return _generation_chart_data(report, cashflow_row, currency)
    timed = [r for r in report.rows if r.p95_batch1_ms is not None]
    front = pareto_front([(float(r.p95_batch1_ms), float(r.accuracy)) for r in timed])
    pareto = [
        {
            "label": r.name,
            "p95_ms": float(r.p95_batch1_ms),
            "accuracy_pct": float(r.accuracy * 100),
            "feasible": r.feasible,
            "recommended": r.key == rec_key,
            "baseline": r.is_baseline,
            "frontier": i in front,
        }
        for i, r in enumerate(timed)
    ]
    return {
        "task": report.economics.task,
        "currency": currency,
        "p95_target_ms": float(report.economics.p95_target_ms),
        "accuracy_floor_pct": float(report.accuracy_floor * 100),
        "pareto": pareto,
        "cost": _cost_chart_data(report, currency),
        "cashflow": _cashflow_chart_data(report, cashflow_row, currency),
    }


def _generation_chart_data(
    report: roi.RoiReport, cashflow_row: roi.ModelEconomics | None, currency: str
) -> dict[str, Any]:
    """The same three charts for text generation: quality is perplexity (lower is better) and latency the
    TTFT p95 at batch 1, under the key "p95_ms" so that the chart code stays one."""
    rec_key = report.recommendation.key
    plotted = [r for r in report.rows if r.ttft_p95_batch1_ms is not None and r.perplexity is not None]
    # pareto_front wants higher-is-better quality: negate perplexity.
    front = pareto_front([(float(r.ttft_p95_batch1_ms), -float(r.perplexity)) for r in plotted])
    ceiling = report.perplexity_ceiling
    return {
        "task": report.economics.task,
        "currency": currency,
        "p95_target_ms": float(report.economics.p95_target_ms),
        "per_token_target_ms": float(report.economics.per_token_target_ms),
        "perplexity_ceiling": float(ceiling) if ceiling is not None else None,
        "pareto": [
            {
                "label": r.name,
                "p95_ms": float(r.ttft_p95_batch1_ms),
                "itl_p95_ms": float(r.itl_p95_batch1_ms) if r.itl_p95_batch1_ms is not None else None,
                "perplexity": float(r.perplexity),
                "feasible": r.feasible,
                "recommended": r.key == rec_key,
                "baseline": r.is_baseline,
                "frontier": i in front,
            }
            for i, r in enumerate(plotted)
        ],
        "cost": _cost_chart_data(report, currency),
        "cashflow": _cashflow_chart_data(report, cashflow_row, currency),
    }


def _amount(value: Decimal | None, currency: str) -> str | None:
    return None if value is None else str(quantize_money(value, currency))


def _cost_chart_data(report: roi.RoiReport, currency: str) -> list[dict[str, Any]]:
    rec_key = report.recommendation.key
    generative = report.economics.is_generative
    bars = []
    for r in report.rows:
        bar = {
            "label": r.name,
            "monthly_cost": _amount(r.monthly_cost, currency),
            "cost_per_million": _amount(r.cost_per_million, currency),
            "feasible": r.feasible,
            "recommended": r.key == rec_key,
            "baseline": r.is_baseline,
        }
        if generative:
            value = r.cost_per_million_tokens
            bar["cost_per_million_tokens"] = (
                None if value is None else str(quantize_unit_cost(value, currency))
            )
        bars.append(bar)
    return bars


def _cashflow_chart_data(
    report: roi.RoiReport, cashflow_row: roi.ModelEconomics | None, currency: str
) -> dict[str, Any] | None:
    if cashflow_row is None:
        return None
    months = report.economics.horizon_months
    return {
        "label": cashflow_row.name,
        "recommended": cashflow_row.key == report.recommendation.key,
        "cumulative": [
            _amount(month * cashflow_row.monthly_savings - cashflow_row.one_time_cost, currency)
            for month in range(months + 1)
        ],
        "payback_months": float(cashflow_row.payback_months)
        if cashflow_row.payback_months is not None
        else None,
    }


def candidate_get_for_user(*, user: Any, request_pk: int, pk: int) -> Candidate:
    """One candidate with its request; DoesNotExist when the user may not see the request."""
    qs = Candidate.objects.select_related("request__hardware", "request__owner", "request__team")
    if not user.is_staff:
        qs = qs.filter(request__team_id__in=_member_team_ids(user))
    return qs.get(request_id=request_pk, pk=pk)


# ---------------------------------------------------------------------------------------------------------
# Portfolio: every request the user may see, from the stored summaries (see PocRequestSummary for why).


def summary_figures(*, report: roi.RoiReport) -> dict[str, Any]:
    """The PocRequestSummary fields derived from a request's ROI report (amounts not yet rounded)."""
    rec = report.recommendation
    chosen = report.row(rec.key) if rec.key else None
    return {
        "outcome": _outcome(report),
        "candidate_id": int(rec.key) if rec.key else None,
        "candidate_label": rec.name or "",
        "baseline_monthly_cost": report.baseline.monthly_cost,
        "monthly_cost": chosen.monthly_cost if chosen else None,
        "monthly_savings": chosen.monthly_savings if chosen else None,
        "one_time_cost": chosen.one_time_cost if chosen else None,
        "payback_months": chosen.payback_months if chosen else None,
        "roi": chosen.roi if chosen else None,
        "blocking": blocking_targets(report=report),
    }


def portfolio_requests(
    *, user: Any, status: str = "", owner_id: int | None = None, outcome: str = ""
) -> QuerySet[PocRequest]:
    """The requests the user may see, filtered, with their summaries (one query per page)."""
    qs = poc_request_list_for_user(user=user).select_related("summary")
    if status:
        qs = qs.filter(status=status)
    if owner_id:
        qs = qs.filter(owner_id=owner_id)
    if outcome == "pending":
        qs = qs.filter(summary__isnull=True)
    elif outcome:
        qs = qs.filter(summary__outcome=outcome)
    return qs


def portfolio_owners(*, user: Any) -> QuerySet:
    """Whose requests the user may filter by: the owners of the requests the user may see."""
    users = get_user_model().objects.order_by("username")
    if not user.is_staff:
        return users.filter(
            pk__in=PocRequest.objects.filter(team_id__in=_member_team_ids(user)).values("owner_id")
        )
    return users.filter(poc_requests__isnull=False).distinct()


@dataclass(frozen=True)
class PortfolioTotal:
    """Totals over the requests with a recommendation (switch or keep), in one currency.

    A recommendation whose current model cannot serve within its target has no savings figure (there is no
    current cost to save against): it counts in ``switching`` and ``one_time_cost`` but not in the
    before/after costs, the savings or the payback, so that before − after = savings exactly."""

    currency: str
    requests: int
    switching: int
    baseline_monthly_cost: Decimal  # what the priced requests cost now
    monthly_cost: Decimal  # what they would cost with the recommended models
    monthly_savings: Decimal
    one_time_cost: Decimal  # of every recommended switch
    priced_one_time_cost: Decimal  # of the switches with a savings figure: the payback's numerator
    without_baseline_cost: int

    @property
    def payback_months(self) -> Decimal | None:
        return self.priced_one_time_cost / self.monthly_savings if self.monthly_savings > 0 else None

    @property
    def annual_savings(self) -> Decimal:
        return self.monthly_savings * 12


def portfolio_totals(*, requests: QuerySet[PocRequest]) -> list[PortfolioTotal]:
    """Per currency (amounts in different currencies are never added), over the requests with a
    recommendation: what they cost now, with the recommended models, the difference and the one-time cost."""
    zero = Decimal(0)
    recommended = [PocRequestSummary.Outcome.SWITCH, PocRequestSummary.Outcome.KEEP]
    priced = Q(summary__monthly_savings__isnull=False)
    rows = (
        requests.filter(summary__outcome__in=recommended)
        .order_by()
        .values("currency")
        .annotate(
            n=Count("pk"),
            switching=Count("pk", filter=Q(summary__outcome=PocRequestSummary.Outcome.SWITCH)),
            baseline=Sum("summary__baseline_monthly_cost", filter=priced),
            cost=Sum("summary__monthly_cost", filter=priced),
            savings=Sum("summary__monthly_savings"),
            one_time=Sum("summary__one_time_cost"),
            priced_one_time=Sum("summary__one_time_cost", filter=priced),
            no_baseline=Count("pk", filter=~priced),
        )
        .order_by("currency")
    )
    return [
        PortfolioTotal(
            currency=r["currency"],
            requests=r["n"],
            switching=r["switching"],
            baseline_monthly_cost=r["baseline"] or zero,
            monthly_cost=r["cost"] or zero,
            monthly_savings=r["savings"] or zero,
            one_time_cost=r["one_time"] or zero,
            priced_one_time_cost=r["priced_one_time"] or zero,
            without_baseline_cost=r["no_baseline"],
        )
        for r in rows
    ]


def portfolio_outcome_counts(*, requests: QuerySet[PocRequest]) -> dict[str, int]:
    """How many requests have each outcome; "pending" for those not finished (no summary yet)."""
    counts = {o: 0 for o in PocRequestSummary.Outcome.values} | {"pending": 0}
    for row in requests.order_by().values("summary__outcome").annotate(n=Count("pk")):
        counts[row["summary__outcome"] or "pending"] += row["n"]
    return counts


def portfolio_blocked(*, requests: QuerySet[PocRequest], limit: int) -> list[dict[str, Any]]:
    """Requests whose targets no model meets, each with its blocking targets as sentences."""
    blocked = requests.filter(summary__outcome=PocRequestSummary.Outcome.BLOCKED)[:limit]
    return [{"request": r, "lines": describe_blocking(r.summary.blocking)} for r in blocked]
