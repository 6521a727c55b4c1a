"""Request and response shapes; they are also the published OpenAPI schema."""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from ninja import Field, Schema
from pydantic import model_validator


class ErrorBody(Schema):
    code: str
    message: str


class ErrorOut(Schema):
    error: ErrorBody


TOOL_POLICIES_DOC = ('Per tool: "auto" (runs when the model asks), "approve" (a person approves or rejects each '
                     'call, and may edit its arguments) or "input" (a person supplies its arguments). '
                     'Tools not named are "auto".')


def omittable(**constraints: Any) -> Any:
    """A PATCH field that may be left out but not sent as null: the published schema
    says so too (no `null` type, no `default: null`)."""
    return Field(None, json_schema_extra=lambda schema: schema.pop("default", None), **constraints)


class ObjectIn(Schema):
    """A JSON object in a request: every request body, and every object inside one.

    ninja's Schema reads its fields as attributes of whatever it is given, so a JSON
    array, string, number or null would pass as an object of defaults (a PATCH of
    `[null, null]` changed nothing and answered 200); the schema says this is an object."""

    NOT_AN_OBJECT: ClassVar[str] = "the request body must be a JSON object"

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, value: Any) -> Any:
        raw = getattr(value, "_obj", value)  # ninja wraps what it validates in a DjangoGetter
        if not isinstance(raw, dict):
            raise ValueError(cls.NOT_AN_OBJECT)
        return value


class ModelSpec(ObjectIn):
    NOT_AN_OBJECT = "model must be an object with provider, id and options"

    provider: str = Field("local", max_length=32)
    id: str = Field("echo", max_length=200)
    options: dict[str, Any] = Field(default_factory=dict)


class AgentIn(ObjectIn):
    name: str = Field(..., min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    instructions: str = Field("", max_length=20000)
    model: ModelSpec = Field(default_factory=ModelSpec)
    tools: list[str] = Field(default_factory=list, max_length=20)
    tool_policies: dict[str, str] = Field(default_factory=dict, description=TOOL_POLICIES_DOC)
    visibility: Literal["private", "shared", "public"] = "private"
    shared_with: Optional[list[str]] = Field(None, max_length=100)


class AgentPatch(ObjectIn):
    """Every field may be omitted; only `shared_with` may be null (no one)."""
    name: str = omittable(min_length=1, max_length=200)
    description: str = omittable(max_length=2000)
    instructions: str = omittable(max_length=20000)
    model: ModelSpec = omittable()
    tools: list[str] = omittable(max_length=20)
    tool_policies: dict[str, str] = omittable(description=TOOL_POLICIES_DOC)
    visibility: Literal["private", "shared", "public"] = omittable()
    shared_with: Optional[list[str]] = Field(None, max_length=100)
    enabled: bool = omittable()


class AgentOut(Schema):
    id: str
    name: str
    description: str
    instructions: Optional[str]
    model: ModelSpec
    tools: list[str]
    tool_policies: dict[str, str]
    visibility: str
    version: int
    enabled: bool
    owner: str
    is_owner: bool
    created_at: str
    updated_at: str


class AgentList(Schema):
    agents: list[AgentOut]


class SessionCreateIn(ObjectIn):
    agent_id: str = Field(..., min_length=1, max_length=40)
    title: str = Field("", max_length=200)


class SessionOut(Schema):
    session_id: str
    agent_id: str
    title: str
    created_at: str
    updated_at: str


class MessageOut(Schema):
    id: str
    role: Literal["user", "assistant"]
    content: str
    tool_calls: list[dict[str, Any]]
    sources: list[dict[str, Any]] = []
    created_at: str
    job_id: Optional[str]


class SessionDetail(SessionOut):
    messages: list[MessageOut]


class SessionList(Schema):
    sessions: list[SessionOut]
    next: Optional[str]


class SendMessageIn(ObjectIn):
    agent_id: str = Field(..., min_length=1, max_length=40)
    message: str = Field(..., min_length=1)
    session_id: Optional[str] = Field(None, max_length=40)
    callback_url: Optional[str] = Field(None, max_length=2000,
                                        description="POSTed a signed job.<status> event when the job ends.")
    multitask: Literal["enqueue", "reject", "interrupt"] = Field(
        "enqueue", description="When the session is busy: queue behind, refuse (409), or cancel the earlier job.")
    wait: Optional[float] = Field(None, ge=0, le=60,
                                  description="Seconds to wait for the reply: 200 with the job if it ends in time.")
    timeout: Optional[int] = Field(None, ge=1, description="This job's deadline in seconds (within the server's cap).")
    priority: Literal["low", "normal", "high"] = Field(
        "normal", description="Orders your own waiting jobs; never passes another user's, and a session's order "
                              "comes first.")


class SyncIn(ObjectIn):
    agent_id: Optional[str] = Field(None, max_length=40)
    user_id: Optional[int] = None
    dry_run: bool = False
    callback_url: Optional[str] = Field(None, max_length=2000)


class JobAccepted(Schema):
    job_id: str
    status: str
    session_id: Optional[str]
    poll_url: str


class JobError(Schema):
    code: str
    message: str


class RequiredAction(Schema):
    # as dicts, so an `approve` action has no `fields` key at all (rather than `"fields": null`)
    actions: list[dict[str, Any]] = Field(..., description=(
        'Each `{"id", "type": "approve" | "input", "tool", "arguments", "fields"?}`; `fields` (input actions '
        'only): `[{"name", "type", "description"}]`.'))
    expires_at: Optional[str]


class DecisionOut(Schema):
    action_id: str
    tool: str
    decision: Literal["approved", "rejected", "input"]
    decided_by: Optional[str]
    decided_at: Optional[str]
    note: str
    arguments_before: dict[str, Any]
    arguments_after: dict[str, Any]
    values: Optional[dict[str, Any]]
    staff_override: bool


class ActionsIn(ObjectIn):
    decisions: list[Any] = Field(..., description=(
        'Each `{"action_id", "approved": true|false, "note"?, "arguments"?}` for an `approve` action '
        '(`arguments`, with approved: true, replaces the call\'s arguments) or `{"action_id", "values": {...}}` '
        'for an `input` action.'))


class JobOut(Schema):
    job_id: str
    kind: str
    status: str
    agent_id: Optional[str]
    session_id: Optional[str]
    created_at: Optional[str]
    started_at: Optional[str]
    finished_at: Optional[str]
    result: Optional[dict[str, Any]]
    error: Optional[JobError]
    attempts: int
    priority: Literal["low", "normal", "high"] = "normal"
    retryable: bool = Field(False, description="A failed job whose error a retry may fix "
                                               "(POST jobs/<id>/retry/); false for every other job.")
    retry_of: Optional[str] = Field(None, description="The failed job this one runs again, if it is a retry.")
    trace_id: Optional[str] = Field(None, description="The job's OpenTelemetry trace id (32 hex digits), which "
                                                      "every span and log line of the job carries; null while "
                                                      "tracing is off.")
    required_action: Optional[RequiredAction] = Field(
        None, description="While `status` is `requires_action`: the tool calls waiting for a decision.")
    decisions: list[DecisionOut] = Field(default_factory=list, description="Every decision on the job's actions.")


JobStatus = Literal["queued", "running", "requires_action", "succeeded", "failed", "cancelled", "expired"]
JobKind = Literal["message", "sync", "ingest"]


class JobList(Schema):
    jobs: list[JobOut]
    next: Optional[str]


class InfoOut(Schema):
    name: str
    version: str
    agno_version: str
    enabled: bool
    agent_count: int
    queues: list[str]
    pool: Optional[dict[str, Any]] = None
    queue: Optional[dict[str, Any]] = Field(None, description="Staff: queued and running jobs per user, and the "
                                                              "oldest queued job's age in seconds.")
