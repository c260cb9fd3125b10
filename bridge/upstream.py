"""The upstream HTTP client: one pooled httpx client per process, JSON and SSE chat completions.

Every failure leaves this module as a `bridge.errors.UpstreamError` (or `BridgeError`), never as an httpx
or aiohttp exception. The upstream response is always closed when the caller is done, fails or is
cancelled: `stream()` is a context manager around `httpx.AsyncClient.stream`, and cancellation is never
swallowed. The call's gRPC deadline, passed as an absolute event-loop time, bounds every await on the
upstream; `--connect-timeout` and `--read-timeout` (gap between chunks) apply below it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import aiohttp
import grpc
import httpx
from httpx_aiohttp import AiohttpTransport

from bridge import errors
from bridge.sse import ServerSentEvent, SSEDecoder, SSEEventTooLarge

__all__ = ["UpstreamClient", "UpstreamReply", "UpstreamSettings", "UpstreamStream"]

log = logging.getLogger(__name__)

JSONObject = dict[str, Any]
_DONE: Final = "[DONE]"
_ERROR_BODY_LIMIT: Final = 64 * 1024  # error documents are small; errors.py keeps only their head anyway
_USER_AGENT: Final = "prisme-grpc-bridge"
# aiohttp errors: the ones httpx-aiohttp's exception map lets through unmapped.
_TRANSPORT_ERRORS: Final = (httpx.HTTPError, aiohttp.ClientError, OSError)


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """What the client needs from the serve settings."""

    base_url: str
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    max_connections: int = 1024
    transport: Literal["aiohttp", "httpx"] = "aiohttp"
    max_event_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A complete (non-streamed) chat completion."""

    body: JSONObject
    headers: httpx.Headers


class UpstreamClient:
    """POSTs chat completions to `{base_url}/chat/completions` over one shared connection pool."""

    def __init__(
        self, settings: UpstreamSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self._url = httpx.URL(self.url)  # parsed once: build_request would re-parse the string per call
        self.domain = urlsplit(self.url).hostname or "upstream"
        # Streams hold their connection for minutes: the pool is as large as the concurrency allowed, and
        # keeps every connection alive so bursts don't pay new handshakes.
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
            keepalive_expiry=30.0,
        )
        timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=settings.connect_timeout,
        )
        if transport is None and settings.transport == "aiohttp":
            transport = AiohttpTransport(limits=limits)  # encode/httpx#3215: see docs/PERFORMANCE.md
        self._client = httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            transport=transport,
            headers={"user-agent": _USER_AGENT},
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def complete(
        self, body: JSONObject, headers: Mapping[str, str], *, deadline: float | None
    ) -> UpstreamReply:
        """POST `body` (with `stream: false`) and return the parsed completion."""
        request = self._build(body, headers)
        async with self._guard(deadline):
            response = await self._client.send(request, stream=True)
        try:
            async with self._guard(deadline, response.headers):
                raw = await (
                    self._read(response) if response.status_code == 200 else self._read_error(response)
                )
        finally:
            await response.aclose()
        if response.status_code != 200:
            raise errors.error_from_http_response(
                response.status_code, response.headers, raw, domain=self.domain
            )
        return UpstreamReply(self._completion(raw, response.headers), response.headers)

    @contextlib.asynccontextmanager
    async def stream(
        self, body: JSONObject, headers: Mapping[str, str], *, deadline: float | None
    ) -> AsyncIterator[UpstreamStream]:
        """POST `body` (with `stream: true`); yields the stream once a 200 event stream has begun."""
        request = self._build(body, headers)
        async with self._guard(deadline):
            response = await self._client.send(request, stream=True)
        try:
            async with self._guard(deadline, response.headers):
                await self._check_stream_start(response)
            yield UpstreamStream(self, response, deadline)
        finally:
            await response.aclose()  # shielding is not needed: aclose of a cancelled read just drops it

    # --- internals ---

    def _build(self, body: JSONObject, headers: Mapping[str, str]) -> httpx.Request:
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        return self._client.build_request(
            "POST", self._url, content=content, headers={**headers, "content-type": "application/json"}
        )

    @contextlib.asynccontextmanager
    async def _guard(
        self, deadline: float | None, headers: httpx.Headers | None = None
    ) -> AsyncIterator[None]:
        """Maps transport exceptions and the call's deadline to bridge errors around one upstream await;
        `headers` of a response already begun give the errors its correlation id."""
        correlation_id = _correlation_id(headers) if headers is not None else None
        try:
            async with asyncio.timeout_at(deadline):
                yield
        except TimeoutError as exc:
            raise self._deadline_error(correlation_id) from exc
        except _TRANSPORT_ERRORS as exc:
            raise self._transport_error(exc, correlation_id) from exc

    def _deadline_error(self, correlation_id: str | None) -> errors.UpstreamTimeoutError:
        return errors.UpstreamTimeoutError(
            "upstream did not answer within the call's deadline",
            code=grpc.StatusCode.DEADLINE_EXCEEDED,
            correlation_id=correlation_id,
        )

    def _transport_error(self, exc: BaseException, correlation_id: str | None) -> errors.BridgeError:
        return errors.error_from_transport_exception(exc, domain=self.domain, correlation_id=correlation_id)

    async def _read(self, response: httpx.Response) -> bytes:
        """A reply body meant to be parsed whole: larger than max_event_bytes is an error."""
        limit = self.settings.max_event_bytes
        raw = await _read_up_to(response, limit + 1)
        if len(raw) > limit:
            raise self._protocol_error(
                f"reply body exceeds max_event_bytes={limit}",
                "BODY_TOO_LARGE",
                response.headers,
                code=grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
        return raw

    async def _read_error(self, response: httpx.Response) -> bytes:
        """The head of an error reply: its status decides the code, so a huge page must not hide it."""
        return await _read_up_to(response, _ERROR_BODY_LIMIT)

    def _completion(self, raw: bytes, headers: httpx.Headers) -> JSONObject:
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            raise self._protocol_error("reply is not valid JSON", "INVALID_JSON", headers) from None
        if isinstance(doc, dict) and "error" in doc:
            error = errors.error_from_stream_event(
                raw.decode(errors="replace"), event="message", domain=self.domain,
                correlation_id=_correlation_id(headers),
            )  # fmt: skip
            if error is not None:
                raise error
        if not isinstance(doc, dict):
            raise self._protocol_error("reply is not a JSON object", "INVALID_JSON", headers)
        return doc

    async def _check_stream_start(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            raw = await self._read_error(response)
            raise errors.error_from_http_response(
                response.status_code, response.headers, raw, domain=self.domain
            )
        content_type = response.headers.get("content-type", "")
        if "json" in content_type:
            # Some servers ignore stream: true, or report failures as a 200 JSON document.
            raw = await self._read(response)
            self._completion(raw, response.headers)  # raises the upstream's error, if it is one
            raise self._protocol_error(
                "upstream answered a stream request with a JSON document instead of an event stream",
                "NOT_AN_EVENT_STREAM",
                response.headers,
            )

    def _protocol_error(
        self,
        message: str,
        reason: str,
        headers: httpx.Headers,
        *,
        code: grpc.StatusCode = grpc.StatusCode.INTERNAL,
    ) -> errors.UpstreamProtocolError:
        return errors.protocol_error(
            message, domain=self.domain, reason=reason, correlation_id=_correlation_id(headers), code=code
        )


class UpstreamStream:
    """An open upstream event stream; iterate it for the chunk objects, in order."""

    def __init__(self, client: UpstreamClient, response: httpx.Response, deadline: float | None) -> None:
        self._client = client
        self._response = response
        self._deadline = deadline
        self.headers = response.headers
        self._correlation_id = _correlation_id(response.headers)

    async def __aiter__(self) -> AsyncIterator[JSONObject]:
        decoder = SSEDecoder(max_event_bytes=self._client.settings.max_event_bytes)
        finished = False  # a choice reported finish_reason: a close without [DONE] is then acceptable
        raw_chunks = self._raw_chunks()
        while True:
            raw = await self._next_read(raw_chunks)
            if raw is None:
                break
            for event in self._decode(decoder, raw):
                if event.data == _DONE:
                    return
                chunk = self._chunk(event.event, event.data)
                if chunk is None:
                    continue
                finished = finished or _has_finish_reason(chunk)
                yield chunk
        self._check_end(decoder.finish(), finished)

    def _raw_chunks(self) -> AsyncIterator[bytes]:
        # Without a content encoding the bytes need no decoder: skip httpx's decoding layer (per chunk).
        identity = self.headers.get("content-encoding", "identity") == "identity"
        return self._response.aiter_raw() if identity else self._response.aiter_bytes()

    async def _next_read(self, raw_chunks: AsyncIterator[bytes]) -> bytes | None:
        """The next read of the body; None at its end. The deadline's timer exists only when one is set."""
        try:
            if self._deadline is None:
                return await anext(raw_chunks, None)
            async with asyncio.timeout_at(self._deadline):
                return await anext(raw_chunks, None)
        except TimeoutError as exc:
            raise self._client._deadline_error(self._correlation_id) from exc
        except _TRANSPORT_ERRORS as exc:
            raise self._client._transport_error(exc, self._correlation_id) from exc

    def _decode(self, decoder: SSEDecoder, raw: bytes) -> list[ServerSentEvent]:
        try:
            return decoder.feed(raw)
        except SSEEventTooLarge as exc:
            raise self._error(str(exc), "EVENT_TOO_LARGE", grpc.StatusCode.RESOURCE_EXHAUSTED) from None

    def _chunk(self, event: str, data: str) -> JSONObject | None:
        error = errors.error_from_stream_event(
            data, event=event, domain=self._client.domain, correlation_id=self._correlation_id
        )
        if error is not None:
            raise error
        if event != "message":
            log.debug("skipping SSE event of type %r", event)
            return None
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            raise self._error("stream chunk is not valid JSON", "INVALID_JSON") from None
        if not isinstance(chunk, dict):
            raise self._error("stream chunk is not a JSON object", "INVALID_JSON")
        return chunk

    def _check_end(self, on_boundary: bool, finished: bool) -> None:
        if not on_boundary:
            raise self._error(
                "stream ended in the middle of an event", "TRUNCATED_STREAM", grpc.StatusCode.UNAVAILABLE
            )
        if not finished:
            raise self._error(
                "stream ended without [DONE] or a finish_reason",
                "INCOMPLETE_STREAM",
                grpc.StatusCode.UNAVAILABLE,
            )

    def _error(
        self, message: str, reason: str, code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    ) -> errors.UpstreamProtocolError:
        return self._client._protocol_error(message, reason, self.headers, code=code)


async def _read_up_to(response: httpx.Response, limit: int) -> bytes:
    """The body, or its first `limit`-or-a-little-more bytes: reading stops once `limit` is reached."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)


def _has_finish_reason(chunk: JSONObject) -> bool:
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return False
    return any(isinstance(choice, dict) and choice.get("finish_reason") for choice in choices)


def _correlation_id(headers: httpx.Headers) -> str | None:
    value: str | None = headers.get("x-correlation-id") or headers.get("x-request-id")
    return value
