"""Every sentence the pages say about a request's figures, in the reader's language (gettext).

roi.py decides which targets a model misses (``roi.Blocker``) and what to recommend (an outcome), as data;
this module alone puts them into words. Every number goes through planner.formatting (half up; "—" for
a figure that was not measured)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from planner import roi
from planner.formatting import (
    fixed,
    interval_text,
    money_text,
    ms_text,
    number_text,
    percent_text,
    perplexity_text,
)


def _gap(value: Decimal) -> str:
    shown = fixed(value, 1)
    # A real but tiny gap must not read as "0.0 points below".
    return _("less than 0.1") if shown == "0.0" else shown


def blocker_sentences(row: roi.ModelEconomics, report: roi.RoiReport) -> tuple[str, ...]:
    """Why ``row`` misses the targets, one sentence per target, then why a target cannot be told from its
    measurement (empty when it is clearly feasible)."""
    return tuple(blocker_sentence(blocker, report) for blocker in (*row.blockers, *row.undecided))


def _check_label(kind: str | None) -> str:
    return {
        roi.P95: _("p95 at batch 1"),
        roi.TTFT: _("TTFT p95 at batch 1"),
        roi.ITL: _("inter-token p95 at batch 1"),
    }.get(kind or "", _("latency at batch 1"))


def _undecided_sentence(blocker: roi.Blocker) -> str:
    """A check that cannot be told from its measurement: borderline, too few samples, unstable."""
    if blocker.kind == roi.UNSTABLE:
        if blocker.reason:
            return _("the measurement is unstable (%(reason)s): its latency cannot be trusted") % {
                "reason": blocker.reason
            }
        return _("the measurement is unstable: its latency cannot be trusted")
    figure = _check_label(blocker.about)
    if blocker.kind == roi.TOO_FEW_SAMPLES:
        needed = fixed(blocker.limit, 0, grouped=True)
        if blocker.measured is None:
            return _("%(figure)s was not reported: a p95 needs at least %(needed)s samples") % {
                "figure": figure,
                "needed": needed,
            }
        return _("%(figure)s was not reported: it rests on %(samples)s samples, a p95 needs %(needed)s") % {
            "figure": figure,
            "samples": fixed(blocker.measured, 0, grouped=True),
            "needed": needed,
        }
    return _(
        "%(figure)s is %(measured)s, an interval that straddles the %(target)s target: borderline, "
        "within the measurement's uncertainty"
    ) % {
        "figure": figure,
        "measured": interval_text(blocker.measured, blocker.low, blocker.high),
        "target": ms_text(blocker.limit),
    }


def blocker_sentence(blocker: roi.Blocker, report: roi.RoiReport) -> str:
    """One missed target in words, with the measured figure, the limit and the gap between them; or why a
    target cannot be told from its measurement."""
    kind, measured, limit = blocker.kind, blocker.measured, blocker.limit
    e = report.economics
    if kind in (roi.BORDERLINE, roi.TOO_FEW_SAMPLES, roi.UNSTABLE):
        return _undecided_sentence(blocker)
    if kind == roi.NO_BATCH_SIZE:
        if e.is_generative:
            return _("no batch size meets the %(ttft)s TTFT and %(per_token)s per-token targets") % {
                "ttft": ms_text(limit),
                "per_token": ms_text(e.per_token_target_ms),
            }
        return _("no batch size meets the %(target)s p95 target") % {"target": ms_text(limit)}
    if kind == roi.BASELINE_ACCURACY:
        return _("the baseline's accuracy was not measured")
    if kind == roi.BASELINE_PERPLEXITY:
        return _("the baseline's perplexity was not measured")
    if measured is None:
        return {
            roi.ACCURACY: _("accuracy was not measured"),
            roi.PERPLEXITY: _("perplexity was not measured"),
            roi.P95: _("p95 at batch 1 was not measured"),
            roi.TTFT: _("TTFT at batch 1 was not measured"),
            roi.ITL: _("inter-token latency at batch 1 was not measured"),
        }[kind]
    assert limit is not None, blocker  # only the baseline kinds above have no limit
    if kind == roi.ACCURACY:
        return _("accuracy %(accuracy)s is %(gap)s points below the floor of %(floor)s") % {
            "accuracy": percent_text(measured),
            "gap": _gap((limit - measured) * 100),
            "floor": percent_text(limit),
        }
    if kind == roi.PERPLEXITY:
        base = report.baseline.perplexity
        assert base is not None, blocker  # a ceiling exists only with the baseline's perplexity
        return _(
            "perplexity %(perplexity)s is %(rise)s%% above the baseline's %(baseline)s (limit +%(limit)s%%)"
        ) % {
            "perplexity": perplexity_text(measured),
            "rise": _gap((measured / base - 1) * 100),
            "baseline": perplexity_text(base),
            "limit": number_text(e.perplexity_increase_pct),
        }
    shown = fixed(measured, 1)
    figures = {
        "p95": shown,
        "ttft": shown,
        "itl": shown,
        "gap": _gap(measured - limit),
        "target": ms_text(limit),
    }
    return {
        roi.P95: _("p95 at batch 1 is %(p95)s ms, %(gap)s ms over the %(target)s target"),
        roi.TTFT: _("TTFT p95 at batch 1 is %(ttft)s ms, %(gap)s ms over the %(target)s target"),
        roi.ITL: _(
            "inter-token p95 at batch 1 is %(itl)s ms, %(gap)s ms over the %(target)s per-token target"
        ),
    }[kind] % figures


def _figure(value: str | None) -> Decimal:
    """A figure of roi.blocking_targets()'s stored JSON that the sentence needs (it is set for that case)."""
    if value is None:
        raise TypeError("roi.blocking_targets() left out a figure its sentence needs")
    return Decimal(value)


def blocking_sentences(blocking: Mapping[str, Mapping[str, str | None]]) -> list[str]:
    """roi.blocking_targets() as sentences (the portfolio passes the stored JSON)."""
    lines = []
    p95 = blocking.get("p95")
    if p95:
        target = _figure(p95["target_ms"])
        if p95["best_ms"] is None:
            lines.append(
                _("p95 latency target %(target)s: no candidate's p95 at batch 1 was measured.")
                % {"target": ms_text(target)}
            )
        else:
            best = _figure(p95["best_ms"])
            lines.append(
                _(
                    "p95 latency target %(target)s: the fastest model that keeps the accuracy floor "
                    "(%(name)s) takes %(best)s ms at batch 1, %(gap)s ms over."
                )
                % {
                    "target": ms_text(target),
                    "name": p95["candidate"],
                    "best": fixed(best, 1),
                    "gap": _gap(best - target),
                }
            )
    accuracy = blocking.get("accuracy")
    if accuracy and accuracy["floor"] is None:
        lines.append(_("Accuracy floor: the baseline's accuracy was not measured."))
    elif accuracy and accuracy["best"] is None:
        lines.append(
            _("Accuracy floor %(floor)s: no candidate's accuracy was measured.")
            % {"floor": percent_text(_figure(accuracy["floor"]))}
        )
    elif accuracy:
        floor, best = _figure(accuracy["floor"]), _figure(accuracy["best"])
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
    lines += _generation_blocking_sentences(blocking)
    return lines


def _generation_blocking_sentences(blocking: Mapping[str, Mapping[str, str | None]]) -> list[str]:
    lines = []
    latency = blocking.get("latency")
    if latency:
        targets = {
            "ttft_target": ms_text(_figure(latency["ttft_target_ms"])),
            "itl_target": ms_text(_figure(latency["itl_target_ms"])),
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
                    "ttft": fixed(_figure(latency["ttft_ms"]), 1),
                    "itl": fixed(_figure(latency["itl_ms"]), 1),
                }
            )
    perplexity = blocking.get("perplexity")
    if perplexity:
        if perplexity["ceiling"] is None:
            lines.append(_("Perplexity limit: the baseline's perplexity was not measured."))
        elif perplexity["best"] is None:
            lines.append(
                _("Perplexity limit %(ceiling)s: no candidate's perplexity was measured.")
                % {"ceiling": perplexity_text(_figure(perplexity["ceiling"]))}
            )
        else:
            best, baseline = _figure(perplexity["best"]), _figure(perplexity["baseline"])
            lines.append(
                _(
                    "Perplexity limit %(ceiling)s (+%(limit)s%% over the baseline's %(baseline)s): the best "
                    "model within the latency targets (%(name)s) reaches %(best)s, %(rise)s%% above the "
                    "baseline."
                )
                % {
                    "ceiling": perplexity_text(_figure(perplexity["ceiling"])),
                    "limit": number_text(_figure(perplexity["increase_pct"])),
                    "baseline": perplexity_text(baseline),
                    "name": perplexity["candidate"],
                    "best": perplexity_text(best),
                    "rise": _gap((best / baseline - 1) * 100),
                }
            )
    return lines


def recommendation_sentence(report: roi.RoiReport, currency: str) -> str:
    """The recommendation (roi's outcome) as a sentence in the reader's language, with money in the request's
    currency."""
    rec, e = report.recommendation, report.economics
    if rec.undecided:
        return _undecided_recommendation(report)
    if rec.key is None or rec.blocked:
        return _("No model meets the targets.")
    best, base = report.row(rec.key), report.baseline
    figures = {
        "name": best.name,
        "floor": percent_text(report.accuracy_floor) if report.accuracy_floor is not None else "",
        "target": ms_text(e.p95_target_ms),
        "months": e.horizon_months,
        "total": money_text(best.total_cost_over_horizon, currency),
        "baseline_total": money_text(base.total_cost_over_horizon, currency),
    }
    if rec.keeps_baseline:
        return _with_uncertainty(
            ngettext(
                "Keep the current model: no compressed candidate that meets the targets costs less over "
                "%(months)s month (%(total)s for the current model).",
                "Keep the current model: no compressed candidate that meets the targets costs less over "
                "%(months)s months (%(total)s for the current model).",
                e.horizon_months,
            )
            % figures,
            report,
            currency,
        )
    if e.is_generative:
        text = _generation_switch_sentence(report, figures)
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
    if base.total_cost_over_horizon is not None and base.verdict == roi.INFEASIBLE:
        text += " " + _("The current model does not meet the targets.")
    elif base.verdict == roi.UNDECIDED:
        text += " " + _(
            "Whether the current model meets the targets is within the measurement's uncertainty; the "
            "switch saves money either way."
        )
    elif best.pays_back_immediately:
        text += " " + _("It pays back immediately.")
    elif best.payback_months is not None:
        text += " " + _("It pays back in %(payback)s months.") % {"payback": fixed(best.payback_months, 1)}
    return _with_uncertainty(text, report, currency)


def _with_uncertainty(text: str, report: roi.RoiReport, currency: str) -> str:
    """``text``, then a word on the cheaper model that was not chosen because of the intervals, if any."""
    key = report.recommendation.within_uncertainty
    if key is None:
        return text
    row = report.row(key)
    if row.verdict == roi.UNDECIDED:
        note = _(
            "%(name)s might cost less, but whether it meets the targets is within the measurement's "
            "uncertainty: re-run it to decide."
        ) % {"name": row.name}
    else:
        note = _(
            "%(name)s has a lower %(months)s-month total cost at the measured figures (%(total)s), but the "
            "saving is within the measurement's uncertainty: at the slow end of its interval it costs "
            "%(slow_total)s."
        ) % {
            "name": row.name,
            "months": report.economics.horizon_months,
            "total": money_text(row.total_cost_over_horizon, currency),
            "slow_total": money_text(row.slow_total_cost, currency),
        }
    return f"{text} {note}"


def _undecided_recommendation(report: roi.RoiReport) -> str:
    """No recommendation yet: which measurements cannot decide it, why, and what to re-run."""
    return " ".join(undecided_parts(report))


def undecided_parts(report: roi.RoiReport) -> list[str]:
    """The undecided recommendation's sentences: "No recommendation yet.", one per pending model, then
    what to re-run (the last)."""
    rec = report.recommendation
    parts = [_("No recommendation yet.")]
    for key in rec.pending:
        row = report.row(key)
        parts.append(
            _("%(name)s: %(why)s.")
            % {
                "name": _("The current model") if row.is_baseline else row.name,
                "why": "; ".join(blocker_sentence(b, report) for b in row.undecided),
            }
        )
    if rec.rerun == roi.QUIET_HOST:
        parts.append(
            _(
                "Re-measure on a quiet host, or a dedicated one: other work on the host slowed the models "
                "unevenly, and a decision on these figures would be luck."
            )
        )
    else:
        parts.append(
            _(
                "Re-run the PoC with more rounds (raise MEASURE_MIN_ITERATIONS or MEASURE_MAX_ROUNDS) so "
                "the intervals narrow enough to decide."
            )
        )
    return parts


def _generation_switch_sentence(report: roi.RoiReport, figures: dict[str, Any]) -> str:
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


def percentile_text(
    value: Decimal | float | None,
    samples: int | None,
    quantile: str,
    low: Decimal | float | None = None,
    high: Decimal | float | None = None,
) -> str:
    """A measured percentile (``quantile`` "0.95" or "0.99") with its interval and the samples behind it:
    "31.0 ms (29.8–32.4), 1,200 samples". A percentile from fewer samples than it needs (p95: 100, p99:
    500) is not shown, whatever figure came with it: "too few samples (50 of the 500 a p99 needs)"."""
    needed = roi.samples_needed(Decimal(quantile))
    name = "p" + number_text(Decimal(quantile) * 100)
    if value is None or (samples is not None and samples < needed):
        if samples is None:
            return _("too few samples (a %(name)s needs %(needed)s)") % {
                "name": name,
                "needed": fixed(needed, 0, grouped=True),
            }
        return _("too few samples (%(samples)s of the %(needed)s a %(name)s needs)") % {
            "samples": fixed(samples, 0, grouped=True),
            "needed": fixed(needed, 0, grouped=True),
            "name": name,
        }
    shown = interval_text(value, low, high)
    if samples is None:
        return shown
    return ngettext("%(figure)s, %(samples)s sample", "%(figure)s, %(samples)s samples", samples) % {
        "figure": shown,
        "samples": fixed(samples, 0, grouped=True),
    }


def _rate_text(rps: Decimal | float) -> str:
    return fixed(rps, 0 if rps >= 100 else 1 if rps >= 1 else 2, grouped=True)


def capacity_sentence(row: roi.ModelEconomics) -> str | None:
    """What the capacity rests on, when it is goodput: "sustains 412 req/s per replica with 95% of requests
    under 20 ms (batches of up to 8, waiting at most 2 ms)". None for a static capacity."""
    g = row.goodput
    if g is None:
        return None
    figures = {
        "rate": _rate_text(g.rps),
        "share": percent_text(Decimal(str(g.share)), 0),
        "target": ms_text(Decimal(str(g.target_ms))),
        "batch": fixed(g.max_batch, 0),
        "wait": ms_text(Decimal(str(g.max_wait_ms))),
    }
    if g.itl_target_ms is None:
        sentence = (
            _(
                "sustains %(rate)s req/s per replica with %(share)s of requests under %(target)s "
                "(batches of up to %(batch)s, waiting at most %(wait)s)"
            )
            % figures
        )
        return sentence + _simulated_note(g)
    sentence = _(
        "sustains %(rate)s replies/s per replica with %(share)s of replies starting within %(target)s and "
        "taking at most %(itl)s per token (batches of up to %(batch)s, waiting at most %(wait)s)"
    ) % {**figures, "itl": ms_text(Decimal(str(g.itl_target_ms)))}
    if g.capped_tokens is not None and g.tokens is not None:
        sentence += " " + _("Measured with replies of %(measured)s tokens instead of %(asked)s.") % {
            "measured": fixed(g.capped_tokens, 0, grouped=True),
            "asked": fixed(g.tokens, 0, grouped=True),
        }
    return sentence + _simulated_note(g)


def _simulated_note(g: roi.Goodput) -> str:
    if not g.simulated:
        return ""
    return " " + _(
        "Simulated from the measured batch times: at this rate a served trial would take too long to "
        "count enough requests."
    )


def static_capacity_note(row: roi.ModelEconomics) -> str | None:
    """The static figure next to goodput, as the optimistic bound it is."""
    if row.goodput is None or row.static_capacity_rps is None:
        return None
    return _("at most %(rate)s req/s with full batches and no waiting (an optimistic upper bound)") % {
        "rate": _rate_text(row.static_capacity_rps)
    }
