"""agno's own AgentOS (FastAPI) over the Django agents, behind Opie's API tokens.

`create_app()` builds the agno `AgentOS` from the enabled Django agents (or
those one user may use) with `DjangoSessionDb` as its storage, and wraps it in
`TokenAuthMiddleware`:

* every route but `/health` needs `Authorization: Bearer <Opie API token>`
  (the same tokens as the REST API; 401 otherwise, revocation immediate);
* an agent the token's user may not use is a 404 on `/agents/<id>/...` and is
  left out of `GET /agents` and `GET /config`;
* the user id agno records is the token's user, whatever the client sends, and
  sessions are read and written only as that user (see `agno_db`);
* `POST /agents/<id>/runs/<run_id>/continue` of a paused run claims it first
  (`agentos_continue_claim`): a second continue of the same run while the first
  is in flight, or one of a run already decided over the Opie API, is a 409
  `run_continuing`, so its tools run once.

Agents are built when the server starts; an edited agent is picked up on the
next start (or at once with `--reload`).
"""
from __future__ import annotations

import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

from agno.os import AgentOS
from django.contrib.auth import get_user_model

from apps.accounts.services import api_token_authenticate
from apps.agents.builder import agent_from_parts, build_parts
from apps.agents.models import Agent
from apps.agents.selectors import agent_list_visible
from apps.jobs.services import agentos_continue_claim, agentos_continue_release
from apps.opie.agentos.agno_db import DjangoSessionDb, current_user, in_db_thread

logger = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health"})
AGENT_PATH = re.compile(r"^/agents/([^/]+)")
CONTINUE_PATH = re.compile(r"^/agents/[^/]+/runs/([^/]+)/continue/?$")
FILTERED_LISTS = {"/agents": None, "/config": "agents"}  # path -> key of the agent list (None: the body)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _authenticate(header: str) -> Any:
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw:
        return None
    token = api_token_authenticate(raw=raw.strip())
    return token.user if token is not None else None


def _visible_agent_ids(user: Any) -> set[str]:
    return set(agent_list_visible(user=user).values_list("public_id", flat=True))


async def _json_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TokenAuthMiddleware:
    def __init__(self, app: Any, served: set[str]) -> None:
        self.app = app
        self.served = served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        # on the storage's database threads: a token check must not wait for every other request's
        user = await in_db_thread(_authenticate)(headers.get("authorization", ""))
        if user is None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 4401})
                return
            await _json_error(send, 401, "unauthorized", "Send an Opie API token: Authorization: Bearer <token>.")
            return
        visible = self.served & await in_db_thread(_visible_agent_ids)(user)
        match = AGENT_PATH.match(scope["path"])
        if match and match.group(1) not in visible:
            await _json_error(send, 404, "not_found", "agent not found.")
            return
        scope.setdefault("state", {})["user_id"] = str(user.pk)  # agno records this user, not a client's
        continuing = CONTINUE_PATH.match(scope["path"]) if scope.get("method") == "POST" else None
        run_id = continuing.group(1) if continuing else ""
        claimed = None
        if run_id:
            claimed = await in_db_thread(agentos_continue_claim)(user=user, run_id=run_id)
            if claimed is False:
                await _json_error(send, 409, "run_continuing", "This run is being continued by another request, "
                                  "or was decided over the Opie API; it runs its tools once.")
                return
        reset = current_user.set(user)
        try:
            if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] in FILTERED_LISTS:
                await self.app(scope, receive, _filtering(send, visible, FILTERED_LISTS[scope["path"]]))
            else:
                await self.app(scope, receive, send)
        finally:
            current_user.reset(reset)
            if claimed:
                await in_db_thread(agentos_continue_release)(run_id=run_id)


def _filtering(send: Send, visible: set[str], key: str | None) -> Send:
    """Buffer one JSON response and drop the agents the user may not use."""
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(chunks)
        if start.get("status") == 200:
            data = json.loads(body)
            if key is None:
                data = [a for a in data if a.get("id") in visible]
            elif isinstance(data.get(key), list):
                data[key] = [a for a in data[key] if a.get("id") in visible]
            body = json.dumps(data).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def build_agent_os(user_id: int | None) -> tuple[Any, set[str]]:
    db = DjangoSessionDb()
    if user_id is not None:
        agents = agent_list_visible(user=get_user_model().objects.get(pk=user_id))
    else:
        agents = Agent.objects.filter(enabled=True)
    built = [agent_from_parts(build_parts(a, pooled=False), db=db) for a in agents]
    agent_os = AgentOS(id="opie", name="Opie AgentOS", description="Opie's Django agents", agents=built, db=db,
                       telemetry=False, auto_provision_dbs=False)
    return agent_os, {a.id for a in built}


def create_app(user_id: int | None = None) -> Any:
    """The ASGI app `agentos_start` serves (with `--reload`, through apps.opie.agentos.asgi,
    which sets Django up first). Reads the database in a thread, so it also works when
    uvicorn calls it inside its event loop."""
    if user_id is None and os.environ.get("OPIE_AGENTOS_USER_ID"):
        user_id = int(os.environ["OPIE_AGENTOS_USER_ID"])
    with ThreadPoolExecutor(1) as pool:
        agent_os, served = pool.submit(build_agent_os, user_id).result()
    logger.info("AgentOS serving %d agent(s)", len(served))
    return TokenAuthMiddleware(agent_os.get_app(), served)
