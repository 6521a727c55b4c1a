"""Inbound hooks: an external system sends a message to one agent, signed the
Standard Webhooks way with the hook's secret, and it is accepted like
send-message.

Apart from the outbound services (apps.webhooks.services) because this side
accepts jobs through apps.jobs.services, whose job lifecycle imports those."""
from __future__ import annotations

from collections.abc import Mapping

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from apps.agents.models import Agent
from apps.chat.selectors import session_get_owned
from apps.common import DomainError
from apps.jobs.models import Job
from apps.jobs.services import message_send
from apps.webhooks.models import InboundDelivery, InboundHook


def inbound_hook_create(*, user: AbstractBaseUser, agent: Agent) -> InboundHook:
    """A new address for `agent` (one the user may use), with its own secret."""
    return InboundHook.objects.create(owner=user, agent=agent)


def inbound_signature_verify(*, hook: InboundHook, body: bytes, headers: Mapping[str, str]) -> None:
    """The hook's secret signed exactly this body, id and timestamp, less than 5 minutes ago."""
    try:
        Webhook(hook.secret).verify(body, {k.lower(): v for k, v in headers.items()}, json_parse=False)
    except WebhookVerificationError as exc:
        raise DomainError("invalid_signature", f"Signature check failed: {exc}.", status=401) from None


@transaction.atomic
def inbound_message_receive(*, hook: InboundHook, webhook_id: str, message: str, session_id: str | None = None,
                            callback_url: str = "") -> Job:
    """Accept a verified message: its webhook-id goes into the hook's ledger in the
    transaction that accepts the job, so a replayed id is refused and never runs twice."""
    try:
        with transaction.atomic():
            InboundDelivery.objects.create(hook=hook, webhook_id=webhook_id[:200])
    except IntegrityError:
        raise DomainError("replayed", "This webhook-id was already received.", status=409) from None
    session = session_get_owned(user=hook.owner, session_id=session_id) if session_id else None
    return message_send(user=hook.owner, agent=hook.agent, message=message, session=session,
                        callback_url=callback_url)
