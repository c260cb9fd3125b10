"""Blocking client."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from prisme.llmgateway.client._accumulator import StreamAccumulator
from prisme.llmgateway.client._base import SyncClient
from prisme.llmgateway.client._channel import DEFAULT, Bearer, CallMetadata, Default
from prisme.llmgateway.v1 import chat_completion_pb2 as pb
from prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc

__all__ = ["ChatClient", "ChatStream"]


class ChatStream:
    """A running StreamChatCompletion call: iterate it for the chunks, or accumulate() the final message.

    Every chunk it yields is also folded, so accumulate() after a partial iteration still returns the
    whole message. Errors are raised as grpc.RpcError (see error_details()).
    """

    def __init__(self, call: grpc.CallIterator[pb.StreamChatCompletionResponse]) -> None:
        self._call = call
        self._chunks = iter(call)
        self._accumulator = StreamAccumulator()

    def __iter__(self) -> Iterator[pb.StreamChatCompletionResponse]:
        return self

    def __next__(self) -> pb.StreamChatCompletionResponse:
        chunk = next(self._chunks)
        self._accumulator.add(chunk)
        return chunk

    def accumulate(self) -> pb.CreateChatCompletionResponse:
        """Reads the rest of the stream and returns the message the chunks fold into."""
        for _ in self:
            pass
        return self._accumulator.response()

    def response(self) -> pb.CreateChatCompletionResponse:
        """The message folded from the chunks read so far."""
        return self._accumulator.response()

    def cancel(self) -> bool:
        """Cancels the call (the bridge closes its upstream request)."""
        cancelled = self._call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
        return bool(cancelled)

    def initial_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """Response headers (waits for them)."""
        return tuple(self._call.initial_metadata() or ())

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """Response trailers (waits for the end of the call)."""
        return tuple(self._call.trailing_metadata() or ())


class ChatClient(SyncClient[pb_grpc.ChatCompletionServiceStub]):
    """Blocking client of ChatCompletionService.

    >>> with ChatClient.connect("127.0.0.1:50051", tls=False) as client:  # doctest: +SKIP
    ...     reply = client.complete(request, timeout=30)

    Settings, connect() and close(): SyncClient.
    """

    def _new_stub(self, channel: grpc.Channel) -> pb_grpc.ChatCompletionServiceStub:
        return pb_grpc.ChatCompletionServiceStub(channel)

    def complete(
        self,
        request: pb.CreateChatCompletionRequest,
        *,
        timeout: float | Default | None = DEFAULT,
        metadata: CallMetadata | None = None,
        credentials: Bearer | None = None,
    ) -> pb.CreateChatCompletionResponse:
        """CreateChatCompletion. Raises grpc.RpcError on failure."""
        return self._stub.CreateChatCompletion(
            request, **self._settings.for_call(timeout, metadata, credentials)
        )

    def stream(
        self,
        request: pb.CreateChatCompletionRequest,
        *,
        timeout: float | Default | None = DEFAULT,
        metadata: CallMetadata | None = None,
        credentials: Bearer | None = None,
    ) -> ChatStream:
        """StreamChatCompletion. The deadline covers the whole stream."""
        call = self._stub.StreamChatCompletion(
            request, **self._settings.for_call(timeout, metadata, credentials)
        )
        return ChatStream(call)
