"""asyncio client (grpc.aio)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from types import TracebackType

import grpc

from prisme.llmgateway.client._accumulator import StreamAccumulator
from prisme.llmgateway.client._channel import (
    DEFAULT,
    Bearer,
    CallMetadata,
    CallSettings,
    Default,
    create_aio_channel,
    normalize_metadata,
)
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


class AsyncChatClient:
    """asyncio client of ChatCompletionService; the same settings as ChatClient.

    >>> async with AsyncChatClient.connect("127.0.0.1:50051", tls=False) as client:  # doctest: +SKIP
    ...     reply = await client.complete(request, timeout=30)
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        secure: bool,
        credentials: Bearer | None = None,
        metadata: CallMetadata | None = None,
        timeout: float | None = None,
    ) -> None:
        """Wraps a channel you own; `secure` says whether it uses TLS (bearer tokens need it)."""
        self._channel = channel
        self._owned = False
        self._stub = pb_grpc.ChatCompletionServiceStub(channel)  # typed as the async stub
        self._settings = CallSettings(secure, credentials, normalize_metadata(metadata), timeout)

    @classmethod
    def connect(
        cls,
        target: str,
        *,
        tls: bool | grpc.ChannelCredentials,
        credentials: Bearer | None = None,
        metadata: CallMetadata | None = None,
        timeout: float | None = None,
        options: Iterable[tuple[str, int | str]] = (),
    ) -> AsyncChatClient:
        """Opens a channel (create_aio_channel: keepalive, round_robin) that close() closes."""
        client = cls(
            create_aio_channel(target, tls=tls, options=options),
            secure=tls is not False,
            credentials=credentials,
            metadata=metadata,
            timeout=timeout,
        )
        client._owned = True
        return client

    @property
    def stub(self) -> pb_grpc.ChatCompletionServiceAsyncStub:
        """The generated stub, for what this client does not wrap."""
        return self._stub

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

    async def close(self) -> None:
        """Closes the channel if connect() opened it."""
        if self._owned:
            await self._channel.close(grace=None)

    async def __aenter__(self) -> AsyncChatClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
