"""A scripted, real-HTTP mock of the Prisme.ai LLM gateway (aiohttp.web), speaking JSON and SSE.

Used by the integration tests (started on ``127.0.0.1`` port 0), by ``prisme-bridge mock-gateway`` /
``prisme-bridge dev`` and by the benchmarks, so the hot path does no sleeping unless a model scripts it.

Routes
------
=====================================================================  ====================================
``POST /v1/chat/completions``                                          chat completions (JSON or SSE)
``POST /v2/workspaces/slug:llm-gateway/webhooks/v1/chat/completions``  same handler (the gateway's path)
``GET /v1/models`` (and under the same ``/v2/...`` prefix)             small catalogue in Prisme's shape
                                                                       ``{items,total,page,limit}``
``GET /healthz``                                                       200 ``{"status": "ok"}``
``GET /_mock/requests``, ``GET /_mock/requests/{id}``                  recorded chat requests (last 1000)
``DELETE /_mock/requests``                                             clear the record (204)
=====================================================================  ====================================

Every response carries ``x-correlation-id`` (the request's, else a new uuid) and echoes ``x-request-id``.
With ``create_app(require_api_key=KEY)`` a chat request needs ``Authorization: Bearer KEY`` or
``x-prismeai-api-key: KEY``, else 401 ``{"error":"invalid_token","message":...}`` (the other routes stay
open). A body that is not JSON, lacks a string ``model``, has no non-empty ``messages`` list or has an
``n`` outside 1..16 gets 400 ``invalid_request``.

A record is ``{"id", "path", "headers" (lower-cased names, values as sent, credentials included),
"body", "stream", "model", "started_at", "ended_at", "outcome"}`` where ``started_at``/``ended_at`` are
``time.time()`` seconds and ``outcome`` is ``in_progress``, ``completed`` (any 2xx script ran to its end),
``error`` (an HTTP status >= 400, or the server shut down mid-request) or ``client_disconnected`` (the
client closed the connection; noticed within ~20 ms, also while a script sleeps).

Scripted behaviours, chosen by the request's ``model``
------------------------------------------------------
The reply *text* is the last user message's text (a string, or the ``text`` parts of a list joined with
``"\\n"``), or ``"ok"`` when there is none. Token counts are whitespace word counts; ``n`` choices are
honoured in every unary reply and in echo-family streams. A stream's content pieces are the text's words,
each keeping its following whitespace, so they concatenate back to the text exactly. Usage carries
``cost``, ``duration_ms`` and ``carbon``; the usage chunk (``"choices": []``) is sent only when
``stream_options.include_usage`` is true, and then every other chunk has ``"usage": null``.

=========================  ==========================================================================
model                      behaviour
=========================  ==========================================================================
anything else (``echo``,   echo. Unary: ``chat.completion`` with the text. Stream: role chunk
``gpt-4o``, ...)           (``{"role":"assistant","content":""}``), one chunk per word, an empty delta
                           with ``finish_reason:"stop"``, the usage chunk if asked, ``data: [DONE]``.
``echo-crlf``              echo, SSE lines end with CRLF.
``echo-cr``                echo, SSE lines end with CR only.
``echo-bytewise``          echo, the stream body is written one byte per write (drain after each).
``echo-comments``          echo, with a UTF-8 BOM first, ``: ping`` comment lines before every event, a
                           ``: OPENROUTER PROCESSING`` comment block, ``event: message`` on odd events
                           and ``id: mock-1`` on the second event.
``echo-nospace``           echo, data lines written as ``data:{...}`` (no space after the colon).
``echo-multiline``         echo, each JSON payload pretty-printed over several ``data:`` lines.
``tools``                  assistant message with ``content: null`` and one tool call ``call_mock_1``
                           (function = the request's first tool, else ``get_weather``; arguments
                           ``{"city": "Paris", "unit": "celsius"}``), ``finish_reason:"tool_calls"``.
                           Stream: role chunk (``content: null``), a first fragment with index, id, type,
                           name and ``arguments: ""``, three fragments carrying only index and argument
                           pieces, the finish chunk, usage if asked, ``[DONE]``.
``reasoning``              echo whose deltas first carry ``reasoning_content`` pieces; the unary
                           message has ``reasoning_content``; ``reasoning_tokens`` is counted.
``azure``                  echo; the stream starts with Azure's ``{"id":"","object":"","created":0,
                           "model":"","choices":[],"prompt_filter_results":[...]}`` chunk and later chunks
                           carry ``content_filter_results: {}`` in choices and ``"obfuscation":"abc"``;
                           the unary reply has top-level ``prompt_filter_results``.
``error-<status>``         (400..599) that status with a Prisme body ``{"error","message","details"}``:
                           400 ``invalid_request``, 401 ``invalid_token``, 403 ``MODEL_NOT_ALLOWED``,
                           404 ``not_found``, 429 ``rate_limit_exceeded``, 500 ``internal_error``,
                           503 ``service_unavailable``, others ``mock_error``. 429 and 503 add
                           ``Retry-After: 7``. Stream requests get the same JSON error, not SSE.
``openai-error-<status>``  same statuses and Retry-After, OpenAI body ``{"error":{"message","type",
                           "param","code"}}`` (400: ``invalid_request_error`` / ``messages`` /
                           ``invalid_value``).
``slow-<ms>``              waits that many ms before the response headers, then echo (stream or not).
``endless``                stream: role chunk, then a ``"tick "`` content chunk every 50 ms until the
                           client disconnects. Unary: never answers.
``stream-error``           role chunk, two content chunks (``"Partial "``, ``"answer"``), then
                           ``data: {"error":{"message":"upstream provider failed","type":"server_error",
                           "code":"provider_error"}}``, then ``[DONE]``.
``stream-error-event``     the same, the error event sent as ``event: error``.
``stream-error-vllm``      the same, vLLM shape ``{"error":{"object":"error","message":...,
                           "type":"BadRequestError","param":null,"code":400}}`` (integer code).
``stream-error-content``   the same two chunks, then the error as *content* (``"\\n\\n[upstream provider
                           failed]"``, Prisme's documented mid-stream error), then ``[DONE]``.
                           Unary requests for any ``stream-error*`` model get a 500 ``internal_error``.
``truncated``              stream: role chunk, two content chunks, half a ``data:`` line, then the TCP
                           connection is closed mid-body (the chunked body never terminates). Unary:
                           ``Content-Length`` of the full reply, half of it sent, connection closed.
``truncated-eof``          stream: as ``truncated`` but the HTTP body ends cleanly after the half line.
``no-done``                echo stream (finish_reason and usage as usual) whose body ends, with
                           ``Connection: close``, without ``[DONE]``. Unary: echo.
``no-finish``              role and content chunks, then the body ends: no finish_reason, no usage, no
                           ``[DONE]``. Unary: echo.
``json-on-stream``         a stream request gets 200 ``application/json`` with a ``chat.completion``.
=========================  ==========================================================================

A prefixed name whose suffix is not a number (or, for errors, not within 400..599), such as ``slow-x`` or
``error-99``, is plain echo.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

__all__ = ["MockGateway", "create_app", "serve_forever", "start_mock_gateway"]

logger = logging.getLogger(__name__)

Json = dict[str, Any]

GATEWAY_PREFIX: Final = "/v2/workspaces/slug:llm-gateway/webhooks/v1"
RECORD_LIMIT: Final = 1000
_POLL_S: Final = 0.02
_TICK_S: Final = 0.05
_FINGERPRINT: Final = "fp_mock"
_PARTIAL: Final = ("Partial ", "answer")
_TOOL_ARGUMENTS: Final = '{"city": "Paris", "unit": "celsius"}'
_UPSTREAM_FAILED: Final = "upstream provider failed"
_MAX_N: Final = 16
_WORD: Final = re.compile(r"\s*\S+\s*")

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


# --------------------------------------------------------------------------------------------- records


class _RequestLog:
    """The last ``RECORD_LIMIT`` chat requests, oldest first."""

    def __init__(self, limit: int = RECORD_LIMIT) -> None:
        self._records: deque[Json] = deque(maxlen=limit)
        self._ids = itertools.count(1)

    def start(self, request: web.Request, body: Any) -> Json:
        fields = body if isinstance(body, dict) else {}
        record: Json = {
            "id": next(self._ids),
            "path": request.path,
            "headers": {name.lower(): value for name, value in request.headers.items()},
            "body": body,
            "stream": fields.get("stream") is True,
            "model": fields.get("model"),
            "started_at": time.time(),
            "ended_at": None,
            "outcome": "in_progress",
        }
        self._records.append(record)
        return record

    @staticmethod
    def finish(record: Json, outcome: str) -> None:
        record["ended_at"] = time.time()
        record["outcome"] = outcome

    def snapshot(self) -> list[Json]:
        return [dict(record) for record in self._records]

    def get(self, request_id: int) -> Json | None:
        return next((dict(r) for r in self._records if r["id"] == request_id), None)

    def clear(self) -> None:
        self._records.clear()


@dataclass(slots=True)
class _State:
    api_key: str | None
    log: _RequestLog
    closing: bool = False


_STATE: Final = web.AppKey("mock_gateway_state", _State)


# ----------------------------------------------------------------------------------- the parsed call


class _ScriptStoppedError(Exception):
    """The script stopped early: the client left, or the server is shutting down."""

    def __init__(self, outcome: str, response: web.StreamResponse | None = None) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.response = response


@dataclass(slots=True)
class _Call:
    request: web.Request
    state: _State
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
    def parse(cls, request: web.Request, state: _State, body: Json) -> _Call:
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
            text=_reply_text(messages),
            prompt_tokens=sum(
                _words(_content_text(m.get("content"))) for m in messages if isinstance(m, dict)
            ),
            completion_id=f"chatcmpl-mock{uuid.uuid4().hex[:20]}",
            created=int(time.time()),
            t0=time.monotonic(),
        )


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
        return "\n".join(t for t in texts if isinstance(t, str))
    return ""


def _reply_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            text = _content_text(message.get("content"))
            return text if text.strip() else "ok"
    return "ok"


def _words(text: str) -> int:
    return len(text.split())


def _pieces(text: str, count: int | None = None) -> list[str]:
    """Words keeping their following whitespace (the first also its leading), or ``count`` slices."""
    if count is None:
        return _WORD.findall(text)
    step = -(-len(text) // count)
    return [text[i : i + step] for i in range(0, len(text), step)]


def _validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' is required and must be a non-empty string"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    n = body.get("n")
    if n is not None and (type(n) is not int or not 1 <= n <= _MAX_N):
        return f"'n' must be an integer between 1 and {_MAX_N}"
    return None


# ------------------------------------------------------------------------------------ response bodies


def _usage(call: _Call, completion_tokens: int, reasoning_tokens: int = 0) -> Json:
    total = call.prompt_tokens + completion_tokens
    return {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "cost": round(call.prompt_tokens * 2.5e-6 + completion_tokens * 1e-5, 8),
        "duration_ms": int((time.monotonic() - call.t0) * 1000),
        "carbon": {"gco2e": round(total * 3e-4, 6), "kwh": round(total * 1e-6, 9)},
    }


def _completion(call: _Call, message: Json, finish_reason: str, usage: Json) -> Json:
    choice = {"message": {**message, "refusal": None}, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": call.completion_id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "system_fingerprint": _FINGERPRINT,
        "choices": [{"index": i, **choice} for i in range(call.n)],
        "usage": usage,
    }


def _chunk(call: _Call, choices: list[Json]) -> Json:
    chunk: Json = {
        "id": call.completion_id,
        "object": "chat.completion.chunk",
        "created": call.created,
        "model": call.model,
        "system_fingerprint": _FINGERPRINT,
        "choices": choices,
    }
    if call.include_usage:
        chunk["usage"] = None
    return chunk


def _delta(call: _Call, delta: Json, finish_reason: str | None = None, index: int = 0) -> Json:
    return _chunk(call, [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])


def _usage_chunk(call: _Call, usage: Json) -> Json:
    return {**_chunk(call, []), "usage": usage}


def _echo_chunks(call: _Call, *, finish: bool = True) -> Iterator[Json]:
    pieces = _pieces(call.text)
    for index in range(call.n):
        yield _delta(call, {"role": "assistant", "content": ""}, index=index)
        for piece in pieces:
            yield _delta(call, {"content": piece}, index=index)
        if finish:
            yield _delta(call, {}, "stop", index=index)
    if finish and call.include_usage:
        yield _usage_chunk(call, _usage(call, _words(call.text) * call.n))


def _echo_completion(call: _Call) -> Json:
    message = {"role": "assistant", "content": call.text}
    return _completion(call, message, "stop", _usage(call, _words(call.text) * call.n))


def _tool_name(call: _Call) -> str:
    tools = call.body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        function = tools[0].get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return str(function["name"])
    return "get_weather"


def _tool_call(call: _Call) -> Json:
    function = {"name": _tool_name(call), "arguments": _TOOL_ARGUMENTS}
    return {"id": "call_mock_1", "type": "function", "function": function}


def _tool_chunks(call: _Call) -> Iterator[Json]:
    yield _delta(call, {"role": "assistant", "content": None})
    first = {"index": 0, **_tool_call(call)}
    first["function"] = {**first["function"], "arguments": ""}
    yield _delta(call, {"tool_calls": [first]})
    for piece in _pieces(_TOOL_ARGUMENTS, 3):
        yield _delta(call, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    yield _delta(call, {}, "tool_calls")
    if call.include_usage:
        yield _usage_chunk(call, _usage(call, _words(_TOOL_ARGUMENTS)))


def _tool_completion(call: _Call) -> Json:
    message = {"role": "assistant", "content": None, "tool_calls": [_tool_call(call)]}
    return _completion(call, message, "tool_calls", _usage(call, _words(_TOOL_ARGUMENTS) * call.n))


def _reasoning_text(call: _Call) -> str:
    return f"The user wants their {_words(call.text)} words back, so I repeat them."


def _reasoning_usage(call: _Call) -> Json:
    reasoning = _words(_reasoning_text(call))
    return _usage(call, (reasoning + _words(call.text)) * call.n, reasoning * call.n)


def _reasoning_chunks(call: _Call) -> Iterator[Json]:
    yield _delta(call, {"role": "assistant", "content": ""})
    for piece in _pieces(_reasoning_text(call)):
        yield _delta(call, {"reasoning_content": piece})
    for piece in _pieces(call.text):
        yield _delta(call, {"content": piece})
    yield _delta(call, {}, "stop")
    if call.include_usage:
        yield _usage_chunk(call, _reasoning_usage(call))


def _reasoning_completion(call: _Call) -> Json:
    message = {"role": "assistant", "content": call.text, "reasoning_content": _reasoning_text(call)}
    return _completion(call, message, "stop", _reasoning_usage(call))


_AZURE_FIRST: Final[Json] = {
    "id": "",
    "object": "",
    "created": 0,
    "model": "",
    "choices": [],
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
}


def _azure_chunks(chunks: Iterable[Json]) -> Iterator[Json]:
    yield _AZURE_FIRST
    for chunk in chunks:
        if chunk["choices"]:
            chunk["choices"] = [{**c, "content_filter_results": {}} for c in chunk["choices"]]
            chunk["obfuscation"] = "abc"
        yield chunk


# ------------------------------------------------------------------------------------------- errors

_PRISME_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("invalid_request", "The request is invalid"),
    401: ("invalid_token", "Invalid or expired token"),
    403: ("MODEL_NOT_ALLOWED", "This model is not allowed for your organisation"),
    404: ("not_found", "Model not found"),
    429: ("rate_limit_exceeded", "Rate limit exceeded: 100 requests per 60 seconds"),
    500: ("internal_error", "Internal error"),
    503: ("service_unavailable", "The model provider is unavailable"),
}

# status -> (type, param, code, message)
_OPENAI_ERRORS: Final[dict[int, tuple[str, str | None, str | None, str]]] = {
    400: ("invalid_request_error", "messages", "invalid_value", "Invalid value for 'messages'."),
    401: ("invalid_request_error", None, "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "model_not_allowed", "You are not allowed to use this model."),
    404: ("invalid_request_error", "model", "model_not_found", "The model does not exist."),
    429: ("requests", None, "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, None, "The server had an error while processing your request."),
    503: ("server_error", None, "service_unavailable", "The engine is currently overloaded."),
}


def _json_response(status: int, body: Json, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=_dumps(body).encode(), content_type="application/json", headers=headers
    )


def _retry_headers(status: int) -> dict[str, str] | None:
    return {"Retry-After": "7"} if status in (429, 503) else None


def _prisme_error(status: int, message: str | None = None, details: Json | None = None) -> web.Response:
    code, default_message = _PRISME_ERRORS.get(status, ("mock_error", f"Mock error {status}"))
    body = {"error": code, "message": message or default_message, "details": details or {}}
    return _json_response(status, body, _retry_headers(status))


def _openai_error(status: int) -> web.Response:
    kind, param, code, message = _OPENAI_ERRORS.get(
        status, ("api_error", None, "mock_error", f"Mock error {status}")
    )
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return _json_response(status, body, _retry_headers(status))


def _scripted_error(call: _Call, status: int) -> web.Response:
    details: Json = {"model": call.model, "status": status}
    if status == 429:
        details.update(limit=100, window_seconds=60)
    return _prisme_error(status, details=details)


_STREAM_ERRORS: Final[dict[str, tuple[str | None, Json]]] = {
    "stream-error": (
        None,
        {"error": {"message": _UPSTREAM_FAILED, "type": "server_error", "code": "provider_error"}},
    ),
    "stream-error-event": (
        "error",
        {"error": {"message": _UPSTREAM_FAILED, "type": "server_error", "code": "provider_error"}},
    ),
    "stream-error-vllm": (
        None,
        {
            "error": {
                "object": "error",
                "message": "upstream provider failed: prompt is too long",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        },
    ),
}


# ------------------------------------------------------------------------------------------ SSE I/O


@dataclass(frozen=True, slots=True)
class _Style:
    eol: str = "\n"
    bytewise: bool = False
    comments: bool = False
    nospace: bool = False
    multiline: bool = False


_PLAIN: Final = _Style()
_STYLES: Final[dict[str, _Style]] = {
    "echo-crlf": _Style(eol="\r\n"),
    "echo-cr": _Style(eol="\r"),
    "echo-bytewise": _Style(bytewise=True),
    "echo-comments": _Style(comments=True),
    "echo-nospace": _Style(nospace=True),
    "echo-multiline": _Style(multiline=True),
}


def _frame(style: _Style, seq: int, data: str, event: str | None = None) -> bytes:
    """One SSE event as bytes; ``seq`` is the event's position in the stream (0 = first)."""
    if style is _PLAIN and event is None:
        return f"data: {data}\n\n".encode()
    eol = style.eol
    lines: list[str] = []
    if style.comments:
        lines.append(("\ufeff" if seq == 0 else "") + ": ping")
        event = event or ("message" if seq % 2 else None)
        if seq == 1:
            lines.append("id: mock-1")
    if event:
        lines.append(f"event: {event}")
    prefix = "data:" if style.nospace else "data: "
    lines.extend(prefix + line for line in data.split("\n"))
    text = eol.join(lines) + eol + eol
    if style.comments and seq == 0:
        text += ": OPENROUTER PROCESSING" + eol + eol
    return text.encode()


def _client_gone(call: _Call) -> bool:
    transport = call.request.transport
    return transport is None or transport.is_closing()


def _check_alive(call: _Call, response: web.StreamResponse | None) -> None:
    if call.state.closing:
        raise _ScriptStoppedError("error", response)
    if _client_gone(call):
        raise _ScriptStoppedError("client_disconnected", response)


async def _sleep_watching(call: _Call, seconds: float | None, response: web.StreamResponse | None) -> None:
    """Sleep (forever if ``seconds`` is None), noticing a disconnect or shutdown within ``_POLL_S``."""
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds
    while True:
        _check_alive(call, response)
        step = _POLL_S if deadline is None else min(_POLL_S, deadline - loop.time())
        if step <= 0:
            return
        await asyncio.sleep(step)


class _SseStream:
    """A prepared ``text/event-stream`` response written event by event in one style."""

    def __init__(self, call: _Call, response: web.StreamResponse, style: _Style) -> None:
        self.call = call
        self.response = response
        self.style = style
        self._seq = 0

    @classmethod
    async def open(cls, call: _Call, style: _Style = _PLAIN, *, close: bool = False) -> _SseStream:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        if close:
            response.force_close()
        await response.prepare(call.request)
        return cls(call, response, style)

    async def send(self, payload: Json | str, event: str | None = None) -> None:
        if isinstance(payload, str):
            data = payload
        elif self.style.multiline:
            data = json.dumps(payload, indent=1, ensure_ascii=False)
        else:
            data = _dumps(payload)
        await self.write(_frame(self.style, self._seq, data, event))
        self._seq += 1

    async def send_all(self, payloads: Iterable[Json], *, done: bool = True) -> web.StreamResponse:
        for payload in payloads:
            await self.send(payload)
        if done:
            await self.send("[DONE]")
        return self.response

    async def write(self, data: bytes) -> None:
        try:
            if self.style.bytewise:
                await self._write_bytewise(data)
            else:
                await self.response.write(data)
        except ConnectionError as exc:
            raise _ScriptStoppedError("client_disconnected", self.response) from exc

    async def _write_bytewise(self, data: bytes) -> None:
        writer = self.call.request.writer
        for i in range(len(data)):
            await self.response.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)  # let the receiver read this byte on its own


def _abort_connection(call: _Call) -> None:
    """Close the TCP connection once what was written is flushed, without ending the HTTP body."""
    transport = call.request.transport
    if transport is not None:
        transport.close()


# ------------------------------------------------------------------------------------------ scripts

Script = Callable[[_Call], Awaitable[web.StreamResponse]]


async def _echo(call: _Call) -> web.StreamResponse:
    if not call.stream:
        return _json_response(200, _echo_completion(call))
    sse = await _SseStream.open(call, _STYLES.get(call.model, _PLAIN))
    return await sse.send_all(_echo_chunks(call))


async def _tools(call: _Call) -> web.StreamResponse:
    if not call.stream:
        return _json_response(200, _tool_completion(call))
    return await (await _SseStream.open(call)).send_all(_tool_chunks(call))


async def _reasoning(call: _Call) -> web.StreamResponse:
    if not call.stream:
        return _json_response(200, _reasoning_completion(call))
    return await (await _SseStream.open(call)).send_all(_reasoning_chunks(call))


async def _azure(call: _Call) -> web.StreamResponse:
    if not call.stream:
        return _json_response(
            200, {**_echo_completion(call), "prompt_filter_results": _AZURE_FIRST["prompt_filter_results"]}
        )
    return await (await _SseStream.open(call)).send_all(_azure_chunks(_echo_chunks(call)))


async def _json_on_stream(call: _Call) -> web.StreamResponse:
    return _json_response(200, _echo_completion(call))


async def _endless(call: _Call) -> web.StreamResponse:
    if not call.stream:
        await _sleep_watching(call, None, None)
    sse = await _SseStream.open(call)
    await sse.send(_delta(call, {"role": "assistant", "content": ""}))
    tick = _frame(_PLAIN, 1, _dumps(_delta(call, {"content": "tick "})))
    while True:
        await _sleep_watching(call, _TICK_S, sse.response)
        await sse.write(tick)


async def _partial_start(call: _Call) -> _SseStream:
    sse = await _SseStream.open(call)
    await sse.send(_delta(call, {"role": "assistant", "content": ""}))
    for piece in _PARTIAL:
        await sse.send(_delta(call, {"content": piece}))
    return sse


async def _stream_error(call: _Call) -> web.StreamResponse:
    if not call.stream:
        return _prisme_error(500, _UPSTREAM_FAILED, {"model": call.model})
    sse = await _partial_start(call)
    if call.model == "stream-error-content":
        await sse.send(_delta(call, {"content": f"\n\n[{_UPSTREAM_FAILED}]"}))
    else:
        event, payload = _STREAM_ERRORS[call.model]
        await sse.send(payload, event)
    await sse.send("[DONE]")
    return sse.response


async def _truncated(call: _Call) -> web.StreamResponse:
    if not call.stream:
        return await _truncated_unary(call)
    sse = await _partial_start(call)
    # A provider dies some time after its last whole chunk: let those arrive first (aiohttp's reader
    # raises a connection error before handing out bytes still buffered with it).
    await asyncio.sleep(0.05)
    line = _frame(_PLAIN, 3, _dumps(_delta(call, {"content": " and more"})))
    await sse.write(line[: len(line) // 2])
    if call.model == "truncated":
        _abort_connection(call)
    return sse.response


async def _truncated_unary(call: _Call) -> web.StreamResponse:
    body = _dumps(_echo_completion(call)).encode()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(call.request)
    try:
        await response.write(body[: len(body) // 2])
    except ConnectionError as exc:
        raise _ScriptStoppedError("client_disconnected", response) from exc
    _abort_connection(call)
    return response


async def _no_done(call: _Call) -> web.StreamResponse:
    if not call.stream:
        return await _echo(call)
    sse = await _SseStream.open(call, close=True)
    return await sse.send_all(_echo_chunks(call, finish=call.model == "no-done"), done=False)


_SCRIPTS: Final[dict[str, Script]] = {
    "tools": _tools,
    "reasoning": _reasoning,
    "azure": _azure,
    "json-on-stream": _json_on_stream,
    "endless": _endless,
    "stream-error": _stream_error,
    "stream-error-event": _stream_error,
    "stream-error-vllm": _stream_error,
    "stream-error-content": _stream_error,
    "truncated": _truncated,
    "truncated-eof": _truncated,
    "no-done": _no_done,
    "no-finish": _no_done,
}


def _suffix_int(model: str, prefix: str) -> int | None:
    suffix = model.removeprefix(prefix)
    if suffix == model or not suffix.isdigit():
        return None
    return int(suffix)


async def _run_script(call: _Call) -> web.StreamResponse:
    model = call.model
    status = _suffix_int(model, "openai-error-")
    if status is not None and 400 <= status <= 599:
        return _openai_error(status)
    status = _suffix_int(model, "error-")
    if status is not None and 400 <= status <= 599:
        return _scripted_error(call, status)
    delay_ms = _suffix_int(model, "slow-")
    if delay_ms is not None:
        await _sleep_watching(call, delay_ms / 1000, None)
    return await _SCRIPTS.get(model, _echo)(call)


# ----------------------------------------------------------------------------------------- handlers


def _authorized(request: web.Request, key: str) -> bool:
    return (
        request.headers.get("Authorization") == f"Bearer {key}"
        or request.headers.get("x-prismeai-api-key") == key
    )


async def _read_json(request: web.Request) -> tuple[Any, bool]:
    """The parsed body and whether it was valid JSON."""
    raw = await request.read()
    try:
        return json.loads(raw), True
    except ValueError:
        return None, False


async def _answer(request: web.Request, state: _State, body: Any, valid_json: bool) -> web.StreamResponse:
    if state.api_key is not None and not _authorized(request, state.api_key):
        return _json_response(401, {"error": "invalid_token", "message": "Missing or invalid API key"})
    if not valid_json:
        return _prisme_error(400, "Request body is not valid JSON")
    problem = _validate(body)
    if problem is not None:
        return _prisme_error(400, problem)
    return await _run_script(_Call.parse(request, state, body))


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    body, valid_json = await _read_json(request)
    record = state.log.start(request, body)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("mock request #%d %s model=%s", record["id"], request.path, record["model"])
    try:
        response = await _answer(request, state, body, valid_json)
    except _ScriptStoppedError as stop:
        state.log.finish(record, stop.outcome)
        # aiohttp's finish_response() ignores the failed write of a reply nobody reads.
        return stop.response or web.Response(status=499)
    except asyncio.CancelledError:
        gone = request.transport is None or request.transport.is_closing()
        state.log.finish(record, "client_disconnected" if gone else "error")
        raise
    except Exception:
        state.log.finish(record, "error")
        raise
    state.log.finish(record, "completed" if response.status < 400 else "error")
    return response


_CATALOGUE: Final = ("echo", "tools", "reasoning", "azure", "endless", "slow-1000", "error-429")


async def _models(request: web.Request) -> web.StreamResponse:
    items = [
        {"model_id": name, "type": "chat", "capabilities": ["chat", "streaming", "tools"]}
        for name in _CATALOGUE
    ]
    return _json_response(200, {"items": items, "total": len(items), "page": 1, "limit": len(items)})


async def _healthz(request: web.Request) -> web.StreamResponse:
    return _json_response(200, {"status": "ok"})


async def _list_requests(request: web.Request) -> web.StreamResponse:
    return _json_response_list(request.app[_STATE].log.snapshot())


def _json_response_list(items: list[Json]) -> web.Response:
    return web.Response(body=_dumps(items).encode(), content_type="application/json")


async def _get_request(request: web.Request) -> web.StreamResponse:
    raw_id = request.match_info["id"]
    record = request.app[_STATE].log.get(int(raw_id)) if raw_id.isdigit() else None
    if record is None:
        return _prisme_error(404, f"No recorded request {raw_id}")
    return _json_response(200, record)


async def _clear_requests(request: web.Request) -> web.StreamResponse:
    request.app[_STATE].log.clear()
    return web.Response(status=204)


async def _add_correlation_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    response.headers["x-correlation-id"] = request.headers.get("x-correlation-id") or str(uuid.uuid4())
    request_id = request.headers.get("x-request-id")
    if request_id is not None:
        response.headers["x-request-id"] = request_id


async def _on_shutdown(app: web.Application) -> None:
    app[_STATE].closing = True  # scripts that sleep or tick stop within _POLL_S


def create_app(*, require_api_key: str | None = None) -> web.Application:
    """The mock gateway as an aiohttp application (see the module docstring for its behaviours)."""
    app = web.Application()
    app[_STATE] = _State(api_key=require_api_key, log=_RequestLog())
    app.on_response_prepare.append(_add_correlation_headers)
    app.on_shutdown.append(_on_shutdown)
    for prefix in ("/v1", GATEWAY_PREFIX):
        app.router.add_post(f"{prefix}/chat/completions", _chat_completions)
        app.router.add_get(f"{prefix}/models", _models)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/_mock/requests", _list_requests)
    app.router.add_delete("/_mock/requests", _clear_requests)
    app.router.add_get("/_mock/requests/{id}", _get_request)
    return app


# ------------------------------------------------------------------------------------------ running


class MockGateway:
    """A running mock gateway; ``await close()`` stops it."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self._state = runner.app[_STATE]
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-SDK-style base URL (``.../webhooks/v1``)."""
        return self.url + GATEWAY_PREFIX

    def requests(self) -> list[Json]:
        """The recorded chat requests, oldest first (same records as ``GET /_mock/requests``)."""
        return self._state.log.snapshot()

    def clear_requests(self) -> None:
        self._state.log.clear()

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> MockGateway:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_mock_gateway(
    host: str = "127.0.0.1", port: int = 0, *, require_api_key: str | None = None
) -> MockGateway:
    """Start the mock gateway on ``host:port`` (port 0 picks a free port) with no access log."""
    runner = web.AppRunner(create_app(require_api_key=require_api_key), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port: int = runner.addresses[0][1]
    return MockGateway(runner, host, bound_port)


async def serve_forever(
    host: str,
    port: int,
    *,
    require_api_key: str | None = None,
    until: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Run the mock gateway until `until()` completes, or until cancelled (``prisme-bridge mock-gateway``)."""
    gateway = await start_mock_gateway(host, port, require_api_key=require_api_key)
    logger.info("mock gateway listening on %s", gateway.url)
    try:
        await (until() if until is not None else asyncio.Event().wait())
    finally:
        await gateway.close()
