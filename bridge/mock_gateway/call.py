"""One chat request as the mock's scripts see it, and how a script notices its client left."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from bridge.mock_gateway.records import Json, RequestLog

__all__ = [
    "STATE",
    "Call",
    "ScriptStoppedError",
    "State",
    "pieces",
    "sleep_watching",
    "validate_body",
    "words",
]

# The roles OpenAI accepts, in the order its 400 lists them.
ROLES: Final = ("system", "assistant", "user", "function", "tool", "developer")
POLL_S: Final = 0.02
MAX_N: Final = 16
WORD: Final = re.compile(r"\s*\S+\s*")


@dataclass(slots=True)
class State:
    api_key: str | None
    log: RequestLog
    closing: bool = False
    seen: Counter[str] = field(default_factory=Counter)  # chat requests received, by model name
    # MockGateway.script: this instance answers as if requests named this model (chat), or this
    # scripted error (catalogue, embeddings), for `override_left` more requests (None: until cleared).
    override: str | None = None
    override_left: int | None = None

    def take_override(self) -> str | None:
        """The model this request is to be answered as, if this instance is scripted (one use taken)."""
        if self.override is None:
            return None
        model = self.override
        if self.override_left is not None:
            self.override_left -= 1
            if self.override_left <= 0:
                self.override, self.override_left = None, None
        return model


STATE: Final = web.AppKey("mock_gateway_state", State)


class ScriptStoppedError(Exception):
    """The script stopped early: the client left, or the server is shutting down."""

    def __init__(self, outcome: str, response: web.StreamResponse | None = None) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.response = response


@dataclass(slots=True)
class Call:
    request: web.Request
    state: State
    body: Json
    model: str
    stream: bool
    include_usage: bool
    n: int
    text: str
    prompt_tokens: int
    completion_id: str
    created: int
    t0: float

    @classmethod
    def parse(cls, request: web.Request, state: State, body: Json) -> Call:
        messages: list[Any] = body["messages"]
        options = body.get("stream_options")
        return cls(
            request=request,
            state=state,
            body=body,
            model=body["model"],
            stream=body.get("stream") is True,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            n=body.get("n") or 1,
            text=reply_text(messages),
            prompt_tokens=sum(words(content_text(m.get("content"))) for m in messages if isinstance(m, dict)),
            completion_id=f"chatcmpl-mock{uuid.uuid4().hex[:20]}",
            created=int(time.time()),
            t0=time.monotonic(),
        )


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
        return "\n".join(t for t in texts if isinstance(t, str))
    return ""


def reply_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            text = content_text(message.get("content"))
            return text if text.strip() else "ok"
    return "ok"


def words(text: str) -> int:
    return len(text.split())


def pieces(text: str, count: int | None = None) -> list[str]:
    """Words keeping their following whitespace (the first also its leading), or ``count`` slices."""
    if count is None:
        return WORD.findall(text)
    step = -(-len(text) // count)
    return [text[i : i + step] for i in range(0, len(text), step)]


def validate_body(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' is required and must be a non-empty string"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    n = body.get("n")
    if n is not None and (type(n) is not int or not 1 <= n <= MAX_N):
        return f"'n' must be an integer between 1 and {MAX_N}"
    return None


def role_problem(body: Json) -> tuple[str, str] | None:
    """(param, message) of the first message without a role OpenAI knows, worded as OpenAI's 400."""
    for i, message in enumerate(body["messages"]):
        role = message.get("role") if isinstance(message, dict) else None
        if role is None:
            return f"messages[{i}].role", f"Missing required parameter: 'messages[{i}].role'."
        if role not in ROLES:
            known = ", ".join(f"'{r}'" for r in ROLES[:-1]) + f", and '{ROLES[-1]}'"
            return f"messages[{i}].role", f"Invalid value: {role!r}. Supported values are: {known}."
    return None


def client_gone(call: Call) -> bool:
    transport = call.request.transport
    return transport is None or transport.is_closing()


def check_alive(call: Call, response: web.StreamResponse | None) -> None:
    if call.state.closing:
        raise ScriptStoppedError("error", response)
    if client_gone(call):
        raise ScriptStoppedError("client_disconnected", response)


async def sleep_watching(call: Call, seconds: float | None, response: web.StreamResponse | None) -> None:
    """Sleep (forever if ``seconds`` is None), noticing a disconnect or shutdown within ``POLL_S``."""
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds
    while True:
        check_alive(call, response)
        step = POLL_S if deadline is None else min(POLL_S, deadline - loop.time())
        if step <= 0:
            return
        await asyncio.sleep(step)
