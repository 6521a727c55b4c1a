"""A random SECRET_KEY kept in ./var for local runs that set none."""
from __future__ import annotations

import secrets

from config.env import ROOT_DIR


def local_secret_key() -> str:
    path = ROOT_DIR / "var" / "secret_key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    path.write_text(key)
    path.chmod(0o600)
    return key
