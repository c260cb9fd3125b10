"""Property: whatever an upstream answers (any header names and values an HTTP/1.1 parser accepts, any
status, any error body), the caller gets the answer (2xx) or the status the error table gives for that
status and body (docs/errors.md) -- never UNKNOWN, never the bridge's own INTERNAL, never a metadata value
that fails the call -- and the bridge logs no traceback. Unary and stream, on every upstream transport, with
`prisme-bridge serve` run as a process in front of tests/raw_upstream.py.

The expected status is computed by the bridge's own pure mapping (bridge.upstream.errors for an error
reply, bridge.http.redirect for a 3xx) from the status and body alone: the hostile headers must change
nothing but what they name. Examples are derandomized (the same ones every run) and bounded; each has a
generous deadline.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.http.redirect import is_redirect
from bridge.upstream.errors import error_from_http_response
from bridge.upstream.headers import CORRELATION_HEADERS, RETURNED_HEADERS
from tests.helpers import GUARD_S, TRANSPORTS, chat_request, cli_env
from tests.raw_upstream import COMPLETION_TEXT, RawReply, RawRequest, completion_reply, raw_upstream_thread

# Header value bytes every transport's parser accepts: all but NUL, CR and LF (framing), and VT and FF,
# which h11 (the httpx transport) refuses while aiohttp takes them. A reply they refuse is a garbled reply:
# test_a_header_byte_a_parser_refuses_is_a_garbled_reply.
_REFUSED_BY_SOME = frozenset(b"\x00\n\r\x0b\x0c")
# Headers that frame or encode the body: not what this property is about (the raw upstream sets its own).
_FRAMING = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "content-type", "content-encoding",
     "upgrade", "proxy-connection", "te", "trailer"}
)  # fmt: skip
_KNOWN_NAMES = [
    *RETURNED_HEADERS,
    "retry-after",
    "retry-after-ms",
    "llm_provider-retry-after",
    "llm_provider-retry-after-ms",
    "location",
    "set-cookie",
    "www-authenticate",
]
_TOKEN = st.from_regex(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,24}", fullmatch=True)
_NAMES = st.sampled_from(_KNOWN_NAMES) | _TOKEN.filter(lambda name: name.lower() not in _FRAMING)
_VALUE_BYTES = st.binary(max_size=200).map(lambda raw: bytes(b for b in raw if b not in _REFUSED_BY_SOME))
_RETRY_VALUES = st.sampled_from(
    [b"0", b"1", b"120", b"-1", b"1.5", b"99999999999999999999999", b"Wed, 21 Oct 2015 07:28:00 GMT", b"soon"]
)
_VALUES = _VALUE_BYTES | _RETRY_VALUES | st.integers(1_000, 3_000).map(lambda n: b"v" * n)
# Within h11's 16 KiB limit on a reply's head.
_HEADERS = st.lists(st.tuples(_NAMES.map(str.encode), _VALUES), max_size=10).filter(
    lambda headers: sum(len(name) + len(value) for name, value in headers) < 12_000
)
# Statuses: the ones with a meaning, and any three digits a parser accepts (1xx are not final replies:
# both libraries wait for the next, so they are left out).
_STATUSES = st.sampled_from(
    [200, 201, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 408, 409, 410, 413, 422, 429, 499,
     500, 501, 502, 503, 504, 529]
) | st.integers(200, 999)  # fmt: skip
_TEXT = st.text(st.characters(exclude_categories=[]), max_size=60)  # lone surrogates and controls included
_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | _TEXT
_ERROR_BODIES = (
    st.binary(max_size=300)
    | st.builds(
        lambda message, code, kind, param: json.dumps(
            {"error": {"message": message, "code": code, "type": kind, "param": param}}
        ).encode(),
        _TEXT | st.none(),
        _SCALARS,
        _SCALARS,
        _SCALARS,
    )
    | st.builds(
        lambda code, message, details: json.dumps(
            {"error": code, "message": message, "details": details}
        ).encode(),
        _TEXT,
        _TEXT,
        st.dictionaries(_TEXT, _SCALARS, max_size=3),
    )
)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    error_body: bytes

    def __repr__(self) -> str:  # a failing example's report, values cut short
        headers = [(name, value[:80] + (b"..." if len(value) > 80 else b"")) for name, value in self.headers]
        return f"Reply(status={self.status}, headers={headers!r}, error_body={self.error_body[:200]!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' printer
        printer.text(repr(self))

    def answer(self, request: RawRequest) -> RawReply:
        if 200 <= self.status < 300:
            return completion_reply(request, self.headers, self.status)
        return RawReply(self.status, [(b"Content-Type", b"application/json"), *self.headers], self.error_body)


@st.composite
def _replies(draw: st.DrawFn) -> Reply:
    return Reply(draw(_STATUSES), draw(_HEADERS), draw(_ERROR_BODIES))


REPLIES = _replies()
BODILESS = frozenset({204, 304})  # statuses whose reply has no body (the parsers drop what follows)
OK = grpc.StatusCode.OK


def expected(reply: Reply, rpc: str) -> tuple[grpc.StatusCode, str | None]:
    """The code and ErrorInfo reason the caller must get, by docs/errors.md, from the status and body."""
    status = reply.status
    if 200 <= status < 300:
        if status not in BODILESS:
            return OK, None
        # An empty 2xx: not a JSON document; an event stream that ends before it began.
        if rpc == "unary":
            return grpc.StatusCode.INTERNAL, "UPSTREAM_INVALID_RESPONSE"
        return grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_INCOMPLETE"
    if is_redirect(status):
        return grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_REDIRECTED"
    body = b"" if status in BODILESS else reply.error_body
    error = error_from_http_response(status, {}, body, host="127.0.0.1")
    return error.code, error.reason


# ----------------------------------------------------------------------------------- the processes


@dataclass
class Served:
    transport: str
    stub: pb_grpc.ChatCompletionServiceStub
    log: Path


def _serve(upstream_url: str, transport: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    argv = [
        sys.executable, "-m", "bridge.cli", "serve", "--listen", "127.0.0.1:0",
        "--upstream-url", upstream_url, "--upstream-transport", transport, "--log-format", "text",
        # Retries as by default, with waits short enough for a few hundred calls.
        "--retry-backoff", "0.01", "--retry-max-backoff", "0.05",
    ]  # fmt: skip
    with log.open("wb") as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, env=cli_env())
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline and process.poll() is None:
        if found := re.search(r"bridge listening on 127\.0\.0\.1:(\d+)", log.read_text(errors="replace")):
            return process, int(found.group(1))
        time.sleep(0.05)  # a file has no event to wait for
    process.kill()
    pytest.fail(f"serve did not start:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def upstream() -> Iterator[Any]:
    with raw_upstream_thread(completion_reply) as raw:
        yield raw


@pytest.fixture(scope="module")
def served(upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Served]]:
    directory = tmp_path_factory.mktemp("hostile")
    processes: list[subprocess.Popen[bytes]] = []
    channels: list[grpc.Channel] = []
    bridges = []
    try:
        for transport in TRANSPORTS:
            log = directory / f"{transport}.log"
            process, port = _serve(upstream.base_url, transport, log)
            processes.append(process)
            channels.append(grpc.insecure_channel(f"127.0.0.1:{port}"))
            bridges.append(Served(transport, pb_grpc.ChatCompletionServiceStub(channels[-1]), log))
        yield bridges
    finally:
        for channel in channels:
            channel.close()
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(GUARD_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _call(stub: pb_grpc.ChatCompletionServiceStub, rpc: str) -> tuple[grpc.StatusCode, str, Any]:
    """(code, content or message, the error: a grpc.Call) of one call."""
    try:
        if rpc == "unary":
            reply, call = stub.CreateChatCompletion.with_call(chat_request(), timeout=10)
            _printable_metadata(call.initial_metadata())
            return OK, reply.choices[0].message.content, None
        chunks = stub.StreamChatCompletion(chat_request(), timeout=10)
        text = "".join(chunk.choices[0].delta.content for chunk in chunks)
        _printable_metadata(chunks.initial_metadata())
        return OK, text, None
    except grpc.RpcError as error:
        return error.code(), error.details(), error


def _printable_metadata(metadata: Any) -> None:
    for key, value in metadata or ():
        assert isinstance(value, bytes) or (value.isascii() and value.isprintable()), (key, value)


def _reason(error: Any) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    for key in ("correlationId", "location"):
        value = info.metadata.get(key)
        assert value is None or (value.isascii() and value.isprintable()), (key, value)
    return info.reason


@settings(
    max_examples=100,
    deadline=timedelta(seconds=30),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(reply=REPLIES)
def test_any_reply_gets_the_answer_or_the_status_the_error_table_says(
    upstream: Any, served: list[Served], reply: Reply
) -> None:
    upstream.answer = reply.answer
    for bridge in served:
        for rpc in ("unary", "stream"):
            code, said, error = _call(bridge.stub, rpc)
            want_code, want_reason = expected(reply, rpc)
            where = f"{bridge.transport} {rpc} HTTP {reply.status}"
            assert code != grpc.StatusCode.UNKNOWN, f"{where}: {said}"
            assert code == want_code, f"{where}: {code.name} {said!r}, want {want_code.name}"
            if code == OK:
                assert said == COMPLETION_TEXT, where
            if error is not None:
                assert said.isprintable(), f"{where}: {said!r}"
                assert _reason(error) == want_reason, f"{where}: {said}"
                trailers = dict(error.trailing_metadata() or ())
                correlation = trailers.get("x-correlation-id")
                assert correlation is None or (correlation.isascii() and correlation.isprintable())


@pytest.mark.parametrize("byte", [b"\x0b", b"\x0c", b"\x00"], ids=["vt", "ff", "nul"])
def test_a_header_byte_a_parser_refuses_is_a_garbled_reply(
    upstream: Any, served: list[Served], byte: bytes
) -> None:
    """The transports' parsers differ on a few bytes; what they refuse ends as a reply that could not be read,
    never UNKNOWN: aiohttp's INTERNAL / UPSTREAM_INVALID_RESPONSE, h11's (httpx) UNAVAILABLE /
    UPSTREAM_CONNECTION_LOST ("upstream broke the connection"), both documented (docs/errors.md)."""
    upstream.answer = lambda request: completion_reply(request, [(b"x-request-id", b"a" + byte + b"b")])
    for bridge in served:
        for rpc in ("unary", "stream"):
            code, said, error = _call(bridge.stub, rpc)
            if code == OK:  # this transport's parser took it
                assert said == COMPLETION_TEXT
                continue
            assert (code, _reason(error)) in {
                (grpc.StatusCode.INTERNAL, "UPSTREAM_INVALID_RESPONSE"),
                (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_CONNECTION_LOST"),
            }, f"{bridge.transport} {rpc}: {code.name} {said}"


_ACCESS = re.compile(r" WARNING bridge\.access: \w+ [A-Z_]+")
_DROPPED = re.compile(r" WARNING bridge\.upstream_call: upstream reply header '[^']+' dropped")


def test_the_processes_logged_no_traceback_and_only_access_lines_and_drops(served: list[Served]) -> None:
    """Runs after the tests above (same module, same processes): their logs so far."""
    for bridge in served:
        lines = bridge.log.read_text(errors="replace").splitlines()
        assert len(lines) > 50, f"{bridge.transport}: the property test did not run first"
        # ERROR as the record's level (text format: DATE TIME LEVEL LOGGER: ...), not as a word of a line:
        # an access line's reason may be UPSTREAM_ERROR.
        trouble = [
            line
            for line in lines
            if re.search(r"Traceback|^\S+ \S+ ERROR |Logging error|Illegal header", line)
        ]
        assert not trouble, f"{bridge.transport}: {trouble[:5]}"
        warnings = [line for line in lines if " WARNING " in line]
        others = [line for line in warnings if not (_ACCESS.search(line) or _DROPPED.search(line))]
        assert not others, f"{bridge.transport}: {others[:5]}"
        assert "\x1b" not in "".join(lines)
    assert CORRELATION_HEADERS  # (the names the property sends hostile values under)
