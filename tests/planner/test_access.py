"""Accounts, roles and teams, through HTTP: login everywhere, what each role may do, other teams' requests
not found on any URL, decisions, the team choice when filing, CSRF on every form.

Roles are the groups of migration 0005. The world: teams Alpha and Beta; in Alpha a requester, a manager
and an engineer; in Beta a requester and a manager; a user in no team with no role; a staff user in no
team. Alpha has one finished request (filed by its requester) and Beta one.
"""

import csv
import io
import re
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from planner.models import HardwareProfile, PocRequest, PocRequestSummary, Team
from planner.urls import planner_patterns
from tests.planner.factories import join_team, measured_request, sweep
from tests.planner.test_views import valid_post

SWITCH = [(0.90, sweep(20)), (0.89, sweep(10))]


@pytest.fixture
def world(db, django_user_model, cpu_hardware, sent):
    def make(name, team=None, *roles, **extra):
        user = django_user_model.objects.create_user(name, password="pw", **extra)
        return join_team(user, team, *roles) if team else user

    users = {
        "requester": make("req-a", "Alpha", "requester"),
        "manager": make("mgr-a", "Alpha", "manager"),
        "engineer": make("eng-a", "Alpha", "engineer"),
        "beta requester": make("req-b", "Beta", "requester"),
        "beta manager": make("mgr-b", "Beta", "manager"),
        "nobody": make("nobody"),
        "staff": make("boss", None, is_staff=True),
    }
    alpha, beta = Team.objects.get(name="Alpha"), Team.objects.get(name="Beta")
    alpha_request = measured_request(
        owner=users["requester"], team=alpha, hardware=cpu_hardware, title="Alpha tickets", models=SWITCH
    )
    beta_request = measured_request(
        owner=users["beta requester"], team=beta, hardware=cpu_hardware, title="Beta tickets", models=SWITCH
    )
    return {
        "users": users,
        "alpha": alpha,
        "beta": beta,
        "request": alpha_request,
        "beta_request": beta_request,
    }


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _urls(poc_request: PocRequest, hardware_pk: int) -> dict[str, str]:
    """Every planner URL, by name, with the ids of this request, its recommended candidate and a hardware."""
    candidate = poc_request.candidates.get(position=1)
    values = {"pk": poc_request.pk, "candidate_pk": candidate.pk, "hardware_pk": hardware_pk}
    return {
        p.name: reverse(f"planner:{p.name}", kwargs={k: values[k] for k in p.pattern.converters})
        for p in planner_patterns
    }


def _request_scoped(urls: dict[str, str]) -> dict[str, str]:
    scoped = {name: url for name, url in urls.items() if "/requests/" in url and "/new/" not in url}
    scoped["candidate-measurement (json)"] = scoped["candidate-measurement"] + "?format=json"
    return scoped


# ---------------------------------------------------------------------------------------------------------
# Login


def test_every_page_but_the_login_page_needs_a_login(world, cpu_hardware):
    client = Client()
    login = reverse("login")
    for name, url in _urls(world["request"], cpu_hardware.pk).items():
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code == 302 and response.url.startswith(login + "?next="), (name, method)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))
    assert client.get(login).status_code == 200


def test_logging_in_through_the_login_page_lands_a_requester_on_their_teams_requests(world):
    client = Client()
    response = client.post(reverse("login"), {"username": "req-a", "password": "pw"}, follow=True)
    body = response.content.decode()
    assert response.status_code == 200 and f'id="request-{world["request"].pk}"' in body
    assert f'id="request-{world["beta_request"].pk}"' not in body


# ---------------------------------------------------------------------------------------------------------
# What each role may do

ALL = ["requester", "manager", "engineer", "beta requester", "beta manager", "nobody", "staff"]
MATRIX = {
    # url name: {role: status}; the request-scoped pages are those of Alpha's request.
    "portfolio": {"manager": 200, "beta manager": 200, "staff": 200}
    | dict.fromkeys(["requester", "engineer", "beta requester", "nobody"], 403),
    "portfolio-csv": {"manager": 200, "beta manager": 200, "staff": 200}
    | dict.fromkeys(["requester", "engineer", "beta requester", "nobody"], 403),
    "request-create": {"requester": 200, "beta requester": 200, "staff": 200}
    | dict.fromkeys(["manager", "engineer", "beta manager", "nobody"], 403),
    "technique-list": dict.fromkeys(ALL, 200),
    "hardware-list": {"engineer": 200, "staff": 200}
    | dict.fromkeys(["requester", "manager", "beta requester", "beta manager", "nobody"], 403),
    "hardware-create": {"engineer": 200, "staff": 200}
    | dict.fromkeys(["requester", "manager", "beta requester", "beta manager", "nobody"], 403),
    "request-detail": dict.fromkeys(["requester", "manager", "engineer", "staff"], 200)
    | dict.fromkeys(["beta requester", "beta manager", "nobody"], 404),
    "request-csv": dict.fromkeys(["requester", "manager", "engineer", "staff"], 200)
    | dict.fromkeys(["beta requester", "beta manager", "nobody"], 404),
}


@pytest.mark.parametrize("role", ALL)
def test_access_matrix(world, cpu_hardware, role):
    client = _client(world["users"][role])
    urls = _urls(world["request"], cpu_hardware.pk)
    for name, expected in MATRIX.items():
        response = client.get(urls[name])
        assert response.status_code == expected[role], (name, role, response.status_code)
    home = client.get(reverse("planner:request-list"))
    if role in ("manager", "beta manager", "staff"):
        assert home.status_code == 302 and home.url == reverse("planner:portfolio")
    else:
        assert home.status_code == 200 and 'id="nav-portfolio"' not in home.content.decode()


def test_refusals_say_what_to_do(world):
    body = _client(world["users"]["requester"]).get(reverse("planner:portfolio")).content.decode()
    assert "The portfolio is for managers." in body and "ask an administrator for the manager role" in body
    body = _client(world["users"]["manager"]).get(reverse("planner:request-create")).content.decode()
    assert "Ask an administrator to add you to a team with the requester role." in body
    body = _client(world["users"]["engineer"]).get(reverse("planner:request-list")).content.decode()
    assert 'id="nav-new-request"' not in body and 'id="nav-hardware"' in body


def test_a_user_without_a_team_is_told_to_ask_for_one(world, django_user_model):
    nobody = _client(world["users"]["nobody"])
    response = nobody.get(reverse("planner:request-create"))
    assert response.status_code == 403 and "Ask an administrator" in response.content.decode()
    body = nobody.get(reverse("planner:request-list")).content.decode()
    assert "ask an administrator to add you to a team" in body and "Alpha tickets" not in body
    # A requester role but no team: the same clear page, not a 500.
    loner = django_user_model.objects.create_user("loner", password="pw")
    loner.groups.add(*world["users"]["requester"].groups.all())
    response = _client(loner).get(reverse("planner:request-create"))
    assert response.status_code == 403
    assert (
        "You are not in a team yet: ask an administrator to add you to a team." in response.content.decode()
    )


def test_the_home_page_lists_only_the_teams_requests(world):
    body = _client(world["users"]["beta requester"]).get(reverse("planner:request-list")).content.decode()
    assert f'id="request-{world["beta_request"].pk}"' in body and "Beta tickets" in body
    assert f'id="request-{world["request"].pk}"' not in body and "Alpha tickets" not in body


def test_managers_see_their_teams_requests_in_the_portfolio_and_staff_see_all(world):
    ids = {world["request"].pk: "Alpha tickets", world["beta_request"].pk: "Beta tickets"}

    def shown(role):
        body = _client(world["users"][role]).get(reverse("planner:portfolio")).content.decode()
        return {title for pk, title in ids.items() if f'id="request-{pk}"' in body}

    def exported(role):
        response = _client(world["users"][role]).get(reverse("planner:portfolio-csv"))
        text = b"".join(response.streaming_content).decode("utf-8")[1:]
        return {row["title"] for row in csv.DictReader(io.StringIO(text))}

    assert shown("manager") == exported("manager") == {"Alpha tickets"}
    assert shown("beta manager") == exported("beta manager") == {"Beta tickets"}
    assert shown("staff") == exported("staff") == {"Alpha tickets", "Beta tickets"}
    # The owner filter offers only the owners of requests the manager may see.
    beta_owner = world["users"]["beta requester"]
    body = _client(world["users"]["manager"]).get(reverse("planner:portfolio"), {"owner": beta_owner.pk})
    assert "Select a valid choice" in body.content.decode()


def test_team_lists_keep_their_query_count(world, cpu_hardware):
    """The team filter is a subquery: the portfolio, its CSV and the requester's list stay bounded."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    manager, requester = _client(world["users"]["manager"]), _client(world["users"]["requester"])
    pages = [
        (manager, "planner:portfolio"),
        (manager, "planner:portfolio-csv"),
        (requester, "planner:request-list"),
        (manager, "planner:request-detail"),
    ]
    counts = []
    for n in (2, 20):
        for _i in range(n):
            measured_request(
                owner=world["users"]["requester"], team=world["alpha"], hardware=cpu_hardware, models=SWITCH
            )
        for client, name in pages:
            url = reverse(name, args=[world["request"].pk] if name.endswith("detail") else [])
            with CaptureQueriesContext(connection) as queries:
                response = client.get(url)
                if response.streaming:
                    b"".join(response.streaming_content)
            assert response.status_code == 200, name
            counts.append((name, len(queries)))
    # The portfolio's review sections (realised savings, reviews due, changed recommendations) read two more
    # tables once each: still a fixed number of queries, whatever the number of requests.
    assert counts[: len(pages)] == counts[len(pages) :] and max(c for _, c in counts) <= 12, counts


# ---------------------------------------------------------------------------------------------------------
# Another team's request is not found, on every URL that names one


@pytest.mark.parametrize("role", ["beta requester", "beta manager", "nobody"])
def test_another_teams_request_is_not_found_on_any_url(world, cpu_hardware, role):
    client = _client(world["users"][role])
    for name, url in _request_scoped(_urls(world["request"], cpu_hardware.pk)).items():
        statuses = {client.get(url).status_code, client.post(url, {"decision": "approved"}).status_code}
        # A method a URL does not take may answer 405; every other answer is 404, never the page.
        assert statuses <= {404, 405} and 404 in statuses, (name, statuses)
    # Alpha's candidate under Beta's request id is not found either.
    candidate = world["request"].candidates.get(position=1)
    url = reverse("planner:candidate-measurement", args=[world["beta_request"].pk, candidate.pk])
    assert _client(world["users"]["beta manager"]).get(url).status_code == 404
    world["request"].refresh_from_db()
    assert world["request"].decision == ""


def test_the_uploaded_dataset_is_never_served(
    world, tiny_model_dir, sent, django_capture_on_commit_callbacks
):
    client = _client(world["users"]["requester"])
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("planner:request-create"), valid_post(world["request"].hardware))
    filed = PocRequest.objects.get(title="Support tickets")
    assert filed.dataset_file and filed.team == world["alpha"]
    url = settings.MEDIA_URL + filed.dataset_file.name
    for role in ("requester", "beta requester", "staff"):
        assert _client(world["users"][role]).get("/" + url).status_code == 404


# ---------------------------------------------------------------------------------------------------------
# Decisions


def _decide(client, poc_request, decision="approved", comment="Ship the int8 model in Q3."):
    return client.post(
        reverse("planner:request-decide", args=[poc_request.pk]), {"decision": decision, "comment": comment}
    )


def test_a_manager_approves_and_everyone_in_the_team_sees_it(world):
    manager, poc_request = world["users"]["manager"], world["request"]
    detail = reverse("planner:request-detail", args=[poc_request.pk])
    assert 'id="decision-form"' in _client(manager).get(detail).content.decode()

    response = _decide(_client(manager), poc_request)
    assert response.status_code == 302 and response.url == detail
    poc_request.refresh_from_db()
    assert poc_request.decision == "approved" and poc_request.decided_by == manager
    assert poc_request.decision_comment == "Ship the int8 model in Q3." and poc_request.decided_at

    body = _client(world["users"]["requester"]).get(detail).content.decode()
    status = body[body.index('id="decision-status"') :][:400]
    assert "Approved" in status and "by mgr-a" in status and "Ship the int8 model in Q3." in body
    assert 'id="decision-form"' not in body  # read-only for a requester
    row = _client(manager).get(reverse("planner:portfolio")).content.decode()
    row = row[row.index(f'id="request-{poc_request.pk}"') :]
    assert "Approved" in row[: row.index("</tr>")]
    response = _client(manager).get(reverse("planner:portfolio-csv"))
    (exported,) = csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8")[1:]))
    assert exported["team"] == "Alpha" and exported["decision"] == "approved"
    assert exported["decided_by"] == "mgr-a" and exported["decision_comment"] == "Ship the int8 model in Q3."
    report = _client(manager).get(reverse("planner:request-report", args=[poc_request.pk])).content.decode()
    assert "Approved" in report


def test_a_requester_cannot_decide(world):
    response = _decide(_client(world["users"]["requester"]), world["request"])
    assert response.status_code == 403
    assert "Only a manager of the request&#x27;s team" in response.content.decode()
    world["request"].refresh_from_db()
    assert world["request"].decision == "" and world["request"].decided_by is None


def test_another_teams_manager_gets_404(world):
    assert _decide(_client(world["users"]["beta manager"]), world["request"]).status_code == 404
    world["request"].refresh_from_db()
    assert world["request"].decision == ""


def test_a_rejection_needs_a_comment_and_a_decision_can_be_changed(world):
    manager = _client(world["users"]["manager"])
    response = _decide(manager, world["request"], "rejected", "  ")
    assert (
        response.status_code == 200 and "Say why the recommendation is rejected." in response.content.decode()
    )
    world["request"].refresh_from_db()
    assert world["request"].decision == ""
    assert _decide(manager, world["request"], "rejected", "Too slow at peak.").status_code == 302
    assert _decide(manager, world["request"], "nonsense").status_code == 200
    world["request"].refresh_from_db()
    assert (
        world["request"].decision == "rejected" and world["request"].decision_comment == "Too slow at peak."
    )


def test_only_a_finished_request_can_be_decided(world, cpu_hardware):
    running = measured_request(
        owner=world["users"]["requester"],
        team=world["alpha"],
        hardware=cpu_hardware,
        models=SWITCH,
        finish=False,
    )
    PocRequest.objects.filter(pk=running.pk).update(status=PocRequest.Status.RUNNING)
    manager = _client(world["users"]["manager"])
    body = manager.get(reverse("planner:request-detail", args=[running.pk])).content.decode()
    assert 'id="decision-form"' not in body
    response = _decide(manager, running)
    assert response.status_code == 200
    assert (
        "Only a finished request can be approved or rejected; this one is Running."
        in response.content.decode()
    )
    running.refresh_from_db()
    assert running.decision == "" and running.decided_at is None


# ---------------------------------------------------------------------------------------------------------
# Filing: the team


def test_with_one_team_the_team_is_implied(world, tiny_model_dir, sent):
    client = _client(world["users"]["requester"])
    assert 'name="team"' not in client.get(reverse("planner:request-create")).content.decode()
    response = client.post(reverse("planner:request-create"), valid_post(world["request"].hardware))
    assert response.status_code == 302
    assert PocRequest.objects.get(title="Support tickets").team == world["alpha"]


def test_with_several_teams_the_user_picks_one_of_theirs(world, tiny_model_dir, sent):
    requester = join_team(world["users"]["requester"], "Gamma")
    gamma = Team.objects.get(name="Gamma")
    client = _client(requester)
    body = client.get(reverse("planner:request-create")).content.decode()
    select = body[body.index('name="team"') :]
    select = select[: select.index("</select>")]
    assert re.findall(r'<option value="(\d+)"', select) == [str(world["alpha"].pk), str(gamma.pk)]

    hardware = world["request"].hardware
    for team in (world["beta"].pk, "", "nonsense"):  # not theirs, none, not a team
        response = client.post(reverse("planner:request-create"), valid_post(hardware, team=str(team)))
        assert response.status_code == 200
        field = response.content.decode()
        assert 'id="field-team"' in field
        assert not PocRequest.objects.filter(title="Support tickets").exists(), team
    response = client.post(reverse("planner:request-create"), valid_post(hardware, team=str(gamma.pk)))
    assert response.status_code == 302
    assert PocRequest.objects.get(title="Support tickets").team == gamma


def test_a_team_choice_is_refused_when_it_is_not_the_users(world, tiny_model_dir, sent):
    requester = join_team(world["users"]["requester"], "Gamma")
    response = _client(requester).post(
        reverse("planner:request-create"), valid_post(world["request"].hardware, team=str(world["beta"].pk))
    )
    body = response.content.decode()
    section = body[body.index('id="field-team"') :]
    assert "Select a valid choice" in section[: section.index('id="field-', 10)]


# ---------------------------------------------------------------------------------------------------------
# Engineers: hardware profiles on the planner's own page (engineers are not staff, so never in the admin)


def test_an_engineer_adds_and_reprices_hardware_and_the_portfolio_follows(world, cpu_hardware):
    engineer = _client(world["users"]["engineer"])
    assert engineer.get(reverse("admin:index")).status_code == 302  # the admin is for staff only
    response = engineer.post(
        reverse("planner:hardware-create"),
        {"name": "CPU, 64 vCPU (test)", "device_kind": "cpu", "price_per_hour": "0.384", "currency": "USD"},
    )
    assert response.status_code == 302 and HardwareProfile.objects.filter(name="CPU, 64 vCPU (test)").exists()
    response = engineer.post(
        reverse("planner:hardware-edit", args=[cpu_hardware.pk]),
        {"name": cpu_hardware.name, "device_kind": "cpu", "price_per_hour": "0.2", "currency": "USD"},
    )
    assert response.status_code == 302
    # 5 → 1 replicas at $0.20/h: $730.00 → $146.00 a month.
    assert PocRequestSummary.objects.get(request=world["request"]).monthly_savings == Decimal("584")


def test_others_cannot_change_hardware(world, cpu_hardware):
    for role in ("requester", "manager", "nobody"):
        response = _client(world["users"][role]).post(
            reverse("planner:hardware-edit", args=[cpu_hardware.pk]),
            {"name": "free", "device_kind": "cpu", "price_per_hour": "0", "currency": "USD"},
        )
        assert response.status_code == 403 and "engineer role" in response.content.decode()
    cpu_hardware.refresh_from_db()
    assert cpu_hardware.name == "CPU, 2 vCPU"


# ---------------------------------------------------------------------------------------------------------
# CSRF


def test_posts_without_a_csrf_token_are_refused(world, cpu_hardware, tiny_model_dir, sent):
    def csrf_client(role):
        client = Client(enforce_csrf_checks=True)
        client.force_login(world["users"][role])
        return client

    manager = csrf_client("manager")
    assert _decide(manager, world["request"]).status_code == 403
    form = valid_post(world["request"].hardware)
    assert csrf_client("requester").post(reverse("planner:request-create"), form).status_code == 403
    hardware = {"name": "x", "device_kind": "cpu", "price_per_hour": "1", "currency": "USD"}
    assert csrf_client("engineer").post(reverse("planner:hardware-create"), hardware).status_code == 403
    assert csrf_client("requester").post(reverse("logout")).status_code == 403
    world["request"].refresh_from_db()
    assert world["request"].decision == "" and not PocRequest.objects.filter(title="Support tickets").exists()
    assert not HardwareProfile.objects.filter(name="x").exists()

    # With the token the page hands out, the same post goes through.
    page = manager.get(reverse("planner:request-detail", args=[world["request"].pk])).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = manager.post(
        reverse("planner:request-decide", args=[world["request"].pk]),
        {"decision": "approved", "comment": "", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302


def test_every_post_form_in_the_templates_carries_the_csrf_token():
    templates = list((settings.BASE_DIR / "planner" / "templates").rglob("*.html"))
    forms = 0
    for template in templates:
        for form in re.findall(r"<form\b[^>]*>.*?</form>", template.read_text(), re.S | re.I):
            if re.search(r'method="post"', form, re.I):
                forms += 1
                assert "{% csrf_token %}" in form, template.name
    assert forms >= 5


# ---------------------------------------------------------------------------------------------------------
# Admin


def test_admin_shows_teams_and_the_team_and_decision_of_requests(world, client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="pw"))
    body = client.get(reverse("admin:planner_team_change", args=[world["alpha"].pk])).content.decode()
    assert "selectfilter" in body.lower() and "mgr-a" in body  # filter_horizontal members
    _decide(_client(world["users"]["manager"]), world["request"])
    body = client.get(reverse("admin:planner_pocrequest_changelist")).content.decode()
    assert "column-team" in body and "column-decision" in body and "Approved" in body
