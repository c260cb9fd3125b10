"""Clients of EmbeddingService."""

from __future__ import annotations

import grpc

from prisme.llmgateway.client._base import AsyncClient, SyncClient
from prisme.llmgateway.client._channel import DEFAULT, Bearer, CallMetadata, Default
from prisme.llmgateway.v1 import embedding_pb2 as pb
from prisme.llmgateway.v1 import embedding_service_pb2_grpc as pb_grpc

__all__ = ["AsyncEmbeddingClient", "EmbeddingClient"]


class EmbeddingClient(SyncClient[pb_grpc.EmbeddingServiceStub]):
    """Blocking client of EmbeddingService.

    >>> with EmbeddingClient.connect("127.0.0.1:50051", tls=False, timeout=30) as client:  # doctest: +SKIP
    ...     reply = client.embed(pb.CreateEmbeddingRequest(model="text-embedding-3-small", input=texts))

    Settings, connect() and close(): SyncClient.
    """

    def _new_stub(self, channel: grpc.Channel) -> pb_grpc.EmbeddingServiceStub:
        return pb_grpc.EmbeddingServiceStub(channel)

    def embed(
        self,
        request: pb.CreateEmbeddingRequest,
        *,
        timeout: float | Default | None = DEFAULT,
        metadata: CallMetadata | None = None,
        credentials: Bearer | None = None,
    ) -> pb.CreateEmbeddingResponse:
        """CreateEmbedding: one embedding per input, in order (`data[i].embedding`). Raises grpc.RpcError; the
        gateway's INVALID_DIMENSIONS is INVALID_ARGUMENT with a field violation at `dimensions`."""
        return self._stub.CreateEmbedding(request, **self._settings.for_call(timeout, metadata, credentials))


# The async stub type exists only in the .pyi: quoted.
class AsyncEmbeddingClient(AsyncClient["pb_grpc.EmbeddingServiceAsyncStub"]):
    """asyncio client of EmbeddingService; the same as EmbeddingClient."""

    def _new_stub(self, channel: grpc.aio.Channel) -> pb_grpc.EmbeddingServiceAsyncStub:
        return pb_grpc.EmbeddingServiceStub(channel)  # typed as the async stub

    async def embed(
        self,
        request: pb.CreateEmbeddingRequest,
        *,
        timeout: float | Default | None = DEFAULT,
        metadata: CallMetadata | None = None,
        credentials: Bearer | None = None,
    ) -> pb.CreateEmbeddingResponse:
        """CreateEmbedding. Raises grpc.aio.AioRpcError on failure."""
        return await self._stub.CreateEmbedding(
            request, **self._settings.for_call(timeout, metadata, credentials)
        )
