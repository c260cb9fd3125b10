"""Server reflection that serves the contract's .proto comments, so `grpcurl describe` shows them.

protoc's Python output embeds descriptors without source info, and grpcio-reflection rebuilds each file
with `CopyToProto`, which would drop it anyway. `scripts/gen-proto` writes the descriptor set with source
info as `bridge/gen/descriptors.binpb`; this servicer answers with those files where it has them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

__all__ = ["enable_reflection", "files_with_source_info"]


@cache
def files_with_source_info() -> Mapping[str, bytes]:
    """Serialized FileDescriptorProto, with comments, of each contract file, by file name."""
    data = resources.files("bridge.gen").joinpath("descriptors.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    for file in files:
        for message in file.message_type:
            _drop_json_names(message)
    return {file.name: file.SerializeToString() for file in files}


def _drop_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    # As in the descriptors compiled into the Python code: without json_name, grpcurl prints the proto
    # field names, i.e. the upstream's own snake_case JSON keys, not lowerCamelCase.
    for field in message.field:
        field.ClearField("json_name")
    for nested in message.nested_type:
        _drop_json_names(nested)


class _CommentedReflection(reflection.aio.ReflectionServicer):  # type: ignore[misc,name-defined]  # no stubs
    def __init__(self, service_names: Iterable[str], files: Mapping[str, bytes]) -> None:
        super().__init__(service_names)
        self._files = files

    async def ServerReflectionInfo(
        self, request_iterator: AsyncIterator[reflection_pb2.ServerReflectionRequest], context: Any
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in super().ServerReflectionInfo(request_iterator, context):
            if response.HasField("file_descriptor_response"):
                self._add_comments(response.file_descriptor_response.file_descriptor_proto)
            yield response

    def _add_comments(self, protos: Any) -> None:
        for i, raw in enumerate(protos):
            name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
            if name in self._files:
                protos[i] = self._files[name]


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Registers reflection (v1alpha; grpcurl falls back to it) for `service_names` on `server`."""
    names = (*service_names, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        _CommentedReflection(names, files_with_source_info()), server
    )
