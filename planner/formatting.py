"""The one number formatter: every figure the pages, sentences, charts and exports show is rounded here,
half up (2.25 → "2.3", 2,523.245 → "2,523.25"), and a figure that was never measured shows as the dash
"—", never as 0. Pure: no Django, so roi-adjacent code and tests can use it anywhere."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

Number = Decimal | float | int | str

MISSING = "—"
MINUS = "−"  # the typographic minus, as in "−$12.00"
ZERO_DECIMAL_CURRENCIES = frozenset({"JPY"})
SYMBOLS = {"USD": "$", "EUR": "€", "JPY": "¥", "GBP": "£"}


def exact(value: Number) -> Decimal:
    """``value`` as a Decimal; a float goes through str() so 0.15 is 0.15, not 0.1499…."""
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


def rounded(value: Number, places: int) -> Decimal:
    """``value`` rounded half up to ``places`` decimal places."""
    return exact(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def fixed(value: Number | None, places: int, *, grouped: bool = False) -> str:
    """``value`` with exactly ``places`` decimals, rounded half up ("—" when None); ``grouped`` adds
    thousands separators. A negative amount that rounds to zero shows as 0, not −0."""
    if value is None:
        return MISSING
    amount = rounded(value, places)
    if amount == 0:
        amount = abs(amount)
    return f"{amount:,.{places}f}" if grouped else f"{amount:.{places}f}"


def currency_places(currency: str) -> int:
    """Decimal places of the currency's minor unit: JPY has none, the others two."""
    return 0 if currency in ZERO_DECIMAL_CURRENCIES else 2


def quantize_money(value: Number, currency: str) -> Decimal:
    """The amount as shown: rounded half up to the currency's minor unit (exports and charts use it too)."""
    return rounded(value, currency_places(currency))


def quantize_unit_cost(value: Number, currency: str) -> Decimal:
    """A unit price (per 1M output tokens) as shown: like money from one unit up; below that with two places
    more (rounded half up, trailing zeros beyond the minor unit dropped), so $0.0034 does not show as $0.00."""
    places = currency_places(currency)
    if abs(exact(value)) >= 1:
        return quantize_money(value, currency)
    amount = rounded(value, places + 2)
    while -int(amount.as_tuple().exponent) > places and amount.as_tuple().digits[-1] == 0:
        amount = amount.quantize(Decimal(1).scaleb(int(amount.as_tuple().exponent) + 1))
    return amount


def _with_symbol(amount: Decimal, currency: str, places: int) -> str:
    sign = MINUS if amount < 0 else ""
    digits = f"{abs(amount):,.{places}f}"
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{digits}" if symbol else f"{sign}{digits} {currency}"


def money_text(value: Number | None, currency: str) -> str:
    """An amount in the currency: "$1,234.57", "¥1,235", "−€3.00"; "—" when None."""
    if value is None:
        return MISSING
    return _with_symbol(quantize_money(value, currency), currency, currency_places(currency))


def unit_money_text(value: Number | None, currency: str) -> str:
    """A unit price (see quantize_unit_cost): "$0.0034", "$2.50"; "—" when None."""
    if value is None:
        return MISSING
    amount = quantize_unit_cost(value, currency)
    places = max(currency_places(currency), -int(amount.as_tuple().exponent))
    return _with_symbol(amount, currency, places)


def percent_text(fraction: Number | None, places: int = 1) -> str:
    """A fraction as a percentage: 0.9025 → "90.3%"; "—" when None."""
    if fraction is None:
        return MISSING
    return f"{fixed(exact(fraction) * 100, places)}%"


def ms_text(value: Number | None) -> str:
    """A target in milliseconds as a person typed it: "33 ms", "7.5 ms" (not 33.00 or 3.3E+1)."""
    if value is None:
        return MISSING
    return f"{number_text(value)} ms"


def measured_ms_text(value: Number | None) -> str:
    """A measured time: two decimals under 10 ms, one above ("7.25 ms", "31.0 ms")."""
    if value is None:
        return MISSING
    return f"{fixed(value, 2 if exact(value) < 10 else 1)} ms"


def number_text(value: Number | None) -> str:
    """A setting as a person typed it: 10, not 10.00 or 1E+1."""
    if value is None:
        return MISSING
    return f"{exact(value).normalize():f}"


def perplexity_text(value: Number | None) -> str:
    return fixed(value, 2)


def change_text(value: Number | None, places: int = 1) -> str:
    """A relative change with its sign: 0.05 → "+5.0%", −0.021 → "−2.1%", a change that rounds to zero
    → "±0.0%"."""
    if value is None:
        return MISSING
    shown = fixed(abs(exact(value)) * 100, places)
    if Decimal(shown) == 0:
        return f"±{shown}%"
    return f"{'+' if exact(value) > 0 else MINUS}{shown}%"


def interval_text(value: Number | None, low: Number | None, high: Number | None) -> str:
    """A measured time with its interval: "12.3 ms (11.9–12.8)", with the places of measured_ms_text; the
    bare time when it has no bounds; "—" when None."""
    if value is None:
        return MISSING
    if low is None or high is None:
        return measured_ms_text(value)
    places = 2 if exact(value) < 10 else 1
    return f"{fixed(value, places)} ms ({fixed(low, places)}–{fixed(high, places)})"


def speedup_text(value: Number | None, low: Number | None = None, high: Number | None = None) -> str:
    """A speedup with its interval: "1.46× (1.41–1.52)"; "1.46×" without bounds; "—" when None."""
    if value is None:
        return MISSING
    if low is None or high is None:
        return f"{fixed(value, 2)}×"
    return f"{fixed(value, 2)}× ({fixed(low, 2)}–{fixed(high, 2)})"
