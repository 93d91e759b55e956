"""The review's sentences: why a recommendation changed, in the reader's language."""

from __future__ import annotations

from django.utils.translation import gettext as _

from planner import roi
from planner.formatting import fixed, percent_text
from planner.models import RecommendationChange


def _outcome(outcome: str, candidate: str) -> str:
    return {
        roi.SWITCH: candidate,
        roi.KEEP: _("keep the current model"),
        roi.BLOCKED: _("no model meets the targets"),
        roi.UNDECIDED: _("not decided"),
    }.get(outcome, outcome)


def change_reason(change: RecommendationChange) -> str:
    """E.g. "the T4 price fell 20%: int8 now pays back in 7.0 months (was: keep the current model)"."""
    old, new = change.previous_price, change.new_price
    if old and new != old:
        share = percent_text(abs(new - old) / old, 0)
        cause = (
            _("the %(hardware)s price fell %(share)s")
            if new < old
            else _("the %(hardware)s price rose %(share)s")
        ) % {"hardware": change.hardware_name, "share": share}
    else:
        cause = _("under the current economics")
    if change.new_outcome == roi.SWITCH and change.new_payback_months is not None:
        now = _("%(candidate)s now pays back in %(months)s months") % {
            "candidate": change.new_candidate,
            "months": fixed(change.new_payback_months, 1),
        }
    elif change.new_outcome == roi.SWITCH:
        now = _("%(candidate)s is now recommended") % {"candidate": change.new_candidate}
    elif change.new_outcome == roi.KEEP:
        now = _("keeping the current model is now the cheapest")
    else:
        now = _("now: %(outcome)s") % {"outcome": _outcome(change.new_outcome, change.new_candidate)}
    was = _outcome(change.previous_outcome, change.previous_candidate)
    return _("%(cause)s: %(now)s (was: %(was)s)") % {"cause": cause, "now": now, "was": was}
