"""What dashboard.js plots for a request: the quality-against-latency scatter with its Pareto front, the
monthly cost per model and the cumulative cash flow. Money goes as strings of the displayed (rounded)
amount; latency and quality as floats, which only position points. Whether a point meets the targets
comes as roi's flags (``feasible``; ``undecided`` and ``unstable`` when the measurements cannot tell); the
targets themselves come only to draw their lines, and a latency's interval only to draw its error bar."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from planner import roi
from planner.formatting import quantize_money, quantize_unit_cost


def pareto_front(points: list[tuple[float, float]]) -> set[int]:
    """Indexes of the points no other point beats on both latency (lower) and quality (higher)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_quality = set(), float("-inf")
    for i in order:
        if points[i][1] > best_quality:
            front.add(i)
            best_quality = points[i][1]
    return front


def cashflow_row(report: roi.RoiReport) -> roi.ModelEconomics | None:
    """The recommended candidate; when the advice is to keep the current model, the best feasible
    compressed candidate instead, so the chart shows why switching does not pay."""
    rec = report.recommendation
    row: roi.ModelEconomics | None
    if rec.key and not rec.keeps_baseline:
        row = report.row(rec.key)
    else:
        feasible = [r for r in report.rows if r.feasible and not r.is_baseline]
        row = (
            min(feasible, key=lambda r: (r.total_cost_over_horizon, roi.quality_rank(r, report.economics)))
            if feasible
            else None
        )
    # No chart without the two figures it plots (savings, and a one-time cost whose device-hours were measured).
    return row if row is not None and None not in (row.monthly_savings, row.one_time_cost) else None


def _point(r: roi.ModelEconomics, rec_key: str | None) -> dict[str, Any]:
    return {
        "label": r.name,
        "feasible": r.feasible,
        "undecided": r.verdict == roi.UNDECIDED,
        "unstable": any(b.kind == roi.UNSTABLE for b in r.undecided),
        "recommended": r.key == rec_key,
        "baseline": r.is_baseline,
    }


Bounds = dict[str, tuple[float | None, float | None]]


def _interval(key: str, bounds: Bounds) -> dict[str, float | None]:
    """The plotted latency's interval (``p95_low_ms``, ``p95_high_ms``), None where it was not measured."""
    low, high = bounds.get(key, (None, None))
    if low is None or high is None:
        return {"p95_low_ms": None, "p95_high_ms": None}
    return {"p95_low_ms": float(low), "p95_high_ms": float(high)}


def chart_data(
    report: roi.RoiReport,
    cashflow: roi.ModelEconomics | None,
    currency: str,
    bounds: Bounds | None = None,
) -> dict[str, Any]:
    """``bounds``: per model key, the interval of the latency the Pareto chart plots (its error bar)."""
    bounds = bounds or {}
    rec_key = report.recommendation.key
    e = report.economics
    common = {
        "task": e.task,
        "currency": currency,
        "p95_target_ms": float(e.p95_target_ms),
        "cost": _cost_chart_data(report, currency),
        "cashflow": _cashflow_chart_data(report, cashflow, currency),
    }
    if e.is_generative:
        # Quality is perplexity (lower is better) and latency the TTFT p95 at batch 1, under the key
        # "p95_ms" so that the chart code stays one; pareto_front wants higher-is-better: negated.
        plotted = [
            (r, float(r.ttft_p95_batch1_ms), float(r.perplexity))
            for r in report.rows
            if r.ttft_p95_batch1_ms is not None and r.perplexity is not None
        ]
        front = pareto_front([(ttft, -perplexity) for _r, ttft, perplexity in plotted])
        ceiling = report.perplexity_ceiling
        pareto = [
            {
                **_point(r, rec_key),
                **_interval(r.key, bounds),
                "p95_ms": ttft,
                "itl_p95_ms": float(r.itl_p95_batch1_ms) if r.itl_p95_batch1_ms is not None else None,
                "perplexity": perplexity,
                "frontier": i in front,
            }
            for i, (r, ttft, perplexity) in enumerate(plotted)
        ]
        return {
            **common,
            "per_token_target_ms": float(e.itl_target_ms),
            "perplexity_ceiling": float(ceiling) if ceiling is not None else None,
            "pareto": pareto,
        }
    timed = [
        (r, r.p95_batch1_ms, r.accuracy)
        for r in report.rows
        if r.p95_batch1_ms is not None and r.accuracy is not None
    ]
    front = pareto_front([(float(p95), float(accuracy)) for _r, p95, accuracy in timed])
    pareto = [
        {
            **_point(r, rec_key),
            **_interval(r.key, bounds),
            "p95_ms": float(p95),
            "accuracy_pct": float(accuracy * 100),
            "frontier": i in front,
        }
        for i, (r, p95, accuracy) in enumerate(timed)
    ]
    floor = report.accuracy_floor
    return {
        **common,
        "accuracy_floor_pct": float(floor * 100) if floor is not None else None,
        "pareto": pareto,
    }


def _amount(value: Decimal | None, currency: str) -> str | None:
    return None if value is None else str(quantize_money(value, currency))


def _cost_chart_data(report: roi.RoiReport, currency: str) -> list[dict[str, Any]]:
    rec_key = report.recommendation.key
    bars = []
    for r in report.rows:
        bar = {
            **_point(r, rec_key),
            "monthly_cost": _amount(r.monthly_cost, currency),
            "cost_per_million": _amount(r.cost_per_million, currency),
        }
        if report.economics.is_generative:
            value = r.cost_per_million_tokens
            bar["cost_per_million_tokens"] = (
                None if value is None else str(quantize_unit_cost(value, currency))
            )
        bars.append(bar)
    return bars


def _cashflow_chart_data(
    report: roi.RoiReport, row: roi.ModelEconomics | None, currency: str
) -> dict[str, Any] | None:
    # cashflow_row's rule: no chart without the monthly savings and the one-time cost.
    if row is None or row.monthly_savings is None or row.one_time_cost is None:
        return None
    savings, one_time_cost = row.monthly_savings, row.one_time_cost
    months = report.economics.horizon_months
    return {
        "label": row.name,
        "recommended": row.key == report.recommendation.key,
        "cumulative": [_amount(month * savings - one_time_cost, currency) for month in range(months + 1)],
        "payback_months": float(row.payback_months) if row.payback_months is not None else None,
    }
