"""The upstream HTTP client: JSON requests and SSE streams to `{base_url}{path}`, whatever the endpoint.

Every failure leaves this module as a `bridge.errors.BridgeError`, never as an exception of the HTTP
library: non-2xx replies and error documents through the injected `ErrorPolicy`, transport exceptions
through the transport's own map. The call's gRPC deadline, passed as an absolute event-loop time, bounds
every await on the upstream; the transport's connect and read timeouts apply below it. A request the
upstream cannot have answered is sent again as the settings' `RetryPolicy` allows (bridge.http.retry). A
reply is always closed when the caller is done, fails or is cancelled, and cancellation is never swallowed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from types import TracebackType
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import grpc

from bridge import errors, jsoncodec
from bridge.errors import Reason
from bridge.http.guard import Failures, Guard
from bridge.http.redirect import is_redirect, redirect_error
from bridge.http.retry import NO_RETRIES, RetryPolicy
from bridge.http.sse import ServerSentEvent, SSEDecoder, SSEEventTooLarge
from bridge.http.transports import build_transport
from bridge.http.transports.base import Response, Transport, TransportSettings
from bridge.http.wire import EncodedRequest, media_type, not_a_stream, read_up_to, with_query

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ErrorPolicy",
    "EventStream",
    "HttpClient",
    "HttpSettings",
    "JSONObject",
    "JsonReply",
]

JSONObject = dict[str, Any]
# Largest JSON reply and largest SSE event accepted by default: requests and replies can carry images.
DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024
_ERROR_BODY_LIMIT: Final = 64 * 1024  # error documents are small; only their head is read


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """What the client needs: where the upstream is, its transport, the size limits of replies, and which
    failed requests are sent again."""

    base_url: str
    transport: TransportSettings = field(default_factory=TransportSettings)
    max_body_bytes: int = DEFAULT_MAX_BYTES  # a JSON reply
    max_event_bytes: int = DEFAULT_MAX_BYTES  # one SSE event
    retry: RetryPolicy = NO_RETRIES


class ErrorPolicy(Protocol):
    """How an upstream family reports errors (bridge.upstream.errors.OpenAICompatibleErrors)."""

    def correlation_id(self, headers: Mapping[str, str]) -> str | None:
        """The upstream's id of the request, from reply headers."""
        ...

    def from_reply(
        self, status: int, headers: Mapping[str, str], body: bytes, *, host: str
    ) -> errors.BridgeError:
        """The error for a non-2xx reply (`body` may be only its head)."""
        ...

    def from_document(self, doc: Any, headers: Mapping[str, str], *, host: str) -> errors.BridgeError | None:
        """The error a 2xx JSON document reports instead of a result, or None."""
        ...


@dataclass(frozen=True, slots=True)
class JsonReply:
    """A 2xx reply holding a JSON object, and the host of the upstream that sent it."""

    status: int
    headers: Mapping[str, str]
    body: JSONObject
    host: str


class HttpClient:
    """One upstream: a base URL, a transport (its connection pool) and the upstream's error policy.

    `on_attempt(n)` is called as the n-th attempt (1, 2, ...) of each request starts, in the caller's task.
    """

    def __init__(
        self,
        settings: HttpSettings,
        *,
        errors: ErrorPolicy,
        transport: Transport | None = None,
        on_attempt: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        url = urlsplit(self.base_url)
        self.host = url.hostname or "upstream"
        # host:port, as error messages name it ("could not connect to upstream gw:443: ...")
        self.address = f"{self.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
        self._errors = errors
        self._transport = transport or build_transport(settings.transport)
        self._on_attempt = on_attempt

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        deadline: float | None,
        body: JSONObject | None = None,
        query: Mapping[str, str] | None = None,
    ) -> JsonReply:
        """`method` `{base_url}{path}?{query}` with a JSON `body`; the reply's JSON object."""
        request = EncodedRequest.of(method, with_query(path, query), headers, body)
        return await self.settings.retry.run(
            lambda: self._request_json_once(request, deadline), deadline=deadline, on_attempt=self._on_attempt
        )

    async def _request_json_once(self, request: EncodedRequest, deadline: float | None) -> JsonReply:
        # One deadline scope for the whole attempt (sending, the reply's head and its body): its errors are
        # mapped by phase (`Guard.replied`), and the reply is closed once the scope is left.
        guard = self._guard(deadline, before_reply=True)
        response: Response | None = None
        try:
            async with guard:
                response = await self._transport.send(
                    request.method, self.base_url + request.path, request.headers, request.content
                )
                guard.replied(response.headers)
                if response.status // 100 != 2:
                    raise await self._reply_error(response, request.path)
                raw = await self._read_body(response)
        finally:
            if response is not None:
                await response.aclose()
        return JsonReply(response.status, response.headers, self._document(raw, response.headers), self.host)

    def open_sse(
        self, path: str, body: JSONObject, *, headers: Mapping[str, str], deadline: float | None
    ) -> _OpenSSE:
        """POST `body` to `{base_url}{path}`; `async with` it gives the event stream once a 2xx event
        stream has begun, and closes it."""
        return _OpenSSE(self, path, body, headers, deadline)

    async def _start_stream(self, request: EncodedRequest, deadline: float | None) -> Response:
        response = await self._send(request, deadline)
        if response.status // 100 == 2 and not not_a_stream(media_type(response.headers)):
            return response  # the usual start: nothing to read before the body, no guard to enter
        try:
            async with self._guard(deadline, response.headers):
                await self._check_stream_start(response, request.path)
        except BaseException:
            await response.aclose()
            raise
        return response

    def protocol_error(
        self,
        message: str,
        reason: Reason,
        headers: Mapping[str, str],
        *,
        code: grpc.StatusCode = grpc.StatusCode.INTERNAL,
        host: str | None = None,
    ) -> errors.UpstreamProtocolError:
        """An error for a reply that cannot be understood (`host`: the upstream that sent it, this
        client's by default)."""
        correlation_id = self._errors.correlation_id(headers)
        return errors.protocol_error(
            message, host=host or self.host, reason=reason, correlation_id=correlation_id, code=code
        )

    # --- internals ---

    async def _send(self, request: EncodedRequest, deadline: float | None) -> Response:
        async with self._guard(deadline, before_reply=True):
            return await self._transport.send(
                request.method, self.base_url + request.path, request.headers, request.content
            )

    def _guard(
        self, deadline: float | None, headers: Mapping[str, str] | None = None, *, before_reply: bool = False
    ) -> Guard:
        """Maps transport exceptions and the call's deadline to bridge errors around upstream awaits;
        `headers` of a reply already begun give the errors its correlation id; `before_reply`: no reply
        can have begun (sending the request and waiting for its reply's head)."""
        return Guard(self._failures, deadline, headers, before_reply)

    def _failures(self, headers: Mapping[str, str] | None) -> Failures:
        correlation_id = self._errors.correlation_id(headers) if headers is not None else None
        return Failures(self._transport, self.host, self.address, correlation_id)

    async def _read_body(self, response: Response) -> bytes:
        """A reply body meant to be parsed whole: larger than max_body_bytes is an error."""
        limit = self.settings.max_body_bytes
        raw = await read_up_to(response, limit + 1)
        if len(raw) > limit:
            raise self.protocol_error(
                f"reply body exceeds max_body_bytes={limit}",
                Reason.UPSTREAM_RESPONSE_TOO_LARGE,
                response.headers,
                code=grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
        return raw

    async def _reply_error(self, response: Response, path: str) -> errors.BridgeError:
        """The error for a non-2xx reply to the request for `path`."""
        if is_redirect(response.status):  # never followed; what it says is in its Location, not its body
            return redirect_error(
                response.status,
                response.headers,
                url=self.base_url + path,
                path=path.partition("?")[0],
                host=self.host,
                correlation_id=self._errors.correlation_id(response.headers),
            )
        # Only the head of an error reply: its status decides the code, so a huge page must not hide it.
        raw = await read_up_to(response, _ERROR_BODY_LIMIT)
        return self._errors.from_reply(response.status, response.headers, raw, host=self.host)

    def _document(self, raw: bytes, headers: Mapping[str, str]) -> JSONObject:
        try:
            doc = jsoncodec.loads(raw)
        except UnicodeDecodeError:  # JSON is UTF-8 (RFC 8259): a reply that is not is not guessed at
            raise self.protocol_error(
                "reply is not valid UTF-8", Reason.UPSTREAM_INVALID_RESPONSE, headers
            ) from None
        except (ValueError, RecursionError):
            content_type = headers.get("content-type", "")
            said = "" if "json" in content_type.lower() else f" (content-type {content_type or 'none'})"
            raise self.protocol_error(
                f"reply is not valid JSON{said}", Reason.UPSTREAM_INVALID_RESPONSE, headers
            ) from None
        error = self._errors.from_document(doc, headers, host=self.host)
        if error is not None:
            raise error
        if not isinstance(doc, dict):
            raise self.protocol_error("reply is not a JSON object", Reason.UPSTREAM_INVALID_RESPONSE, headers)
        return doc

    async def _check_stream_start(self, response: Response, path: str) -> None:
        if response.status // 100 != 2:
            raise await self._reply_error(response, path)
        content_type = media_type(response.headers)
        if content_type.startswith("text/html"):
            # A sign-in page or a proxy's page: never an event stream (read as one, it would seem empty).
            raise self.protocol_error(
                "upstream answered a stream request with an HTML page instead of an event stream",
                Reason.UPSTREAM_INVALID_RESPONSE,
                response.headers,
            )
        if "json" in content_type:
            # Some servers ignore stream: true, or report failures as a 200 JSON document.
            self._document(await self._read_body(response), response.headers)  # raises their error
            raise self.protocol_error(
                "upstream answered a stream request with a JSON document instead of an event stream",
                Reason.UPSTREAM_INVALID_RESPONSE,
                response.headers,
            )


class EventStream:
    """An open upstream event stream: its events in order, read by `read()` (one call per read of the
    body: no generator between the transport's read and its reader) or `batches()`."""

    def __init__(
        self, client: HttpClient, response: Response, deadline: float | None, failures: Failures
    ) -> None:
        self._client = client
        self._response = response
        self._deadline = deadline
        self._failures = failures
        self.status = response.status
        self.headers = response.headers
        self.host = failures.host
        self.correlation_id = failures.correlation_id  # the upstream's id of this request
        self.ended_mid_event = False  # set when the body ended inside an event (a truncated stream)
        self.waited = 0.0  # seconds spent waiting for the body's reads (the reader's overhead is the rest)
        self._decoder: SSEDecoder | None = None  # while the body is read (made at the first read)
        self._read: Callable[[], Awaitable[bytes]] | None = None  # the transport's, while the body is read
        self._ended = False
        self._failure: errors.BridgeError | None = None  # for the read after the events before it
        # The deadline's one timer for the whole body (not one per read): it cancels the task while it
        # waits for a read, and a read that starts after it fired fails at once.
        self._timer: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[Any] | None = None  # the task waiting for a read, while it waits
        # The task reading the body (what the deadline cancels), found at its first read; another task
        # that takes the reading over says so with `handed_over()` (a pool's attempt task to its caller).
        self._task: asyncio.Task[Any] | None = None
        self._expired = False

    async def read(self) -> list[ServerSentEvent] | None:
        """The events of the next read of the body (often one, possibly none); None once the body ended
        (`ended_mid_event` then tells whether it ended inside an event). After a failure (raised once)
        the stream reads as ended."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._halt()
            raise failure
        decoder = self._decoder
        if decoder is None:
            if self._ended:
                return None
            decoder = self._start()
        if self._expired:
            self._halt()
            raise self._failures.error(TimeoutError(), deadline_passed=True)
        # The read, inline (this runs once per read of the body: no context manager, no other coroutine).
        reader = self._task  # the task that reads, found once (not per read: Python code in 3.11)
        if reader is None and self._timer is not None:
            reader = self._task = asyncio.current_task()
        self._reader = reader
        cancelling = reader.cancelling() if reader is not None else 0
        started = perf_counter()
        try:
            raw = await self._read()  # type: ignore[misc]  # set by _start
        except asyncio.CancelledError:
            self._halt()
            if self._expired and reader is not None and reader.uncancel() <= cancelling:
                # the deadline's cancel (as asyncio.timeout tells it from the caller's)
                raise self._failures.error(TimeoutError(), deadline_passed=True) from None
            raise
        except self._failures.caught as exc:
            self._halt()
            raise self._failures.error(exc) from exc
        except BaseException:
            self._halt()
            raise
        finally:
            self._reader = None
            self.waited += perf_counter() - started
        if not raw:
            self._halt()
            self.ended_mid_event = not decoder.finish()
            return None
        try:
            return decoder.feed(raw)
        except SSEEventTooLarge as exc:
            error = self.protocol_error(
                str(exc), Reason.UPSTREAM_RESPONSE_TOO_LARGE, grpc.StatusCode.RESOURCE_EXHAUSTED
            )
            if exc.events:  # complete before the oversized one: delivered first, the error next
                self._failure = error
                return exc.events
            self._halt()
            raise error from None

    async def batches(self) -> AsyncIterator[list[ServerSentEvent]]:
        """The events of each read of the body, until the body ends (`read` as an iterator)."""
        while (events := await self.read()) is not None:
            yield events
            del events  # nothing of a read is held while the next one waits (an idle stream)

    def protocol_error(
        self, message: str, reason: Reason, code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    ) -> errors.UpstreamProtocolError:
        """An error about this stream's content, carrying its correlation id."""
        return self._client.protocol_error(message, reason, self.headers, code=code)

    def handed_over(self) -> None:
        """The next reads are made by another task (the deadline's timer finds it at its first read)."""
        self._task = None

    def close(self) -> None:
        """Stops reading (its deadline timer cancelled); the reply itself is closed by its owner."""
        self._halt()

    def _start(self) -> SSEDecoder:
        decoder = self._decoder = SSEDecoder(max_event_bytes=self._client.settings.max_event_bytes)
        self._read = self._response.read
        if self._deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(self._deadline, self._expire)
        return decoder

    def _halt(self) -> None:
        """The body is read no more: its end, a failure, or the reader stopped."""
        self._ended = True
        self._decoder = self._read = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._expired = True
        if self._reader is not None:
            self._reader.cancel()


class _OpenSSE:
    """HttpClient.open_sse: a plain async context manager (entered once per stream: no generator); a
    stream that is not retried (the default) is one attempt, without the retry loop (RetryPolicy.run)."""

    __slots__ = ("_body", "_client", "_deadline", "_headers", "_path", "_response", "_stream")

    def __init__(
        self,
        client: HttpClient,
        path: str,
        body: JSONObject,
        headers: Mapping[str, str],
        deadline: float | None,
    ) -> None:
        self._client, self._path, self._body, self._headers = client, path, body, headers
        self._deadline = deadline
        self._response: Response | None = None
        self._stream: EventStream | None = None

    async def __aenter__(self) -> EventStream:
        client, deadline = self._client, self._deadline
        request = EncodedRequest.of("POST", self._path, self._headers, self._body)
        response = await client.settings.retry.run(
            lambda: client._start_stream(request, deadline),
            deadline=deadline,
            streaming=True,
            on_attempt=client._on_attempt,
        )
        self._response = response
        stream = self._stream = EventStream(client, response, deadline, client._failures(response.headers))
        return stream

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._response is not None:
            await self._response.aclose()  # shielding is not needed: aclose of a cancelled read just drops it
