"""Small helpers shared by every app."""
from __future__ import annotations

import secrets


def public_id(prefix: str) -> str:
    """An unguessable public id such as `agent-3f9c2a7d41be`: never a sequential key."""
    return f"{prefix}-{secrets.token_hex(6)}"


class DomainError(Exception):
    """A refusal with a stable machine-readable code; the API maps it to JSON."""

    status = 400

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status


class NotFound(DomainError):
    status = 404

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}_not_found", f"No such {what.replace('_', ' ')}.")
