"""RPC handlers of ChatCompletionService: validate, convert, call upstream, convert back, map errors.

Each RPC is one upstream POST. Failures end the call with the status of a `bridge.errors.BridgeError`
(details in `grpc-status-details-bin`); anything unexpected is logged and ends as INTERNAL without its
text. `asyncio.CancelledError` (client cancel, deadline) is never caught: it unwinds through the upstream
context managers, which close the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from bridge import convert, errors
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2 as pb_service
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.metadata import AuthPolicy, response_metadata, upstream_headers
from bridge.upstream import UpstreamClient
from bridge.validation import validate_request

__all__ = ["SERVICE_NAME", "ChatCompletionService"]

log = logging.getLogger(__name__)

# From the descriptor (importing it also registers the service for reflection).
SERVICE_NAME: str = pb_service.DESCRIPTOR.services_by_name["ChatCompletionService"].full_name

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True, slots=True)
class _Call:
    """An accepted request, ready to send upstream."""

    body: dict[str, Any]
    headers: dict[str, str]
    deadline: float | None  # absolute event-loop time


class ChatCompletionService(pb_grpc.ChatCompletionServiceServicer):
    """The servicer; one instance per server, sharing one UpstreamClient."""

    def __init__(self, upstream: UpstreamClient, auth: AuthPolicy) -> None:
        self._upstream = upstream
        self._auth = auth

    async def CreateChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: Context
    ) -> pb.CreateChatCompletionResponse:
        async with _rpc("CreateChatCompletion", request, context):
            call = self._accept(request, context, streaming=False)
            reply = await self._upstream.complete(call.body, call.headers, deadline=call.deadline)
            await context.send_initial_metadata(response_metadata(reply.headers))
            return convert.response_from_upstream(reply.body)
        raise AssertionError("unreachable: _rpc re-raises or aborts")  # pragma: no cover

    async def StreamChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: Context
    ) -> AsyncIterator[pb.StreamChatCompletionResponse]:
        async with _rpc("StreamChatCompletion", request, context) as progress:
            call = self._accept(request, context, streaming=True)
            async with self._upstream.stream(call.body, call.headers, deadline=call.deadline) as stream:
                await context.send_initial_metadata(response_metadata(stream.headers))
                async for chunk in stream:
                    yield convert.chunk_from_upstream(chunk)
                    progress.chunks += 1

    def _accept(self, request: pb.CreateChatCompletionRequest, context: Context, *, streaming: bool) -> _Call:
        """The upstream call for `request`; raises InvalidRequestError before anything is sent."""
        violations = validate_request(request, streaming=streaming)
        if violations:
            raise errors.invalid_request(violations)
        remaining = context.time_remaining()
        deadline = None if remaining is None else asyncio.get_running_loop().time() + remaining
        return _Call(
            body=convert.request_to_upstream(request, stream=streaming),
            headers=upstream_headers(context.invocation_metadata() or (), self._auth),
            deadline=deadline,
        )


@dataclass(slots=True)
class _Progress:
    chunks: int = 0


@contextlib.asynccontextmanager
async def _rpc(
    method: str, request: pb.CreateChatCompletionRequest, context: Context
) -> AsyncIterator[_Progress]:
    """One RPC's outcome: errors become its status (aborting the call), and one log line says how it ended."""
    started = time.perf_counter()
    progress = _Progress()
    code = grpc.StatusCode.OK
    try:
        yield progress
    except grpc.aio.AbortError:
        raise
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:
        error = _as_bridge_error(exc)
        code = error.code
        await _abort(context, error)
    finally:
        chunks = progress.chunks if method == "StreamChatCompletion" else None
        _log_call(method, request.model, code, started, chunks)


def _as_bridge_error(exc: Exception) -> errors.BridgeError:
    """`exc` itself if it is a BridgeError; else logged, and INTERNAL without its text."""
    if isinstance(exc, errors.BridgeError):
        return exc
    log.exception("unexpected error in handler")
    return errors.BridgeError("internal error in the bridge; see its logs")


async def _abort(context: Context, error: errors.BridgeError) -> NoReturn:
    """Ends the call with the status of `error`, the upstream correlation id in the trailers."""
    status = error.to_status()
    correlation_id = getattr(error, "correlation_id", None)
    if correlation_id:
        status = _with_trailer(status, ("x-correlation-id", correlation_id))
    await context.abort_with_status(status)  # type: ignore[attr-defined]  # grpc-stubs predates it
    raise AssertionError("abort_with_status returned")  # pragma: no cover - it always raises


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Any) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def _with_trailer(status: grpc.Status, entry: tuple[str, str]) -> grpc.Status:
    return _Status(status.code, status.details, (*status.trailing_metadata, entry))


def _log_call(method: str, model: str, code: grpc.StatusCode, started: float, chunks: int | None) -> None:
    elapsed_ms = (time.perf_counter() - started) * 1000
    extra = "" if chunks is None else f" chunks={chunks}"
    level = logging.INFO if code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED) else logging.WARNING
    log.log(level, "%s model=%r code=%s ms=%.1f%s", method, model, code.name, elapsed_ms, extra)
