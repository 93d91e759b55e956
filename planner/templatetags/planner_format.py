"""Display formatting for templates: thin filters over planner.formatting (half up everywhere; JPY with no
decimals, other currencies two; a figure that was not measured shows as "—", never as 0)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template
from django.utils.translation import gettext as _

from planner import formatting
from planner.formatting import quantize_money, quantize_unit_cost

__all__ = ["quantize_money", "quantize_unit_cost", "money_places", "register"]

register = template.Library()
money_places = formatting.currency_places


def _missing(value: Any) -> bool:
    # "" is what the template engine gives for an attribute of a missing object (a candidate with no
    # figures yet): shown as a dash, like None.
    return value is None or value == ""


@register.filter
def money(value: Any, currency: str = "USD") -> str:
    return formatting.MISSING if _missing(value) else formatting.money_text(value, currency)


@register.filter
def unit_money(value: Any, currency: str = "USD") -> str:
    """A unit price such as the cost of 1M output tokens, which cents alone would often round to 0."""
    return formatting.MISSING if _missing(value) else formatting.unit_money_text(value, currency)


@register.filter
def pct(value: Any, places: int | str = 1) -> str:
    return formatting.MISSING if _missing(value) else formatting.percent_text(value, int(places))


@register.filter
def ms(value: Any) -> str:
    return formatting.MISSING if _missing(value) else formatting.measured_ms_text(value)


@register.filter
def change_pct(value: Any, places: int | str = 1) -> str:
    """A relative change with its sign: 0.05 → "+5.0%", −0.021 → "−2.1%"."""
    return formatting.MISSING if _missing(value) else formatting.change_text(value, int(places))


@register.filter
def ratio(value: Any) -> str:
    return formatting.MISSING if _missing(value) else f"{formatting.fixed(value, 2)}×"


@register.filter
def number(value: Any, places: int | str = 1) -> str:
    return formatting.MISSING if _missing(value) else formatting.fixed(value, int(places), grouped=True)


@register.filter
def months(value: Any) -> str:
    """A payback period: '3.2 months'; 'immediately' for 0 (a saving switch with no one-time cost, see
    roi.ModelEconomics.pays_back_immediately); '—' when there is none."""
    if _missing(value):
        return formatting.MISSING
    if Decimal(str(value)) == 0:
        return _("immediately")
    return _("%(months)s months") % {"months": formatting.fixed(value, 1, grouped=True)}
