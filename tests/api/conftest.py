from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token

from tests.planner.factories import join_team


def token_client(client, user):
    """The test client sending ``user``'s API token, as a script would (no session)."""
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {Token.objects.get_or_create(user=user)[0].key}"
    return client


@pytest.fixture
def api(client, user):
    """alice (requester and manager of team Alpha) through her token."""
    return token_client(client, user)


@pytest.fixture
def other_team_user(db, django_user_model):
    return join_team(
        django_user_model.objects.create_user("olga", password="pw"), "Omega", "requester", "manager"
    )


@pytest.fixture
def requester_only(db, django_user_model):
    return join_team(django_user_model.objects.create_user("rita", password="pw"), "Alpha", "requester")
