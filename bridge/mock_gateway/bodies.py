"""What the mock answers: completions, chunks, usage, and error replies in the Prisme and OpenAI shapes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Final

from aiohttp import web

from bridge.mock_gateway.call import Call, pieces, words
from bridge.mock_gateway.records import Json

FINGERPRINT: Final = "fp_mock"
TOOL_ARGUMENTS: Final = '{"city": "Paris", "unit": "celsius"}'
CUSTOM_INPUT: Final = "*** Begin Patch\n*** Add File: weather.md\n+Paris: 18 °C, sunny\n*** End Patch\n"
UPSTREAM_FAILED: Final = "upstream provider failed"
PARTIAL: Final = ("Partial ", "answer")

dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def usage_body(call: Call, completion_tokens: int, reasoning_tokens: int = 0) -> Json:
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


def completion_body(call: Call, message: Json, finish_reason: str, usage: Json) -> Json:
    choice = {"message": {**message, "refusal": None}, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": call.completion_id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": i, **choice} for i in range(call.n)],
        "usage": usage,
    }


def chunk_body(call: Call, choices: list[Json]) -> Json:
    chunk: Json = {
        "id": call.completion_id,
        "object": "chat.completion.chunk",
        "created": call.created,
        "model": call.model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
    }
    if call.include_usage:
        chunk["usage"] = None
    return chunk


def delta_chunk(call: Call, delta: Json, finish_reason: str | None = None, index: int = 0) -> Json:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return chunk_body(call, [choice])


def usage_chunk(call: Call, usage: Json) -> Json:
    return {**chunk_body(call, []), "usage": usage}


def echo_chunks(call: Call, *, finish: bool = True) -> Iterator[Json]:
    text_pieces = pieces(call.text)
    for index in range(call.n):
        yield delta_chunk(call, {"role": "assistant", "content": ""}, index=index)
        for piece in text_pieces:
            yield delta_chunk(call, {"content": piece}, index=index)
        if finish:
            yield delta_chunk(call, {}, "stop", index=index)
    if finish and call.include_usage:
        yield usage_chunk(call, usage_body(call, words(call.text) * call.n))


USAGE_SHAPES: Final = ("empty-choice", "on-finish", "every-chunk", "ignored")


def usage_shaped_chunks(call: Call, shape: str) -> list[Json]:
    """The echo stream with its usage (when asked) the way other servers send it: `empty-choice`
    (LiteLLM: the usage chunk has `[{"index": 0, "delta": {}}]`, no `"usage": null` elsewhere),
    `on-finish` (on the last finish chunk, no chunk of its own), `every-chunk` (cumulative on every
    chunk, then the usage chunk: vLLM's continuous usage), `ignored` (never sent)."""
    chunks = list(echo_chunks(call))
    if not call.include_usage:
        return chunks
    *content, last = chunks
    bare = [{k: v for k, v in chunk.items() if k != "usage"} for chunk in content]
    if shape == "empty-choice":
        return [*bare, {**last, "choices": [{"index": 0, "delta": {}}]}]
    if shape == "on-finish":
        return [*content[:-1], {**content[-1], "usage": last["usage"]}]
    if shape == "every-chunk":
        sent = 0
        counted = []
        for chunk in content:
            sent += sum(words(choice["delta"].get("content") or "") for choice in chunk["choices"])
            counted.append({**chunk, "usage": usage_body(call, sent)})
        return [*counted, last]
    return bare


def echo_completion(call: Call) -> Json:
    message = {"role": "assistant", "content": call.text}
    return completion_body(call, message, "stop", usage_body(call, words(call.text) * call.n))


def tool_name(call: Call, kind: str, default: str) -> str:
    """The name of the request's first tool, if that tool has a `kind` ("function" or "custom") object."""
    tools = call.body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        definition = tools[0].get(kind)
        if isinstance(definition, dict) and isinstance(definition.get("name"), str):
            return str(definition["name"])
    return default


def tool_call(call: Call, *, custom: bool = False) -> Json:
    """The `tools` script's call of a function, or the `tools-custom` script's call of a custom tool."""
    if custom:
        tool = {"name": tool_name(call, "custom", "apply_patch"), "input": CUSTOM_INPUT}
        return {"id": "call_mock_custom_1", "type": "custom", "custom": tool}
    function = {"name": tool_name(call, "function", "get_weather"), "arguments": TOOL_ARGUMENTS}
    return {"id": "call_mock_1", "type": "function", "function": function}


def tool_chunks(call: Call, *, custom: bool = False) -> Iterator[Json]:
    whole = tool_call(call, custom=custom)
    kind, text_key = ("custom", "input") if custom else ("function", "arguments")
    text = whole[kind][text_key]
    yield delta_chunk(call, {"role": "assistant", "content": None})
    yield delta_chunk(call, {"tool_calls": [{"index": 0, **whole, kind: {**whole[kind], text_key: ""}}]})
    for piece in pieces(text, 3):
        yield delta_chunk(call, {"tool_calls": [{"index": 0, kind: {text_key: piece}}]})
    yield delta_chunk(call, {}, "tool_calls")
    if call.include_usage:
        yield usage_chunk(call, usage_body(call, words(text)))


def tool_completion(call: Call, *, custom: bool = False) -> Json:
    whole = tool_call(call, custom=custom)
    message = {"role": "assistant", "content": None, "tool_calls": [whole]}
    text = CUSTOM_INPUT if custom else TOOL_ARGUMENTS
    return completion_body(call, message, "tool_calls", usage_body(call, words(text) * call.n))


def reasoning_text(call: Call) -> str:
    return f"The user wants their {words(call.text)} words back, so I repeat them."


def reasoning_usage(call: Call) -> Json:
    reasoning = words(reasoning_text(call))
    return usage_body(call, (reasoning + words(call.text)) * call.n, reasoning * call.n)


def reasoning_chunks(call: Call) -> Iterator[Json]:
    yield delta_chunk(call, {"role": "assistant", "content": ""})
    for piece in pieces(reasoning_text(call)):
        yield delta_chunk(call, {"reasoning_content": piece})
    for piece in pieces(call.text):
        yield delta_chunk(call, {"content": piece})
    yield delta_chunk(call, {}, "stop")
    if call.include_usage:
        yield usage_chunk(call, reasoning_usage(call))


def reasoning_completion(call: Call) -> Json:
    message = {"role": "assistant", "content": call.text, "reasoning_content": reasoning_text(call)}
    return completion_body(call, message, "stop", reasoning_usage(call))


AZURE_FIRST: Final[Json] = {
    "id": "",
    "object": "",
    "created": 0,
    "model": "",
    "choices": [],
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
}


def azure_chunks(chunks: Iterable[Json]) -> Iterator[Json]:
    yield AZURE_FIRST
    for chunk in chunks:
        if chunk["choices"]:
            chunk["choices"] = [{**c, "content_filter_results": {}} for c in chunk["choices"]]
            chunk["obfuscation"] = "abc"
        yield chunk


# ------------------------------------------------------------------------------------ garbled replies

# What a captive portal, a login proxy or a misconfigured URL answers with a 200.
HTML_PAGE: Final = (
    b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please sign in</body></html>"
)
INVALID_UTF8: Final = b"caf\xe9 "  # "café " in Latin-1: \xe9 is not UTF-8


def garbled_completion(call: Call) -> bytes:
    """`bad-json`: a reply cut inside its JSON; `bad-utf8`: the echo reply with a Latin-1 byte in its text."""
    if call.model == "bad-json":
        return b'{"id": "chatcmpl-mock", "object": "chat.completion", "choices": ['
    body = dumps(echo_completion(call)).encode()
    return body.replace(b'"content":"', b'"content":"' + INVALID_UTF8, 1)


def garbled_event(call: Call) -> bytes:
    """`bad-json`: an event whose data is not JSON; `bad-utf8`: a content chunk with a Latin-1 byte."""
    if call.model == "bad-json":
        return b'data: {"choices": [{"index": 0, "delta": \n\n'
    chunk = dumps(delta_chunk(call, {"content": "@"})).encode()
    return b"data: " + chunk.replace(b'"@"', b'"' + INVALID_UTF8 + b'"') + b"\n\n"


# ------------------------------------------------------------------------------------------- errors

PRISME_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("invalid_request", "The request is invalid"),
    401: ("invalid_token", "Invalid or expired token"),
    403: ("MODEL_NOT_ALLOWED", "This model is not allowed for your organisation"),
    404: ("not_found", "Model not found"),
    429: ("rate_limit_exceeded", "Rate limit exceeded: 100 requests per 60 seconds"),
    500: ("internal_error", "Internal error"),
    503: ("service_unavailable", "The model provider is unavailable"),
}

# status -> (type, param, code, message)
OPENAI_ERRORS: Final[dict[int, tuple[str, str | None, str | None, str]]] = {
    400: ("invalid_request_error", "messages", "invalid_value", "Invalid value for 'messages'."),
    401: ("invalid_request_error", None, "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "model_not_allowed", "You are not allowed to use this model."),
    404: ("invalid_request_error", "model", "model_not_found", "The model does not exist."),
    429: ("requests", None, "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, None, "The server had an error while processing your request."),
    503: ("server_error", None, "service_unavailable", "The engine is currently overloaded."),
}


def json_response(status: int, body: Json, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=dumps(body).encode(), content_type="application/json", headers=headers
    )


def litellm_headers(call: Call) -> dict[str, str]:
    """The ids a LiteLLM proxy names its replies with (instead of x-correlation-id), and a header of its own
    that the bridge returns only when asked (`--response-headers x-litellm-model-id`)."""
    return {
        "x-litellm-call-id": f"litellm-{call.completion_id}",
        "request-id": f"req_{call.completion_id[-12:]}",
        "llm_provider-x-request-id": "provider-req-1",
        "x-litellm-model-id": "mock-deployment-1",
    }


def litellm_error(exception: str, message: str, code: str) -> Json:
    """A LiteLLM proxy's error document: its exception class heads the message; code a string."""
    text = f"litellm.{exception}: {exception}: OpenAIException - {message}"
    return {"error": {"message": text, "type": None, "param": None, "code": code}}


def retry_headers(status: int) -> dict[str, str] | None:
    return {"Retry-After": "7"} if status in (429, 503) else None


def prisme_error(
    status: int,
    message: str | None = None,
    details: Json | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A Prisme error reply; `headers` replace the usual Retry-After of 429 and 503."""
    code, default_message = PRISME_ERRORS.get(status, ("mock_error", f"Mock error {status}"))
    body = {"error": code, "message": message or default_message, "details": details or {}}
    return json_response(status, body, retry_headers(status) if headers is None else headers)


def openai_invalid_value(param: str, message: str) -> web.Response:
    """OpenAI's 400 for a request parameter it refuses."""
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": "invalid_value"}
    return json_response(400, {"error": error})


def openai_error(status: int) -> web.Response:
    kind, param, code, message = OPENAI_ERRORS.get(
        status, ("api_error", None, "mock_error", f"Mock error {status}")
    )
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return json_response(status, body, retry_headers(status))


def scripted_error(call: Call, status: int) -> web.Response:
    details: Json = {"model": call.model, "status": status}
    if status == 429:
        details.update(limit=100, window_seconds=60)
    return prisme_error(status, details=details)


STREAM_ERRORS: Final[dict[str, tuple[str | None, Json]]] = {
    "stream-error": (
        None,
        {"error": {"message": UPSTREAM_FAILED, "type": "server_error", "code": "provider_error"}},
    ),
    "stream-error-event": (
        "error",
        {"error": {"message": UPSTREAM_FAILED, "type": "server_error", "code": "provider_error"}},
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
