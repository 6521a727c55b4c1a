"""Hostile input, generated: bodies, text, files and signatures an attacker or a broken client sends.

Whatever comes in, the answer is never a 5xx; a refusal is `{"error": {"code", "message"}}`
and writes nothing; a file that cannot be read ends `failed` with a reason."""
from __future__ import annotations

import io
import json
import time
import tracemalloc
import zipfile
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, assume, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from apps.agents.models import Agent
from apps.chat.models import ChatMessage, ChatSession
from apps.jobs.models import Job
from apps.jobs.services import message_send
from apps.knowledge.models import Document
from apps.knowledge.parsing import SUPPORTED, UnreadableDocument, extract_text
from apps.schedules.models import Schedule
from apps.schedules.services import schedule_create
from apps.webhooks.models import new_secret
from apps.webhooks.services import signed_headers
from workers.knowledge import execute_ingest_job

API = "/api/v1/agentos/"
FUZZ = hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])

# Text of every kind but lone surrogates (which JSON cannot carry as raw text; see the explicit test):
# control characters (NUL included), combining marks, right-to-left, astral planes.
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
huge = st.sampled_from([1_000, 31_999, 32_000, 32_001, 200_000]).map(lambda n: "é" * n)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=15)
anything = st.one_of(text, huge, json_values)


def expect_clean(response: Any) -> None:
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str)


@pytest.fixture
def no_rate_limit(settings):
    settings.AGENTOS_RATE_LIMIT_PER_MINUTE = 0


# --- request bodies ---------------------------------------------------------------

send_bodies = st.fixed_dictionaries({}, optional={
    "agent_id": st.one_of(st.just("<agent>"), anything),
    "message": st.one_of(text, huge, anything),
    "session_id": st.one_of(st.none(), anything),
    "callback_url": st.one_of(st.none(), st.just("http://[::1"), st.just("http://x:99999/"), text, json_values),
    "multitask": st.one_of(st.sampled_from(["enqueue", "reject", "interrupt"]), anything),
    # never a valid positive `wait`: with no worker it would hold the request for that long
    "wait": st.one_of(st.just(0), st.floats(min_value=60.001), st.floats(max_value=-0.001), text, json_values),
    "timeout": st.one_of(st.integers(), anything),
}) | json_values


@pytest.mark.django_db
@FUZZ
@given(body=send_bodies)
@example(body={"agent_id": "<agent>", "message": "a\x00b"})
@example(body={"agent_id": "<agent>", "message": "x" * 32_001})
@example(body={"agent_id": "<agent>", "message": "ok", "session_id": "\x00"})
@example(body={"agent_id": "<agent>", "message": "ok", "callback_url": "http://[::1"})
@example(body={"agent_id": "<agent>", "message": {"nested": [[[{"deep": None}]]]}})
def test_send_message_bodies_never_fail_on_our_side_nor_half_write(api, agent, no_rate_limit, body):
    if isinstance(body, dict) and body.get("agent_id") == "<agent>":
        body["agent_id"] = agent.public_id
    before = (Job.objects.count(), ChatMessage.objects.count(), ChatSession.objects.count())

    response = api.post(f"{API}send-message/", json.dumps(body), content_type="application/json")

    expect_clean(response)
    after = (Job.objects.count(), ChatMessage.objects.count(), ChatSession.objects.count())
    if response.status_code == 202:
        assert after[0] == before[0] + 1 and after[1] == before[1] + 1
    else:
        assert after == before, "a refused message wrote nothing"


model_specs = st.fixed_dictionaries({}, optional={
    "provider": st.one_of(st.sampled_from(["local", "openai", "openai_like", "anthropic", "ollama"]), anything),
    "id": st.one_of(st.just("echo"), anything),
    "options": st.one_of(st.dictionaries(st.sampled_from(["latency_ms", "temperature", "base_url", "api_key"]),
                                         anything, max_size=3), json_values),
})
agent_bodies = st.fixed_dictionaries({}, optional={
    "name": st.one_of(text, huge, anything), "description": anything, "instructions": st.one_of(text, huge, anything),
    "model": st.one_of(model_specs, anything), "tools": st.one_of(st.lists(st.sampled_from(["calculator", "nope"])),
                                                                 anything),
    "visibility": st.one_of(st.sampled_from(["private", "shared", "public"]), anything),
    "shared_with": st.one_of(st.lists(st.sampled_from(["alice", "nobody"]), max_size=3), anything),
}) | json_values


@pytest.mark.django_db
@FUZZ
@given(body=agent_bodies)
@example(body={"name": "n\x00"})
@example(body={"name": "ok", "model": {"provider": "local", "id": "echo", "options": {"latency_ms": 1e308}}})
@example(body={"name": "ok", "model": {"provider": "openai_like", "id": "m", "options": {"base_url": "http://[::1"}}})
@example(body={"name": "ok", "shared_with": ["\x00"]})
def test_agent_create_bodies_never_fail_on_our_side_nor_half_write(api, user, body):
    before = Agent.objects.count()

    response = api.post(f"{API}agents/", json.dumps(body), content_type="application/json")

    expect_clean(response)
    assert Agent.objects.count() == before + (1 if response.status_code == 201 else 0)


@pytest.mark.django_db
@FUZZ
@given(raw=st.binary(max_size=300) | text.map(str.encode))
@example(raw=b"[" * 100_000 + b"]" * 100_000)
@example(raw=b'{"agent_id": ' + b"[" * 5000 + b"]" * 5000 + b"}")
@example(raw=b"\xff\xfe{\x00}")
def test_any_bytes_as_a_body_are_refused_cleanly(api, agent, no_rate_limit, raw):
    for path in ("send-message/", "agents/", "create-session/", "knowledge/", f"agents/{agent.public_id}/"):
        method = "PATCH" if path.startswith("agents/agent-") else "POST"
        expect_clean(api.generic(method, f"{API}{path}", raw, content_type="application/json"))
    assert not Job.objects.exists()


NOT_OBJECTS = ["[null, null]", "[]", "null", '"text"', "0", "true", '[{"name": "x"}]']


@pytest.mark.django_db
@pytest.mark.parametrize("raw", NOT_OBJECTS)
def test_a_json_body_that_is_not_an_object_is_refused_wherever_one_is_expected(api, client, user, agent,
                                                                                no_rate_limit, raw):
    """Every operation whose schema takes a JSON object (read from the OpenAPI document, so a
    new one is covered too), and the inbound hook: an array, string, number or null is a 400
    with the error shape, never an object of defaults (PATCH of `[null, null]` was a 200)."""
    from apps.knowledge.models import KnowledgeBase
    from apps.knowledge.services import kb_create

    kb = kb_create(user=user, name="Notes")
    job = message_send(user=user, agent=agent, message="hi")
    schedule = schedule_create(owner=user, agent_id=agent.public_id, message="hi", interval_seconds=3600)
    ids = {"agent_id": agent.public_id, "kb_id": kb.public_id, "job_id": job.public_id,
           "schedule_id": schedule.public_id}
    schema = api.get(f"{API}openapi.json").json()
    targets = [(method.upper(), path.removeprefix("/api/v1/agentos/").format(**ids))
               for path, operations in schema["paths"].items() for method, operation in operations.items()
               if "application/json" in operation.get("requestBody", {}).get("content", {})]
    assert ("PATCH", f"agents/{agent.public_id}/") in targets and ("PATCH", f"knowledge/{kb.public_id}/") in targets
    assert ("PATCH", f"schedules/{schedule.public_id}/") in targets
    hook = api.post(f"{API}hooks/", {"agent_id": agent.public_id}, content_type="application/json").json()
    before = (Agent.objects.get(pk=agent.pk).version, KnowledgeBase.objects.get(pk=kb.pk).updated_at,
              Agent.objects.count(), KnowledgeBase.objects.count(), Job.objects.count(), ChatSession.objects.count(),
              Schedule.objects.get(pk=schedule.pk).updated_at, Schedule.objects.count())

    for method, path in targets:
        response = api.generic(method, f"{API}{path}", raw, content_type="application/json")
        assert response.status_code == 400, (method, path, response.status_code, response.content[:200])
        assert response.json()["error"]["code"] == "invalid_input", (method, path, response.content[:200])
        expect_clean(response)
    signed = client.generic("POST", f"{API}hooks/{hook['hook_id']}/", raw, content_type="application/json",
                            headers=signed_headers(secret=hook["secret"], webhook_id="msg_1", body=raw))
    assert signed.status_code == 400 and signed.json()["error"]["code"] == "invalid_input", signed.content

    after = (Agent.objects.get(pk=agent.pk).version, KnowledgeBase.objects.get(pk=kb.pk).updated_at,
             Agent.objects.count(), KnowledgeBase.objects.count(), Job.objects.count(), ChatSession.objects.count(),
              Schedule.objects.get(pk=schedule.pk).updated_at, Schedule.objects.count())
    assert after == before, "a refused body changed nothing"


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["json", "lone surrogate", "query", "path", "form", "page"])
def test_text_postgresql_cannot_store_is_a_400_wherever_it_hides(api, client, user, agent, where):
    """NUL and lone surrogates reach no query: they used to end as 500s (jobs/?session_id=%00, a
    `\\ud800` escape in a message, a NUL in a session title or a file name)."""
    if where == "json":
        response = api.post(f"{API}create-session/", {"agent_id": agent.public_id, "title": "t\x00"},
                            content_type="application/json")
    elif where == "lone surrogate":
        response = api.post(f"{API}send-message/", '{"agent_id": "%s", "message": "\\ud800"}' % agent.public_id,
                            content_type="application/json")
    elif where == "query":
        response = api.get(f"{API}jobs/?session_id=%00")
    elif where == "path":
        response = api.get(f"{API}jobs/job-%00/wait/")
    elif where == "form":
        response = api.post(f"{API}knowledge/vault/documents/", {"file": SimpleUploadedFile("a.txt", b"hi"),
                                                                 "callback_url": "http://a\x00/"})
    else:
        client.force_login(user)
        response = client.get("/agentos/session/%00/")
    assert response.status_code == 400
    if where != "page":
        assert response.json()["error"]["code"] == "invalid_input"
    assert not Job.objects.exists() and not ChatSession.objects.exists() and not Document.objects.exists()


@pytest.mark.django_db
def test_a_nul_in_an_uploaded_file_name_never_reaches_the_database(api):
    response = upload(api, "a\x00b.txt", b"hi")

    assert response.status_code in (202, 400), response.content
    names = list(Document.objects.values_list("name", flat=True))
    assert names == [] if response.status_code == 400 else all("\x00" not in n for n in names)


@pytest.mark.django_db
def test_a_body_over_djangos_upload_limit_is_a_clean_refusal(api, agent, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000

    response = api.post(f"{API}send-message/", {"agent_id": agent.public_id, "message": "x" * 20_000},
                        content_type="application/json")

    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_message_over_the_limit_is_413_and_writes_nothing(api, agent, settings):
    response = api.post(f"{API}send-message/", {"agent_id": agent.public_id,
                                                "message": "x" * (settings.AGENTOS_MAX_MESSAGE_CHARS + 1)},
                        content_type="application/json")

    assert response.status_code == 413 and response.json()["error"]["code"] == "message_too_long"
    assert not Job.objects.exists() and not ChatMessage.objects.exists()


# --- file uploads ---------------------------------------------------------------------

def upload(api: Any, name: str, data: bytes) -> Any:
    return api.post(f"{API}knowledge/vault/documents/", {"file": SimpleUploadedFile(name, data)})


def ingest(response: Any) -> Document:
    """Run the upload's ingest job here, as the knowledge worker would."""
    assert response.status_code == 202, response.content
    document = Document.objects.get(public_id=response.json()["id"])
    assert execute_ingest_job(document.job_id) == "failed"
    document.refresh_from_db()
    return document


def zip_bomb(declared_mb: int = 120) -> bytes:
    """A .docx-shaped zip of a few hundred KB whose document part inflates to `declared_mb` MB."""
    from tests.files import docx

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx("a real document"))) as real, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for member in real.infolist():  # a real .docx: python-docx would go on to read the huge part
            if member.filename != "word/document.xml":
                archive.writestr(member, real.read(member))
        with archive.open("word/document.xml", "w", force_zip64=True) as part:
            block = b"\0" * (1 << 20)
            for _ in range(declared_mb):
                part.write(block)
    return out.getvalue()


@pytest.mark.django_db
def test_a_zip_bomb_named_docx_fails_clearly_without_inflating(api):
    bomb = zip_bomb()
    assert len(bomb) < 1_000_000

    tracemalloc.start()
    started = time.monotonic()
    document = ingest(upload(api, "report.docx", bomb))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert document.status == "failed" and "would expand to" in document.error
    assert peak < 50 * 1024 * 1024 and time.monotonic() - started < 10
    assert Job.objects.get(pk=document.job_id).error_code == "unreadable_document"


@pytest.mark.django_db
@pytest.mark.parametrize("name, data, reason", [
    ("empty.txt", b"", "empty"),
    ("empty.docx", b"", "empty"),
    ("binary.txt", b"\xff\xfe\xfa" * 50, "not UTF-8"),
    ("plain.docx", b"just some text, not a zip", "not a valid zip"),
    ("plain.pdf", b"%PDF-1.4 but nothing else", "PDF"),
    ("broken.json", b'{"a": [1, 2', "JSON"),
    ("nul.txt", b"\x00\x00\x00", "no text"),
])
def test_unreadable_files_end_failed_with_a_reason(api, name, data, reason):
    document = ingest(upload(api, name, data))

    assert document.status == "failed" and reason in document.error, document.error
    assert document.chunk_count == 0


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["run.exe", "noextension", "archive.zip", "image.png", ".txt.sh", "x.DOCX.exe"])
def test_a_wrong_extension_is_refused_with_415_and_nothing_stored(api, name):
    response = upload(api, name, b"MZ\x90\x00")

    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_file_type"
    assert not Document.objects.exists() and not Job.objects.exists()


@pytest.mark.django_db
def test_a_file_over_the_size_limit_is_refused_with_413(api, settings):
    settings.AGENTOS_MAX_UPLOAD_BYTES = 1000

    response = upload(api, "big.txt", b"a" * 1001)

    assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"
    assert not Document.objects.exists()


@hsettings(max_examples=40, deadline=None)
@given(suffix=st.sampled_from(sorted(SUPPORTED)), data=st.binary(max_size=2000))
@example(suffix=".docx", data=zip_bomb(2)[:-30])  # a truncated archive
@example(suffix=".pdf", data=b"%PDF-1.7\n1 0 obj << /Length 99999999 >> stream\n")
@example(suffix=".html", data=b"<html><" * 500)
@example(suffix=".csv", data=b'"unterminated\n' * 10)
def test_random_bytes_with_any_extension_parse_or_raise_unreadable(suffix, data):
    try:
        extract_text(f"file{suffix}", data)
    except UnreadableDocument as exc:
        assert str(exc)


@pytest.mark.django_db
@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from(sorted(set(SUPPORTED) - {".txt", ".md", ".html", ".htm", ".csv"})),
       data=st.binary(min_size=1, max_size=500))
def test_random_bytes_uploaded_with_a_parsed_extension_end_failed_not_broken(api, no_rate_limit, suffix, data):
    """.pdf, .docx and .json of random bytes: (almost) never readable, always a clean failure."""
    try:
        extract_text(f"f{suffix}", data)
        assume(False)  # it happened to parse: ingesting it would need the embedding model
    except UnreadableDocument:
        pass
    response = upload(api, f"random{suffix}", data)
    if response.status_code == 200:  # the same bytes again: the existing document
        return
    document = ingest(response)
    assert document.status == "failed" and document.error


# --- webhook signatures -------------------------------------------------------------

@hsettings(max_examples=100, deadline=None)
@given(body=st.text(max_size=300), webhook_id=st.text(st.characters(min_codepoint=33, max_codepoint=126),
                                                      min_size=1, max_size=40),
       change=st.sampled_from(["body", "id", "timestamp"]), salt=st.text(min_size=1, max_size=5),
       shift=st.integers(min_value=1, max_value=250).map(lambda s: s if s % 2 else -s))
def test_any_change_to_body_id_or_timestamp_breaks_the_signature(body, webhook_id, change, salt, shift):
    body = json.dumps({"message": body})  # receivers parse what they verify: the payload is JSON
    secret = new_secret()
    headers = signed_headers(secret=secret, webhook_id=webhook_id, body=body)
    Webhook(secret).verify(body.encode(), headers)  # the untouched message verifies

    if change == "body":
        tampered_body, tampered = body[:-1] + f", {json.dumps(salt)}: 1}}", headers
    elif change == "id":
        tampered_body, tampered = body, {**headers, "webhook-id": webhook_id + salt}
    else:
        tampered_body, tampered = body, {**headers,
                                         "webhook-timestamp": str(int(headers["webhook-timestamp"]) + shift)}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered_body.encode(), tampered)


@pytest.mark.django_db
@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=text.filter(lambda m: "\x00" not in m and m.strip()),
       change=st.sampled_from(["body", "id", "timestamp"]), n=st.integers(min_value=0, max_value=10**9))
def test_the_inbound_hook_refuses_every_tampered_request(client, api, agent, message, change, n):
    hook = api.post(f"{API}hooks/", {"agent_id": agent.public_id}, content_type="application/json").json()
    raw = json.dumps({"message": message})
    headers = signed_headers(secret=hook["secret"], webhook_id=f"msg_{n}", body=raw,
                             at=datetime.now(timezone.utc) - timedelta(seconds=5))
    if change == "body":
        raw = json.dumps({"message": message + "!"})
    elif change == "id":
        headers = {**headers, "webhook-id": f"msg_{n}x"}
    else:
        headers = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}
    before = Job.objects.count()

    response = client.generic("POST", f"{API}hooks/{hook['hook_id']}/", raw, content_type="application/json",
                              headers=headers)

    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_signature"
    assert Job.objects.count() == before
