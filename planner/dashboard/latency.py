"""How the pages show one timed figure with the trust behind it (docs/measurement.md): a percentile with its
interval and the samples it rests on, the speedup with its interval and rounds, and the host's state.

A percentile is refused, not shown, when it has fewer samples than it needs: always for a p99 (500), and
for a p95 left blank by the worker (100). A p95 that came with a figure is the one roi decides on, so it
is shown, with its sample count. A figure of an unstable point is flagged, never shown as a clean one.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from planner import formatting, roi
from planner.dashboard import wording

QUANTILES = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}


@dataclass(frozen=True)
class Shown:
    """One figure as a cell shows it: the figure, a small line under it, and whether it is to be trusted."""

    text: str
    note: str = ""
    refused: bool = False  # too few samples: no figure
    unstable: bool = False  # the point was measured unstable: flag it

    def __str__(self) -> str:
        return f"{self.text}, {self.note}" if self.note else self.text


def samples_of(point: Any, prefix: str = "") -> int | None:
    """The samples behind a percentile of ``point``: its iterations; for the inter-token latency, the decode
    steps of those iterations (each generation of ``new_tokens`` tokens has ``new_tokens − 1`` of them)."""
    iterations = getattr(point, "iterations", None)
    if prefix == "itl_" and iterations is not None and point.new_tokens and point.new_tokens > 1:
        return iterations * (point.new_tokens - 1)
    return iterations


def samples_text(samples: int) -> str:
    return ngettext("%(samples)s sample", "%(samples)s samples", samples) % {
        "samples": formatting.fixed(samples, 0, grouped=True)
    }


def percentile(point: Any, name: str, prefix: str = "") -> Shown:
    """``{prefix}{name}_ms`` of ``point`` ("p95", "ttft_"), with its interval and sample count."""
    if point is None:
        return Shown(formatting.MISSING)
    value = getattr(point, f"{prefix}{name}_ms", None)
    low = getattr(point, f"{prefix}{name}_low_ms", None)
    high = getattr(point, f"{prefix}{name}_high_ms", None)
    samples = samples_of(point, prefix)
    quantile = QUANTILES[name]
    unstable = bool(getattr(point, "unstable", None))
    needed = roi.samples_needed(Decimal(quantile))
    too_few = samples is not None and samples < needed
    if name != "p50" and (value is None or (name == "p99" and too_few)):
        return Shown(wording.percentile_text(None, samples, quantile), refused=True, unstable=unstable)
    note = samples_text(samples) if samples is not None and name != "p50" else ""
    return Shown(formatting.interval_text(value, low, high), note, unstable=unstable)


def speedup(point: Any, comparison: dict[str, Any] | None, *, is_baseline: bool) -> Shown:
    """The speedup against the baseline at batch 1: from the interleaved rounds with its interval, or, for a
    point measured before those existed, the ratio of the two p95s, labelled as such."""
    if is_baseline:
        return Shown("1.00×" if point is not None else formatting.MISSING)
    unstable = bool(point is not None and point.unstable)
    if point is not None and point.speedup is not None:
        note = ""
        if point.rounds:
            note = ngettext("%(rounds)s round", "%(rounds)s rounds", point.rounds) % {"rounds": point.rounds}
        text = formatting.speedup_text(point.speedup, point.speedup_low, point.speedup_high)
        return Shown(text, note, unstable=unstable)
    ratio = (comparison or {}).get("speedup")
    if ratio is None:
        return Shown(formatting.MISSING)
    return Shown(
        formatting.speedup_text(ratio), _("ratio of the p95s (older measurement)"), unstable=unstable
    )


def host_text(point: Any) -> str:
    """The host's state while ``point`` was timed: "load 4.1; other processes 62% of the CPU"."""
    parts = []
    if point.load_avg is not None:
        parts.append(_("load %(load)s") % {"load": formatting.fixed(point.load_avg, 1)})
    if point.other_cpu_share is not None:
        parts.append(
            _("other processes %(share)s of the CPU")
            % {"share": formatting.percent_text(point.other_cpu_share, 0)}
        )
    return "; ".join(parts) or formatting.MISSING


def unstable_text(point: Any) -> str:
    return _("unstable: %(reason)s") % {"reason": point.unstable} if point.unstable else _("clean")
