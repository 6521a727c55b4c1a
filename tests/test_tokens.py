"""API tokens: hashed at rest, shown once, revocable at once."""
from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import connection

from apps.accounts.models import ApiToken
from apps.accounts.services import api_token_authenticate, api_token_create, api_token_revoke

pytestmark = pytest.mark.django_db


def test_the_raw_token_is_not_stored_anywhere_in_the_database(user):
    _, raw = api_token_create(user=user)

    with connection.cursor() as cursor:
        cursor.execute("SELECT prefix, digest, name FROM accounts_apitoken")
        stored = " ".join(str(v) for row in cursor.fetchall() for v in row)
    assert raw not in stored
    assert raw[12:] not in stored, "only a short prefix is kept, to recognise the token"


def test_a_token_authenticates_its_user_until_revoked(user):
    token, raw = api_token_create(user=user)

    assert api_token_authenticate(raw=raw).user == user
    api_token_revoke(token=token)
    assert api_token_authenticate(raw=raw) is None


def test_tokens_of_inactive_users_do_not_authenticate(user):
    _, raw = api_token_create(user=user)
    user.is_active = False
    user.save()

    assert api_token_authenticate(raw=raw) is None


def test_agentos_token_prints_a_working_token_as_its_last_line():
    out = io.StringIO()

    call_command("agentos_token", "newbie", "--create-user", "--staff", stdout=out, stderr=io.StringIO())

    raw = out.getvalue().strip().splitlines()[-1]
    token = api_token_authenticate(raw=raw)
    assert token is not None and token.user.username == "newbie" and token.user.is_staff
    assert ApiToken.objects.count() == 1


def test_agentos_token_refuses_an_unknown_user_without_create_user():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("agentos_token", "ghost", stdout=io.StringIO(), stderr=io.StringIO())
