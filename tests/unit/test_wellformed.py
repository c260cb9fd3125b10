"""bridge.rpc.wellformed: undecodable requests and metadata that is not text are refused, and grpc's own
log line about such metadata becomes a rare warning without the value or a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator

import pytest

from bridge.errors import InvalidRequestError
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.rpc.wellformed import Undecodable, checked_request, install_log_filter, lenient

GRPC_LOGGER = "grpc._cython.cygrpc"


def test_lenient_deserializer_hands_back_an_undecodable_marker() -> None:
    deserialize = lenient(pb.CreateChatCompletionRequest.FromString)
    assert deserialize is not None
    good = pb.CreateChatCompletionRequest(model="echo")
    assert deserialize(good.SerializeToString()) == good
    bad = deserialize(b"\xff\xff\xff not protobuf")
    assert isinstance(bad, Undecodable)
    with pytest.raises(InvalidRequestError) as raised:
        checked_request(bad, (), streams_in=False)
    assert raised.value.message.startswith(
        "the request is not a valid prisme.llmgateway.v1.CreateChatCompletionRequest message"
    )
    assert lenient(None) is None


@pytest.mark.parametrize("value", ["caf\u00e9", "Bearer \u00ff\u00fe", "a\tb", "line\nbreak", "\x00"])
def test_metadata_values_must_be_printable_ascii(value: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        checked_request("request", (("user-agent", "grpc-go/1.70"), ("x-note", value)), streams_in=False)
    assert raised.value.message.startswith("metadata 'x-note' is not printable ASCII")
    assert value not in raised.value.message


def test_well_formed_calls_pass_unchanged() -> None:
    metadata = (("authorization", "Bearer abc.def"), ("trace-bin", b"\xff\x00"), ("x-id", " ~"))
    assert checked_request("request", metadata, streams_in=False) == "request"


async def test_a_request_stream_fails_at_the_undecodable_message() -> None:
    async def requests() -> AsyncIterator[object]:
        yield "first"
        yield Undecodable("pkg.Request")
        yield "never read"

    checked = checked_request(requests(), None, streams_in=True)
    assert await anext(checked) == "first"
    with pytest.raises(InvalidRequestError):
        await anext(checked)


def _grpc_decode_record(value: bytes) -> logging.LogRecord:
    try:
        value.decode()
    except UnicodeDecodeError:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        GRPC_LOGGER, logging.ERROR, "x.pyx", 48, "Invalid encoding on %s", (value,), exc_info
    )


def test_grpc_line_about_undecodable_metadata_is_a_rare_warning_without_the_value() -> None:
    now = [100.0]
    report = install_log_filter(60.0, clock=lambda: now[0])
    try:
        first = _grpc_decode_record(b"Bearer sk-secret\xff")
        assert report.filter(first)
        assert (first.levelno, first.levelname, first.exc_info) == (logging.WARNING, "WARNING", None)
        assert "sk-secret" not in first.getMessage()
        assert first.getMessage() == "caller metadata that is not valid UTF-8 was refused (INVALID_ARGUMENT)"
        now[0] += 30
        assert not report.filter(_grpc_decode_record(b"\xff"))
        assert not report.filter(_grpc_decode_record(b"\xfe"))
        now[0] += 31
        later = _grpc_decode_record(b"\xfd")
        assert report.filter(later)
        assert later.getMessage().endswith("; 2 more such values since the last report")
        other = logging.LogRecord(GRPC_LOGGER, logging.ERROR, "x", 1, "something else", (), None)
        assert report.filter(other)
        assert other.levelno == logging.ERROR
        assert logging.getLogger(GRPC_LOGGER).filters == [report]
    finally:
        install_log_filter()
