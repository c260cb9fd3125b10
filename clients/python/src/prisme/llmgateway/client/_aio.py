"""asyncio client (grpc.aio)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from prisme.llmgateway.client._accumulator import StreamAccumulator
from prisme.llmgateway.client._base import AsyncClient
from prisme.llmgateway.client._channel import DEFAULT, Bearer, CallMetadata, Default
from prisme.llmgateway.v1 import chat_completion_pb2 as pb
from prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc

__all__ = ["AsyncChatClient", "AsyncChatStream"]

_Call = grpc.aio.UnaryStreamCall[pb.CreateChatCompletionRequest, pb.StreamChatCompletionResponse]


class AsyncChatStream:
    """A running StreamChatCompletion call: `async for` it for the chunks, or `await accumulate()`.

    Every chunk it yields is also folded, so accumulate() after a partial iteration still returns the
    whole message. Errors are raised as grpc.aio.AioRpcError (see error_details()).
    """

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._accumulator = StreamAccumulator()

    def __aiter__(self) -> AsyncIterator[pb.StreamChatCompletionResponse]:
        return self

    async def __anext__(self) -> pb.StreamChatCompletionResponse:
        chunk = await self._call.read()  # read() throughout: grpc.aio refuses mixing it with async for
        if not isinstance(chunk, pb.StreamChatCompletionResponse):  # grpc.aio.EOF
            raise StopAsyncIteration
        self._accumulator.add(chunk)
        return chunk

    async def accumulate(self) -> pb.CreateChatCompletionResponse:
        """Reads the rest of the stream and returns the message the chunks fold into."""
        async for _ in self:
            pass
        return self._accumulator.response()

    def response(self) -> pb.CreateChatCompletionResponse:
        """The message folded from the chunks read so far."""
        return self._accumulator.response()

    def cancel(self) -> bool:
        """Cancels the call (the bridge closes its upstream request)."""
        return self._call.cancel()

    async def initial_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """Response headers (waits for them)."""
        return tuple(await self._call.initial_metadata() or ())

    async def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """Response trailers (waits for the end of the call)."""
        return tuple(await self._call.trailing_metadata() or ())


# The async stub type exists only in the .pyi: quoted.
class AsyncChatClient(AsyncClient["pb_grpc.ChatCompletionServiceAsyncStub"]):
    """asyncio client of ChatCompletionService; the same settings as ChatClient.

    >>> async with AsyncChatClient.connect("127.0.0.1:50051", tls=False) as client:  # doctest: +SKIP
    ...     reply = await client.complete(request, timeout=30)
    """

    def _new_stub(self, channel: grpc.aio.Channel) -> pb_grpc.ChatCompletionServiceAsyncStub:
        return pb_grpc.ChatCompletionServiceStub(channel)  # typed as the async stub

    async def complete(
        self,
        request: pb.CreateChatCompletionRequest,
        *,
        timeout: float | Default | None = DEFAULT,
        metadata: CallMetadata | None = None,
        credentials: Bearer | None = None,
    ) -> pb.CreateChatCompletionResponse:
        """CreateChatCompletion. Raises grpc.aio.AioRpcError on failure."""
        return await self._stub.CreateChatCompletion(
            request, **self._settings.for_call(timeout, metadata, credentials)
        )

    def stream(
        self,
        request: pb.CreateChatCompletionRequest,
        *,
        timeout: float | Default | None = DEFAULT,
        metadata: CallMetadata | None = None,
        credentials: Bearer | None = None,
    ) -> AsyncChatStream:
        """StreamChatCompletion. The deadline covers the whole stream."""
        call = self._stub.StreamChatCompletion(
            request, **self._settings.for_call(timeout, metadata, credentials)
        )
        return AsyncChatStream(call)
