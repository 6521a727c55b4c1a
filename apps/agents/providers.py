"""Model providers: agent spec -> agno Model. Credentials come from settings only."""
from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlparse

import httpx
from django.conf import settings

from apps.common import DomainError

PROVIDERS = ("local", "openai", "openai_like", "anthropic", "ollama")
LOCAL_MODELS = ("echo",)
_COMMON_OPTIONS = {"temperature", "max_tokens", "timeout"}
_OPTIONS = {
    "local": {"latency_ms"},
    "openai": _COMMON_OPTIONS,
    "openai_like": _COMMON_OPTIONS | {"base_url"},
    "anthropic": _COMMON_OPTIONS,
    "ollama": {"temperature"},
}
MAX_LATENCY_MS = 600_000


def shown_options(provider: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The options an API answer may carry: only the known tuning keys of the provider.
    Anything else (an `api_key` slipped in through the admin or the database) stays hidden."""
    allowed = _OPTIONS.get(provider, set())
    return {key: value for key, value in (options or {}).items() if key in allowed}


def validate_model_spec(provider: str, model_id: str, options: Any) -> None:
    if provider not in PROVIDERS:
        raise DomainError("unknown_provider", f"provider must be one of {', '.join(PROVIDERS)}.")
    if not isinstance(model_id, str) or not model_id.strip():
        raise DomainError("invalid_model", "model id must be a non-empty string.")
    if provider == "local" and model_id not in LOCAL_MODELS:
        raise DomainError("invalid_model", f"the local provider offers: {', '.join(LOCAL_MODELS)}.")
    if not isinstance(options, dict):
        raise DomainError("invalid_model_options", "model options must be an object.")
    unknown = set(options) - _OPTIONS[provider]
    if unknown:
        raise DomainError("invalid_model_options",
                          f"unknown option(s) for {provider}: {', '.join(sorted(unknown))}.")
    latency = options.get("latency_ms", 0)
    if not isinstance(latency, int) or isinstance(latency, bool) or not 0 <= latency <= MAX_LATENCY_MS:
        raise DomainError("invalid_model_options", f"latency_ms must be an integer from 0 to {MAX_LATENCY_MS}.")
    if provider == "openai_like":
        try:
            url = urlparse(str(options.get("base_url", "")))
        except ValueError:  # a broken IPv6 host: not a URL
            url = urlparse("")
        if url.scheme not in ("http", "https") or not url.netloc:
            raise DomainError("invalid_model_options", "openai_like needs an http(s) base_url option.")


_http_clients: dict[tuple[str, float], Any] = {}
_http_lock = threading.Lock()


def shared_http_client(base_url: str, timeout: float) -> Any:
    """One HTTP connection pool per provider endpoint in this process, shared by
    every agent that calls it: a TLS context and its connections are made once,
    not once per agent (which would cost about 1 MB and a handshake each).
    httpx.Client is thread-safe."""
    key = (base_url, timeout)
    with _http_lock:
        client = _http_clients.get(key)
        if client is None or client.is_closed:
            limits = httpx.Limits(max_connections=settings.AGENTOS_PROVIDER_MAX_CONNECTIONS,
                                  max_keepalive_connections=settings.AGENTOS_PROVIDER_MAX_CONNECTIONS)
            client = _http_clients[key] = httpx.Client(timeout=timeout, limits=limits, follow_redirects=True)
        return client


def reset_http_clients() -> None:
    """After fork: a connection pool must not cross a process boundary."""
    with _http_lock:
        _http_clients.clear()


def build_model(provider: str, model_id: str, options: dict[str, Any], *, pooled: bool = True) -> Any:
    """One agno Model instance; safe to share between runs (its HTTP client is thread-safe).
    `pooled`: OpenAI and OpenAI-compatible models share their endpoint's (sync)
    connection pool; the AgentOS server runs async and lets agno make its own."""
    timeout = float(options.get("timeout", settings.AGENTOS_MODEL_TIMEOUT))

    def pool(base_url: str) -> Any:
        return shared_http_client(base_url, timeout) if pooled else None

    tuning = {k: options[k] for k in ("temperature", "max_tokens") if k in options}
    # Each provider's classes are imported when an agent uses it: import-time cost (0.1 s for
    # the local model, 0.6-1.6 s for each provider's SDK), and web processes never build a model.
    if provider == "local":
        from apps.agents.local_model import LocalModel  # import-time cost (see above)

        return LocalModel(id=model_id, latency_ms=int(options.get("latency_ms", 0)))
    if provider == "openai":
        from agno.models.openai import OpenAIChat  # import-time cost (see above)

        return OpenAIChat(id=model_id, api_key=settings.OPENAI_API_KEY or None,
                          base_url=settings.OPENAI_BASE_URL or None, timeout=timeout, max_retries=2,
                          http_client=pool(settings.OPENAI_BASE_URL or "openai"), **tuning)
    if provider == "openai_like":
        from agno.models.openai import OpenAILike  # import-time cost (see above)

        # the deployment's key for OpenAI-compatible servers; never one from the database
        return OpenAILike(id=model_id, base_url=options["base_url"], api_key=settings.OPENAI_LIKE_API_KEY,
                          timeout=timeout, max_retries=2, http_client=pool(options["base_url"]),
                          **tuning)
    if provider == "anthropic":
        from agno.models.anthropic import Claude  # import-time cost (see above)

        return Claude(id=model_id, api_key=settings.ANTHROPIC_API_KEY or None, timeout=timeout,
                      **({"max_tokens": tuning["max_tokens"]} if "max_tokens" in tuning else {}),
                      **({"temperature": tuning["temperature"]} if "temperature" in tuning else {}))
    if provider == "ollama":
        from agno.models.ollama import Ollama  # import-time cost (see above)

        return Ollama(id=model_id, host=settings.OLLAMA_HOST,
                      options={"temperature": options["temperature"]} if "temperature" in options else None)
    raise DomainError("unknown_provider", f"unknown provider {provider!r}")
