"""Channel settings, credentials, metadata and error details, against in-process gRPC servers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from datetime import timedelta

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from prisme.llmgateway.client import (
    KEEPALIVE_TIME_S,
    Bearer,
    ChatClient,
    channel_options,
    error_details,
)
from prisme.llmgateway.client._channel import CallSettings
from prisme.llmgateway.v1 import chat_completion_pb2 as pb
from prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc

# The bridge's server policy (bridge/server.py): pings at most every 10 s, also without calls.
SERVER_MIN_PING_INTERVAL_S = 10


class _Recorder(pb_grpc.ChatCompletionServiceServicer):
    """Answers with its name; records the metadata of each call; fails with `status` when set."""

    def __init__(self, name: str, status: status_pb2.Status | None = None) -> None:
        self.name = name
        self.status = status
        self.metadata: list[dict[str, str | bytes]] = []
        self._lock = threading.Lock()

    def CreateChatCompletion(  # noqa: N802  (the proto's name)
        self, request: pb.CreateChatCompletionRequest, context: grpc.ServicerContext
    ) -> pb.CreateChatCompletionResponse:
        with self._lock:
            self.metadata.append(dict(context.invocation_metadata()))
        if self.status is not None:
            context.set_trailing_metadata((("grpc-status-details-bin", self.status.SerializeToString()),))
            context.abort(_code(self.status.code), self.status.message)
        return pb.CreateChatCompletionResponse(model=self.name)

    def StreamChatCompletion(  # noqa: N802
        self, request: pb.CreateChatCompletionRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamChatCompletionResponse]:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "unary only")


def _code(number: int) -> grpc.StatusCode:
    return next(code for code in grpc.StatusCode if code.value[0] == number)


def _serve(servicer: _Recorder) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_ChatCompletionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _request() -> pb.CreateChatCompletionRequest:
    message = pb.ChatMessage(role="user", content=struct_pb2.Value(string_value="hi"))
    return pb.CreateChatCompletionRequest(model="m", messages=[message])


def test_keepalive_within_the_bridge_policy() -> None:
    options = dict(channel_options())
    assert int(options["grpc.keepalive_time_ms"]) >= SERVER_MIN_PING_INTERVAL_S * 1000
    assert options["grpc.keepalive_time_ms"] == KEEPALIVE_TIME_S * 1000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_pings_without_data"] == 0
    config = json.loads(str(options["grpc.service_config"]))
    assert config == {"loadBalancingConfig": [{"round_robin": {}}]}


@pytest.mark.parametrize(
    ("options", "servers_used"),
    [
        ([], 2),  # the default service config: round_robin
        ([("grpc.service_config", json.dumps({"loadBalancingConfig": [{"pick_first": {}}]}))], 1),
    ],
    ids=["round_robin", "caller-overrides-to-pick_first"],
)
def test_calls_spread_over_every_address(options: list[tuple[str, str]], servers_used: int) -> None:
    # A headless Service's DNS name resolves to every pod; `ipv4:` lists addresses the same way.
    recorders = [_Recorder("a"), _Recorder("b")]
    started = [_serve(r) for r in recorders]
    try:
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, port in started)
        with ChatClient.connect(target, tls=False, timeout=10, options=options) as client:
            # Calls until both answered, at most 100 over about 1 s: round_robin uses a server once its
            # connection is ready; pick_first never leaves the first.
            answered_by: set[str] = set()
            for _ in range(100):
                answered_by.add(client.complete(_request()).model)
                if len(answered_by) == 2:
                    break
                time.sleep(0.01)
        assert len(answered_by) == servers_used
    finally:
        for server, _ in started:
            server.stop(None)


def test_metadata_and_credentials_reach_the_server() -> None:
    recorder = _Recorder("s")
    server, port = _serve(recorder)
    try:
        client_key = Bearer("client-token", allow_plaintext=True)
        with ChatClient.connect(
            f"127.0.0.1:{port}", tls=False, credentials=client_key, metadata={"X-Team": "search"}
        ) as client:
            client.complete(_request(), metadata=[("x-correlation-id", "c1"), ("authorization", "Bearer x")])
            client.complete(_request(), credentials=Bearer("call-token", allow_plaintext=True))
    finally:
        server.stop(None)
    first, second = recorder.metadata
    assert first["authorization"] == "Bearer client-token"  # the credentials replace a metadata entry
    assert (first["x-team"], first["x-correlation-id"]) == ("search", "c1")
    assert second["authorization"] == "Bearer call-token"


def test_bearer_never_shows_the_token() -> None:
    bearer = Bearer("iak_secret_1234", allow_plaintext=True)
    assert "iak_secret_1234" not in repr(bearer)
    assert "iak_secret_1234" not in str(bearer)
    with pytest.raises(ValueError, match="one line"):
        Bearer("a\nb")
    with pytest.raises(ValueError, match="non-empty"):
        Bearer("")


def test_bearer_needs_tls_unless_allowed() -> None:
    assert CallSettings(secure=True).metadata_for(None, Bearer("t")) == (("authorization", "Bearer t"),)
    with pytest.raises(ValueError, match="plaintext"):
        CallSettings(secure=False).metadata_for(None, Bearer("t"))


def _packed(*details: Message) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    return packed


def _failing(status: status_pb2.Status) -> grpc.RpcError:
    server, port = _serve(_Recorder("failing", status))
    try:
        with (
            ChatClient.connect(f"127.0.0.1:{port}", tls=False, timeout=10) as client,
            pytest.raises(grpc.RpcError) as failure,
        ):
            client.complete(_request())
        return failure.value
    finally:
        server.stop(None)


def test_error_details_decodes_known_and_keeps_unknown_types() -> None:
    info = error_details_pb2.ErrorInfo(reason="QUOTA", domain="example", metadata={"k": "v"})
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000))
    bad = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="model", description="required")]
    )
    status = status_pb2.Status(code=8, message="slow down", details=_packed(info, retry))
    status.details.add().Pack(bad)
    status.details.add().Pack(duration_pb2.Duration(seconds=1))  # not a google.rpc detail
    details = error_details(_failing(status))
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.message == "slow down"
    assert details.reason == "QUOTA"
    assert details.error_info == info
    assert details.retry_delay == timedelta(seconds=2.5)
    assert [(v.field, v.description) for v in details.field_violations] == [("model", "required")]
    unknown = details.details[-1]
    assert isinstance(unknown, any_pb2.Any)
    assert unknown.TypeName() == "google.protobuf.Duration"


def test_error_details_without_details() -> None:
    details = error_details(_failing(status_pb2.Status(code=13, message="boom")))
    assert (details.code, details.message, details.details) == (grpc.StatusCode.INTERNAL, "boom", ())
    assert details.reason == ""
    assert details.retry_delay is None
    assert details.error_info is None
