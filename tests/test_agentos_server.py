"""`manage.py agentos_start`: agno's own AgentOS serving the Django agents, as a
real uvicorn process, behind Opie's API tokens, sharing the Django sessions."""
from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection, connections, transaction
from django.test import override_settings

from apps.agents.models import Agent
from apps.chat.models import ChatMessage, ChatSession
from apps.events.models import JobEvent
from apps.jobs.models import ActionDecision, Job, JobAction
from apps.jobs.services import CONTINUING
from tests.conftest import ROOT, end_groups, stop_group, wait_for_job, worker_env
from tests.factories import make_agent, make_token

pytestmark = pytest.mark.worker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AgentOSProcess:
    def __init__(self, args: list[str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        self._out = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "manage.py", "agentos_start", "--port", str(self.port), *args],
                                     cwd=ROOT, env=worker_env(), stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agentos_start exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"agentos_start not answering:\n{log.read_text()[-3000:]}")

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> None:
        stop_group(self.proc)
        self._out.close()


@pytest.fixture
def agentos(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., AgentOSProcess]]:
    started: list[AgentOSProcess] = []

    def start(*args: str) -> AgentOSProcess:
        started.append(AgentOSProcess(list(args), tmp_path / f"agentos{len(started)}.log"))
        return started[-1]

    yield start
    end_groups([server.proc for server in started])
    for server in started:
        server.stop()  # closes its log


def run(client: httpx.Client, agent_id: str, message: str, **fields: str) -> httpx.Response:
    return client.post(f"/agents/{agent_id}/runs", data={"message": message, "stream": "false", **fields})


def test_every_route_but_health_needs_an_opie_api_token(agentos, user):
    agent = make_agent(user)
    server = agentos()
    anonymous = server.client(None)

    assert anonymous.get("/health").status_code == 200
    for path in ("/agents", f"/agents/{agent.public_id}", "/sessions", "/config", "/docs", "/openapi.json"):
        response = anonymous.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthorized"
    assert run(anonymous, agent.public_id, "hi").status_code == 401
    assert server.client("opie_not-a-real-token").get("/agents").status_code == 401
    assert server.client(make_token(user)).get("/agents").status_code == 200


def test_agents_are_the_django_agents_the_token_user_may_use(agentos, user, other_user):
    mine = make_agent(user, name="Mine")
    public = make_agent(other_user, name="Everyone's", visibility=Agent.Visibility.PUBLIC)
    private = make_agent(other_user, name="Mallory's")
    server = agentos()
    alice = server.client(make_token(user))

    listed = {a["id"]: a for a in alice.get("/agents").json()}
    assert set(listed) == {mine.public_id, public.public_id}
    assert listed[mine.public_id]["name"] == "Mine" and listed[mine.public_id]["model"]["provider"] == "local"
    assert {a["id"] for a in alice.get("/config").json()["agents"]} == {mine.public_id, public.public_id}
    assert alice.get(f"/agents/{private.public_id}").status_code == 404
    assert run(alice, private.public_id, "let me in").status_code == 404
    assert not ChatSession.objects.filter(agent=private).exists()
    mallory = server.client(make_token(other_user))
    assert {a["id"] for a in mallory.get("/agents").json()} == {public.public_id, private.public_id}


def test_agentos_and_the_rest_api_share_one_transcript(agentos, start_worker, http, user, other_user):
    start_worker()
    agent = make_agent(user)
    server = agentos()
    alice = server.client(make_token(user))

    # started over the REST API, answered by a Celery worker
    sent = http.post("send-message/", json={"agent_id": agent.public_id, "message": "first"}).json()
    assert wait_for_job(http, sent["job_id"])["status"] == "succeeded"
    session_id = sent["session_id"]

    # continued in AgentOS: it sees the history (the local model counts user turns)
    reply = run(alice, agent.public_id, "second", session_id=session_id, user_id="999")
    assert reply.status_code == 200, reply.text
    assert reply.json()["content"] == "Echo #2: second"
    assert reply.json()["user_id"] == str(user.pk), "the token's user, not the one the client claimed"

    # ... and the REST API shows the AgentOS run as part of the same session
    transcript = http.get(f"sessions/{session_id}/").json()["messages"]
    assert [(m["role"], m["content"]) for m in transcript] == [
        ("user", "first"), ("assistant", "Echo #1: first"), ("user", "second"), ("assistant", "Echo #2: second")]
    agentos_job = http.get(f"jobs/{transcript[-1]['job_id']}/").json()
    assert agentos_job["status"] == "succeeded"

    # a session opened in AgentOS is a Django session too
    fresh = run(alice, agent.public_id, "hello from agentos").json()
    assert http.get(f"sessions/{fresh['session_id']}/").json()["title"] == "hello from agentos"
    listed = alice.get("/sessions", params={"type": "agent"}).json()["data"]
    assert {s["session_id"] for s in listed} == {session_id, fresh["session_id"]}
    runs = alice.get(f"/sessions/{session_id}/runs", params={"type": "agent"}).json()
    assert [r["content"] for r in runs] == ["Echo #1: first", "Echo #2: second"]

    # another user sees none of it, and cannot write into it
    mallory = server.client(make_token(other_user))
    assert mallory.get("/sessions", params={"type": "agent"}).json()["data"] == []
    assert mallory.get(f"/sessions/{session_id}", params={"type": "agent"}).status_code == 404
    assert ChatMessage.objects.filter(session__public_id=session_id).count() == 4


def test_a_run_paused_in_agentos_continues_through_agentos_own_continue_endpoint(agentos, http, user, other_user):
    """A tool needing approval pauses the AgentOS run: it is a `requires_action` job
    in Opie (with its action), and AgentOS's own `POST .../runs/<id>/continue` with
    the confirmed call goes on from the stored run; the same job then ends succeeded,
    once, with one reply. Another user cannot continue it."""
    agent = make_agent(user, tools=["calculator"], tool_policies={"calculator": "approve"},
                       visibility=Agent.Visibility.PUBLIC)  # served to mallory too: the run itself must refuse her
    server = agentos()
    alice, mallory = server.client(make_token(user)), server.client(make_token(other_user))

    answer = run(alice, agent.public_id, "/tool calculator 2+2")
    assert answer.status_code == 200, answer.text
    paused = answer.json()
    assert paused["status"] == "PAUSED"
    [requirement] = paused["requirements"]
    tool = requirement["tool_execution"]
    assert tool["tool_name"] == "calculator" and tool["tool_args"] == {"expression": "2+2"}
    assert tool["requires_confirmation"] is True
    run_id, session_id = paused["run_id"], paused["session_id"]

    # Opie's own API shows it waiting for a person
    job_id = f"job-{run_id}"[:40]
    job = http.get(f"jobs/{job_id}/").json()
    assert job["status"] == "requires_action", job
    [action] = job["required_action"]["actions"]
    assert action["type"] == "approve" and action["tool"] == "calculator"
    assert action["arguments"] == {"expression": "2+2"}

    def continue_run(client: httpx.Client) -> httpx.Response:
        return client.post(f"/agents/{agent.public_id}/runs/{run_id}/continue", data={
            "tools": json.dumps([{**tool, "confirmed": True}]), "session_id": session_id, "stream": "false"})

    refused = continue_run(mallory)
    assert refused.status_code == 404, refused.text
    assert http.get(f"jobs/{job_id}/").json()["status"] == "requires_action", "mallory's continue ran nothing"
    assert JobAction.objects.get(job__public_id=job_id).executions == 0

    continued = continue_run(alice)
    assert continued.status_code == 200, continued.text
    assert continued.json()["status"] == "COMPLETED"
    assert continued.json()["run_id"] == run_id
    assert continued.json()["content"] == "calculator returned: 4"

    job = http.get(f"jobs/{job_id}/").json()
    assert job["status"] == "succeeded", job
    assert job["result"]["content"] == "calculator returned: 4"
    assert job["required_action"] is None
    ended = Job.objects.get(public_id=job_id)
    assert ChatMessage.objects.filter(job=ended, role=ChatMessage.Role.ASSISTANT).count() == 1
    events = list(JobEvent.objects.filter(job=ended).order_by("seq").values_list("type", flat=True))
    assert events == ["job.action_required", "job.succeeded"]
    decision = ActionDecision.objects.get(action__job=ended)
    assert (decision.decision, decision.decided_by_id) == (ActionDecision.Decision.APPROVED, user.pk)
    transcript = http.get(f"sessions/{session_id}/").json()["messages"]
    assert [(m["role"], m["content"]) for m in transcript] == [
        ("user", "/tool calculator 2+2"), ("assistant", "calculator returned: 4")]

    # the session goes on in AgentOS, with the continued exchange as its history
    nxt = run(alice, agent.public_id, "next", session_id=session_id)
    assert nxt.status_code == 200 and nxt.json()["content"] == "Echo #2: next", nxt.text


def test_a_paused_run_is_continued_once_however_many_continues_race(agentos, http, user):
    """While one continue of a paused run is in flight, a second continue of it is a 409
    `run_continuing` that runs nothing, and so is deciding its action over the Opie API;
    the run ends once, with one reply. Once the first has ended, the claim is gone."""
    agent = make_agent(user, tools=["calculator"], tool_policies={"calculator": "approve"},
                       model_options={"latency_ms": 1500})  # the continued run's model call takes 1.5 s
    server = agentos()
    alice = server.client(make_token(user))
    paused = run(alice, agent.public_id, "/tool calculator 2+2").json()
    assert paused["status"] == "PAUSED", paused
    [requirement] = paused["requirements"]
    run_id, job_id = paused["run_id"], f"job-{paused['run_id']}"[:40]
    [action] = http.get(f"jobs/{job_id}/").json()["required_action"]["actions"]

    def continue_run() -> httpx.Response:
        return server.client(make_token(user)).post(f"/agents/{agent.public_id}/runs/{run_id}/continue", data={
            "tools": json.dumps([{**requirement["tool_execution"], "confirmed": True}]),
            "session_id": paused["session_id"], "stream": "false"})

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(continue_run)
        deadline = time.monotonic() + 10
        while Job.objects.get(public_id=job_id).worker != CONTINUING:
            assert time.monotonic() < deadline and not first.done(), "the first continue never claimed the run"
            time.sleep(0.02)
        second = continue_run()
        decided = http.post(f"jobs/{job_id}/actions/",
                            json={"decisions": [{"action_id": action["id"], "approved": True}]})
        assert not first.done(), "the race was not a race: the first continue had ended"
        first = first.result()

    assert second.status_code == 409, second.text
    assert second.json()["error"]["code"] == "run_continuing"
    assert decided.status_code == 409, decided.content
    assert decided.json()["error"]["code"] == "run_continuing"
    assert first.status_code == 200, first.text
    assert first.json()["content"] == "calculator returned: 4"
    ended = Job.objects.get(public_id=job_id)
    assert (ended.status, ended.worker, ended.lease_expires_at) == ("succeeded", "agentos", None)
    assert ChatMessage.objects.filter(job=ended, role=ChatMessage.Role.ASSISTANT).count() == 1
    assert ActionDecision.objects.filter(action__job=ended).count() == 1
    assert list(JobEvent.objects.filter(job=ended).order_by("seq").values_list("type", flat=True)) == [
        "job.action_required", "job.succeeded"]


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events, name = [], ""
    for line in response.text.splitlines():
        if line.startswith("event:"):
            name = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line.partition(":")[2])))
    return events


def test_an_agentos_run_may_pause_again_and_a_streamed_continue_may_reject(agentos, http, user):
    """Each pause of the run is the job's next pause with its own action; a call
    rejected through a streamed continue is recorded as a rejection with its note,
    and the job ends once, when the run does."""
    agent = make_agent(user, tools=["calculator"], tool_policies={"calculator": "approve"})
    server = agentos()
    alice = server.client(make_token(user))
    first = run(alice, agent.public_id, "/tool calculator 1+1; calculator 2+2").json()
    run_id, session_id = first["run_id"], first["session_id"]
    job_id = f"job-{run_id}"[:40]

    def continue_run(tool: dict[str, Any], stream: bool) -> httpx.Response:
        return alice.post(f"/agents/{agent.public_id}/runs/{run_id}/continue", data={
            "tools": json.dumps([tool]), "session_id": session_id, "stream": str(stream).lower()})

    [one] = first["requirements"]
    again = continue_run({**one["tool_execution"], "confirmed": True}, stream=False)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "PAUSED"
    [two] = [r for r in again.json()["requirements"] if r["tool_execution"]["confirmed"] is None]
    assert two["tool_execution"]["tool_args"] == {"expression": "2+2"}
    job = http.get(f"jobs/{job_id}/").json()
    assert job["status"] == "requires_action"
    assert [a["arguments"] for a in job["required_action"]["actions"]] == [{"expression": "2+2"}]

    streamed = continue_run({**two["tool_execution"], "confirmed": False, "confirmation_note": "not today"},
                            stream=True)
    assert streamed.status_code == 200, streamed.text
    [(_, completed)] = [(name, data) for name, data in sse_events(streamed) if name == "RunCompleted"]
    assert completed["content"].startswith("calculator returned: 2\n")

    job = http.get(f"jobs/{job_id}/").json()
    assert job["status"] == "succeeded", job
    assert job["result"]["content"] == completed["content"]
    assert [(d["decision"], d["note"]) for d in job["decisions"]] == [("approved", ""), ("rejected", "not today")]
    ended = Job.objects.get(public_id=job_id)
    assert ended.pauses == 2
    assert ChatMessage.objects.filter(job=ended, role=ChatMessage.Role.ASSISTANT).count() == 1
    assert list(JobEvent.objects.filter(job=ended).order_by("seq").values_list("type", flat=True)) == [
        "job.action_required", "job.action_required", "job.succeeded"]


def test_an_agentos_run_waiting_for_input_continues_with_the_values_sent_to_continue(agentos, http, user):
    agent = make_agent(user, tools=["calculator"], tool_policies={"calculator": "input"})
    server = agentos()
    alice = server.client(make_token(user))
    paused = run(alice, agent.public_id, "/tool calculator").json()
    [requirement] = paused["requirements"]
    tool = requirement["tool_execution"]
    assert [f["name"] for f in tool["user_input_schema"]] == ["expression"]
    job_id = f"job-{paused['run_id']}"[:40]
    assert http.get(f"jobs/{job_id}/").json()["required_action"]["actions"][0]["type"] == "input"

    answered = {**tool, "user_input_schema": [{**f, "value": "5*5"} for f in tool["user_input_schema"]]}
    continued = alice.post(f"/agents/{agent.public_id}/runs/{paused['run_id']}/continue", data={
        "tools": json.dumps([answered]), "session_id": paused["session_id"], "stream": "false"})

    assert continued.status_code == 200, continued.text
    assert continued.json()["content"] == "calculator returned: 25"
    job = http.get(f"jobs/{job_id}/").json()
    assert job["status"] == "succeeded" and job["result"]["content"] == "calculator returned: 25"
    assert [(d["decision"], d["values"]) for d in job["decisions"]] == [("input", {"expression": "5*5"})]


def test_a_run_paused_in_agentos_may_be_decided_over_the_rest_api_and_a_worker_continues_it(
        agentos, start_worker, http, user):
    """The paused AgentOS run is an Opie job like any other: deciding its action on
    `POST jobs/<id>/actions/` queues it, and a Celery worker continues the stored run;
    AgentOS then has it as a completed run of the session, no longer a paused one."""
    start_worker()
    agent = make_agent(user, tools=["calculator"], tool_policies={"calculator": "approve"})
    server = agentos()
    alice = server.client(make_token(user))
    paused = run(alice, agent.public_id, "/tool calculator 2+2").json()
    job_id, session_id = f"job-{paused['run_id']}"[:40], paused["session_id"]
    [action] = http.get(f"jobs/{job_id}/").json()["required_action"]["actions"]

    decided = http.post(f"jobs/{job_id}/actions/", json={"decisions": [{"action_id": action["id"], "approved": True}]})
    assert decided.status_code == 202, decided.text
    job = wait_for_job(http, job_id)

    assert job["status"] == "succeeded" and job["result"]["content"] == "calculator returned: 4", job
    runs = alice.get(f"/sessions/{session_id}/runs", params={"type": "agent"}).json()
    assert [(r["run_id"], r["status"], r["content"]) for r in runs] == [
        (paused["run_id"], "COMPLETED", "calculator returned: 4")]
    assert ChatMessage.objects.filter(session__public_id=session_id).count() == 2


def lock_waiters() -> int:
    """Backends of the test database waiting for a lock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


def test_a_run_stuck_on_a_database_lock_does_not_hold_up_other_runs(agentos, user):
    """The server's storage calls run on a pool of threads, not one thread for the
    whole process: while one run's reply write waits for a row lock, other runs
    (and the token checks in front of them) go on and finish."""
    agent = make_agent(user)
    server = agentos()
    token = make_token(user)
    session_id = run(server.client(token), agent.public_id, "first").json()["session_id"]
    meanwhile = server.client(token)
    meanwhile.timeout = httpx.Timeout(10)  # queued behind the stuck write, they would time out

    with ThreadPoolExecutor(1) as pool:
        with transaction.atomic():
            ChatSession.objects.select_for_update().get(public_id=session_id)  # held until the block ends
            stuck = pool.submit(run, server.client(token), agent.public_id, "second", session_id=session_id)
            deadline = time.monotonic() + 30
            while lock_waiters() == 0:
                assert not stuck.done() and time.monotonic() < deadline, "the second run never waited for the lock"
                time.sleep(0.05)

            others = [run(meanwhile, agent.public_id, f"meanwhile {i}") for i in range(3)]
            assert [(r.status_code, r.json()["content"]) for r in others] == [
                (200, f"Echo #1: meanwhile {i}") for i in range(3)]
            assert not stuck.done(), "the second run is still waiting for the lock"
        reply = stuck.result(timeout=30)

    assert reply.status_code == 200 and reply.json()["content"] == "Echo #2: second"
    assert ChatMessage.objects.filter(session__public_id=session_id).count() == 4


def test_storage_calls_overlap_on_threads_of_their_own_as_the_request_user(user):
    """Four storage calls in flight at once each get a thread (each waits here
    until all four are in, which one shared thread would never see), and each
    sees the user the request authenticated as."""
    from apps.opie.agentos.agno_db import current_user, in_db_thread

    all_in = threading.Barrier(4, timeout=10)

    def storage_call() -> tuple[int, Any]:
        all_in.wait()
        return threading.get_ident(), current_user.get()

    async def four_runs() -> list[tuple[int, Any]]:
        current_user.set(user)
        return await asyncio.gather(*(in_db_thread(storage_call)() for _ in range(4)))

    seen = asyncio.run(four_runs())
    assert len({thread for thread, _ in seen}) == 4
    assert [seen_user for _, seen_user in seen] == [user] * 4


def test_the_storage_threads_are_as_many_as_the_setting_says(settings, monkeypatch):
    """AGENTOS_SERVER_DB_THREADS bounds the calls in flight: with 2, four calls held
    open at once run two at a time, on two threads."""
    from apps.opie.agentos import agno_db

    settings.AGENTOS_SERVER_DB_THREADS = 2
    monkeypatch.setattr(agno_db, "_executor", None)  # built afresh from the setting, the server's own restored after
    in_flight, most = 0, 0
    lock = threading.Lock()

    def storage_call() -> int:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.2)
        with lock:
            in_flight -= 1
        return threading.get_ident()

    async def four_runs() -> list[int]:
        return await asyncio.gather(*(agno_db.in_db_thread(storage_call)() for _ in range(4)))

    try:
        threads = asyncio.run(four_runs())
    finally:
        if agno_db._executor is not None:
            agno_db._executor.shutdown(wait=False)
    assert most == 2 and len(set(threads)) == 2


def test_a_storage_thread_closes_a_connection_that_broke_or_outlived_its_age(transactional_db, monkeypatch):
    """The storage threads outlive requests, so each call ends as a Django request
    does: a connection that errored and no longer works, or that is older than
    CONN_MAX_AGE, is closed, and that thread's next call connects afresh."""
    from apps.opie.agentos.agno_db import in_db_thread

    def break_own_connection() -> Any:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        killer = connections.create_connection("default")
        try:
            with killer.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        finally:
            killer.close()
        with pytest.raises(OperationalError), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return connections["default"]  # this thread's own wrapper (`connection` is a proxy)

    def connect() -> Any:
        connection.ensure_connection()
        return connections["default"]

    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
    assert asyncio.run(in_db_thread(break_own_connection)()).connection is None, "young, but broken"
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    assert asyncio.run(in_db_thread(connect)()).connection is None, "working, but past its age"


def test_user_id_and_reload_flags(agentos, user, other_user):
    alices = make_agent(user)
    mallorys = make_agent(other_user)
    server = agentos("--user-id", str(other_user.pk), "--reload")

    assert f"on http://127.0.0.1:{server.port}" in server.log.read_text(), "bound to loopback by default"
    assert "with reload" in server.log.read_text()
    mallory = server.client(make_token(other_user))
    assert [a["id"] for a in mallory.get("/agents").json()] == [mallorys.public_id]
    alice = server.client(make_token(user))
    assert alice.get("/agents").json() == [], "only the agents user --user-id may use are served"
    assert run(alice, alices.public_id, "hi").status_code == 404


def listening_on(port: int) -> set[str]:
    """The IPv4 addresses a socket of this machine listens on at `port`, from the kernel's own table."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
            addresses.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return addresses


def test_agentos_start_binds_loopback_unless_told_and_warns_for_another_host(agentos):
    default, public = agentos(), agentos("--host", "0.0.0.0")

    assert listening_on(default.port) == {"127.0.0.1"}
    assert "reachable from other machines" not in default.log.read_text()
    assert listening_on(public.port) == {"0.0.0.0"}
    log = public.log.read_text()
    assert f"on http://0.0.0.0:{public.port}" in log
    assert "Binding 0.0.0.0: the AgentOS server is reachable from other machines (token auth still applies)." in log
    assert public.client(None).get("/agents").status_code == 401, "a public bind is still not open anonymously"


def test_agentos_start_refuses_to_start_when_disabled_or_for_an_unknown_user(db):
    with override_settings(AGENTOS_ENABLED=False), pytest.raises(CommandError, match="disabled"):
        call_command("agentos_start")
    with pytest.raises(CommandError, match="no active user"):
        call_command("agentos_start", "--user-id", "424242")
