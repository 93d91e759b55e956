"""Display formatting. Money stays Decimal until here; JPY shows no decimals, other currencies two."""

from decimal import ROUND_HALF_UP, Decimal

from django import template

register = template.Library()

ZERO_DECIMAL_CURRENCIES = {"JPY", "KRW"}
SYMBOLS = {"USD": "$", "EUR": "€", "JPY": "¥", "GBP": "£"}


@register.filter
def money(value, currency="USD"):
    if value is None or value == "":
        return "—"
    places = Decimal(1) if currency in ZERO_DECIMAL_CURRENCIES else Decimal("0.01")
    amount = Decimal(value).quantize(places, rounding=ROUND_HALF_UP)
    sign = "−" if amount < 0 else ""
    digits = f"{abs(amount):,.{0 if places == 1 else 2}f}"
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{digits}" if symbol else f"{sign}{digits} {currency}"


@register.filter
def pct(value, places=1):
    if value is None:
        return "—"
    return f"{float(value) * 100:.{int(places)}f}%"


@register.filter
def ms(value):
    if value is None:
        return "—"
    value = float(value)
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


@register.filter
def ratio(value):
    return "—" if value is None else f"{float(value):.2f}×"


@register.filter
def number(value, places=1):
    if value is None:
        return "—"
    return f"{Decimal(value):,.{int(places)}f}"
