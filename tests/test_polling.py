"""A polled job status (`GET jobs/<id>/`) is answered without the middleware stack
(apps.api.fastpath) and is the same answer as the full stack's, byte for byte; every
case the short path does not take (a bad or revoked token, someone else's job, the
integration off, a refused host) is the full stack's own answer.

The full stack answers the same request when it carries a query string, so each
case is asked both ways of the real ASGI server."""
from __future__ import annotations

from typing import Any

import httpx
import pytest
from django.test import override_settings

from apps.accounts.models import ApiToken
from apps.accounts.services import api_token_revoke
from apps.api import fastpath
from apps.jobs.models import Job
from apps.jobs.services import message_send
from tests.factories import make_agent, make_token, make_user
from workers.execution import execute_message_job

pytestmark = pytest.mark.django_db(transaction=True)

VARYING = {"date", "server"}


def both_ways(live_server: Any, job_id: str, **headers: str) -> tuple[httpx.Response, httpx.Response]:
    """(the short path's answer, the full stack's answer) to a poll of `job_id`."""
    url = f"{live_server.url}/api/v1/agentos/jobs/{job_id}/"
    return httpx.get(url, headers=headers), httpx.get(f"{url}?full=1", headers=headers)


def same_answer(short: httpx.Response, full: httpx.Response) -> None:
    assert (short.status_code, short.content) == (full.status_code, full.content)
    assert {k: v for k, v in short.headers.items() if k not in VARYING} == {
        k: v for k, v in full.headers.items() if k not in VARYING}


def scope(job_id: str, token: str, host: str = "127.0.0.1", query: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": f"/api/v1/agentos/jobs/{job_id}/", "query_string": query,
            "headers": [(b"host", host.encode()), (b"authorization", f"Bearer {token}".encode())]}


def jobs_in_every_shape(user: Any) -> dict[str, Job]:
    agent = make_agent(user, tools=["calculator"], tool_policies={"calculator": "approve"})
    queued = message_send(user=user, agent=agent, message="hi")
    done = message_send(user=user, agent=make_agent(user), message="hello")
    execute_message_job(done.pk)
    failed = message_send(user=user, agent=make_agent(user), message="/fail upstream down")
    execute_message_job(failed.pk)
    paused = message_send(user=user, agent=agent, message="/tool calculator 2+2", session=queued.session)
    Job.objects.filter(pk=queued.pk).update(status=Job.Status.SUCCEEDED)  # let the session's next one run
    execute_message_job(paused.pk)
    return {job.status: job for job in Job.objects.filter(pk__in=[queued.pk, done.pk, failed.pk, paused.pk])}


def test_an_owners_poll_is_the_full_stacks_answer_for_every_kind_of_job(live_server):
    user = make_user("poller")
    token = make_token(user)
    jobs = jobs_in_every_shape(user)
    assert {"succeeded", "failed", "requires_action"} <= set(jobs)
    queued = message_send(user=user, agent=make_agent(user), message="waiting")
    for job in [*jobs.values(), queued]:
        assert fastpath.job_status(scope(job.public_id, token), job.public_id) is not None  # the short path serves it
        short, full = both_ways(live_server, job.public_id, Authorization=f"Bearer {token}")
        assert short.status_code == 200, short.text
        assert short.json()["job_id"] == job.public_id and short.json()["status"] == job.status
        same_answer(short, full)
    assert short.headers["x-frame-options"] == "DENY" and short.headers["x-content-type-options"] == "nosniff"


def test_what_the_short_path_does_not_take_is_the_full_stacks_own_error(live_server):
    owner, stranger = make_user("owner"), make_user("stranger")
    owner_token, stranger_token = make_token(owner), make_token(stranger)
    job = message_send(user=owner, agent=make_agent(owner), message="mine")
    cases = {
        "no token": ({}, 401, "unauthorized"),
        "not a token": ({"Authorization": "Bearer opie_nothing"}, 401, "unauthorized"),
        "a token after two spaces": ({"Authorization": f"Bearer  {owner_token}"}, 401, "unauthorized"),
        "someone else's job": ({"Authorization": f"Bearer {stranger_token}"}, 404, "job_not_found"),
    }
    for name, (headers, status, code) in cases.items():
        short, full = both_ways(live_server, job.public_id, **headers)
        assert (short.status_code, short.json()["error"]["code"]) == (status, code), name
        same_answer(short, full)
    short, full = both_ways(live_server, "job-000000000000", Authorization=f"Bearer {owner_token}")
    assert short.status_code == 404
    same_answer(short, full)
    assert fastpath.job_status(scope(job.public_id, stranger_token), job.public_id) is None
    assert fastpath.job_status(scope(job.public_id, owner_token, host="evil.example"), job.public_id) is None
    assert fastpath.job_id_of(scope(job.public_id, owner_token, query=b"full=1")) is None


def test_a_refused_host_and_the_integration_off_are_answered_as_before(live_server):
    user = make_user("hosts")
    token = make_token(user)
    job = message_send(user=user, agent=make_agent(user), message="x")
    short, full = both_ways(live_server, job.public_id, Authorization=f"Bearer {token}", Host="evil.example")
    assert short.status_code == 400
    assert (short.status_code, short.content) == (full.status_code, full.content)
    with override_settings(AGENTOS_ENABLED=False):
        short, full = both_ways(live_server, job.public_id, Authorization=f"Bearer {token}")
        assert fastpath.job_status(scope(job.public_id, token), job.public_id) is None
    assert (short.status_code, short.json()["error"]["code"]) == (503, "agentos_disabled")
    same_answer(short, full)


def test_a_revoked_token_stops_polling_at_once(live_server):
    user = make_user("revoker")
    token = make_token(user)
    job = message_send(user=user, agent=make_agent(user), message="x")
    url = f"{live_server.url}/api/v1/agentos/jobs/{job.public_id}/"
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    api_token_revoke(token=ApiToken.objects.get(user=user))
    refused = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "unauthorized")
