"""bridge.errors: the hierarchy, statuses with rich details and trailers, protocol and request errors.

Rich details are always read back the way a client reads them: the ``grpc-status-details-bin`` trailer of
``to_status()`` decoded with ``grpc_status.rpc_status.from_call`` and the ``Any`` details unpacked.
"""

from __future__ import annotations

import base64
import inspect

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from bridge import errors
from bridge.errors import (
    BridgeError,
    InvalidRequestError,
    Key,
    Reason,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamStreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    invalid_request,
    protocol_error,
)
from tests.helpers import HOST
from tests.helpers import error_details as _details
from tests.helpers import error_info as _info
from tests.helpers import error_violations as _violations
from tests.helpers import http_error as _http

C = grpc.StatusCode


# --------------------------------------------------------------------------------------- hierarchy


def test_hierarchy() -> None:
    for cls in (InvalidRequestError, UpstreamError):
        assert issubclass(cls, BridgeError)
    upstream = (
        UpstreamHTTPError,
        UpstreamStreamError,
        UpstreamProtocolError,
        UpstreamUnavailableError,
        UpstreamTimeoutError,
    )
    for cls in upstream:
        assert issubclass(cls, UpstreamError)
    reason = Reason.UPSTREAM_ERROR
    assert UpstreamUnavailableError("x", reason=reason).code is C.UNAVAILABLE
    assert UpstreamTimeoutError("x", reason=reason).code is C.DEADLINE_EXCEEDED
    assert UpstreamProtocolError("x", reason=reason).code is C.INTERNAL
    assert UpstreamProtocolError("x", C.UNAVAILABLE, reason=reason).code is C.UNAVAILABLE


def test_module_docstring_draws_every_error_class() -> None:
    classes = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, BridgeError) and obj.__module__ == errors.__name__
    }
    assert len(classes) == 8
    tree = (errors.__doc__ or "").split("Hierarchy::")[1].split("\n\n")[1]
    drawn = {line.lstrip(" │├└─").split()[0] for line in tree.splitlines()}
    assert drawn == {cls.__name__ for cls in classes}
    assert drawn <= set(errors.__all__)


def test_to_status_round_trips_code_message_and_details() -> None:
    info = error_details_pb2.ErrorInfo(
        reason="UPSTREAM_ERROR", domain=errors.DOMAIN, metadata={"upstreamHost": "gw", "cause": "why"}
    )
    retry = errors.retry_info(1.5)
    error = BridgeError(
        "boom",
        C.ABORTED,
        reason=Reason.UPSTREAM_ERROR,
        metadata={Key.UPSTREAM_HOST: "gw", Key.CORRELATION_ID: None, Key.CAUSE: "why"},
        details=[retry],
    )
    assert (error.reason, dict(error.metadata)) == ("UPSTREAM_ERROR", {"upstreamHost": "gw", "cause": "why"})
    status = error.to_status()
    assert status.code is C.ABORTED
    assert status.details == "boom"
    assert [key for key, _ in status.trailing_metadata] == ["grpc-status-details-bin"]
    rich = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    assert (rich.code, rich.message) == (C.ABORTED.value[0], "boom")
    assert _info(error) == info
    assert list(_details(error)) == [error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo]
    assert str(error) == "boom"


def test_an_error_is_not_changed_once_made_and_evolve_makes_a_copy() -> None:
    error = UpstreamError("refused", reason=Reason.UPSTREAM_UNREACHABLE, correlation_id="c-1")
    for name, value in (("message", "other"), ("before_reply", True), ("reason", Reason.INTERNAL)):
        with pytest.raises(AttributeError, match="not changed once made"):
            setattr(error, name, value)
    error.add_note("a note")  # the exception machinery's own attributes stay writable
    copy = error.evolve(before_reply=True)
    assert (copy.before_reply, error.before_reply) == (True, False)
    assert (type(copy), copy.message, copy.correlation_id, copy.args) == (
        UpstreamError,
        "refused",
        "c-1",
        ("refused",),
    )
    retried = copy.after_attempts(3)
    assert (retried.message, retried.attempts, str(retried)) == (
        "refused (after 3 attempts)",
        3,
        "refused (after 3 attempts)",
    )
    assert (copy.message, copy.attempts) == ("refused", 1)
    assert _info(retried) == _info(error)
    with pytest.raises(TypeError, match="no field colour"):
        error.evolve(colour="red")


async def test_to_status_crosses_a_real_grpc_aio_server() -> None:
    error = _http(429, {"error": "rate_limit_exceeded", "message": "slow down"}, {"Retry-After": "7"})

    async def handler(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort_with_status(error.to_status())
        raise AssertionError("abort_with_status returned")

    server = grpc.aio.server()
    method = grpc.unary_unary_rpc_method_handler(handler)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.T", {"M": method})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/t.T/M")(b"")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
    finally:
        await server.stop(None)
    rpc_error = caught.value
    assert rpc_error.code() is C.RESOURCE_EXHAUSTED
    assert rpc_error.details() == "upstream HTTP 429: slow down"
    trailer = dict(rpc_error.trailing_metadata() or ())["grpc-status-details-bin"]  # type: ignore[var-annotated,arg-type,index]
    rich = status_pb2.Status.FromString(trailer)
    kinds = {any_.TypeName() for any_ in rich.details}
    assert kinds == {"google.rpc.ErrorInfo", "google.rpc.RetryInfo"}


# ----------------------------------------------------------------------------------- protocol errors


def test_protocol_error() -> None:
    error = protocol_error(
        "invalid JSON chunk: {bad", host=HOST, reason=Reason.UPSTREAM_INVALID_RESPONSE, correlation_id="c"
    )
    assert isinstance(error, UpstreamProtocolError)
    assert (error.code, error.message) == (C.INTERNAL, "upstream protocol error: invalid JSON chunk: {bad")
    info = _info(error)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "UPSTREAM_INVALID_RESPONSE",
        "grpc-bridge.prisme.ai",
        {"upstreamHost": HOST, "correlationId": "c"},
    )
    truncated = protocol_error(
        "stream ended without [DONE]", host=HOST, reason=Reason.UPSTREAM_STREAM_TRUNCATED, code=C.UNAVAILABLE
    )
    assert truncated.code is C.UNAVAILABLE
    assert _info(truncated).reason == "UPSTREAM_STREAM_TRUNCATED"


def test_deadline_and_internal_errors_carry_their_reasons() -> None:
    late = errors.deadline_exceeded(HOST, "corr-9")
    assert (late.code, late.correlation_id) == (C.DEADLINE_EXCEEDED, "corr-9")
    assert (_info(late).reason, dict(_info(late).metadata)) == (
        "DEADLINE_EXCEEDED",
        {"upstreamHost": HOST, "correlationId": "corr-9"},
    )
    bug = errors.internal_error()
    assert (bug.code, _info(bug).reason, dict(_info(bug).metadata)) == (C.INTERNAL, "INTERNAL", {})
    assert "see its logs" in bug.message


# ---------------------------------------------------------------------------------- invalid requests


def test_invalid_request_names_the_first_violation() -> None:
    error = invalid_request([("messages[0].role", "must not be empty")])
    assert isinstance(error, InvalidRequestError)
    assert error.code is C.INVALID_ARGUMENT
    assert error.message == "invalid request: messages[0].role: must not be empty"
    assert _violations(error) == [("messages[0].role", "must not be empty")]
    assert error.violations == (("messages[0].role", "must not be empty"),)
    assert (_info(error).reason, _info(error).domain) == ("INVALID_REQUEST", "grpc-bridge.prisme.ai")


def test_invalid_request_counts_the_rest() -> None:
    violations = [("model", "must not be empty"), ("messages", "must contain at least one message")]
    error = invalid_request(violations)
    assert error.message == "invalid request: model: must not be empty (and 1 more)"
    assert _violations(error) == violations


def _trailer_bytes(status: grpc.Status) -> int:
    # As on the wire: grpc-message percent-encoded, -bin values base64.
    message = sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in status.details.encode())
    return message + sum(len(base64.b64encode(value)) for _, value in status.trailing_metadata)


def test_many_violations_stay_within_what_clients_accept() -> None:
    violations = [(f"messages[{i}].role", "must not be empty: use system, user, ...") for i in range(500)]
    error = invalid_request(violations)
    assert error.message.endswith("(and 499 more)")
    assert len(_violations(error)) == 10
    assert error.violations == tuple(violations)
    assert _trailer_bytes(error.to_status()) < 8 * 1024


def test_oversized_status_sheds_details_but_keeps_code_and_message() -> None:
    bad_request = invalid_request([("f" * 300, "d" * 300)] * 10).details[0]
    error = BridgeError(
        "é" * 5000,
        C.UNAVAILABLE,
        reason=Reason.UPSTREAM_ERROR,
        metadata={Key.CAUSE: "v" * 200},
        details=[bad_request],
    )
    status = error.to_status()
    assert _trailer_bytes(status) <= 7 * 1024
    assert status.code is C.UNAVAILABLE
    assert len(status.details.encode()) <= 1280
    assert status.details.endswith("…")
    assert list(_details(error)) == [error_details_pb2.ErrorInfo]  # BadRequest, the last, went first


def test_invalid_request_custom_message_and_none() -> None:
    assert invalid_request([("a", "b")], "nope").message == "nope"
    empty = invalid_request([])
    assert empty.message == "invalid request"
    assert list(_details(empty)) == [error_details_pb2.ErrorInfo]
    assert empty.to_status().code is C.INVALID_ARGUMENT
