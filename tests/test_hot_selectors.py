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


def test_a_row_inserted_in_one_statement_reads_back_as_the_orm_would_have_saved_it(user, agent):
    from django.db import IntegrityError, transaction

    from apps.common import insert_new
    from apps.events.models import JobEvent

    job = message_send(user=user, agent=agent, message="hi")
    ours = insert_new(JobEvent(job_id=job.pk, seq=7, type="tool_call.started", data={"name": "calculator"}))
    theirs = JobEvent.objects.create(job_id=job.pk, seq=8, type="tool_call.started", data={"name": "calculator"})

    stored = JobEvent.objects.get(pk=ours.pk)
    assert not ours._state.adding and ours.pk is not None and ours.created_at is not None
    assert fields_of(stored) == fields_of(ours)
    assert {k: v for k, v in fields_of(stored).items() if k not in ("id", "seq", "created_at")} == {
        k: v for k, v in fields_of(JobEvent.objects.get(pk=theirs.pk)).items() if k not in ("id", "seq", "created_at")}
    with pytest.raises(IntegrityError), transaction.atomic():  # constraints hold as for save()
        insert_new(JobEvent(job_id=job.pk, seq=7, type="again", data={}))


def test_a_claimed_job_comes_with_what_the_orm_would_join_to_it(user, agent):
    from apps.jobs.lifecycle import job_claim

    job = message_send(user=user, agent=agent, message="hi")

    claimed = job_claim(job_id=job.pk, worker="w:1")

    orm = Job.objects.select_related("agent", "session", "owner").get(pk=job.pk)
    assert fields_of(claimed) == fields_of(orm)
    for relation in ("agent", "session", "owner"):
        assert fields_of(getattr(claimed, relation)) == fields_of(getattr(orm, relation)), relation


def test_the_claims_sql_claims_exactly_the_jobs_its_orm_rule_allows(user, agent, settings):
    """Every combination of status, lease, cancel, deadline, attempts and session order:
    `_CLAIM_SQL` (run, then rolled back) and `claim_rule` must give the same answer."""
    import itertools
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone

    from apps.chat.models import ChatSession
    from apps.jobs.lifecycle import _claim_row, claim_rule

    now = timezone.now()
    hour = timedelta(hours=1)
    instants = [None, now - hour, now, now + hour]  # a lease or a deadline: none, past, this instant, future
    attempts = [0, settings.AGENTOS_MAX_ATTEMPTS - 1, settings.AGENTOS_MAX_ATTEMPTS]
    # the job's session: none, alone in it, behind an unfinished / a finished message, behind an unfinished other kind
    earlier = [None, "alone", ("message", "running"), ("message", "succeeded"), ("ingest", "queued")]
    cases = list(itertools.product(Job.Status.values, instants, [None, now - hour], instants, attempts, earlier))
    sessions = ChatSession.objects.bulk_create(
        [ChatSession(owner=user, agent=agent) for *_, ahead in cases if ahead is not None])
    in_session = iter(sessions)
    session_of = [next(in_session) if ahead is not None else None for *_, ahead in cases]
    Job.objects.bulk_create([  # every earlier job first: its id is lower than any case's
        Job(owner=user, agent=agent, session=session, kind=ahead[0], status=ahead[1])
        for (*_, ahead), session in zip(cases, session_of) if isinstance(ahead, tuple)])
    jobs = Job.objects.bulk_create([
        Job(owner=user, agent=agent, session=session, status=status, lease_expires_at=lease,
            cancel_requested_at=cancel, deadline_at=deadline, attempts=tries)
        for (status, lease, cancel, deadline, tries, _), session in zip(cases, session_of)])

    allowed = set(Job.objects.filter(claim_rule(now), pk__in=[job.pk for job in jobs]).values_list("pk", flat=True))
    claimed = set()
    for job in jobs:
        with transaction.atomic():
            if _claim_row(job_id=job.pk, now=now, worker="w:1") is not None:
                claimed.add(job.pk)
            transaction.set_rollback(True)

    assert len(cases) == 3360 and 0 < len(allowed) < len(cases)
    disagree = [case for case, job in zip(cases, jobs) if (job.pk in claimed) != (job.pk in allowed)]
    assert claimed == allowed, disagree[:5]


@pytest.mark.parametrize("include_vault", [False, True])
def test_the_agent_lookup_and_the_agent_list_apply_one_visibility_rule(user, settings, include_vault):
    """agent_get_visible finds an agent exactly when agent_list_visible lists it, each in one query."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.agents.models import Agent
    from apps.agents.selectors import agent_get_visible, agent_list_visible
    from tests.factories import make_agent

    settings.AGENTOS_INCLUDE_VAULT_AGENTS = include_vault
    bob, carol = make_user("bob"), make_user("carol")
    agents = [make_agent(user), make_agent(user, visibility="shared"), make_agent(bob),
              make_agent(bob, visibility="public"), make_agent(bob, visibility="shared", shared_with=["alice"]),
              make_agent(bob, visibility="shared", shared_with=["carol"]),
              make_agent(carol, visibility="public", shared_with=["alice"]),
              make_agent(bob, visibility="private", shared_with=["alice"])]  # named, but private
    disabled = make_agent(bob, visibility="public")
    vault = make_agent(user)
    Agent.objects.filter(pk=disabled.pk).update(enabled=False)
    Agent.objects.filter(pk=vault.pk).update(is_vault=True)

    for viewer in (user, bob, carol):
        listed = set(agent_list_visible(user=viewer).values_list("public_id", flat=True))
        found = set()
        for agent in [*agents, disabled, vault]:
            with CaptureQueriesContext(connection) as queries:
                try:
                    found.add(agent_get_visible(user=viewer, agent_id=agent.public_id).public_id)
                except NotFound:
                    pass
            assert len(queries) == 1, [q["sql"] for q in queries]
        assert found == listed, viewer
    alice_sees = set(agent_list_visible(user=user).values_list("public_id", flat=True))
    vault_seen = {vault.public_id} if include_vault else set()
    assert alice_sees == {agents[i].public_id for i in (0, 1, 3, 4, 6)} | vault_seen
    looked_up = agent_get_visible(user=user, agent_id=agents[4].public_id)
    assert fields_of(looked_up) == fields_of(Agent.objects.get(pk=agents[4].pk))
