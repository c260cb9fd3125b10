"""Logs of `prisme-bridge serve` as a subprocess: JSON lines, one access line per call with its facts,
and no credential or message content at any level, DEBUG included, with real calls carrying both."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
from typing import Any

import grpc
import pytest

from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from tests.helpers import call_failing, chat_request, cli_env, collect, free_port, run_cli, status_details
from tests.raw_upstream import RawReply, RawUpstream

OWN_KEY = "iak_acme_0f4c2d6e-5b1a-4c8e-9d7f-own-key"
CALLER_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYWxsZXIifQ.c2lnbmF0dXJlLW9mLXRoZS1jYWxsZXI"
CALLER_IAK = "iak_acme_7e1d-caller-key"
MODEL_KEY = "sk-proj-pasted-into-the-model-field-123"
CONTENT = "PRIVATE-PROMPT-CONTENT-31415"
SECRETS = (OWN_KEY, CALLER_JWT, CALLER_IAK, MODEL_KEY, CONTENT, "PRIVATE-PROMPT")
_LISTENING = r"bridge listening on 127\.0\.0\.1:(\d+)"


async def _calls(address: str) -> int:
    """Calls of every kind, carrying credentials in metadata and a secret in the content; how many."""
    bearer = (("authorization", f"Bearer {CALLER_JWT}"), ("x-correlation-id", "corr-logs-1"))
    iak = (("x-prismeai-api-key", CALLER_IAK),)
    usage = pb.StreamOptions(include_usage=True)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        await stub.CreateChatCompletion(chat_request(text=f"say {CONTENT}"), metadata=bearer, timeout=10)
        await collect(
            stub.StreamChatCompletion(
                chat_request(text=f"say {CONTENT}", stream_options=usage), metadata=iak, timeout=10
            )
        )
        await stub.CreateChatCompletion(chat_request(text=CONTENT), timeout=10)  # the bridge's own key
        await stub.CreateChatCompletion(chat_request(model=MODEL_KEY, text=CONTENT), timeout=10)
        await call_failing(
            stub, "unary", chat_request(model="error-401", text=CONTENT), metadata=bearer, timeout=10
        )
        await call_failing(
            stub, "stream", chat_request(model="stream-error", text=CONTENT), metadata=iak, timeout=10
        )
        await call_failing(stub, "unary", chat_request(model="", text=CONTENT), timeout=10)
    return 7


def _entries(logs: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in logs.splitlines()]  # every line is one JSON object


async def test_debug_logs_hold_no_credential_and_no_content(mock_gateway: MockGateway) -> None:
    env = cli_env(
        BRIDGE_UPSTREAM_URL=mock_gateway.base_url,
        BRIDGE_API_KEY=OWN_KEY,
        BRIDGE_API_KEY_FOR="anyone",  # the key used for calls without credentials: it must not be logged
        BRIDGE_LOG_LEVEL="DEBUG",
    )
    async with run_cli("serve", "--listen", "127.0.0.1:0", env=env) as bridge:  # serve: JSON by default
        port = (await bridge.wait_log(_LISTENING)).group(1)
        calls = await _calls(f"127.0.0.1:{port}")
        assert await bridge.stop(signal.SIGTERM, within=10) == 0
        logs = await bridge.logs()
    entries = _entries(logs)
    assert any(e["level"] == "DEBUG" for e in entries)  # DEBUG was really on
    for secret in SECRETS:
        assert secret not in logs, secret
    assert CONTENT in str(mock_gateway.requests())  # ...though every call carried them
    assert not [e for e in entries if e["logger"].startswith(("httpx", "httpcore"))]
    assert len([e for e in entries if e["logger"] == "bridge.access"]) == calls


async def test_one_access_line_per_call_at_info_with_its_facts(mock_gateway: MockGateway) -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url)
    async with run_cli("serve", "--listen", "127.0.0.1:0", env=env) as bridge:
        port = (await bridge.wait_log(_LISTENING)).group(1)
        # the start's one upstream check runs in the background (a SIGTERM cancels it): waited for, so its
        # line is there, before or among the calls' lines
        await bridge.wait_log(r"upstream \S+ reachable")
        calls = await _calls(f"127.0.0.1:{port}")
        assert await bridge.stop(signal.SIGTERM, within=10) == 0
        logs = await bridge.logs()
    entries = _entries(logs)
    [check] = [e for e in entries if e["logger"] == "bridge.http.reachability"]
    entries.remove(check)
    during = entries[next(i for i, e in enumerate(entries) if re.search(_LISTENING, e["message"])) + 1 :]
    during = [e for e in during if "shutting down" not in e["message"]]
    assert [e["logger"] for e in during] == ["bridge.access"] * calls  # nothing else per call

    unary, stream, *_ = during
    assert unary["message"] == "CreateChatCompletion OK"
    assert unary["level"] == "INFO"
    assert unary["code"] == "OK"
    assert unary["model"] == "echo"
    assert unary["upstream_status"] == 200
    assert unary["correlation_id"] == "corr-logs-1"  # the caller's id, echoed by the upstream
    assert (unary["prompt_tokens"], unary["completion_tokens"]) == (2, 2)
    assert unary["ms"] > 0
    assert "chunks" not in unary
    assert stream["method"] == "StreamChatCompletion"
    assert stream["chunks"] == 5  # role, two words, finish, usage
    assert stream["completion_tokens"] == 2
    refused = next(e for e in during if e["model"] == "error-401")
    assert (refused["level"], refused["code"], refused["upstream_status"]) == (
        "WARNING",
        "UNAUTHENTICATED",
        401,
    )
    invalid = during[-1]
    assert (invalid["code"], "upstream_status" in invalid) == ("INVALID_ARGUMENT", False)


async def test_text_format_keeps_the_facts_on_one_line(mock_gateway: MockGateway) -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url)
    async with run_cli("serve", "--listen", "127.0.0.1:0", "--log-format", "text", env=env) as bridge:
        port = (await bridge.wait_log(_LISTENING)).group(1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await pb_grpc.ChatCompletionServiceStub(channel).CreateChatCompletion(chat_request(), timeout=10)
        line = (await bridge.wait_log(r"bridge\.access: .*")).group(0)
        assert await bridge.stop(signal.SIGTERM, within=10) == 0
    assert line.startswith("bridge.access: CreateChatCompletion OK service='prisme.llmgateway.v1.")
    assert "code='OK'" in line
    assert "model='echo' upstream_status=200" in line


# ---------------------------------------------------------- a failed call's access line: reason and cause


def _failure_fields(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    lines = [r for r in caplog.records if r.name == "bridge.access"]
    return [{k: r.__dict__["fields"].get(k) for k in ("code", "reason", "cause")} for r in lines]


@pytest.mark.parametrize(
    ("kind", "model", "code", "reason", "cause"),
    [
        ("unary", "error-404", "NOT_FOUND", "UPSTREAM_NOT_FOUND", "upstream HTTP 404 (not_found)"),
        (
            "unary",
            "error-429",
            "RESOURCE_EXHAUSTED",
            "UPSTREAM_RATE_LIMITED",
            "upstream HTTP 429 (rate_limit_exceeded)",
        ),
        (
            "stream",
            "stream-error",
            "INTERNAL",
            None,
            "upstream error event in its stream (provider_error)",
        ),
        ("stream", "truncated", "UNAVAILABLE", "UPSTREAM_STREAM_TRUNCATED", None),
        ("unary", "", "INVALID_ARGUMENT", "INVALID_REQUEST", "invalid request: model: "),
    ],
    ids=["http-404", "http-429", "stream-error", "truncated", "invalid"],
)
async def test_every_failed_call_logs_its_reason_and_cause(
    stub,
    upstream_transport: str | None,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    model: str,
    code: str,
    reason: str | None,
    cause: str | None,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.access")
    if reason == "UPSTREAM_STREAM_TRUNCATED" and upstream_transport == "httpx":
        reason = (
            "UPSTREAM_CONNECTION_LOST"  # h11 reports a cut chunked body as a lost connection (reliability.md)
        )
    error, _ = await call_failing(stub, kind, chat_request(model=model, text=CONTENT), timeout=10)
    [line] = _failure_fields(caplog)
    assert line["code"] == code == error.code().name
    # the reason is the ErrorInfo reason the caller got
    assert line["reason"] == status_details(error)["ErrorInfo"].reason
    if reason is not None:
        assert line["reason"] == reason
    assert isinstance(line["cause"], str)
    assert line["cause"]
    if cause is not None:
        assert line["cause"].startswith(cause)
    assert CONTENT not in line["cause"]


async def test_an_unreachable_upstream_is_logged_with_its_cause(start_bridge, caplog) -> None:
    # issue 20: the line said only UNAVAILABLE and upstream_attempts 3
    caplog.set_level(logging.INFO, logger="bridge.access")
    port = free_port()
    bridge = await start_bridge(upstream_url=f"http://127.0.0.1:{port}/v1")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        await call_failing(stub, "unary", chat_request(), timeout=10)
    [line] = _failure_fields(caplog)
    assert line["reason"] == "UPSTREAM_UNREACHABLE"
    assert (
        line["cause"]
        == f"could not connect to upstream (127.0.0.1:{port}): connection refused (after 3 attempts)"
    )


async def test_a_cancelled_call_logs_who_ended_it_and_an_ok_call_no_cause(stub) -> None:
    lines: list[dict[str, object]] = []
    second = asyncio.Event()

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:  # on the loop: the bridge runs in this process
            lines.append({k: record.__dict__["fields"].get(k) for k in ("code", "reason", "cause")})
            if len(lines) == 2:
                second.set()

    handler = Lines()
    access = logging.getLogger("bridge.access")
    access.addHandler(handler)
    previous = access.level
    access.setLevel(logging.INFO)
    try:
        await stub.CreateChatCompletion(chat_request(), timeout=10)
        call = stub.StreamChatCompletion(chat_request(model="endless"))
        await call.read()
        call.cancel()
        await asyncio.wait_for(second.wait(), 10)  # written once the server has seen the cancel
    finally:
        access.removeHandler(handler)
        access.setLevel(previous)
    ok, cancelled = lines
    assert ok == {"code": "OK", "reason": None, "cause": None}
    assert cancelled == {"code": "CANCELLED", "reason": "CANCELLED", "cause": "the client cancelled the call"}


async def test_a_redirect_is_logged_with_where_it_pointed(start_bridge, caplog) -> None:
    # The bridge's own words name the Location and the base URL to use: an operator's fix, in the log too.
    caplog.set_level(logging.INFO, logger="bridge.access")
    async with RawUpstream() as upstream:
        location = f"https://127.0.0.1:{upstream.port}/v1/chat/completions"
        upstream.answer = lambda request: RawReply(301, [(b"Location", location.encode())], b"")
        bridge = await start_bridge(upstream_url=upstream.base_url)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
            stub = pb_grpc.ChatCompletionServiceStub(channel)
            error, _ = await call_failing(stub, "unary", chat_request(text=CONTENT), timeout=10)
    [line] = _failure_fields(caplog)
    assert line["reason"] == "UPSTREAM_REDIRECTED"
    assert line["cause"] == error.details()
    assert f"to {location}" in str(line["cause"])
