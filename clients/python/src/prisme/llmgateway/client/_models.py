"""Clients of ModelService: the gateway's model catalogue, one page or every page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc

from prisme.llmgateway.client._base import AsyncClient, SyncClient
from prisme.llmgateway.client._channel import DEFAULT, Bearer, CallMetadata, Default
from prisme.llmgateway.v1 import model_pb2 as pb
from prisme.llmgateway.v1 import model_service_pb2_grpc as pb_grpc

__all__ = ["AsyncModelClient", "ModelClient"]


def _first_page(request: pb.ListModelsRequest | None) -> pb.ListModelsRequest:
    page = pb.ListModelsRequest()
    if request is not None:
        page.CopyFrom(request)  # the caller's request is left as it was
    return page


class ModelClient(SyncClient[pb_grpc.ModelServiceStub]):
    """Blocking client of ModelService.

    >>> with ModelClient.connect("127.0.0.1:50051", tls=False, timeout=10) as models:  # doctest: +SKIP
    ...     ids = [m.model_id for m in models.list_models(pb.ListModelsRequest(type="embeddings"))]

    Against the Prisme gateway the catalogue wants a user identity as Bearer; an org key (iak_*) goes as
    `x-prismeai-api-key` metadata. Settings, connect() and close(): SyncClient.
    """

    def _new_stub(self, channel: grpc.Channel) -> pb_grpc.ModelServiceStub:
        return pb_grpc.ModelServiceStub(channel)

    def list_page(
        self,
        request: pb.ListModelsRequest,
        *,
        timeout: float | Default | None = DEFAULT,
        metadata: CallMetadata | None = None,
        credentials: Bearer | None = None,
    ) -> pb.ListModelsResponse:
        """ListModels: one page (`next_page_token` asks for the next). Raises grpc.RpcError on failure."""
        return self._stub.ListModels(request, **self._settings.for_call(timeout, metadata, credentials))

    def list_models(
        self,
        request: pb.ListModelsRequest | None = None,
        *,
        timeout: float | Default | None = DEFAULT,
        metadata: CallMetadata | None = None,
        credentials: Bearer | None = None,
    ) -> Iterator[pb.Model]:
        """Every model `request`'s filters select, in order, fetched page after page as they are read
        (`request.page_size` models a page; 0: the bridge's default). The timeout is per page."""
        page_request = _first_page(request)
        while True:
            page = self.list_page(page_request, timeout=timeout, metadata=metadata, credentials=credentials)
            yield from page.models
            if not page.next_page_token:
                return
            page_request.page_token = page.next_page_token

    def get_model(
        self,
        model_id: str,
        *,
        timeout: float | Default | None = DEFAULT,
        metadata: CallMetadata | None = None,
        credentials: Bearer | None = None,
    ) -> pb.Model:
        """GetModel: one model by id (ids may hold "/" and ":"); NOT_FOUND for an unknown one."""
        reply = self._stub.GetModel(
            pb.GetModelRequest(model_id=model_id), **self._settings.for_call(timeout, metadata, credentials)
        )
        return reply.model


# The async stub type exists only in the .pyi: quoted.
class AsyncModelClient(AsyncClient["pb_grpc.ModelServiceAsyncStub"]):
    """asyncio client of ModelService; the same methods as ModelClient (list_models an async iterator)."""

    def _new_stub(self, channel: grpc.aio.Channel) -> pb_grpc.ModelServiceAsyncStub:
        return pb_grpc.ModelServiceStub(channel)  # typed as the async stub

    async def list_page(
        self,
        request: pb.ListModelsRequest,
        *,
        timeout: float | Default | None = DEFAULT,
        metadata: CallMetadata | None = None,
        credentials: Bearer | None = None,
    ) -> pb.ListModelsResponse:
        """ListModels: one page. Raises grpc.aio.AioRpcError on failure."""
        return await self._stub.ListModels(request, **self._settings.for_call(timeout, metadata, credentials))

    async def list_models(
        self,
        request: pb.ListModelsRequest | None = None,
        *,
        timeout: float | Default | None = DEFAULT,
        metadata: CallMetadata | None = None,
        credentials: Bearer | None = None,
    ) -> AsyncIterator[pb.Model]:
        """Every model `request`'s filters select, page after page as they are read; timeout per page."""
        page_request = _first_page(request)
        while True:
            page = await self.list_page(
                page_request, timeout=timeout, metadata=metadata, credentials=credentials
            )
            for model in page.models:
                yield model
            if not page.next_page_token:
                return
            page_request.page_token = page.next_page_token

    async def get_model(
        self,
        model_id: str,
        *,
        timeout: float | Default | None = DEFAULT,
        metadata: CallMetadata | None = None,
        credentials: Bearer | None = None,
    ) -> pb.Model:
        """GetModel: one model by id."""
        reply = await self._stub.GetModel(
            pb.GetModelRequest(model_id=model_id), **self._settings.for_call(timeout, metadata, credentials)
        )
        return reply.model
