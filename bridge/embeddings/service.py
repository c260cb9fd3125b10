"""EmbeddingService: one `POST {upstream}/embeddings` per call, one embedding per input in order.

Handlers only raise: the interceptor chain turns a `bridge.errors.BridgeError` into the call's status.
Auth, forwarded ids and the error policy are the chat service's (bridge.upstream); the gateway's refusals
INVALID_DIMENSIONS and MODEL_NOT_ALLOWED map by their code (bridge.upstream.errors).
"""

from __future__ import annotations

from typing import Final

import grpc

from bridge.embeddings import convert
from bridge.embeddings.validation import validate_request
from bridge.errors import invalid_request
from bridge.gen.prisme.llmgateway.v1 import embedding_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import embedding_service_pb2 as pb_service
from bridge.gen.prisme.llmgateway.v1 import embedding_service_pb2_grpc as pb_grpc
from bridge.rpc.call import Context
from bridge.upstream_call import UpstreamService

__all__ = ["SERVICE_NAME", "EmbeddingService"]

# From the descriptor (importing it also registers the service for reflection).
SERVICE_NAME: Final[str] = pb_service.DESCRIPTOR.services_by_name["EmbeddingService"].full_name
PATH: Final = "/embeddings"


class EmbeddingService(UpstreamService, pb_grpc.EmbeddingServiceServicer):
    name: Final = SERVICE_NAME

    def add_to_server(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_EmbeddingServiceServicer_to_server(self, server)

    async def CreateEmbedding(
        self, request: pb.CreateEmbeddingRequest, context: Context
    ) -> pb.CreateEmbeddingResponse:
        violations = validate_request(request)
        if violations:
            raise invalid_request(violations)
        body = convert.request_to_upstream(request)
        reply = await self._upstream.call(context, "POST", PATH, body=body)
        inputs = len(request.input)
        return self._upstream.read(reply, lambda doc: convert.response_from_upstream(doc, inputs))
