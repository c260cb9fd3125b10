"""The mock gateway, driven over loopback HTTP exactly as the bridge and the benchmarks drive it."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from bridge.mock_gateway import GATEWAY_PREFIX, MockGateway, records, serve_forever, start_mock_gateway
from tests.helpers import GUARD_S

CHAT = "/chat/completions"
TEXT = "Hello there,  brave new world!"
VARIANTS = ["echo-crlf", "echo-cr", "echo-bytewise", "echo-comments", "echo-nospace", "echo-multiline"]


# ----------------------------------------------------------------------------------------- helpers


def sse_events(raw: bytes) -> list[tuple[str, str]]:
    """(event type, data) pairs, by the WHATWG rules; an unfinished event at EOF is dropped."""
    text = raw.decode("utf-8").removeprefix("\ufeff")
    events: list[tuple[str, str]] = []
    event, data = "message", []
    for line in re.split(r"\r\n|\r|\n", text):
        if not line:
            if data:
                events.append((event, "\n".join(data)))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    return events


def sse_data(raw: bytes) -> list[str]:
    return [data for _, data in sse_events(raw)]


def chunks(raw: bytes) -> list[dict[str, Any]]:
    """The JSON payloads of a stream that must end with exactly one ``[DONE]``."""
    data = sse_data(raw)
    assert data[-1] == "[DONE]"
    assert "[DONE]" not in data[:-1]
    return [json.loads(d) for d in data[:-1]]


def contents(payloads: list[dict[str, Any]], key: str = "content") -> str:
    return "".join(c["choices"][0]["delta"].get(key) or "" for c in payloads if c["choices"])


def body(model: str, text: str = TEXT, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def stream_body(model: str, text: str = TEXT, *, usage: bool = False, **extra: Any) -> dict[str, Any]:
    options = {"stream_options": {"include_usage": True}} if usage else {}
    return body(model, text, stream=True, **options, **extra)


async def wait_for_outcome(gateway: MockGateway, record_id: int, within: float = 2.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        record = next(r for r in gateway.requests() if r["id"] == record_id)
        if record["outcome"] != "in_progress":
            return record
        await asyncio.sleep(0.005)
    raise AssertionError(f"request {record_id} still in progress after {within} s")


@pytest.fixture
async def gateway() -> AsyncIterator[MockGateway]:
    gw = await start_mock_gateway()
    yield gw
    await gw.close()


@pytest.fixture
async def client(gateway: MockGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=5.0) as c:
        yield c


@pytest.fixture
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING)
    yield
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not noisy, [r.getMessage() for r in noisy]


# --------------------------------------------------------------------------------------------- echo


async def test_urls_and_both_routes(gateway: MockGateway) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", gateway.url)
    assert gateway.port > 0
    assert gateway.base_url == gateway.url + "/v2/workspaces/slug:llm-gateway/webhooks/v1"
    async with httpx.AsyncClient(base_url=gateway.url) as c:
        for path in ("/v1/chat/completions", GATEWAY_PREFIX + CHAT):
            response = await c.post(path, json=body("echo", "hi"))
            assert response.status_code == 200, path
            assert response.json()["choices"][0]["message"]["content"] == "hi"
        assert (await c.get("/healthz")).status_code == 200
    assert [r["path"] for r in gateway.requests()] == ["/v1/chat/completions", GATEWAY_PREFIX + CHAT]


async def test_echo_json_shape(client: httpx.AsyncClient) -> None:
    model = "eu.anthropic.claude-sonnet-4-20250514-v1:0"
    request = {
        "model": model,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": TEXT},
        ],
    }
    response = await client.post(CHAT, json=request)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    reply = response.json()
    assert reply["id"].startswith("chatcmpl-")
    assert reply["object"] == "chat.completion"
    assert isinstance(reply["created"], int)
    assert reply["model"] == model
    assert reply["system_fingerprint"] == "fp_mock"
    assert reply["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": TEXT, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    usage = reply["usage"]
    assert usage["prompt_tokens"] == 2 + 2 + 2 + 5
    assert usage["completion_tokens"] == 5
    assert usage["total_tokens"] == 16
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}
    assert isinstance(usage["cost"], float)
    assert usage["cost"] > 0
    assert isinstance(usage["duration_ms"], int)
    assert set(usage["carbon"]) == {"gco2e", "kwh"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            [{"type": "text", "text": "part one"}, {"type": "image_url", "image_url": {"url": "x"}}],
            "part one",
        ),
        ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "a\nb"),
        ([{"type": "image_url", "image_url": {"url": "x"}}], "ok"),
        ("   ", "ok"),
    ],
)
async def test_echo_text_from_parts_or_ok(client: httpx.AsyncClient, content: Any, expected: str) -> None:
    response = await client.post(CHAT, json=body("echo", content))
    assert response.json()["choices"][0]["message"]["content"] == expected


async def test_echo_without_user_message_replies_ok(client: httpx.AsyncClient) -> None:
    response = await client.post(
        CHAT, json={"model": "echo", "messages": [{"role": "system", "content": "x"}]}
    )
    assert response.json()["choices"][0]["message"]["content"] == "ok"


async def test_n_choices(client: httpx.AsyncClient) -> None:
    reply = (await client.post(CHAT, json=body("echo", "two words", n=3))).json()
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in reply["choices"]} == {"two words"}
    assert reply["usage"]["completion_tokens"] == 6


async def test_echo_stream_sequence_without_usage(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=stream_body("echo"))
    assert response.headers["content-type"] == "text/event-stream"
    payloads = chunks(response.content)
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    words = [c["choices"][0]["delta"]["content"] for c in payloads[1:-1]]
    assert words == ["Hello ", "there,  ", "brave ", "new ", "world!"]
    assert "".join(words) == TEXT
    last = payloads[-1]["choices"][0]
    assert last["delta"] == {}
    assert last["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in payloads[:-1])
    assert all("usage" not in c for c in payloads)
    assert {c["id"] for c in payloads} == {payloads[0]["id"]}
    assert {c["created"] for c in payloads} == {payloads[0]["created"]}
    assert {(c["model"], c["object"], c["system_fingerprint"]) for c in payloads} == {
        ("echo", "chat.completion.chunk", "fp_mock")
    }
    # Each event is exactly "data: <json>\n\n".
    assert response.content.decode().count("\n\n") == len(payloads) + 1


async def test_echo_stream_usage_chunk_only_when_asked(client: httpx.AsyncClient) -> None:
    payloads = chunks((await client.post(CHAT, json=stream_body("echo", usage=True))).content)
    usage_chunk = payloads[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 5
    assert usage_chunk["usage"]["total_tokens"] == 10
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in payloads[:-1])
    off = await client.post(CHAT, json=stream_body("echo", stream_options={"include_usage": False}))
    assert all(c["choices"] for c in chunks(off.content))


@pytest.mark.parametrize("model", VARIANTS)
async def test_stream_variants_carry_the_same_chunks(client: httpx.AsyncClient, model: str) -> None:
    def normalised(raw: bytes) -> list[dict[str, Any]]:
        out = [{**c, "id": "", "created": 0, "model": ""} for c in chunks(raw)]
        out[-1]["usage"]["duration_ms"] = 0  # wall time: the one field allowed to differ
        return out

    plain = await client.post(CHAT, json=stream_body("echo", "héllo wörld ✓", usage=True))
    variant = await client.post(CHAT, json=stream_body(model, "héllo wörld ✓", usage=True))
    assert variant.status_code == 200
    assert variant.headers["content-type"] == "text/event-stream"
    assert normalised(variant.content) == normalised(plain.content)


async def test_stream_variants_frame_as_advertised(client: httpx.AsyncClient) -> None:
    async def raw(model: str) -> bytes:
        return (await client.post(CHAT, json=stream_body(model, "a b"))).content

    crlf, cr, comments, nospace = (
        await raw("echo-crlf"),
        await raw("echo-cr"),
        await raw("echo-comments"),
        await raw("echo-nospace"),
    )
    assert crlf.endswith(b"data: [DONE]\r\n\r\n")
    assert crlf.count(b"\n") == crlf.count(b"\r\n")
    assert cr.endswith(b"data: [DONE]\r\r")
    assert b"\n" not in cr
    assert comments.startswith(b"\xef\xbb\xbf: ping\n")
    assert b": OPENROUTER PROCESSING\n\n" in comments
    assert b"event: message\n" in comments
    assert comments.count(b"\nid: ") == 1
    assert nospace.startswith(b"data:{")
    multiline = sse_events(await raw("echo-multiline"))
    assert all("\n" in data for _, data in multiline[:-1])


async def test_bytewise_stream_arrives_in_tiny_reads(gateway: MockGateway) -> None:
    async with (
        httpx.AsyncClient(base_url=gateway.base_url) as c,
        c.stream("POST", CHAT, json=stream_body("echo-bytewise", "a b c")) as response,
    ):
        reads = [len(b) async for b in response.aiter_raw()]
    assert len(reads) > 100
    assert sorted(reads)[len(reads) // 2] <= 8  # the median read is tiny


# --------------------------------------------------------------------------------- other behaviours


async def test_tools_unary(client: httpx.AsyncClient) -> None:
    reply = (await client.post(CHAT, json=body("tools"))).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_mock_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
        }
    ]


async def test_tools_stream_fragments_use_first_tool_name(client: httpx.AsyncClient) -> None:
    tools = [
        {"type": "function", "function": {"name": "lookup", "parameters": {}}},
        {"type": "function", "function": {"name": "other", "parameters": {}}},
    ]
    payloads = chunks((await client.post(CHAT, json=stream_body("tools", tools=tools, usage=True))).content)
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    fragments = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in payloads
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert fragments[0] == {
        "index": 0,
        "id": "call_mock_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": ""},
    }
    assert len(fragments) == 4
    assert all(set(f) == {"index", "function"} and set(f["function"]) == {"arguments"} for f in fragments[1:])
    arguments = "".join(f["function"]["arguments"] for f in fragments)
    assert json.loads(arguments) == {"city": "Paris", "unit": "celsius"}
    assert payloads[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert payloads[-1]["choices"] == []
    assert payloads[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize(
    ("tools", "name"),
    [
        pytest.param(None, "apply_patch", id="default-name"),
        pytest.param([{"type": "custom", "custom": {"name": "edit_file"}}], "edit_file", id="first-tool"),
    ],
)
async def test_tools_custom(client: httpx.AsyncClient, tools: list[Any] | None, name: str) -> None:
    extra = {"tools": tools} if tools else {}
    choice = (await client.post(CHAT, json=body("tools-custom", **extra))).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert (call["id"], call["type"], set(call)) == ("call_mock_custom_1", "custom", {"id", "type", "custom"})
    assert call["custom"]["name"] == name
    assert call["custom"]["input"].count("\n") == 4

    reply = await client.post(CHAT, json=stream_body("tools-custom", usage=True, **extra))
    payloads = chunks(reply.content)
    fragments = [c["choices"][0]["delta"]["tool_calls"][0] for c in payloads[1:-2]]
    assert fragments[0] == {**call, "index": 0, "custom": {"name": name, "input": ""}}
    assert len(fragments) == 4
    assert all(set(f) == {"index", "custom"} and set(f["custom"]) == {"input"} for f in fragments[1:])
    assert "".join(f["custom"]["input"] for f in fragments) == call["custom"]["input"]
    assert payloads[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert payloads[-1]["usage"]["completion_tokens"] > 0


async def test_reasoning(client: httpx.AsyncClient) -> None:
    message = (await client.post(CHAT, json=body("reasoning"))).json()["choices"][0]["message"]
    assert message["content"] == TEXT
    assert message["reasoning_content"]
    payloads = chunks((await client.post(CHAT, json=stream_body("reasoning"))).content)
    kinds = [next(iter(c["choices"][0]["delta"]), None) for c in payloads[1:-1]]
    assert kinds == sorted(kinds, key=lambda k: k != "reasoning_content")  # all reasoning first
    assert contents(payloads, "reasoning_content") == message["reasoning_content"]
    assert contents(payloads) == TEXT


async def test_azure(client: httpx.AsyncClient) -> None:
    reply = (await client.post(CHAT, json=body("azure"))).json()
    assert reply["prompt_filter_results"][0]["prompt_index"] == 0
    payloads = chunks((await client.post(CHAT, json=stream_body("azure"))).content)
    first = payloads[0]
    assert (first["id"], first["object"], first["created"], first["model"], first["choices"]) == (
        "",
        "",
        0,
        "",
        [],
    )
    assert first["prompt_filter_results"] == [{"prompt_index": 0, "content_filter_results": {}}]
    assert all(c["obfuscation"] == "abc" for c in payloads[1:])
    assert all(c["choices"][0]["content_filter_results"] == {} for c in payloads[1:])
    assert contents(payloads) == TEXT


async def test_json_on_stream(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=stream_body("json-on-stream"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["choices"][0]["message"]["content"] == TEXT


async def test_models_catalogue(client: httpx.AsyncClient) -> None:
    catalogue = (await client.get("/models")).json()  # more: tests/integration/test_mock_catalogue.py
    assert (catalogue["total"], len(catalogue["items"]), catalogue["page"], catalogue["limit"]) == (
        250,
        100,
        0,
        100,
    )
    assert {"model_id", "type", "capabilities"} <= set(catalogue["items"][0])


# ------------------------------------------------------------------------------------------- errors

PRISME_CODES = {
    400: "invalid_request",
    401: "invalid_token",
    403: "MODEL_NOT_ALLOWED",
    404: "not_found",
    429: "rate_limit_exceeded",
    500: "internal_error",
    503: "service_unavailable",
    418: "mock_error",
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("status", "code"), PRISME_CODES.items())
async def test_prisme_errors(client: httpx.AsyncClient, status: int, code: str, stream: bool) -> None:
    response = await client.post(CHAT, json=body(f"error-{status}", stream=stream))
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()
    assert error["error"] == code
    assert error["message"]
    assert isinstance(error["details"], dict)
    assert response.headers.get("retry-after") == ("7" if status in (429, 503) else None)
    uuid.UUID(response.headers["x-correlation-id"])


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 503])
async def test_openai_errors(client: httpx.AsyncClient, status: int) -> None:
    response = await client.post(CHAT, json=body(f"openai-error-{status}", stream=True))
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert response.headers.get("retry-after") == ("7" if status in (429, 503) else None)
    if status == 400:
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            "messages",
            "invalid_value",
        )


@pytest.mark.parametrize(
    ("model", "event", "error"),
    [
        (
            "stream-error",
            "message",
            {"message": "upstream provider failed", "type": "server_error", "code": "provider_error"},
        ),
        (
            "stream-error-event",
            "error",
            {"message": "upstream provider failed", "type": "server_error", "code": "provider_error"},
        ),
    ],
)
async def test_stream_errors(
    client: httpx.AsyncClient, model: str, event: str, error: dict[str, Any]
) -> None:
    response = await client.post(CHAT, json=stream_body(model))
    assert response.status_code == 200
    events = sse_events(response.content)
    assert events[-1] == ("message", "[DONE]")
    assert events[-2] == (event, json.dumps({"error": error}, separators=(",", ":")))
    assert contents([json.loads(d) for _, d in events[:3]]) == "Partial answer"


async def test_stream_error_vllm_and_content(client: httpx.AsyncClient) -> None:
    vllm = sse_data((await client.post(CHAT, json=stream_body("stream-error-vllm"))).content)
    error = json.loads(vllm[-2])["error"]
    assert (error["object"], error["type"], error["param"], error["code"]) == (
        "error",
        "BadRequestError",
        None,
        400,
    )
    content = chunks((await client.post(CHAT, json=stream_body("stream-error-content"))).content)
    assert contents(content) == "Partial answer\n\n[upstream provider failed]"


async def test_stream_error_models_fail_unary(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=body("stream-error-vllm"))
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"


async def test_truncated_stream_drops_the_connection(client: httpx.AsyncClient, gateway: MockGateway) -> None:
    received: list[bytes] = []

    async def read_all() -> None:
        async with client.stream("POST", CHAT, json=stream_body("truncated")) as response:
            async for part in response.aiter_bytes():
                received.append(part)

    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        await read_all()
    assert received
    assert not b"".join(received).endswith(b"\n")
    data = sse_data(b"".join(received))
    assert contents([json.loads(d) for d in data]) == "Partial answer"
    assert "[DONE]" not in data
    assert gateway.requests()[-1]["outcome"] == "completed"


async def test_truncated_unary_and_clean_eof_variant(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(CHAT, json=body("truncated"))
    response = await client.post(CHAT, json=stream_body("truncated-eof"))
    assert response.content.rsplit(b"\n\n", 1)[1].startswith(b"data: {")  # a half line, no newline
    assert len(sse_data(response.content)) == 3


async def test_no_done_and_no_finish(client: httpx.AsyncClient) -> None:
    no_done = await client.post(CHAT, json=stream_body("no-done", usage=True))
    assert no_done.headers["connection"] == "close"
    payloads = [json.loads(d) for d in sse_data(no_done.content)]
    assert "[DONE]" not in sse_data(no_done.content)
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
    assert payloads[-1]["usage"]["completion_tokens"] == 5
    no_finish = [
        json.loads(d)
        for d in sse_data((await client.post(CHAT, json=stream_body("no-finish", usage=True))).content)
    ]
    assert contents(no_finish) == TEXT
    assert all(c["choices"] and c["choices"][0]["finish_reason"] is None for c in no_finish)


# ---------------------------------------------------------------------------------- timing, cancel


async def test_slow_delays_headers_then_echoes(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await client.post(CHAT, json=body("slow-300"))
    assert time.monotonic() - started >= 0.3
    assert response.json()["choices"][0]["message"]["content"] == TEXT
    started = time.monotonic()
    async with client.stream("POST", CHAT, json=stream_body("slow-200")) as streamed:
        assert time.monotonic() - started >= 0.2  # the headers themselves were late
        assert contents(chunks(await streamed.aread())) == TEXT


async def test_paced_stream_sends_one_event_per_read(client: httpx.AsyncClient) -> None:
    async with client.stream("POST", CHAT, json=stream_body("paced-100", "a b c")) as response:
        reads = [raw async for raw in response.aiter_raw()]
    events = [raw.count(b"data: ") for raw in reads]
    # role, three words, finish, [DONE], each written after a 100 ms pause: read one by one (a reader
    # stalled that long would see two at once, hence the median)
    assert sum(events) == 6
    assert sorted(events)[len(events) // 2] == 1
    assert contents(chunks(b"".join(reads))) == "a b c"
    unary = await client.post(CHAT, json=body("paced-30"))
    assert unary.json()["choices"][0]["message"]["content"] == TEXT


async def test_endless_stream_disconnect_is_recorded_promptly(
    client: httpx.AsyncClient, gateway: MockGateway, no_server_errors: None
) -> None:
    received = b""
    async with client.stream("POST", CHAT, json=stream_body("endless")) as response:
        async for part in response.aiter_bytes():
            received += part
            if received.count(b'"tick "') >= 3:
                break
    # An endless stream ends only when the mock notices its client left: the end is the event.
    record = await wait_for_outcome(gateway, gateway.requests()[-1]["id"], within=GUARD_S)
    assert record["outcome"] == "client_disconnected"
    assert contents([json.loads(d) for d in sse_data(received)]).startswith("tick tick tick")


# A wait the mock would end by itself only long after the test's guard (10x GUARD_S): noticed or not is
# then told apart by the event, not by a guess at how soon.
@pytest.mark.parametrize("model", [f"slow-{int(GUARD_S * 10_000)}", "endless"])
async def test_unary_disconnect_while_waiting_is_recorded(
    gateway: MockGateway, model: str, no_server_errors: None
) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(CHAT, json=body(model), timeout=httpx.Timeout(5.0, read=0.2))
    record = await wait_for_outcome(gateway, gateway.requests()[-1]["id"], within=GUARD_S)
    assert record["outcome"] == "client_disconnected"


async def test_close_ends_an_endless_stream_itself() -> None:
    # aiohttp would cancel the stream after its shutdown timeout (10x the guard here): the mock must end it
    # itself on close, long before.
    gw = await start_mock_gateway(shutdown_timeout=10 * GUARD_S)
    async with (
        httpx.AsyncClient(base_url=gw.base_url) as c,
        c.stream("POST", CHAT, json=stream_body("endless")) as r,
    ):
        await anext(r.aiter_bytes())
        async with asyncio.timeout(GUARD_S):
            await gw.close()
    assert gw.requests()[-1]["outcome"] == "error"


# -------------------------------------------------------------------------------- auth, validation


async def test_api_key_required_mode() -> None:
    gw = await start_mock_gateway(require_api_key="iak_org_secret")
    try:
        async with httpx.AsyncClient(base_url=gw.base_url) as c:
            missing = await c.post(CHAT, json=body("echo"))
            wrong = await c.post(CHAT, json=body("echo"), headers={"Authorization": "Bearer nope"})
            bearer = await c.post(CHAT, json=body("echo"), headers={"Authorization": "Bearer iak_org_secret"})
            header = await c.post(CHAT, json=body("echo"), headers={"x-prismeai-api-key": "iak_org_secret"})
    finally:
        await gw.close()
    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_token"
        assert refused.json()["message"]
    assert bearer.status_code == header.status_code == 200
    assert gw.requests()[2]["headers"]["authorization"] == "Bearer iak_org_secret"
    assert [r["outcome"] for r in gw.requests()] == ["error", "error", "completed", "completed"]


async def test_no_auth_by_default(client: httpx.AsyncClient) -> None:
    assert (await client.post(CHAT, json=body("echo"))).status_code == 200


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[1, 2]",
        json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(),
        json.dumps({"model": "echo", "messages": []}).encode(),
        json.dumps({"model": "echo", "messages": "hi"}).encode(),
        json.dumps({"model": "echo", "messages": [{"role": "user", "content": "x"}], "n": 0}).encode(),
    ],
)
async def test_bad_requests_get_400(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post(CHAT, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["message"]
    assert "x-correlation-id" in response.headers


async def test_correlation_and_request_ids(client: httpx.AsyncClient) -> None:
    echoed = await client.post(
        CHAT, json=body("echo"), headers={"x-correlation-id": "corr-1", "x-request-id": "req-9"}
    )
    assert echoed.headers["x-correlation-id"] == "corr-1"
    assert echoed.headers["x-request-id"] == "req-9"
    generated = [
        (await client.post(CHAT, json=body("error-500"))).headers["x-correlation-id"] for _ in range(2)
    ]
    assert generated[0] != generated[1]
    streamed = await client.post(CHAT, json=stream_body("echo"), headers={"x-correlation-id": "corr-2"})
    assert streamed.headers["x-correlation-id"] == "corr-2"


# ------------------------------------------------------------------------------------- request log


async def test_request_log(client: httpx.AsyncClient, gateway: MockGateway) -> None:
    before = time.time()
    await client.post(CHAT, json=stream_body("echo"), headers={"X-Custom": "v", "x-request-id": "r1"})
    await client.post(CHAT, json=body("error-429"))
    async with httpx.AsyncClient(base_url=gateway.url) as raw:
        listed = (await raw.get("/_mock/requests")).json()
        assert listed == gateway.requests()
        first, second = listed
        assert first["path"] == GATEWAY_PREFIX + CHAT
        assert first["headers"]["x-custom"] == "v"
        assert first["headers"]["x-request-id"] == "r1"
        assert first["body"] == stream_body("echo")
        assert (first["stream"], first["model"], first["outcome"]) == (True, "echo", "completed")
        assert before <= first["started_at"] <= first["ended_at"] <= time.time()
        assert (second["stream"], second["model"], second["outcome"]) == (False, "error-429", "error")
        assert second["id"] > first["id"]
        one = await raw.get(f"/_mock/requests/{second['id']}")
        assert one.json() == second
        assert (await raw.get("/_mock/requests/999999")).status_code == 404
        assert (await raw.delete("/_mock/requests")).status_code == 204
        assert (await raw.get("/_mock/requests")).json() == []
    await client.post(CHAT, json=body("echo"))
    assert len(gateway.requests()) == 1
    gateway.clear_requests()
    assert gateway.requests() == []


async def test_request_log_is_capped() -> None:
    log = records.RequestLog(limit=3)

    class FakeRequest:
        method = "POST"
        path = raw_path = "/v1/chat/completions"
        query: dict[str, str] = {}  # noqa: RUF012
        headers: dict[str, str] = {}  # noqa: RUF012

    for i in range(5):
        log.start(FakeRequest(), body(f"m{i}"))  # type: ignore[arg-type]
    assert [r["model"] for r in log.snapshot()] == ["m2", "m3", "m4"]
    assert records.RECORD_LIMIT == 1000


async def test_in_progress_record_is_visible(client: httpx.AsyncClient, gateway: MockGateway) -> None:
    task = asyncio.create_task(client.post(CHAT, json=body("slow-300")))
    async with asyncio.timeout(5):
        started = await gateway.wait_for_request(lambda r: True)
    assert started["outcome"] == "in_progress"
    assert started["ended_at"] is None
    assert gateway.requests()[-1]["outcome"] == "in_progress"
    await task
    assert gateway.requests()[-1]["outcome"] == "completed"


async def test_waiting_for_a_request_is_woken_by_its_end(
    client: httpx.AsyncClient, gateway: MockGateway
) -> None:
    waiting = asyncio.create_task(gateway.wait_for_request(lambda r: r["outcome"] == "completed"))
    await asyncio.sleep(0)
    assert not waiting.done()
    await client.post(CHAT, json=body("echo"))
    async with asyncio.timeout(5):
        record = await waiting
    assert (record["model"], record["outcome"]) == ("echo", "completed")
    # A record already there answers at once; one that never comes is bounded by the caller's timeout.
    async with asyncio.timeout(5):
        assert (await gateway.wait_for_request(lambda r: r["model"] == "echo"))["id"] == record["id"]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await gateway.wait_for_request(lambda r: r["model"] == "never")


# ------------------------------------------------------------------------------------------ serving


async def test_serve_forever_logs_url_and_stops_on_cancel(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bridge.mock_gateway")
    task = asyncio.create_task(serve_forever("127.0.0.1", 0))
    deadline = time.monotonic() + 5
    while not any("listening on" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    line = next(r.getMessage() for r in caplog.records if "listening on" in r.getMessage())
    match = re.fullmatch(r"mock gateway listening on (http://127\.0\.0\.1:\d+)", line)
    assert match is not None
    async with httpx.AsyncClient() as c:
        assert (await c.get(match[1] + "/healthz")).status_code == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with httpx.AsyncClient() as c:
        with pytest.raises(httpx.ConnectError):
            await c.get(match[1] + "/healthz")


async def test_credentials_never_logged(caplog: pytest.LogCaptureFixture, client: httpx.AsyncClient) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": "Bearer sk-very-secret", "x-prismeai-api-key": "iak_secret"}
    await client.post(CHAT, json=stream_body("echo"), headers=headers)
    await client.post(CHAT, json=body("error-401"), headers=headers)
    assert any(r.name == "bridge.mock_gateway" for r in caplog.records)
    assert not any("secret" in r.getMessage() for r in caplog.records)
