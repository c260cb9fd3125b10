"""Pure mapping between gRPC metadata and upstream HTTP headers: auth, correlation ids, response headers.

Shared by every service: what a caller's metadata becomes upstream, and which upstream reply headers come
back to the caller (as initial metadata) or identify the upstream request (the correlation id).

Auth modes (`--auth-mode`):
  passthrough  forward the caller's `authorization` / `x-prismeai-api-key`; use the bridge's own key
               (BRIDGE_API_KEY) only when the caller sends neither. The default.
  fixed        always the bridge's key; caller credentials are never forwarded.
  none         no credentials upstream (a server that needs none, or auth done by a sidecar).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "AUTH_HEADERS",
    "FORWARDED_HEADERS",
    "RETURNED_HEADERS",
    "AuthPolicy",
    "correlation_id",
    "response_metadata",
    "upstream_headers",
]

AuthMode = Literal["passthrough", "fixed", "none"]
ApiKeyHeader = Literal["authorization", "x-prismeai-api-key"]

# The gateway takes a Bearer token in Authorization, and (one docs page) an iak_ key in x-prismeai-api-key.
AUTH_HEADERS: Final = ("authorization", "x-prismeai-api-key")
# Request metadata passed through unchanged, so one id follows a call across services. Trace context
# (traceparent, tracestate, baggage) is not copied: the propagator writes it for the upstream request's
# own span (bridge.http.tracing), or passes the caller's on when tracing is off.
FORWARDED_HEADERS: Final = ("x-correlation-id", "x-request-id")
# Upstream response headers worth a caller's attention, returned as gRPC initial metadata.
RETURNED_HEADERS: Final = (
    "x-correlation-id",
    "x-request-id",
    "openai-processing-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)

Metadata = Iterable[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """How the bridge authenticates upstream. `api_key` is the bridge's own key, if any."""

    mode: AuthMode = "passthrough"
    api_key: str | None = None
    api_key_header: ApiKeyHeader = "authorization"

    def own_credentials(self) -> dict[str, str]:
        if not self.api_key:
            return {}
        if self.api_key_header == "authorization":
            return {"authorization": _bearer(self.api_key)}
        return {"x-prismeai-api-key": self.api_key}


def upstream_headers(metadata: Metadata, policy: AuthPolicy) -> dict[str, str]:
    """HTTP headers for the upstream request of a call that arrived with `metadata`."""
    incoming = _text_metadata(metadata)
    headers: dict[str, str] = {name: incoming[name] for name in FORWARDED_HEADERS if name in incoming}
    if policy.mode == "none":
        return headers
    caller = {name: incoming[name] for name in AUTH_HEADERS if incoming.get(name)}
    if policy.mode == "passthrough" and caller:
        headers.update(caller)
    else:
        headers.update(policy.own_credentials())
    return headers


def response_metadata(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The upstream response headers to return to the caller as gRPC metadata."""
    # One pass into a plain dict: httpx.Headers scans all its items on every lookup.
    lowered = {name.lower(): value for name, value in headers.items()}
    return tuple(
        (name, value)
        for name in RETURNED_HEADERS
        if (value := lowered.get(name)) is not None and value.isascii() and value.isprintable()
    )


def correlation_id(headers: Mapping[str, str]) -> str | None:
    """The upstream's id of a request, from its reply headers (names in lower case, or case-insensitive)."""
    return headers.get("x-correlation-id") or headers.get("x-request-id")


def _text_metadata(metadata: Metadata) -> dict[str, str]:
    # Binary (-bin) values and duplicates are not forwarded: HTTP headers here are single text values.
    out: dict[str, str] = {}
    for key, value in metadata:
        if isinstance(value, str):
            out.setdefault(key.lower(), value)
    return out


def _bearer(key: str) -> str:
    # A configured key may already carry its scheme ("Bearer eyJ..."); don't double it.
    return key if key.lower().startswith("bearer ") else f"Bearer {key}"
