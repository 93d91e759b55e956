"""{% load review_tags %}: the portfolio's review sections as one inclusion tag (settings: TEMPLATES)."""

from __future__ import annotations

from typing import Any

from django import template

from planner.reviews.portfolio import review_sections

register = template.Library()


@register.inclusion_tag("planner/review_portfolio.html")
def review_portfolio(requests: Any) -> dict[str, Any]:
    """``requests``: the portfolio's filtered queryset (the page's ``page.paginator.object_list``)."""
    return review_sections(requests=requests)
