"""grpc_server_msg_sent_total is counted in steps of 64 messages (bridge.rpc.metrics): whatever a call's
length, every message is counted exactly once by the time the call ended, and the count is never behind by
64 or more while it runs."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from bridge.rpc.call import RpcCall
from bridge.rpc.metrics import Metrics

METHOD = "/prisme.llmgateway.v1.ChatCompletionService/StreamChatCompletion"
LABELS = {
    "grpc_type": "server_stream",
    "grpc_service": "prisme.llmgateway.v1.ChatCompletionService",
    "grpc_method": "StreamChatCompletion",
}


def _sent(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("grpc_server_msg_sent_total", LABELS) or 0.0


@pytest.mark.parametrize("messages", [0, 1, 2, 63, 64, 65, 66, 128, 129, 130, 1000])
async def test_every_message_is_counted_once_and_never_64_behind(messages: int) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    call = RpcCall(METHOD, response_streaming=True, model="echo")
    async with metrics.around(call, context=None):  # type: ignore[arg-type]  # around reads no context
        for _ in range(messages):
            call.messages_sent += 1
            metrics.message_sent(call)
            assert 0 <= call.messages_sent - _sent(registry) < 64
    assert _sent(registry) == messages
