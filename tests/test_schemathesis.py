"""Property-based fuzzing of the whole REST API against its own OpenAPI schema.

Schemathesis reads /api/v1/agentos/openapi.json from the Django app itself (WSGI, in
process: no HTTP server, and the requests see this test's database transaction) and
sends generated requests, valid and invalid, to every operation with alice's bearer
token. Some of the time the ids in paths and bodies are swapped for objects alice
really owns (an agent, a session, a job, a knowledge base, a document), so the object
routes are exercised beyond 404. Every response must be:

- not a 5xx (invariant 5 in DESIGN.md: bad input gets a JSON error, never a 500);
- a status code, content type, headers and body the schema declares for that operation;
- for invalid (negative) input, a 4xx, not a success.

The requests are counted; the last test asserts at least 1,000 were made, so the
claim stays checked when budgets change.
"""
from __future__ import annotations

import time
from typing import Any, Iterator

import hypothesis
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.factories import make_agent

SCHEMA_PATH = "/api/v1/agentos/openapi.json"
EXAMPLES_PER_OPERATION = 15

# Filled per test by the `real_objects` fixture; read by the hooks while data is generated.
REAL: dict[str, str] = {}
STATS = {"requests": 0, "seconds": 0.0}
# Checks that do not fit this API, each with the reason:
EXCLUDED_CHECKS: list[Any] = [
    # "schema-valid data must be accepted": the API refuses, with a stable 400 code, values whose
    # validity depends on state or on rules JSON Schema cannot state: a `cursor` it did not issue
    # (invalid_cursor), `shared_with` naming no user (unknown_user), an upload whose content is
    # not a supported type (415 unsupported_file_type), a blank or NUL-bearing message. Those
    # answers are still checked here: documented status, JSON error body, never a 5xx.
    positive_data_acceptance,
]


@pytest.fixture
def real_objects(db: Any, user: Any, token: str, settings: Any) -> Iterator[dict]:
    """alice with a token, an agent, a session with a queued job, a knowledge base with a document."""
    from apps.knowledge import services as kb_services
    from apps.opie.agentos.service import AgentOSService

    settings.AGENTOS_RATE_LIMIT_PER_MINUTE = 0  # fuzzing is not abuse; 429 is covered in its own tests
    settings.AGENTOS_SSE_MAX_SECONDS = 0.05  # no worker runs here: a live stream would only wait
    settings.AGENTOS_SSE_KEEPALIVE_SECONDS = 0.05
    settings.AGENTOS_WAIT_MAX_SECONDS = 0.02  # a long-poll answers at once with the current status
    # As django.test.Client does: a request must not close the connection holding this test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)

    agent = make_agent(user)
    service = AgentOSService(user)
    session = service.create_session(agent.public_id, title="fuzz")
    job = service.send_message(agent.public_id, "hello", session_id=session["session_id"])
    kb = kb_services.kb_create(user=user, name="Notes")
    document, _ = kb_services.document_upload(user=user, kb=kb, name="notes.txt", data=b"Some notes.",
                                              content_type="text/plain")
    REAL.clear()
    REAL.update(agent_id=agent.public_id, session_id=session["session_id"], job_id=job["job_id"],
                kb_id=kb.public_id, document_id=document.public_id, token=token)
    yield REAL
    REAL.clear()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _load_schema() -> Any:
    """The schema as the app serves it, fetched in process (pytest-django has set Django up)."""
    from django.core.wsgi import get_wsgi_application

    loaded = schemathesis.openapi.from_wsgi(SCHEMA_PATH, get_wsgi_application())
    loaded.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True,
                                    with_security_parameters=False)  # the token is ours, sent on every call
    return loaded


schema = _load_schema()


def _maybe_real(values: Any) -> st.SearchStrategy[Any]:
    """Each id-like field keeps its generated value or becomes one of alice's real ids."""
    if not isinstance(values, dict):
        return st.just(values)
    fields = {name: st.sampled_from([value, REAL[name], "vault"] if name == "kb_id" else [value, REAL[name]])
              for name, value in values.items() if name in REAL}
    if not fields:
        return st.just(values)
    return st.fixed_dictionaries(fields).map(lambda chosen: {**values, **chosen})


@schema.hook
def flatmap_case(context: Any, case: Any) -> st.SearchStrategy:
    """Valid requests aim at alice's real objects some of the time. Invalid ones are left
    alone: a swapped-in id could turn the one invalid part into a valid one."""
    if case.meta is not None and not case.meta.generation.mode.is_positive:
        return st.just(case)

    def swap(chosen: tuple[Any, Any]) -> Any:
        case.path_parameters, case.body = chosen
        return case

    return st.tuples(_maybe_real(case.path_parameters), _maybe_real(case.body)).map(swap)


@schema.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    STATS["requests"] += 1


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {REAL['token']}"}


@schema.parametrize()
@hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                     phases=[Phase.explicit, Phase.generate],
                     suppress_health_check=list(HealthCheck))
def test_api_operations(case: Any, real_objects: dict) -> None:
    started = time.monotonic()
    case.call_and_validate(headers=_auth(), excluded_checks=EXCLUDED_CHECKS)
    STATS["seconds"] += time.monotonic() - started


def test_zz_enough_requests() -> None:
    """Runs last in this module: the fuzzing above really made at least 1,000 requests."""
    print(f"schemathesis: {STATS['requests']} requests in {STATS['seconds']:.1f} s")
    assert STATS["requests"] >= 1000, STATS
