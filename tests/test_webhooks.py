"""Outbound webhooks (signed, retried from PostgreSQL, SSRF-guarded) and inbound hooks."""
from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from apps.jobs.models import Job
from apps.jobs.services import message_send
from apps.webhooks.client import webhook_http_client
from apps.webhooks.models import InboundDelivery, InboundHook, WebhookDelivery
from apps.webhooks.services import signed_headers, webhook_deliver, webhooks_due
from apps.webhooks.ssrf import BlockedAddress, resolve_checked
from tests.conftest import wait_for_job
from tests.factories import make_agent
from tests.webhook_receiver import Receiver
from workers.execution import execute_message_job


@pytest.fixture
def dev(settings):
    """Local development mode: callbacks may reach 127.0.0.1; a fast retry schedule."""
    settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE = True
    settings.AGENTOS_WEBHOOK_RETRY_SCHEDULE = [0.0, 0.05, 0.05, 0.05]


def finished_job(user, agent, url):
    job = message_send(user=user, agent=agent, message="notify me", callback_url=url)
    execute_message_job(job.pk)
    return Job.objects.get(pk=job.pk)


def deliver_until_settled(timeout=10):
    """What beat's dispatcher does every few seconds, done here until nothing is due."""
    deadline = time.monotonic() + timeout
    while WebhookDelivery.objects.filter(status__in=["pending", "delivering"]).exists():
        assert time.monotonic() < deadline
        for delivery_id in webhooks_due():
            webhook_deliver(delivery_id=delivery_id)
        time.sleep(0.02)


@pytest.mark.django_db
def test_a_finished_job_posts_one_signed_event_that_standard_webhooks_verifies(api, user, agent, dev):
    with Receiver([200]) as receiver:
        job = finished_job(user, agent, receiver.url + "/hook")
        deliver_until_settled()

    [request] = receiver.requests
    secret = api.get("/api/v1/agentos/webhook-secret/").json()["secret"]
    event = Webhook(secret).verify(request["body"], request["headers"])
    assert secret.startswith("whsec_") and request["headers"]["user-agent"] == "Opie-Webhooks/1"
    assert event["type"] == "job.succeeded"
    assert event["data"] == api.get(f"/api/v1/agentos/jobs/{job.public_id}/").json()


@pytest.mark.django_db
def test_a_receiver_failing_three_times_gets_four_attempts_with_one_webhook_id(api, user, agent, dev):
    with Receiver([500, 502, 503, 200]) as receiver:
        job = finished_job(user, agent, receiver.url)
        deliver_until_settled()

    assert len(receiver.requests) == 4
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
    [delivery] = api.get(f"/api/v1/agentos/jobs/{job.public_id}/deliveries/").json()["deliveries"]
    assert delivery["status"] == "delivered" and delivery["attempt_count"] == 4
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 502, 503, 200]
    assert all(a["next_retry_at"] for a in delivery["attempts"][:3])


@pytest.mark.django_db
def test_a_dead_receiver_leaves_the_job_succeeded_and_the_delivery_failed(user, agent, dev):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    job = finished_job(user, agent, f"http://127.0.0.1:{closed_port}/")

    deliver_until_settled()

    delivery = WebhookDelivery.objects.get(job=job)
    assert Job.objects.get(pk=job.pk).status == "succeeded"
    assert delivery.status == "failed" and delivery.attempt_count == 4 and "ConnectError" in delivery.last_error


@pytest.mark.django_db
def test_410_gone_stops_retrying_at_once(user, agent, dev):
    with Receiver([410]) as receiver:
        job = finished_job(user, agent, receiver.url)
        deliver_until_settled()

    assert len(receiver.requests) == 1 and WebhookDelivery.objects.get(job=job).status == "failed"


@pytest.mark.django_db
def test_retry_after_is_honoured(user, agent, dev):
    with Receiver([429], headers={"Retry-After": "120"}) as receiver:
        job = finished_job(user, agent, receiver.url)
        webhook_deliver(delivery_id=webhooks_due()[0])

    delivery = WebhookDelivery.objects.get(job=job)
    assert delivery.status == "pending" and delivery.last_status_code == 429
    assert delivery.next_attempt_at >= datetime.now(timezone.utc) + timedelta(seconds=110)


@pytest.mark.django_db
def test_redirects_are_not_followed(user, agent, dev):
    with Receiver([302, 200]) as receiver:
        finished_job(user, agent, receiver.url + "/start")
        webhook_deliver(delivery_id=webhooks_due()[0])

    assert [r["path"] for r in receiver.requests] == ["/start"]
    assert WebhookDelivery.objects.get().last_status_code == 302


@pytest.mark.django_db
def test_attempts_to_one_receiver_reuse_one_kept_alive_connection(user, agent, dev):
    with Receiver([500, 200, 200]) as receiver:
        finished_job(user, agent, receiver.url + "/a")  # fails once, then is delivered
        finished_job(user, agent, receiver.url + "/b")
        deliver_until_settled()

    assert sorted(r["status"] for r in receiver.requests) == [200, 200, 500]
    assert receiver.connections == 1 and len({r["client_port"] for r in receiver.requests}) == 1
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"delivered"}


@pytest.mark.django_db
def test_a_slow_receiver_times_out_after_the_webhook_timeout(user, agent, dev, settings):
    webhook_http_client(timeout=15.0)  # the process's client exists already, built with the default
    settings.AGENTOS_WEBHOOK_TIMEOUT = 0.3
    with Receiver([200], delay=2.0) as receiver:
        job = finished_job(user, agent, receiver.url)
        outcome = webhook_deliver(delivery_id=webhooks_due()[0])

    attempt = WebhookDelivery.objects.get(job=job).attempts.get()
    assert outcome == "retrying" and attempt.error.startswith("ReadTimeout")
    assert 300 <= attempt.duration_ms < 1500


def test_a_forked_child_builds_its_own_webhook_client():
    parent = webhook_http_client(timeout=15.0)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, never return into pytest
        try:
            os.write(write, b"own" if webhook_http_client(timeout=15.0) is not parent else b"inherited")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(pid, 0)

    assert answer == b"own"
    assert webhook_http_client(timeout=15.0) is parent and not parent.is_closed


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/", "http://10.0.0.1/", "http://169.254.169.254/latest/",
                                 "http://localhost/", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
                                 "http://100.64.0.1/", "http://0.0.0.0/"])
def test_internal_addresses_are_refused_without_the_dev_flag(url, settings):
    settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE = False

    with pytest.raises(BlockedAddress):
        resolve_checked(url)


def test_the_dev_flag_allows_loopback_and_http_is_pinned_to_the_checked_ip(monkeypatch, settings):
    settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE = True
    assert resolve_checked("http://127.0.0.1:9/x") == ("http://127.0.0.1:9/x", {})
    settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE = False
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(0, 0, 0, "", ("93.184.216.34", 80))])
    assert resolve_checked("http://example.com/hook?a=1") == ("http://93.184.216.34/hook?a=1",
                                                              {"Host": "example.com"})


@pytest.mark.django_db
def test_a_blocked_callback_is_a_failed_attempt_and_not_retried(user, agent, settings):
    settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE = False
    job = finished_job(user, agent, "http://127.0.0.1:1/")

    webhook_deliver(delivery_id=webhooks_due()[0])

    delivery = WebhookDelivery.objects.get(job=job)
    assert delivery.status == "failed" and delivery.last_error.startswith("ssrf_blocked")


@pytest.mark.django_db
def test_a_non_http_callback_url_is_refused_when_the_message_is_sent(api, agent):
    response = api.post("/api/v1/agentos/send-message/", {"agent_id": agent.public_id, "message": "hi",
                                                          "callback_url": "file:///etc/passwd"},
                        content_type="application/json")

    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_callback_url"
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_rotating_the_secret_changes_the_signature(api, user, agent, dev):
    old = api.get("/api/v1/agentos/webhook-secret/").json()["secret"]
    new = api.post("/api/v1/agentos/webhook-secret/rotate/").json()["secret"]
    with Receiver([200]) as receiver:
        finished_job(user, agent, receiver.url)
        deliver_until_settled()

    request = receiver.requests[0]
    assert new != old
    Webhook(new).verify(request["body"], request["headers"])
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(request["body"], request["headers"])


@pytest.mark.django_db
def test_redeliver_sends_again_with_the_same_webhook_id(api, user, agent, dev):
    with Receiver([200]) as receiver:
        job = finished_job(user, agent, receiver.url)
        deliver_until_settled()
        response = api.post(f"/api/v1/agentos/jobs/{job.public_id}/deliveries/redeliver/")
        deliver_until_settled()

    assert response.status_code == 202
    first_id = receiver.requests[0]["headers"]["webhook-id"]
    assert [r["headers"]["webhook-id"] for r in receiver.requests] == [first_id] * 2


@pytest.mark.django_db
def test_redeliver_with_the_same_idempotency_key_sends_once(api, user, agent, dev):
    with Receiver([200]) as receiver:
        job = finished_job(user, agent, receiver.url)
        other = finished_job(user, agent, receiver.url)
        deliver_until_settled()
        path = f"/api/v1/agentos/jobs/{job.public_id}/deliveries/redeliver/"
        first = api.post(path, headers={"Idempotency-Key": "again-1"})
        again = api.post(path, headers={"Idempotency-Key": "again-1"})
        elsewhere = api.post(f"/api/v1/agentos/jobs/{other.public_id}/deliveries/redeliver/",
                             headers={"Idempotency-Key": "again-1"})
        # the test client sends a (here empty) form: another form is another request
        reworded = api.post(path, {"note": "again"}, headers={"Idempotency-Key": "again-1"})
        deliver_until_settled()

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert elsewhere.status_code == reworded.status_code == 409
    assert elsewhere.json()["error"]["code"] == reworded.json()["error"]["code"] == "idempotency_key_reused"
    assert WebhookDelivery.objects.filter(job=job).count() == 2, "the original and one redelivery"
    assert WebhookDelivery.objects.filter(job=other).count() == 1
    assert len(receiver.requests) == 3


@pytest.mark.django_db
def test_another_users_deliveries_are_404(other_api, user, agent, dev):
    job = finished_job(user, agent, "http://127.0.0.1:1/")

    assert other_api.get(f"/api/v1/agentos/jobs/{job.public_id}/deliveries/").status_code == 404
    assert other_api.post(f"/api/v1/agentos/jobs/{job.public_id}/deliveries/redeliver/").status_code == 404


# --- inbound -------------------------------------------------------------------

def post_signed(client, hook, body, *, secret=None, webhook_id="msg_1", at=None, tamper=None):
    raw = json.dumps(body)
    headers = signed_headers(secret=secret or hook["secret"], webhook_id=webhook_id, body=raw, at=at)
    if tamper:
        raw, headers = tamper(raw, headers)
    return client.generic("POST", f"/api/v1/agentos/hooks/{hook['hook_id']}/", raw,
                          content_type="application/json", headers=headers)


@pytest.fixture
def hook(api, agent):
    return api.post("/api/v1/agentos/hooks/", {"agent_id": agent.public_id}, content_type="application/json").json()


@pytest.mark.django_db
def test_creating_a_hook_twice_with_one_idempotency_key_makes_one_hook(api, agent):
    from apps.webhooks.models import InboundHook

    body = {"agent_id": agent.public_id}
    first = api.post("/api/v1/agentos/hooks/", body, content_type="application/json",
                     headers={"Idempotency-Key": "hook-1"})
    again = api.post("/api/v1/agentos/hooks/", body, content_type="application/json",
                     headers={"Idempotency-Key": "hook-1"})

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert InboundHook.objects.filter(agent=agent).count() == 1


@pytest.mark.django_db
def test_a_signed_inbound_message_starts_a_job_without_a_token(client, hook, user):
    response = post_signed(client, hook, {"message": "from outside"})

    assert response.status_code == 202, response.content
    job = Job.objects.get(public_id=response.json()["job_id"])
    assert job.owner == user and job.messages.get().content == "from outside"
    assert hook["url"] == f"http://testserver/api/v1/agentos/hooks/{hook['hook_id']}/"
    assert response.json() == {"job_id": job.public_id, "status": "queued", "session_id": job.session.public_id,
                               "poll_url": f"/api/v1/agentos/jobs/{job.public_id}/"}, "answers like send-message"


@pytest.mark.django_db
@pytest.mark.parametrize("tamper", [
    lambda raw, h: (raw.replace("outside", "inside"), h),
    lambda raw, h: (raw, {**h, "webhook-id": "msg_other"}),
    lambda raw, h: (raw, {**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}),
    lambda raw, h: (raw, {k: v for k, v in h.items() if k != "webhook-signature"}),
])
def test_any_change_to_body_id_or_timestamp_is_refused(client, hook, tamper):
    response = post_signed(client, hook, {"message": "from outside"}, tamper=tamper)

    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_signature"
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_stale_or_wrongly_keyed_signature_is_refused(client, hook):
    stale = post_signed(client, hook, {"message": "old"}, at=datetime.now(timezone.utc) - timedelta(minutes=10))
    wrong = post_signed(client, hook, {"message": "x"}, secret="whsec_" + "A" * 44)

    assert stale.status_code == 401 and wrong.status_code == 401


@pytest.mark.django_db
def test_a_replayed_inbound_message_is_refused(client, hook):
    first = post_signed(client, hook, {"message": "once"}, webhook_id="msg_replay")
    again = post_signed(client, hook, {"message": "once"}, webhook_id="msg_replay")

    assert first.status_code == 202 and again.status_code == 409
    assert again.json()["error"]["code"] == "replayed" and Job.objects.count() == 1


@pytest.mark.django_db
def test_an_inbound_message_retried_with_its_idempotency_key_is_accepted_once(client, hook, user):
    """A sender that did not see the answer sends again, signed anew (another webhook-id and
    timestamp), with the same key: the first answer again, and one job."""
    keyed = {"Idempotency-Key": "inbound-1"}
    first = post_signed(client, hook, {"message": "once"}, webhook_id="msg_a",
                        tamper=lambda raw, h: (raw, {**h, **keyed}))
    again = post_signed(client, hook, {"message": "once"}, webhook_id="msg_b",
                        tamper=lambda raw, h: (raw, {**h, **keyed}))
    changed = post_signed(client, hook, {"message": "twice"}, webhook_id="msg_c",
                          tamper=lambda raw, h: (raw, {**h, **keyed}))

    assert first.status_code == again.status_code == 202, first.content
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "idempotency_key_reused"
    assert Job.objects.count() == 1 and Job.objects.get().owner == user
    assert list(InboundDelivery.objects.values_list("webhook_id", flat=True)) == ["msg_a"], "one ledger row"


@pytest.mark.django_db
def test_hooks_are_listed_without_secrets_and_unknown_hooks_are_404(api, client, hook):
    listed = api.get("/api/v1/agentos/hooks/").json()["hooks"]

    assert [h["hook_id"] for h in listed] == [hook["hook_id"]] and "secret" not in listed[0]
    assert InboundHook.objects.get().secret == hook["secret"]
    unknown = post_signed(client, {**hook, "hook_id": "hook-000000000000"}, {"message": "x"})
    assert unknown.status_code == 404


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_end_to_end_a_worker_delivers_exactly_one_verified_webhook(http, start_worker, user):
    start_worker(queues="agents,webhooks", AGENTOS_WEBHOOK_ALLOW_PRIVATE="1",
                 AGENTOS_WEBHOOK_RETRY_SCHEDULE="0,0.5,0.5")
    agent = make_agent(user)
    with Receiver([200]) as receiver:
        accepted = http.post("send-message/", json={"agent_id": agent.public_id, "message": "ping me",
                                                    "callback_url": receiver.url + "/done"}).json()
        job = wait_for_job(http, accepted["job_id"])
        [request] = receiver.wait_for(1)

    event = Webhook(http.get("webhook-secret/").json()["secret"]).verify(request["body"], request["headers"])
    assert event["type"] == "job.succeeded" and event["data"]["job_id"] == job["job_id"]
    assert event["data"]["result"]["content"] == "Echo #1: ping me"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_sends_the_webhook_of_a_job_it_finished_itself(http, start_worker, user, dev):
    # nobody consumes `webhooks`: no task may carry this attempt
    start_worker(queues="agents", AGENTOS_WEBHOOK_ALLOW_PRIVATE="1")
    agent = make_agent(user)
    with Receiver([200]) as receiver:
        accepted = http.post("send-message/", json={"agent_id": agent.public_id, "message": "call me",
                                                    "callback_url": receiver.url}).json()
        received = receiver.wait_for(1)

    assert len(received) == 1
    assert json.loads(received[0]["body"])["data"]["job_id"] == accepted["job_id"]
    delivery = WebhookDelivery.objects.get(job__public_id=accepted["job_id"])
    assert (delivery.status, delivery.attempt_count) == ("delivered", 1)


@pytest.mark.django_db(transaction=True)
def test_a_job_ended_outside_a_worker_sends_its_webhook_through_the_queue(api, user, agent, dev):
    """A queued job cancelled from the API ends in the web process: its delivery is
    handed to the `webhooks` queue after the commit (no Celery task is current there)."""
    job = message_send(user=user, agent=agent, message="never mind", callback_url="http://127.0.0.1:9/hook")

    response = api.post(f"/api/v1/agentos/jobs/{job.public_id}/cancel/")

    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    [delivery] = WebhookDelivery.objects.filter(job=job)
    assert delivery.event_type == "job.cancelled" and delivery.status == "pending"
