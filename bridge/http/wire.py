"""The client's small pieces of HTTP: a request encoded once for all its attempts, a reply's media type and
whether it can be an event stream, a path with its query (pure: no IO), and `read_up_to`, the one with IO,
which reads a reply's body, or its head, through the transport's `Response.chunks()`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

from bridge import jsoncodec
from bridge.http.transports.base import Response

__all__ = ["EncodedRequest", "media_type", "not_a_stream", "read_up_to", "with_query"]

_JSON_HEADERS: Final = {"content-type": "application/json"}


async def read_up_to(response: Response, limit: int) -> bytes:
    """The body, or its first `limit`-or-a-little-more bytes: reading stops once `limit` is reached."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.chunks():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class EncodedRequest:
    """One upstream request, encoded once and sent as many times as it is attempted."""

    method: str
    path: str  # with its query
    headers: Mapping[str, str]
    content: bytes | None

    @classmethod
    def of(
        cls, method: str, path: str, headers: Mapping[str, str], body: dict[str, Any] | None
    ) -> EncodedRequest:
        if body is None:
            return cls(method, path, headers, None)
        content = jsoncodec.dumps(body)
        return cls(method, path, {**headers, **_JSON_HEADERS}, content)


def media_type(headers: Mapping[str, str]) -> str:
    """The reply's content-type, lowercased (media types are case-insensitive: `Text/HTML` is a page)."""
    return headers.get("content-type", "").strip().lower()


def not_a_stream(content_type: str) -> bool:
    """Whether a 2xx reply to a stream request is a page or a JSON document instead of an event stream
    (`content_type` as `media_type` gives it)."""
    return content_type.startswith("text/html") or "json" in content_type


def with_query(path: str, query: Mapping[str, str] | None) -> str:
    return f"{path}?{urlencode(query)}" if query else path
