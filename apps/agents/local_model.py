"""`local`: the embedded model provider. No network, no key, deterministic.

Model id `echo` answers `Echo #N: <the user's message>`, where N counts the
user turns it was given, so a reply shows both the message and the history.
Conventions the tests and the demo rely on:

- `/tool <name> <argument>` calls that tool (when the agent has it) with the
  argument, then answers `<name> returned: <result>`; `/tool a x; b y` calls
  them one after the other (one model turn each), then answers a line per
  call. A tool whose policy is `approve` or `input` pauses the run at its call
  (apps.agents.tools), so `/tool calculator 2+2` on an agent whose calculator
  needs approval is the offline way to reach a paused run, and `;` makes a run
  pause several times;
- `/fail <reason>` makes the provider fail, like an upstream 5xx;
- option `latency_ms` takes that long per model call, like a slow LLM; a
  streamed answer is spread over that time in several chunks (first chunk
  after one slice of it), so live streaming is visible and testable offline;
- with knowledge sources in its system prompt it quotes the first one.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

from agno.exceptions import ModelProviderError
from agno.metrics import MessageMetrics
from agno.models.base import Model
from agno.models.message import Message
from agno.models.response import ModelResponse

from apps.agents.cancellation import wait_cancelled


def _text(message: Message) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    return json.dumps(content) if not isinstance(content, list) else " ".join(str(c) for c in content)


def _from_sources(messages: list[Message]) -> str:
    """With knowledge sources in the system prompt, quote the best one: the
    offline stand-in for an answer grounded on retrieved chunks."""
    for message in messages:
        text = _text(message) if message.role == "system" else ""
        if "<sources>" in text:
            first = text.split("<sources>", 1)[1].strip().splitlines()[0]
            return f"\n\nFrom the knowledge base: {first[:300]}"
    return ""


def _commands(text: str) -> list[str]:
    """The tool calls a `/tool a x; b y` message asks for, in order."""
    if not text.startswith("/tool "):
        return []
    return [part.strip() for part in text[6:].split(";") if part.strip()]


# a streamed answer comes in at least this many pieces (fewer only when it is shorter)
_MIN_CHUNKS = 6


def _words(text: str) -> int:
    return max(1, len(text.split()))


@dataclass
class LocalModel(Model):
    id: str = "echo"
    name: str = "Local"
    provider: str = "local"
    latency_ms: int = 0

    def _answer(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> ModelResponse:
        last = messages[-1] if messages else Message(role="user", content="")
        users = [m for m in messages if m.role == "user"]
        if last.role == "tool":
            return self._after_tool(messages, tools or [])
        text = _text(last).strip()
        if text.startswith("/fail"):
            raise ModelProviderError(text[5:].strip() or "local provider failure", status_code=502,
                                     model_name=self.name, model_id=self.id)
        if text.startswith("/tool "):
            return self._tool_call(messages, _commands(text)[0], tools or [])
        return self._response(messages, content=f"Echo #{len(users)}: {text}" + _from_sources(messages))

    def _after_tool(self, messages: list[Message], tools: list[dict[str, Any]]) -> ModelResponse:
        """The next `/tool` command of the last user message, or the answer once each has returned."""
        start = max(i for i, m in enumerate(messages) if m.role == "user") if any(
            m.role == "user" for m in messages) else -1
        results = [m for m in messages[start + 1:] if m.role == "tool"]
        commands = _commands(_text(messages[start]).strip()) if start >= 0 else []
        if len(results) < len(commands):
            return self._tool_call(messages, commands[len(results)], tools)
        reply = "\n".join(f"{m.tool_name} returned: {_text(m)}" for m in results)
        return self._response(messages, content=reply)

    def _tool_call(self, messages: list[Message], command: str, tools: list[dict[str, Any]]) -> ModelResponse:
        name, _, argument = command.partition(" ")
        schemas = {t.get("function", {}).get("name"): t.get("function", {}) for t in tools}
        if name not in schemas:
            return self._response(messages, content=f"Tool {name!r} is not available to this agent.")
        params = schemas[name].get("parameters", {}).get("properties", {})
        args = {next(iter(params)): argument} if params and argument else {}
        call = {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)}}
        return self._response(messages, tool_calls=[call])

    def _response(self, messages: list[Message], *, content: str | None = None,
                  tool_calls: list[dict[str, Any]] | None = None) -> ModelResponse:
        prompt_tokens = sum(_words(_text(m)) for m in messages)
        output_tokens = _words(content or "") if content else 1
        usage = MessageMetrics(input_tokens=prompt_tokens, output_tokens=output_tokens,
                               total_tokens=prompt_tokens + output_tokens)
        return ModelResponse(role="assistant", content=content, tool_calls=tool_calls or [],
                             response_usage=usage)

    def _wait(self, run_response: Any, ms: float | None = None) -> None:
        """Simulated model latency (`ms`, by default all of `latency_ms`) that a cancelled run does not sit out.
        It sleeps as a provider call blocks on its socket: no polling (apps.agents.cancellation)."""
        seconds = (self.latency_ms if ms is None else ms) / 1000
        run_id = getattr(run_response, "run_id", None)
        if run_id:
            wait_cancelled(run_id, seconds)
        else:
            time.sleep(seconds)

    def invoke(self, *args: Any, messages: list[Message], tools: list[dict[str, Any]] | None = None,
               run_response: Any = None, **kwargs: Any) -> ModelResponse:
        if self.latency_ms:
            self._wait(run_response)
        return self._answer(messages, tools)

    async def ainvoke(self, *args: Any, messages: list[Message], tools: list[dict[str, Any]] | None = None,
                      **kwargs: Any) -> ModelResponse:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        return self._answer(messages, tools)

    def invoke_stream(self, *args: Any, messages: list[Message], tools: list[dict[str, Any]] | None = None,
                      run_response: Any = None, **kwargs: Any) -> Iterator[ModelResponse]:
        chunks = list(self._chunks(self._answer(messages, tools)))
        for chunk in chunks:
            if self.latency_ms:
                self._wait(run_response, self.latency_ms / len(chunks))
            yield chunk

    async def ainvoke_stream(self, *args: Any, messages: list[Message],  # type: ignore[override]
                             tools: list[dict[str, Any]] | None = None, **kwargs: Any
                             ) -> AsyncIterator[ModelResponse]:
        chunks = list(self._chunks(self._answer(messages, tools)))
        for chunk in chunks:
            if self.latency_ms:
                await asyncio.sleep(self.latency_ms / 1000 / len(chunks))
            yield chunk

    @staticmethod
    def _chunks(full: ModelResponse) -> Iterator[ModelResponse]:
        """The answer in pieces, usage on the last: words, or for a short answer
        at least `_MIN_CHUNKS` slices of it, so even "Echo #1: hi" streams."""
        if full.tool_calls or not full.content:
            yield full
            return
        text = str(full.content)
        words = text.split(" ")
        if len(words) >= _MIN_CHUNKS:
            pieces = [word if index == 0 else " " + word for index, word in enumerate(words)]
        else:
            count = min(_MIN_CHUNKS, len(text))
            bounds = [round(i * len(text) / count) for i in range(count + 1)]
            pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            yield ModelResponse(role="assistant", content=piece, response_usage=full.response_usage if last else None)

    def _parse_provider_response(self, response: Any, **kwargs: Any) -> ModelResponse:
        return response  # type: ignore[no-any-return]

    def _parse_provider_response_delta(self, response: Any) -> ModelResponse:
        return response  # type: ignore[no-any-return]
