"""Knowledge bases on PostgreSQL + pgvector with real offline embeddings (all-MiniLM-L6-v2),
ingested by a real worker on the `knowledge` queue."""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import httpx
import pytest
from django.db import connection, connections, transaction
from standardwebhooks.webhooks import Webhook

from apps.jobs.models import Job
from apps.knowledge.models import Chunk, Document, KnowledgeBase
from apps.knowledge.services import document_upload, kb_create
from tests.conftest import WorkerProcess, wait_for_job, worker_env
from tests.factories import make_agent, make_token
from tests.files import every_type
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.worker

PARIS = "The Eiffel Tower stands in Paris on the Champ de Mars and was finished in 1889."
PLANTS = "Photosynthesis lets green plants turn sunlight, water and carbon dioxide into sugar."
CLUSTERS = "Kubernetes schedules containers onto nodes and restarts them when they crash."


def upload(client: httpx.Client, kb_id: str, name: str, data: bytes) -> httpx.Response:
    return client.post(f"knowledge/{kb_id}/documents/", files={"file": (name, data)})


def wait_document(client: httpx.Client, kb_id: str, document_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        document = client.get(f"knowledge/{kb_id}/documents/{document_id}/").json()
        if document["status"] in ("ready", "failed"):
            return document
        assert time.monotonic() < deadline, f"document still {document['status']}"
        time.sleep(0.2)


def ask(client: httpx.Client, agent_id: str, message: str, session_id: str | None = None) -> dict[str, Any]:
    """Send a message, wait for its run; the finished job (its result has the sources)."""
    sent = client.post("send-message/", json={"agent_id": agent_id, "message": message, "session_id": session_id})
    assert sent.status_code == 202, sent.text
    job = wait_for_job(client, sent.json()["job_id"], timeout=90)
    assert job["status"] == "succeeded", job
    return {**job, "session_id": sent.json()["session_id"]}


def make_kb(client: httpx.Client, name: str = "Notes", **fields: Any) -> str:
    response = client.post("knowledge/", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def _module_worker(django_db_setup: Any, tmp_path_factory: Any) -> Iterator[WorkerProcess]:
    """One worker for the module: it loads the embedding model once, like in production."""
    worker = WorkerProcess("knowledge", "knowledge,agents,webhooks", 8,
                           worker_env(AGENTOS_WEBHOOK_ALLOW_PRIVATE="1", AGENTOS_WEBHOOK_RETRY_SCHEDULE="0,0.5,0.5"),
                           tmp_path_factory.mktemp("knowledge") / "worker.log")
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def knowledge_worker(_module_worker: WorkerProcess, transactional_db: Any) -> WorkerProcess:
    return _module_worker


def test_an_upload_is_ingested_and_search_ranks_the_relevant_chunk_first(http, knowledge_worker):
    kb = make_kb(http)
    documents = {}
    for name, text in (("paris.txt", PARIS), ("plants.txt", PLANTS), ("clusters.txt", CLUSTERS)):
        accepted = upload(http, kb, name, text.encode())
        assert accepted.status_code == 202 and accepted.json()["status"] == "pending"
        documents[name] = accepted.json()
    for document in documents.values():
        wait_job = wait_for_job(http, document["job_id"], timeout=90)
        assert wait_job["status"] == "succeeded" and wait_job["kind"] == "ingest"
        ready = wait_document(http, kb, document["id"])
        assert ready["status"] == "ready" and ready["chunk_count"] == 1 and ready["error"] is None

    hits = http.post(f"knowledge/{kb}/search/", json={"query": "Which city is the Eiffel Tower in?",
                                                      "limit": 3}).json()["results"]

    assert [h["document_name"] for h in hits][0] == "paris.txt"
    assert hits[0]["content"] == PARIS
    assert hits[0]["score"] > hits[1]["score"] + 0.2, "the relevant chunk is well above unrelated ones"
    assert len(Chunk.objects.get(document__public_id=documents["paris.txt"]["id"]).embedding) == 384
    events = http.get(f"jobs/{documents['paris.txt']['job_id']}/events/", headers={"Accept": "text/event-stream"})
    assert "ingest.progress" in events.text


def test_every_supported_file_type_is_parsed_embedded_and_found(http, knowledge_worker):
    kb = make_kb(http)
    fact = "The lighthouse keeper on Skerry Island feeds seven ginger cats every morning."
    uploaded = {name: upload(http, kb, name, data).json() for name, data in every_type(fact).items()}

    for name, document in uploaded.items():
        ready = wait_document(http, kb, document["id"])
        assert ready["status"] == "ready", (name, ready["error"])
        assert ready["chunk_count"] >= 1
    hits = http.post(f"knowledge/{kb}/search/", json={"query": "who feeds the cats?", "limit": 7}).json()["results"]
    assert {h["document_name"] for h in hits} == set(uploaded)
    assert all("seven ginger cats" in h["content"] for h in hits)


def test_bad_files_fail_clearly_and_never_break_the_knowledge_base(http, knowledge_worker):
    kb = make_kb(http)
    good = upload(http, kb, "paris.txt", PARIS.encode()).json()

    refused = upload(http, kb, "tool.exe", b"MZ\x90\x00")
    assert refused.status_code == 415 and refused.json()["error"]["code"] == "unsupported_file_type"
    broken = upload(http, kb, "broken.pdf", b"%PDF-1.4 this is not really a pdf").json()
    empty = upload(http, kb, "empty.txt", b"").json()
    binary = upload(http, kb, "latin1.txt", "caf\xe9".encode("latin-1")).json()

    assert wait_document(http, kb, broken["id"])["error"].startswith("could not read the PDF file")
    assert wait_document(http, kb, empty["id"])["error"] == "the file is empty"
    assert wait_document(http, kb, binary["id"])["error"] == "the file is not UTF-8 text"
    assert http.get(f"jobs/{broken['job_id']}/").json()["error"]["code"] == "unreadable_document"
    assert wait_document(http, kb, good["id"])["status"] == "ready"
    assert Chunk.objects.filter(document__status="failed").count() == 0
    hits = http.post(f"knowledge/{kb}/search/", json={"query": "Eiffel Tower"}).json()["results"]
    assert [h["document_name"] for h in hits] == ["paris.txt"]


def test_the_same_file_twice_is_one_document_and_deleting_it_drops_its_chunks(http, settings, knowledge_worker):
    kb = make_kb(http)
    first = upload(http, kb, "paris.txt", PARIS.encode())
    wait_document(http, kb, first.json()["id"])

    again = upload(http, kb, "paris-copy.txt", PARIS.encode())

    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert Document.objects.count() == 1 and Chunk.objects.count() == 1
    settings.AGENTOS_MAX_UPLOAD_BYTES = 10
    too_big = upload(http, kb, "big.txt", b"x" * 11)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "file_too_large"

    assert http.delete(f"knowledge/{kb}/documents/{first.json()['id']}/").status_code == 204
    assert Chunk.objects.count() == 0
    assert http.get(f"knowledge/{kb}/documents/{first.json()['id']}/").status_code == 404


def test_an_agent_answers_from_its_knowledge_and_the_reply_cites_the_chunk(http, user, knowledge_worker):
    kb = make_kb(http)
    for name, text in (("paris.txt", PARIS), ("plants.txt", PLANTS)):
        wait_document(http, kb, upload(http, kb, name, text.encode()).json()["id"])
    agent = make_agent(user)
    version = agent.version
    assert http.post(f"knowledge/{kb}/agents/", json={"agent_id": agent.public_id}).status_code == 200
    agent.refresh_from_db()
    assert agent.version == version + 1, "attaching knowledge changes the agent: warm pools rebuild it"

    sent = http.post("send-message/", json={"agent_id": agent.public_id, "message": "Where is the Eiffel Tower?"})
    job = wait_for_job(http, sent.json()["job_id"], timeout=90)

    assert job["status"] == "succeeded"
    assert "From the knowledge base: [1] (paris.txt) " + PARIS in job["result"]["content"]
    reply = http.get(f"sessions/{sent.json()['session_id']}/").json()["messages"][-1]
    assert reply["sources"][0]["document_name"] == "paris.txt" and reply["sources"][0]["content"] == PARIS
    assert reply["sources"][0]["score"] > reply["sources"][1]["score"]


def test_knowledge_permissions(http, live_server, user, other_user, knowledge_worker):
    kb = make_kb(http, "Alice's notes")
    document = upload(http, kb, "paris.txt", PARIS.encode()).json()
    wait_document(http, kb, document["id"])
    public_agent = make_agent(user, visibility="public")
    http.post(f"knowledge/{kb}/agents/", json={"agent_id": public_agent.public_id})
    mallory = httpx.Client(base_url=f"{live_server.url}/api/v1/agentos/",
                           headers={"Authorization": f"Bearer {make_token(other_user)}"}, timeout=30)
    mallorys_agent = make_agent(other_user)

    # someone else's knowledge base and documents do not exist for her
    assert mallory.get(f"knowledge/{kb}/").status_code == 404
    assert mallory.get(f"knowledge/{kb}/documents/").status_code == 404
    assert mallory.get(f"knowledge/{kb}/documents/{document['id']}/").status_code == 404
    assert mallory.post(f"knowledge/{kb}/search/", json={"query": "Eiffel"}).status_code == 404
    assert mallory.post(f"knowledge/{kb}/agents/", json={"agent_id": mallorys_agent.public_id}).status_code == 404
    assert mallory.delete(f"knowledge/{kb}/documents/{document['id']}/").status_code == 404
    assert upload(mallory, kb, "x.txt", b"x").status_code == 404
    assert mallory.get("knowledge/").json()["knowledge_bases"] == []
    # ... nor can she reach it through her own vault
    assert mallory.get(f"knowledge/vault/documents/{document['id']}/").status_code == 404

    # through Alice's public agent she gets what that agent retrieves for her question, as sources
    sent = mallory.post("send-message/", json={"agent_id": public_agent.public_id, "message": "Eiffel Tower?"})
    reply = wait_for_job(mallory, sent.json()["job_id"], timeout=90)
    assert reply["status"] == "succeeded" and reply["result"]["sources"][0]["document_name"] == "paris.txt"

    # shared with her: she may read and search it, not change it
    assert http.patch(f"knowledge/{kb}/", json={"visibility": "shared", "shared_with": ["mallory"]}).status_code == 200
    assert mallory.post(f"knowledge/{kb}/search/", json={"query": "Eiffel"}).json()["results"][0]["content"] == PARIS
    assert mallory.delete(f"knowledge/{kb}/").json()["error"]["code"] == "not_owner"
    assert upload(mallory, kb, "x.txt", b"x").status_code == 403


def test_vault_agents_follow_the_setting(api, settings, user):
    settings.AGENTOS_INCLUDE_VAULT_AGENTS = True
    agents = api.get("/api/v1/agentos/agents/").json()["agents"]
    vault = [a for a in agents if a["name"] == "My vault"]
    assert len(vault) == 1
    assert api.get("/api/v1/agentos/agents/").json()["agents"] == agents, "made once"
    vault_kb = api.get("/api/v1/agentos/knowledge/vault/").json()
    assert vault_kb["is_vault"] and vault_kb["agent_ids"] == [vault[0]["id"]]

    settings.AGENTOS_INCLUDE_VAULT_AGENTS = False
    assert "My vault" not in [a["name"] for a in api.get("/api/v1/agentos/agents/").json()["agents"]]
    assert api.get(f"/api/v1/agentos/agents/{vault[0]['id']}/").status_code == 404


def test_the_vault_cannot_be_deleted_and_its_agent_keeps_it(api, settings, user):
    settings.AGENTOS_INCLUDE_VAULT_AGENTS = True
    [vault_agent] = [a for a in api.get("/api/v1/agentos/agents/").json()["agents"] if a["name"] == "My vault"]
    vault = api.get("/api/v1/agentos/knowledge/vault/").json()

    by_id = api.delete(f"/api/v1/agentos/knowledge/{vault['id']}/")
    by_alias = api.delete("/api/v1/agentos/knowledge/vault/")

    for refused in (by_id, by_alias):
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "vault_not_deletable" and refused.json()["error"]["message"]
    after = api.get("/api/v1/agentos/knowledge/vault/").json()
    assert after["id"] == vault["id"] and after["agent_ids"] == [vault_agent["id"]]


def _wait_for_a_lock_wait(timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND datname = current_database()")
            if cursor.fetchone()[0]:
                return
            assert time.monotonic() < deadline, "the second upload never waited on the first"
            time.sleep(0.02)


@pytest.mark.django_db(transaction=True)
def test_two_identical_uploads_at_the_same_moment_make_one_document(user, knowledge_worker):
    """Both uploads see no copy; the first holds its insert open until the second is
    blocked on the unique index, so the second one's insert fails for certain. The
    module's knowledge worker ingests the one document; the test waits for it, so no
    ingest is still writing when the test's tables are flushed (that deadlocked once)."""
    kb = kb_create(user=user, name="Race")
    inserted, release = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def first() -> None:
        try:
            with transaction.atomic():  # an upload whose commit is a little late
                results["first"] = document_upload(user=user, kb=kb, name="a.txt", data=PARIS.encode())
                inserted.set()
                release.wait(10)
        except Exception as exc:  # noqa: BLE001 - reported below
            results["first"] = exc
        finally:
            connections.close_all()

    def second() -> None:
        try:
            results["second"] = document_upload(user=user, kb=KnowledgeBase.objects.get(pk=kb.pk), name="b.txt",
                                                data=PARIS.encode())
        except Exception as exc:  # noqa: BLE001 - reported below
            results["second"] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert inserted.wait(10)
    threads[1].start()
    _wait_for_a_lock_wait()
    release.set()
    for thread in threads:
        thread.join(15)

    (document, created), (again, created_again) = results["first"], results["second"]
    assert created and not created_again and again.pk == document.pk
    assert Document.objects.count() == 1 and Job.objects.filter(kind="ingest").count() == 1
    deadline = time.monotonic() + 90
    while Job.objects.filter(kind="ingest").exclude(status__in=Job.TERMINAL).exists():
        assert time.monotonic() < deadline, "the document was never ingested"
        time.sleep(0.1)


def test_the_owner_lists_documents_and_deleting_the_knowledge_base_drops_its_chunks(http, knowledge_worker):
    kb = make_kb(http)
    other = make_kb(http, "Kept")
    ids = [upload(http, kb, name, text.encode()).json()["id"] for name, text in (("paris.txt", PARIS),
                                                                               ("plants.txt", PLANTS))]
    kept = upload(http, other, "clusters.txt", CLUSTERS.encode()).json()["id"]
    for document_id in ids:
        wait_document(http, kb, document_id)
    wait_document(http, other, kept)

    listed = http.get(f"knowledge/{kb}/documents/").json()["documents"]

    assert sorted(d["id"] for d in listed) == sorted(ids)
    assert {d["name"]: (d["status"], d["chunk_count"]) for d in listed} == {"paris.txt": ("ready", 1),
                                                                           "plants.txt": ("ready", 1)}
    assert http.delete(f"knowledge/{kb}/").status_code == 204
    assert http.get(f"knowledge/{kb}/").status_code == 404
    assert not Chunk.objects.filter(document__public_id__in=ids).exists() and not Document.objects.filter(
        public_id__in=ids).exists()
    assert list(Chunk.objects.values_list("document__public_id", flat=True)) == [kept]


def test_an_ingest_job_delivers_one_signed_webhook(http, knowledge_worker):
    kb = make_kb(http)
    with Receiver([200]) as receiver:
        accepted = http.post(f"knowledge/{kb}/documents/", files={"file": ("paris.txt", PARIS.encode())},
                             data={"callback_url": receiver.url + "/ingested"}).json()
        job = wait_for_job(http, accepted["job_id"], timeout=90)
        [request] = receiver.wait_for(1)

    event = Webhook(http.get("webhook-secret/").json()["secret"]).verify(request["body"], request["headers"])
    assert request["path"] == "/ingested" and event["type"] == "job.succeeded"
    assert event["data"]["job_id"] == job["job_id"] and event["data"]["kind"] == "ingest"
    assert event["data"]["result"] == {"document_id": accepted["id"], "chunk_count": 1, "status": "ready"}


def test_detaching_a_knowledge_base_cuts_off_retrieval_for_the_next_run(http, user, knowledge_worker):
    kb = make_kb(http)
    wait_document(http, kb, upload(http, kb, "paris.txt", PARIS.encode()).json()["id"])
    agent = make_agent(user)
    http.post(f"knowledge/{kb}/agents/", json={"agent_id": agent.public_id})
    first = ask(http, agent.public_id, "Where is the Eiffel Tower?")
    assert first["result"]["sources"][0]["document_name"] == "paris.txt"

    assert http.delete(f"knowledge/{kb}/agents/{agent.public_id}/").status_code == 204
    second = ask(http, agent.public_id, "Where is the Eiffel Tower?", session_id=first["session_id"])

    assert second["result"]["sources"] == [] and PARIS not in second["result"]["content"]


def test_unsharing_a_knowledge_base_cuts_off_retrieval_for_the_next_run(http, live_server, other_user,
                                                                          knowledge_worker):
    kb = make_kb(http, visibility="shared", shared_with=["mallory"])
    wait_document(http, kb, upload(http, kb, "paris.txt", PARIS.encode()).json()["id"])
    mallory = httpx.Client(base_url=f"{live_server.url}/api/v1/agentos/",
                           headers={"Authorization": f"Bearer {make_token(other_user)}"}, timeout=30)
    her_agent = make_agent(other_user)
    assert mallory.post(f"knowledge/{kb}/agents/", json={"agent_id": her_agent.public_id}).status_code == 200
    first = ask(mallory, her_agent.public_id, "Where is the Eiffel Tower?")
    assert first["result"]["sources"][0]["document_name"] == "paris.txt"

    assert http.patch(f"knowledge/{kb}/", json={"visibility": "private", "shared_with": []}).status_code == 200
    second = ask(mallory, her_agent.public_id, "Where is the Eiffel Tower?", session_id=first["session_id"])

    assert second["result"]["sources"] == [] and PARIS not in second["result"]["content"]


def test_a_shared_agent_never_cites_its_owners_other_private_knowledge(http, live_server, user, other_user,
                                                                        knowledge_worker):
    attached = make_kb(http, "Plants")
    private = make_kb(http, "Private travel notes")
    wait_document(http, attached, upload(http, attached, "plants.txt", PLANTS.encode()).json()["id"])
    wait_document(http, private, upload(http, private, "paris.txt", PARIS.encode()).json()["id"])
    wait_document(http, "vault", upload(http, "vault", "vault-paris.txt", (PARIS + " Alice's own copy.").encode())
                  .json()["id"])
    public_agent = make_agent(user, visibility="public")
    http.post(f"knowledge/{attached}/agents/", json={"agent_id": public_agent.public_id})
    mallory = httpx.Client(base_url=f"{live_server.url}/api/v1/agentos/",
                           headers={"Authorization": f"Bearer {make_token(other_user)}"}, timeout=30)

    reply = ask(mallory, public_agent.public_id, "Where is the Eiffel Tower in Paris?")

    sources = reply["result"]["sources"]
    assert sources and {s["knowledge_base_id"] for s in sources} == {attached}
    assert {s["document_name"] for s in sources} == {"plants.txt"}
    assert "Champ de Mars" not in reply["result"]["content"]
