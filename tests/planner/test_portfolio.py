"""The portfolio: every request a user may see, its recommendation and money, totals, blocked targets, CSV.

Figures as in test_dashboard: "Switch" saves $280.32 a month for a $1,000.00096 one-time cost
(5 → 1 replicas, $350.40 → $70.08); "Keep" has 20 req/s at peak, one replica either way ($70.08).
"""

import csv
import io
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.urls import reverse

from planner import services
from planner.models import HardwareProfile, PocRequest, PocRequestSummary
from tests.planner.factories import measured_request, sweep

SWITCH = [(0.90, sweep(20)), (0.89, sweep(10))]
BLOCKED = [(0.90, sweep(40)), (0.80, sweep(10))]


@pytest.fixture
def portfolio(user, cpu_hardware, django_user_model):
    bob = django_user_model.objects.create_user("bob", password="pw")
    yen = HardwareProfile.objects.create(
        name="CPU, Tokyo", device_kind="cpu", price_per_hour=Decimal("15"), currency="JPY"
    )
    make = measured_request
    running = make(owner=user, hardware=cpu_hardware, title="Running", models=SWITCH, finish=False)
    PocRequest.objects.filter(pk=running.pk).update(status=PocRequest.Status.RUNNING, progress=0.5)
    return {
        "switch": make(
            owner=user, hardware=cpu_hardware, title="Switch", models=SWITCH, engineering_hours=10
        ),
        "keep": make(
            owner=user, hardware=cpu_hardware, title="Keep", models=SWITCH, requests_per_day=864_000
        ),
        "blocked": make(owner=user, hardware=cpu_hardware, title="Blocked", models=BLOCKED),
        "running": running,
        "bob": make(owner=bob, hardware=cpu_hardware, title="Bob's", models=SWITCH, engineering_hours=10),
        "yen": make(
            owner=bob,
            hardware=yen,
            title="=HYPERLINK(evil)",
            models=SWITCH,
            engineering_hours=10,
            engineering_rate=Decimal(10_000),
        ),
    }


def _ids(body: str, portfolio: dict) -> set[str]:
    return {name for name, r in portfolio.items() if f'id="request-{r.pk}"' in body}


def _section(body: str, element_id: str, length: int = 1200) -> str:
    start = body.index(f'id="{element_id}"')
    return body[start : start + length]


def test_summaries_hold_the_recommendation_and_the_money(portfolio):
    s = PocRequestSummary.objects.get(request=portfolio["switch"])
    assert s.outcome == "switch" and s.candidate_label == "quantize.dynamic-int8"
    assert s.candidate == portfolio["switch"].candidates.get(position=1)
    assert s.baseline_monthly_cost == Decimal("350.40") and s.monthly_cost == Decimal("70.08")
    assert s.monthly_savings == Decimal("280.32") and s.one_time_cost == Decimal("1000.000960")
    assert s.payback_months == Decimal("3.567355") and s.roi == Decimal("2.363837")
    keep = PocRequestSummary.objects.get(request=portfolio["keep"])
    assert keep.outcome == "keep" and keep.monthly_savings == 0 and keep.payback_months is None
    blocked = PocRequestSummary.objects.get(request=portfolio["blocked"])
    assert blocked.outcome == "blocked" and blocked.candidate is None
    assert blocked.blocking == {
        "p95": {"target_ms": "30.00", "best_ms": "40.0", "candidate": "baseline"},
        "accuracy": {"floor": "0.873", "best": "0.8", "candidate": "quantize.dynamic-int8"},
    }
    assert not PocRequestSummary.objects.filter(request=portfolio["running"]).exists()


def test_a_user_sees_their_requests_with_recommendation_savings_and_payback(client_logged_in, portfolio):
    body = client_logged_in.get(reverse("planner:portfolio")).content.decode()
    assert _ids(body, portfolio) == {"switch", "keep", "blocked", "running"}
    row = _section(body, f"request-{portfolio['switch'].pk}")
    row = row[: row.index("</tr>")]
    for figure in ["Finished", "quantize.dynamic-int8", "$280.32", "$1,000.00", "3.6 months", "236%"]:
        assert figure in row, figure
    assert "Keep the current model" in _section(body, f"request-{portfolio['keep'].pk}")
    assert "No candidate meets the targets" in _section(body, f"request-{portfolio['blocked'].pk}")
    assert "Running" in _section(body, f"request-{portfolio['running'].pk}")


def test_totals_across_recommended_candidates(client_logged_in, portfolio):
    body = client_logged_in.get(reverse("planner:portfolio")).content.decode()
    total = _section(body, "total-USD", 2000)
    assert "$280.32" in total  # only the switch saves
    assert "across 1 recommended switch" in total
    assert "serving cost $420.48 → $140.16 a month" in total  # 350.40 + 70.08 → 70.08 × 2; the difference
    assert "$1,000.00" in total and "Combined payback: 3.6 months" in total and "$3,363.84" in total
    counts = _section(body, "portfolio-counts")
    assert "1 switch · 1 keep · 1 blocked · 1 without a recommendation" in counts


def test_staff_see_everyone_and_currencies_are_never_added(client, django_user_model, portfolio):
    client.force_login(django_user_model.objects.create_user("boss", password="pw", is_staff=True))
    body = client.get(reverse("planner:portfolio")).content.decode()
    assert _ids(body, portfolio) == set(portfolio)
    assert "$560.64" in _section(body, "total-USD")  # two switches at $280.32
    # ¥54,750 → ¥10,950 a month saves ¥43,800; one-time 10 h × ¥10,000 + 0.01 × ¥15.
    yen = _section(body, "total-JPY", 2000)
    assert "¥43,800" in yen and "¥100,000" in yen and "$" not in yen[: yen.index("Combined payback")]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "running"}, {"running"}),
        ({"status": "succeeded"}, {"switch", "keep", "blocked"}),
        ({"outcome": "blocked"}, {"blocked"}),
        ({"outcome": "switch"}, {"switch"}),
        ({"outcome": "pending"}, {"running"}),
        ({"status": "nonsense"}, {"switch", "keep", "blocked", "running"}),
    ],
)
def test_filters(client_logged_in, portfolio, query, expected):
    body = client_logged_in.get(reverse("planner:portfolio"), query).content.decode()
    assert _ids(body, portfolio) == expected


def test_owner_filter_for_staff_and_only_their_teams_owners_for_others(
    client, client_logged_in, portfolio, user
):
    bob = portfolio["bob"].owner
    body = client_logged_in.get(reverse("planner:portfolio"), {"owner": bob.pk}).content.decode()
    assert _ids(body, portfolio) == {"switch", "keep", "blocked", "running"}  # not bob's
    assert "Select a valid choice" in _section(body, "portfolio-filters")
    staff = type(user).objects.create_user("boss", password="pw", is_staff=True)
    client.force_login(staff)
    body = client.get(reverse("planner:portfolio"), {"owner": bob.pk}).content.decode()
    assert _ids(body, portfolio) == {"bob", "yen"}


def test_blocked_requests_are_listed_with_the_blocking_target(client_logged_in, portfolio):
    body = client_logged_in.get(reverse("planner:portfolio")).content.decode()
    blocked = _section(body, f"blocked-{portfolio['blocked'].pk}")
    assert "Blocked" in blocked
    assert "p95 latency target 30 ms: the fastest model that keeps the accuracy floor (baseline)" in blocked
    assert "takes 40.0 ms at batch 1, 10.0 ms over." in blocked
    assert "Accuracy floor 87.3%" in blocked and "reaches 80.0%, 7.3 points below." in blocked


def test_pages(client_logged_in, portfolio, monkeypatch):
    from planner import views

    monkeypatch.setattr(views, "PORTFOLIO_PAGE_SIZE", 3)
    first = client_logged_in.get(reverse("planner:portfolio"), {"status": ""}).content.decode()
    second = client_logged_in.get(reverse("planner:portfolio"), {"page": 2}).content.decode()
    assert len(_ids(first, portfolio)) == 3 and len(_ids(second, portfolio)) == 1
    assert "Page 1 of 2" in first and "?status=&amp;page=2" in first


def _csv(response) -> list[dict[str, str]]:
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


def test_portfolio_csv_follows_the_filters(client, client_logged_in, portfolio, user):
    rows = _csv(client_logged_in.get(reverse("planner:portfolio-csv")))
    assert {r["title"] for r in rows} == {"Switch", "Keep", "Blocked", "Running"}
    switch = next(r for r in rows if r["title"] == "Switch")
    assert switch["outcome"] == "switch" and switch["recommended_candidate"] == "quantize.dynamic-int8"
    assert switch["monthly_savings"] == "280.32" and switch["one_time_cost"] == "1000.00"
    assert switch["payback_months"] == "3.57" and switch["roi_over_horizon_pct"] == "236.4"
    assert switch["baseline_monthly_cost"] == "350.40" and switch["currency"] == "USD"
    blocked = next(r for r in rows if r["title"] == "Blocked")
    assert "takes 40.0 ms at batch 1" in blocked["blocking"]
    assert next(r for r in rows if r["title"] == "Running")["outcome"] == "pending"
    only = _csv(client_logged_in.get(reverse("planner:portfolio-csv"), {"outcome": "keep"}))
    assert [r["title"] for r in only] == ["Keep"]
    client.force_login(type(user).objects.create_user("boss", password="pw", is_staff=True))
    yen = next(r for r in _csv(client.get(reverse("planner:portfolio-csv"))) if r["currency"] == "JPY")
    assert yen["title"] == "'=HYPERLINK(evil)"  # a spreadsheet shows it as text, never runs it
    assert yen["monthly_savings"] == "43800" and yen["one_time_cost"] == "100000"


def test_portfolio_queries_do_not_grow_with_requests(client, django_user_model, cpu_hardware):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for n in (3, 30):
        owner = django_user_model.objects.create_user(f"owner{n}", password="pw", is_staff=True)
        for i in range(n):
            outcome_models = BLOCKED if i % 3 == 0 else SWITCH
            measured_request(owner=owner, hardware=cpu_hardware, title=f"r{i}", models=outcome_models)
        client.force_login(owner)
        for url in [reverse("planner:portfolio"), reverse("planner:portfolio-csv")]:
            with CaptureQueriesContext(connection) as queries:
                response = client.get(url, {"owner": owner.pk})
                if response.streaming:
                    b"".join(response.streaming_content)
            assert response.status_code == 200
            counts.append(len(queries))
    assert counts[:2] == counts[2:] and max(counts) <= 10


def test_summaries_are_recomputed_by_the_management_command(portfolio, cpu_hardware):
    HardwareProfile.objects.filter(pk=cpu_hardware.pk).update(price_per_hour=Decimal("0.2"))
    PocRequestSummary.objects.filter(request=portfolio["keep"]).delete()
    out = io.StringIO()
    call_command("refresh_summaries", stdout=out)
    assert "5 summaries written." in out.getvalue()  # the finished ones; not "running"
    assert PocRequestSummary.objects.get(request=portfolio["switch"]).monthly_savings == Decimal("584")
    assert PocRequestSummary.objects.filter(request=portfolio["keep"]).exists()
    call_command("refresh_summaries", "--request", str(portfolio["switch"].pk), stdout=out)
    assert PocRequestSummary.objects.count() == 5


def test_a_summary_goes_when_its_request_is_no_longer_finished(portfolio):
    PocRequest.objects.filter(pk=portfolio["switch"].pk).update(status=PocRequest.Status.FAILED)
    assert services.poc_request_summary_refresh(request_id=portfolio["switch"].pk) is None
    assert not PocRequestSummary.objects.filter(request=portfolio["switch"]).exists()


def test_portfolio_needs_a_login(client, db):
    response = client.get(reverse("planner:portfolio-csv"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_a_price_changed_in_the_admin_is_reflected_in_the_portfolio(client, django_user_model, portfolio):
    admin = django_user_model.objects.create_superuser("root", password="pw")
    client.force_login(admin)
    hardware = portfolio["switch"].hardware
    response = client.post(
        reverse("admin:planner_hardwareprofile_change", args=[hardware.pk]),
        {
            "name": hardware.name,
            "device_kind": hardware.device_kind,
            "price_per_hour": "0.2",
            "currency": "USD",
            "power_watts": "65",
            "notes": "",
        },
    )
    assert response.status_code == 302
    # 5 → 1 replicas at $0.20/h: $730.00 → $146.00 a month.
    assert PocRequestSummary.objects.get(request=portfolio["switch"]).monthly_savings == Decimal("584")


def test_a_switch_the_current_model_cannot_match_has_no_savings_and_stays_out_of_the_payback(
    client_logged_in, user, cpu_hardware
):
    # The baseline misses the 30 ms target at every batch size, so it has no serving cost to compare with.
    measured_request(owner=user, hardware=cpu_hardware, title="Must switch", models=BLOCKED[:1] + SWITCH[1:])
    measured_request(owner=user, hardware=cpu_hardware, title="Switch", models=SWITCH, engineering_hours=10)
    from planner import selectors
    from planner.dashboard import portfolio as portfolio_figures

    (total,) = portfolio_figures.portfolio_totals(requests=selectors.portfolio_requests(user=user))
    assert total.switching == 2 and total.without_baseline_cost == 1
    assert total.baseline_monthly_cost - total.monthly_cost == total.monthly_savings == Decimal("280.32")
    assert total.one_time_cost == Decimal("5000.001920")  # both switches (40 h and 10 h at $100)
    assert total.payback_months == Decimal("1000.000960") / Decimal("280.32")  # the priced one only
    body = client_logged_in.get(reverse("planner:portfolio")).content.decode()
    assert "current model misses the target" in body and "1 recommendation has no savings figure" in body
