"""The lookups every request makes are written as SQL (apps.common.fetch_instances):
they must find exactly what the ORM queries they replace would find."""
from __future__ import annotations

import pytest

from apps.accounts.models import ApiToken
from apps.accounts.services import api_token_authenticate, api_token_revoke
from apps.common import NotFound
from apps.jobs.models import Job
from apps.jobs.selectors import job_get_owned
from apps.jobs.services import message_send, sync_job_create
from tests.factories import make_token, make_user

pytestmark = pytest.mark.django_db


def fields_of(instance):
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


def test_a_token_lookup_finds_what_the_orm_finds_with_its_user(user):
    raw = make_token(user)

    token = api_token_authenticate(raw=raw)

    orm = ApiToken.objects.select_related("user").get(pk=token.pk)
    assert fields_of(token) == {**fields_of(orm), "last_used_at": token.last_used_at}
    assert fields_of(token.user) == fields_of(orm.user)
    assert not token._state.adding and token.user._state.db == "default"


def test_a_revoked_or_unknown_token_finds_nothing(user):
    raw = make_token(user)
    api_token_revoke(token=api_token_authenticate(raw=raw))

    assert api_token_authenticate(raw=raw) is None
    assert api_token_authenticate(raw="opie_" + "x" * 40) is None


def test_the_owned_job_lookup_finds_what_the_orm_finds_with_agent_and_session_ids(user, agent):
    job = message_send(user=user, agent=agent, message="hi")

    found = job_get_owned(user=user, job_id=job.public_id)

    orm = Job.objects.select_related("agent", "session").get(pk=job.pk)
    assert fields_of(found) == fields_of(orm)
    assert (found.agent.public_id, found.session.public_id) == (orm.agent.public_id, orm.session.public_id)
    assert found.agent.name == orm.agent.name  # any other field loads on use


def test_a_job_without_agent_or_session_has_none_of_them(user):
    job = sync_job_create(user=user)

    found = job_get_owned(user=user, job_id=job.public_id)

    assert fields_of(found) == fields_of(Job.objects.get(pk=job.pk))
    assert found.agent is None and found.session is None


def test_another_users_job_is_not_found(user, agent):
    job = message_send(user=user, agent=agent, message="hi")

    with pytest.raises(NotFound):
        job_get_owned(user=make_user("mallory"), job_id=job.public_id)
