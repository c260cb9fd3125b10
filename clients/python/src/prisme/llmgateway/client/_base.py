"""What every client shares: a channel (its own, or the caller's), call settings, connect and close."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

import grpc

from prisme.llmgateway.client._channel import (
    Bearer,
    CallMetadata,
    CallSettings,
    create_aio_channel,
    create_channel,
    normalize_metadata,
)

__all__ = ["AsyncClient", "SyncClient"]

ChannelT = TypeVar("ChannelT", grpc.Channel, grpc.aio.Channel)
StubT = TypeVar("StubT")


class _Client(Generic[ChannelT, StubT]):
    """One stub on one channel. Client-wide `credentials`, `metadata` and `timeout` (seconds, None = no
    deadline) apply to every call; each call can add metadata and replace the credentials and the timeout.
    """

    _open_channel: ClassVar[Callable[..., Any]]  # create_channel or create_aio_channel

    def __init__(
        self,
        channel: ChannelT,
        *,
        secure: bool,
        credentials: Bearer | None = None,
        metadata: CallMetadata | None = None,
        timeout: float | None = None,
    ) -> None:
        """Wraps a channel you own; `secure` says whether it uses TLS (bearer tokens need it)."""
        self._channel: ChannelT = channel
        self._owned = False
        self._stub = self._new_stub(channel)
        self._settings = CallSettings(secure, credentials, normalize_metadata(metadata), timeout)

    def _new_stub(self, channel: ChannelT) -> StubT:
        raise NotImplementedError

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
    ) -> Self:
        """Opens a channel (create_channel / create_aio_channel: keepalive, round_robin) that close()
        closes. `target`: host:port, or dns:///name.namespace.svc:50051 for a headless Service."""
        client = cls(
            cls._open_channel(target, tls=tls, options=options),
            secure=tls is not False,
            credentials=credentials,
            metadata=metadata,
            timeout=timeout,
        )
        client._owned = True
        return client

    @property
    def stub(self) -> StubT:
        """The generated stub, for what this client does not wrap."""
        return self._stub


class SyncClient(_Client[grpc.Channel, StubT]):
    """Base of the blocking clients."""

    _open_channel = staticmethod(create_channel)

    def close(self) -> None:
        """Closes the channel if connect() opened it."""
        if self._owned:
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient(_Client[grpc.aio.Channel, StubT]):
    """Base of the asyncio clients."""

    _open_channel = staticmethod(create_aio_channel)

    async def close(self) -> None:
        """Closes the channel if connect() opened it."""
        if self._owned:
            await self._channel.close(grace=None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
