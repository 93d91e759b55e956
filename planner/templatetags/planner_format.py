"""Display formatting. Money stays Decimal until here; JPY shows no decimals, other currencies two."""

from decimal import ROUND_HALF_UP, Decimal

from django import template
from django.utils.translation import gettext as _

register = template.Library()


def _missing(value) -> bool:
    # "" is what the template engine gives for an attribute of a missing object (a candidate with no
    # figures yet): shown as a dash, like None.
    return value is None or value == ""


ZERO_DECIMAL_CURRENCIES = {"JPY", "KRW"}
SYMBOLS = {"USD": "$", "EUR": "€", "JPY": "¥", "GBP": "£"}


def money_places(currency: str) -> int:
    return 0 if currency in ZERO_DECIMAL_CURRENCIES else 2


def quantize_money(value, currency: str) -> Decimal:
    """The amount as shown: rounded half up to the currency's minor unit (exports and charts use this too)."""
    places = money_places(currency)
    return Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def quantize_unit_cost(value, currency: str) -> Decimal:
    """A unit price (per 1M output tokens) as shown: like money from one unit up; below that with two places
    more (rounded half up, trailing zeros beyond the minor unit dropped), so $0.0034 does not show as $0.00."""
    places = money_places(currency)
    if abs(Decimal(value)) >= 1:
        return quantize_money(value, currency)
    amount = Decimal(value).quantize(Decimal(1).scaleb(-places - 2), rounding=ROUND_HALF_UP)
    while -amount.as_tuple().exponent > places and amount.as_tuple().digits[-1] == 0:
        amount = amount.quantize(Decimal(1).scaleb(amount.as_tuple().exponent + 1))
    return amount


def _money_text(amount: Decimal, currency: str, places: int) -> str:
    sign = "−" if amount < 0 else ""
    digits = f"{abs(amount):,.{places}f}"
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{digits}" if symbol else f"{sign}{digits} {currency}"


@register.filter
def money(value, currency="USD"):
    if _missing(value):
        return "—"
    return _money_text(quantize_money(value, currency), currency, money_places(currency))


@register.filter
def unit_money(value, currency="USD"):
    """A unit price such as the cost of 1M output tokens, which cents alone would often round to 0."""
    if _missing(value):
        return "—"
    amount = quantize_unit_cost(value, currency)
    return _money_text(amount, currency, max(money_places(currency), -amount.as_tuple().exponent))


@register.filter
def pct(value, places=1):
    if _missing(value):
        return "—"
    return f"{float(value) * 100:.{int(places)}f}%"


@register.filter
def ms(value):
    if _missing(value):
        return "—"
    value = float(value)
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


@register.filter
def change_pct(value, places=1):
    """A relative change with its sign: 0.05 → "+5.0%", −0.021 → "−2.1%"."""
    if _missing(value):
        return "—"
    shown = f"{abs(float(value)) * 100:.{int(places)}f}"
    if float(shown) == 0:
        return f"±{shown}%"
    return f"{'+' if value > 0 else '−'}{shown}%"


@register.filter
def ratio(value):
    return "—" if _missing(value) else f"{float(value):.2f}×"


@register.filter
def number(value, places=1):
    if _missing(value):
        return "—"
    # Half up, like money ("47.45" → "47.5"); a float goes through str() so 0.15 is 0.15, not 0.1499….
    exact = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    return f"{exact.quantize(Decimal(1).scaleb(-int(places)), rounding=ROUND_HALF_UP):,}"


@register.filter
def months(value):
    """A payback period: '3.2 months'; '—' when there is none."""
    if _missing(value):
        return "—"
    return _("%(months)s months") % {"months": f"{Decimal(value):,.1f}"}
