"""What a redirect from the upstream becomes (pure): FAILED_PRECONDITION, reason `UPSTREAM_REDIRECTED`, and a
message naming where it pointed and the base URL to configure instead.

A redirect is never followed: the caller's credentials go to `--upstream-url` and nowhere else, and a
generation request must not be sent twice. From a gateway, a 3xx almost always means the base URL is wrong:
`http://` where it serves `https://`, or a path segment missing. So the message compares the `Location`
with the URL the request went to and, when the Location ends with the same API path
(`/chat/completions`), suggests the base URL it implies. FAILED_PRECONDITION (not UNAVAILABLE): no retry
can succeed until an operator changes the bridge's configuration (docs/errors.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import SplitResult, urljoin, urlsplit

import grpc

from bridge.errors import Key, Reason, UpstreamHTTPError
from bridge.redaction import MAX_METADATA_BYTES, clean

__all__ = ["is_redirect", "redirect_error"]

_MAX_SHOWN_BYTES: Final = 512
_FLAG: Final = "--upstream-url (BRIDGE_UPSTREAM_URL)"


def is_redirect(status: int) -> bool:
    return 300 <= status <= 399


def redirect_error(
    status: int,
    headers: Mapping[str, str],
    *,
    url: str,
    path: str,
    host: str,
    correlation_id: str | None = None,
) -> UpstreamHTTPError:
    """The error for a 3xx reply to a request sent to `url`, which is the base URL followed by the API
    `path` ("/chat/completions"); `headers` are the reply's (case-insensitive)."""
    location = _resolved(headers.get("location"), url)
    if location is None:
        message = (
            f"upstream answered HTTP {status}, a redirect without a usable Location, not followed: "
            f"check {_FLAG}"
        )
        shown = None
    else:
        shown = clean(location.geturl(), _MAX_SHOWN_BYTES, ascii_only=True)
        message = (
            f"upstream redirected the request (HTTP {status}) to {shown}, not followed (the caller's "
            f"credentials go to the configured upstream only); {_advice(location, urlsplit(url), path)}"
        )
    metadata = {
        Key.HTTP_STATUS: str(status),
        Key.UPSTREAM_HOST: host,
        Key.CORRELATION_ID: correlation_id,
        Key.LOCATION: shown and clean(shown, MAX_METADATA_BYTES, ascii_only=True),
    }
    return UpstreamHTTPError(
        message,
        grpc.StatusCode.FAILED_PRECONDITION,
        reason=Reason.UPSTREAM_REDIRECTED,
        metadata=metadata,
        correlation_id=correlation_id,
        http_status=status,
    )


def _resolved(location: str | None, url: str) -> SplitResult | None:
    """The Location as an absolute URL (it may be relative to the request's), without what it may hide
    credentials in: user info, query, fragment."""
    if not location or not location.strip():
        return None
    try:
        parts = urlsplit(urljoin(url, location.strip()))
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:  # an unparsable URL ("http://[::1")
        return None
    if parts.scheme not in ("http", "https") or not netloc:
        return None
    return parts._replace(netloc=netloc, query="", fragment="")


def _advice(location: SplitResult, sent: SplitResult, path: str) -> str:
    """What to change in the base URL, as far as the Location tells it."""
    if not location.path.endswith(path):
        return f"it does not lead to the API's {path} (a sign-in page or a proxy?): check {_FLAG}"
    base = location._replace(path=location.path.removesuffix(path)).geturl()
    sent_base = sent.path.removesuffix(path)
    changes = []
    if location.scheme != sent.scheme:
        changes.append(f"{location.scheme}:// instead of {sent.scheme}://")
    if location.netloc != sent.netloc:
        changes.append(f"host {location.netloc} instead of {sent.netloc}")
    if location.path.removesuffix(path) != sent_base:
        changes.append(f"path {location.path.removesuffix(path) or '/'} instead of {sent_base or '/'}")
    why = f" ({'; '.join(changes)})" if changes else ""
    return clean(f"fix {_FLAG}: use {base}{why}", _MAX_SHOWN_BYTES * 2, ascii_only=True)
