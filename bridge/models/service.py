"""ModelService: the gateway's model catalogue. ListModels is one `GET {upstream}/models?...`, GetModel one
`GET {upstream}/models/{model_id}`.

Handlers only raise: the interceptor chain turns a `bridge.errors.BridgeError` into the call's status. The
header policy (auth, returned headers) and the error policy are the chat service's (bridge.upstream): the
catalogue wants a user identity as Bearer, or an org key (iak_*) as x-prismeai-api-key, and the bridge
forwards what it gets.
"""

from __future__ import annotations

from typing import Final

import grpc

from bridge.errors import invalid_request
from bridge.gen.prisme.llmgateway.v1 import model_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import model_service_pb2 as pb_service
from bridge.gen.prisme.llmgateway.v1 import model_service_pb2_grpc as pb_grpc
from bridge.models import convert, paging
from bridge.models.validation import validate_get, validate_list
from bridge.rpc.call import Context
from bridge.upstream_call import UpstreamService

__all__ = ["SERVICE_NAME", "ModelService"]

# From the descriptor (importing it also registers the service for reflection).
SERVICE_NAME: Final[str] = pb_service.DESCRIPTOR.services_by_name["ModelService"].full_name
PATH: Final = "/models"


class ModelService(UpstreamService, pb_grpc.ModelServiceServicer):
    name: Final = SERVICE_NAME

    def add_to_server(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_ModelServiceServicer_to_server(self, server)

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        filters = convert.filters_of(request)
        at, violations = paging.position(request.page_size, request.page_token, filters)
        violations = validate_list(request) + violations
        if violations or at is None:
            raise invalid_request(violations)
        reply = await self._upstream.call(context, "GET", PATH, query=convert.query_of(filters, at))
        return self._upstream.read(reply, lambda body: convert.list_from_upstream(body, request, at))

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.GetModelResponse:
        violations = validate_get(request)
        if violations:
            raise invalid_request(violations)
        reply = await self._upstream.call(context, "GET", convert.model_path(request.model_id))
        return pb.GetModelResponse(model=self._upstream.read(reply, convert.model_from_upstream))
