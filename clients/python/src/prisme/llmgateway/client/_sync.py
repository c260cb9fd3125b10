"""Blocking client."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType

import grpc

from prisme.llmgateway.client._accumulator import StreamAccumulator
from prisme.llmgateway.client._channel import (
    DEFAULT,
    Bearer,
    CallMetadata,
    CallSettings,
    Default,
    create_channel,
    normalize_metadata,
)
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


class ChatClient:
    """Blocking client of ChatCompletionService.

    >>> with ChatClient.connect("127.0.0.1:50051", tls=False) as client:  # doctest: +SKIP
    ...     reply = client.complete(request, timeout=30)

    Client-wide `credentials`, `metadata` and `timeout` (seconds, None = no deadline) apply to every call;
    each call can add metadata and replace the credentials and the timeout.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        secure: bool,
        credentials: Bearer | None = None,
        metadata: CallMetadata | None = None,
        timeout: float | None = None,
    ) -> None:
        """Wraps a channel you own; `secure` says whether it uses TLS (bearer tokens need it)."""
        self._channel = channel
        self._owned = False
        self._stub = pb_grpc.ChatCompletionServiceStub(channel)
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
    ) -> ChatClient:
        """Opens a channel (create_channel: keepalive, round_robin) that close() closes.
        `target`: host:port, or dns:///name.namespace.svc:50051 for a headless Service."""
        client = cls(
            create_channel(target, tls=tls, options=options),
            secure=tls is not False,
            credentials=credentials,
            metadata=metadata,
            timeout=timeout,
        )
        client._owned = True
        return client

    @property
    def stub(self) -> pb_grpc.ChatCompletionServiceStub:
        """The generated stub, for what this client does not wrap."""
        return self._stub

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

    def close(self) -> None:
        """Closes the channel if connect() opened it."""
        if self._owned:
            self._channel.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
