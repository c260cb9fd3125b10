"""What an upstream sends besides its body: header values that are not ASCII text, control bytes in the
text it echoes, redirects. None of it may cost the caller an answer or the status the error table gives
(docs/errors.md, docs/reliability.md "Hostile upstream bytes"). The upstream here is tests/raw_upstream.py:
it writes the bytes it is given, which no HTTP server library would."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.logs import TextFormatter
from tests.conftest import BridgeFactory
from tests.helpers import call_failing, chat_request, every_transport, status_details
from tests.raw_upstream import COMPLETION_TEXT, RawReply, RawRequest, RawUpstream, completion_reply

upstream_transport = every_transport()

# Header values as they arrive: a Latin-1 byte (aiohttp hands it over as a surrogate escape, httpx decodes
# it as Latin-1), UTF-8 text, an ESC byte (a terminal escape sequence). Each with how the bridge names it.
HOSTILE_IDS = {
    "latin-1": (b"r\xe9q-1", r"r\xe9q-1"),
    "utf-8": ("réq-1".encode(), r"r\xe9q-1"),
    "escape": (b"a\x1b[31mRED", r"a\x1b[31mRED"),
}


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    async with RawUpstream() as upstream:
        yield upstream


@pytest.fixture
async def raw_stub(
    start_bridge: BridgeFactory, raw_upstream: RawUpstream
) -> AsyncIterator[pb_grpc.ChatCompletionServiceStub]:
    bridge = await start_bridge(upstream_url=raw_upstream.base_url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        yield pb_grpc.ChatCompletionServiceStub(channel)


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """Every record of the process at DEBUG, written as `--log-format text` writes it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _no_trouble(log: str) -> None:
    assert "Traceback" not in log
    assert " ERROR " not in log
    assert "\x1b" not in log


@pytest.mark.parametrize("rpc", ["unary", "stream"])
@pytest.mark.parametrize("value", list(HOSTILE_IDS))
async def test_a_reply_header_that_is_not_ascii_text_costs_no_answer(
    raw_upstream: RawUpstream, raw_stub: pb_grpc.ChatCompletionServiceStub, text_log: io.StringIO,
    rpc: str, value: str,
) -> None:  # fmt: skip
    sent, named = HOSTILE_IDS[value]
    raw_upstream.answer = lambda request: completion_reply(request, [(b"x-request-id", sent)])
    if rpc == "unary":
        call = raw_stub.CreateChatCompletion(chat_request(), timeout=10)
        assert (await call).choices[0].message.content == COMPLETION_TEXT
    else:
        call = raw_stub.StreamChatCompletion(chat_request(), timeout=10)
        assert "".join([chunk.choices[0].delta.content async for chunk in call]) == COMPLETION_TEXT
    # gRPC metadata carries printable ASCII only: the header is not returned (and the call is not failed)
    assert "x-request-id" not in dict(await call.initial_metadata())
    log = text_log.getvalue()
    _no_trouble(log)
    (access,) = [line for line in log.splitlines() if " bridge.access: " in line]
    assert f"correlation_id={named!r}" in access
    assert "upstream reply header 'x-request-id' dropped" in log


@pytest.mark.parametrize("rpc", ["unary", "stream"])
@pytest.mark.parametrize("value", list(HOSTILE_IDS))
async def test_an_error_reply_keeps_its_status_whatever_its_correlation_id(
    raw_upstream: RawUpstream, raw_stub: pb_grpc.ChatCompletionServiceStub, text_log: io.StringIO,
    rpc: str, value: str,
) -> None:  # fmt: skip
    sent, named = HOSTILE_IDS[value]
    raw_upstream.answer = lambda request: RawReply(
        404,
        [(b"Content-Type", b"application/json"), (b"x-correlation-id", sent)],
        b'{"error": {"message": "no such model", "code": "model_not_found"}}',
    )
    error, _ = await call_failing(raw_stub, rpc, chat_request(), timeout=10)
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    assert error.details() == "upstream HTTP 404: no such model"
    info = status_details(error)["ErrorInfo"]
    assert info.reason == "UPSTREAM_NOT_FOUND"
    assert info.metadata["correlationId"] == named
    assert dict(error.trailing_metadata() or ())["x-correlation-id"] == named
    _no_trouble(text_log.getvalue())


async def test_control_bytes_in_upstream_text_are_escaped_in_the_text_log(
    raw_upstream: RawUpstream, raw_stub: pb_grpc.ChatCompletionServiceStub, text_log: io.StringIO
) -> None:
    # A 503 (retried) whose message echoes the caller's model, terminal escapes included.
    model = "\x1b[31mRED\x1b[0m"

    def answer(request: RawRequest) -> RawReply:
        if len(raw_upstream.requests) == 1:
            echoed = {"error": {"message": f"model {request.json['model']} is overloaded"}}
            return RawReply(503, [(b"Content-Type", b"application/json")], json.dumps(echoed).encode())
        return completion_reply(request)

    raw_upstream.answer = answer
    reply = await raw_stub.CreateChatCompletion(chat_request(model=model), timeout=10)
    assert reply.choices[0].message.content == COMPLETION_TEXT
    log = text_log.getvalue()
    assert "upstream attempt 1 failed (upstream HTTP 503: model \\x1b[31mRED\\x1b[0m is overloaded)" in log
    _no_trouble(log)


# (where the upstream redirects; the base URL the message suggests)
REDIRECTS = {
    "https-instead-of-http": ("https://{here}/v1/chat/completions", "use https://{here}/v1"),
    "missing-path-segment": ("http://{here}/gateway/v1/chat/completions", "use http://{here}/gateway/v1"),
    "another-host": ("https://login.example.com/sso?token=abc", None),
}


@pytest.mark.parametrize("rpc", ["unary", "stream"])
@pytest.mark.parametrize("case", list(REDIRECTS))
async def test_a_redirect_names_its_location_and_is_never_followed(
    raw_upstream: RawUpstream, raw_stub: pb_grpc.ChatCompletionServiceStub, rpc: str, case: str
) -> None:
    here = f"127.0.0.1:{raw_upstream.port}"
    location, suggestion = (text.format(here=here) if text else None for text in REDIRECTS[case])
    raw_upstream.answer = lambda request: RawReply(301, [(b"Location", location.encode())], b"")
    error, _ = await call_failing(raw_stub, rpc, chat_request(), timeout=10)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    message = error.details()
    assert message.startswith(f"upstream redirected the request (HTTP 301) to {location.split('?')[0]}")
    assert "not followed" in message
    if suggestion is not None:
        assert f"fix --upstream-url (BRIDGE_UPSTREAM_URL): {suggestion} (" in message
    else:
        assert "--upstream-url" in message
    info = status_details(error)["ErrorInfo"]
    assert info.reason == "UPSTREAM_REDIRECTED"
    assert info.metadata["httpStatus"] == "301"
    assert len(raw_upstream.requests) == 1  # not followed, not retried


@pytest.mark.parametrize("rpc", ["unary", "stream"])
@pytest.mark.parametrize(
    "location", [b"/v1/\x01chat", b"/v1/caf\xc3\xa9 bar", b"http://[::1"], ids=["soh", "utf8", "bad"]
)
async def test_a_redirect_to_a_location_no_url_parser_takes_is_still_a_redirect(
    raw_upstream: RawUpstream, raw_stub: pb_grpc.ChatCompletionServiceStub, rpc: str, location: bytes
) -> None:
    """httpx parses a redirect's Location even when it follows none, and fails the reply on one it cannot
    parse: without the bridge's guard that was a lost connection, retried three times, then UNAVAILABLE."""
    raw_upstream.answer = lambda request: RawReply(302, [(b"Location", location)], b"")
    error, _ = await call_failing(raw_stub, rpc, chat_request(), timeout=10)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    # Parsed: where it points; unparsable even as a URL: said so (redirect.py) — a redirect either way.
    assert error.details().startswith(
        ("upstream redirected the request (HTTP 302) to ", "upstream answered HTTP 302, a redirect")
    ), error.details()
    assert error.details().isprintable()
    assert status_details(error)["ErrorInfo"].reason == "UPSTREAM_REDIRECTED"
    assert len(raw_upstream.requests) == 1  # not followed, not retried
