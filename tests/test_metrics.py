"""`GET /metrics`: the whole deployment's metrics (the web in this process, real worker
processes beside it, one metrics directory for all: config/settings_test.py), its token,
its labels, and the Grafana dashboard's use of them."""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for_job
from tests.factories import make_agent

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-opie.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(live_server: Any, **headers: str) -> str:
    response = httpx.get(f"{live_server.url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls)


def dashboard_metrics() -> set[str]:
    exprs = [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]
    assert exprs, "the dashboard has no queries"
    return {name for expr in exprs for name in re.findall(r"\bopie_[a-z_]+\b", expr)}


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_metrics_change_as_jobs_run_through_a_real_worker(http, live_server, start_worker, user, settings):
    from tests.webhook_receiver import Receiver

    settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE = True
    start_worker(AGENTOS_WEBHOOK_ALLOW_PRIVATE="1")
    agent = make_agent(user, tools=["calculator"])
    slow = make_agent(user, name="Slow", model_options={"latency_ms": 1500})
    secret = "Zanzibar-quokka-7741 is the text of a message"
    before = samples(scrape(live_server))

    with Receiver([200]) as receiver:
        tool_job = http.post("send-message/", json={"agent_id": agent.public_id, "message": "/tool calculator 6*7",
                                                    "callback_url": receiver.url + "/hook"}).json()
        plain_job = http.post("send-message/", json={"agent_id": agent.public_id, "message": secret}).json()
        # a long-poll on the plain job while it runs (the web's side: this process)
        waited = http.get(f"jobs/{plain_job['job_id']}/wait/", params={"timeout": 20})
        finished = [wait_for_job(http, job["job_id"]) for job in (tool_job, plain_job)]
        receiver.wait_for(1, timeout=20)

        # an SSE stream open on a slow job: counted while open, not after
        slow_job = http.post("send-message/", json={"agent_id": slow.public_id, "message": "slowly"}).json()
        opened = threading.Event()

        def follow() -> None:
            with http.stream("GET", f"jobs/{slow_job['job_id']}/events/") as stream:
                for _ in stream.iter_lines():
                    opened.set()

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        assert opened.wait(10)
        during = samples(scrape(live_server))
        follower.join(30)
        wait_for_job(http, slow_job["job_id"])

    text = scrape(live_server)
    after = samples(text)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert waited.status_code == 200
    assert [job["status"] for job in finished] == ["succeeded", "succeeded"]
    assert grew("opie_jobs_accepted_total", kind="message") == 3
    assert grew("opie_jobs_ended_total", kind="message", status="succeeded") == 3
    assert grew("opie_job_queue_wait_seconds_count", kind="message") == 3
    assert grew("opie_job_run_seconds_count", kind="message") == 3
    assert grew("opie_job_run_seconds_sum", kind="message") >= 1.5  # the slow one alone
    # the tool job's run is two model calls (ask for the tool, then answer)
    assert grew("opie_model_call_seconds_count", provider="local") >= 4
    assert grew("opie_model_tokens_total", provider="local", direction="output") > 0
    assert grew("opie_tool_calls_total", tool="calculator", outcome="ok") == 1
    assert grew("opie_webhook_attempts_total", outcome="delivered") == 1
    # three lookups over two agents: at least one hit (two runs racing may both miss and build)
    assert grew("opie_pool_hits_total") + grew("opie_pool_misses_total") == 3
    assert grew("opie_pool_builds_total") == grew("opie_pool_misses_total") >= 2
    assert total(during, "opie_open_streams", kind="sse") - total(before, "opie_open_streams", kind="sse") == 1
    assert total(after, "opie_open_streams", kind="sse") == total(before, "opie_open_streams", kind="sse")
    assert total(after, "opie_open_streams", kind="long_poll") == total(before, "opie_open_streams",
                                                                         kind="long_poll")
    assert value(after, "opie_jobs_queued", kind="message") == 0
    assert value(after, "opie_job_oldest_queued_seconds", kind="message") == 0
    assert ("opie_webhook_oldest_undelivered_seconds", frozenset()) in after
    assert ("opie_sweeper_requeues_total", frozenset({("reason", "lease_expired")})) in after

    # message text is never a label (nor anything else in /metrics)
    assert "Zanzibar" not in text and "quokka" not in text and "6*7" not in text

    # every metric the Grafana dashboard queries is in /metrics
    names = {name for name, _ in after} | {family.name for family in text_string_to_metric_families(text)}
    assert dashboard_metrics() - names == set()


@pytest.mark.django_db
def test_the_metrics_endpoint_refuses_without_its_token(client, settings):
    settings.OPIE_METRICS_TOKEN = "s3cret-metrics-token"

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic s3cret-metrics-token").status_code == 401
    answered = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics-token")
    assert answered.status_code == 200
    assert b"opie_jobs_queued" in answered.content


@pytest.mark.django_db
def test_without_a_token_the_metrics_endpoint_answers_loopback_only(client, settings):
    settings.OPIE_METRICS_TOKEN = ""

    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200


def test_a_killed_web_process_stops_counting_its_open_streams(tmp_path):
    """A process that died without its shutdown leaves a live-gauge file; the next scrape drops it."""
    from apps import metrics

    dead = f"{metrics.process_id().rsplit('-', 1)[0]}-{2**22 + 12345}"  # above pid_max: no such process
    path = metrics.METRICS_DIR / f"gauge_livesum_{dead}.db"
    path.write_bytes(b"")
    metrics.prune_dead()

    assert not path.exists()


@pytest.mark.django_db
def test_the_sweeper_counts_the_jobs_it_sends_again(api, agent):
    """A worker died mid-run (its lease ran out): the sweeper hands the job on, and says so."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.jobs.lifecycle import job_claim
    from apps.jobs.models import Job
    from apps.jobs.sweeper import jobs_sweep

    job_id = api.post("/api/v1/agentos/send-message/", {"agent_id": agent.public_id, "message": "hi"},
                      content_type="application/json").json()["job_id"]
    job_claim(job_id=Job.objects.get(public_id=job_id).pk, worker="lost-worker")
    Job.objects.filter(public_id=job_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    before = samples(api.get("/metrics").content.decode())

    jobs_sweep()

    after = samples(api.get("/metrics").content.decode())
    grown = value(after, "opie_sweeper_requeues_total", reason="lease_expired") - value(
        before, "opie_sweeper_requeues_total", reason="lease_expired")
    assert grown == 1
    assert value(after, "opie_jobs_running", kind="message") == 1
