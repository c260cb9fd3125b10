"""Pure mapping between gRPC metadata and upstream HTTP headers: auth, ids, retry hints, returned headers.

Shared by every service: what a caller's metadata becomes upstream (`HeaderPolicy.request_headers`), which
upstream reply headers come back to the caller as initial metadata (`HeaderPolicy.reply_metadata`), and
which identify the upstream request (`correlation_id`) or ask callers to wait (`retry_delay`).

Reply headers are the upstream's bytes: reading one never raises, whatever it holds. An id is sanitised
(bridge.redaction.header_value) before anything else sees it; a header value gRPC metadata cannot carry
(not printable ASCII, or too long) is not returned, and the reply says which were dropped
(`ReplyMetadata.dropped`), so the call goes on without them.

Auth modes (`--auth-mode`):
  passthrough  forward the caller's `authorization` / `x-prismeai-api-key`; use the bridge's own key
               (BRIDGE_API_KEY) only when the caller sends neither. The default.
  fixed        always the bridge's key; caller credentials are never forwarded.
  none         no credentials upstream (a server that needs none, or auth done by a sidecar).

Who may use the bridge's own key (`--api-key-for`): `authenticated` (the default) callers only, whose
client certificate passed mTLS and the allow-list (bridge.auth.callers); `anyone` who reaches the port. A
call that would get the key but may not is refused UNAUTHENTICATED (`AuthPolicy.refusal`) before any
upstream request: by the RPC layer before the handler runs, and again here where the key is attached.
The caller's identity goes upstream in the header the operator names (`--caller-identity-header`), set by
the bridge only: a caller's metadata of that name is never forwarded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple

from bridge.auth.callers import Caller, KeyFor, credentials_required
from bridge.errors import BridgeError
from bridge.http.status import parse_retry_after
from bridge.redaction import header_value

__all__ = [
    "AUTH_HEADERS",
    "CORRELATION_HEADERS",
    "FORWARDED_HEADERS",
    "RETURNED_HEADERS",
    "AuthPolicy",
    "HeaderPolicy",
    "ReplyMetadata",
    "check_identity_header",
    "check_returned_header",
    "correlation_id",
    "response_metadata",
    "retry_delay",
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
# Reply headers naming the upstream's request, most specific first: the Prisme gateway's, OpenAI's and
# vLLM's, then a LiteLLM proxy's own call id, its `request-id`, and the id of the provider behind it.
CORRELATION_HEADERS: Final = (
    "x-correlation-id",
    "x-request-id",
    "x-litellm-call-id",
    "request-id",
    "llm_provider-x-request-id",
)
# Upstream response headers worth a caller's attention, returned as gRPC initial metadata.
RETURNED_HEADERS: Final = (
    *CORRELATION_HEADERS,
    "openai-processing-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)
# Retry hints, most precise first: OpenAI's milliseconds, the standard header, and the provider's
# Retry-After that a LiteLLM proxy passes on under its own name.
_RETRY_MS_HEADERS: Final = ("retry-after-ms", "llm_provider-retry-after-ms")
_RETRY_HEADERS: Final = ("retry-after", "llm_provider-retry-after")

# Returned header values: gRPC metadata values are printable ASCII, and C-core and Java clients refuse a
# call whose metadata passes 8 KiB (grpc.max_metadata_size): one value, and all of them, are bounded.
MAX_RETURNED_VALUE_BYTES: Final = 1024
MAX_RETURNED_BYTES: Final = 4096

Metadata = Iterable[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """How the bridge authenticates upstream. `api_key` is the bridge's own key, if any; `key_for` who may
    use it; `identity_header` the header that tells the upstream who called, if any."""

    mode: AuthMode = "passthrough"
    api_key: str | None = None
    api_key_header: ApiKeyHeader = "authorization"
    key_for: KeyFor = "authenticated"
    identity_header: str | None = None

    @property
    def guards_key(self) -> bool:
        """Whether some callers may be refused the bridge's key (there is one, it is sent, and not to
        anyone)."""
        return bool(self.api_key) and self.mode != "none" and self.key_for != "anyone"

    def refusal(self, caller: Caller, metadata: Metadata) -> BridgeError | None:
        """The UNAUTHENTICATED error for a call of `caller` with `metadata` that would use the bridge's key
        but may not; None if it may go on."""
        if caller.authenticated or not self.guards_key:
            return None
        if self.mode == "passthrough" and _sends_credentials(metadata):
            return None  # the caller's own credentials go instead of the key
        return credentials_required(fixed=self.mode == "fixed")

    def own_credentials(self) -> dict[str, str]:
        if not self.api_key:
            return {}
        if self.api_key_header == "authorization":
            return {"authorization": _bearer(self.api_key)}
        return {"x-prismeai-api-key": self.api_key}


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    """What crosses between a call's gRPC metadata and its upstream request, both ways."""

    auth: AuthPolicy = field(default_factory=AuthPolicy)
    returned: tuple[str, ...] = RETURNED_HEADERS  # reply headers sent back as initial metadata
    # Names of dropped headers already reported (bridge.upstream_call logs each once).
    reported: set[str] = field(default_factory=set, compare=False, repr=False)
    _order: Mapping[str, int] = field(init=False, compare=False, repr=False)  # `returned`: name -> place

    def __post_init__(self) -> None:
        object.__setattr__(self, "_order", _order_of(self.returned))

    def request_headers(self, metadata: Metadata, caller: Caller) -> dict[str, str]:
        return upstream_headers(metadata, self.auth, caller)

    def reply_metadata(self, headers: Mapping[str, str]) -> ReplyMetadata:
        return _reply_metadata(headers, self._order)


class ReplyMetadata(NamedTuple):  # made per call: a named tuple costs a third of a frozen dataclass
    """The reply headers a caller gets as initial metadata, and those it cannot get."""

    metadata: tuple[tuple[str, str], ...]
    dropped: tuple[str, ...] = ()  # names of returned headers whose value gRPC metadata cannot carry


def upstream_headers(metadata: Metadata, policy: AuthPolicy, caller: Caller) -> dict[str, str]:
    """HTTP headers for the upstream request of a call `caller` made with `metadata`. Raises the
    UNAUTHENTICATED `credentials_required` if they would carry the bridge's key and `caller` may not
    use it."""
    incoming = _text_metadata(metadata)
    headers: dict[str, str] = {name: incoming[name] for name in FORWARDED_HEADERS if name in incoming}
    if policy.identity_header:  # never one a caller's metadata reaches (check_identity_header)
        headers[policy.identity_header] = caller.identity
    if policy.mode == "none":
        return headers
    credentials = _caller_credentials(incoming)
    if policy.mode == "passthrough" and credentials:
        headers.update(credentials)
    elif policy.api_key:
        if not (caller.authenticated or policy.key_for == "anyone"):
            raise credentials_required(fixed=policy.mode == "fixed")
        headers.update(policy.own_credentials())
    return headers


def reply_metadata(headers: Mapping[str, str], returned: Iterable[str] = RETURNED_HEADERS) -> ReplyMetadata:
    """The upstream response headers named in `returned` (lower-case names; one named twice is returned
    once), as gRPC metadata in the order of `returned`: those whose value is printable ASCII within the
    size bounds; the others are named in `dropped`."""
    return _reply_metadata(headers, _DEFAULT_ORDER if returned is RETURNED_HEADERS else _order_of(returned))


def _order_of(returned: Iterable[str]) -> dict[str, int]:
    order: dict[str, int] = {}
    for name in returned:
        order.setdefault(name, len(order))
    return order


_DEFAULT_ORDER: Final = _order_of(RETURNED_HEADERS)
_NOTHING: Final = ReplyMetadata(())


def _reply_metadata(headers: Mapping[str, str], order: Mapping[str, int]) -> ReplyMetadata:
    if not order:  # --reply-metadata false
        return _NOTHING
    # One pass over the reply's few headers (not a lookup per returned name: httpx.Headers scans all its
    # items on every lookup); a header repeated in the reply gives its last value.
    found: dict[str, str] = {}
    for name, value in headers.items():
        if (key := name.lower()) in order:
            found[key] = value
    if not found:
        return _NOTHING
    present = list(found.items())
    if len(present) > 1:
        present.sort(key=lambda item: order[item[0]])
    size = 0
    for name, value in present:  # this runs once per call: the usual reply takes no list but this one
        size += len(name) + len(value)
        if not (value.isascii() and value.isprintable() and len(value) <= MAX_RETURNED_VALUE_BYTES):
            return _within_bounds(present)
    return ReplyMetadata(tuple(present)) if size <= MAX_RETURNED_BYTES else _within_bounds(present)


def _within_bounds(present: list[tuple[str, str]]) -> ReplyMetadata:
    kept: list[tuple[str, str]] = []
    dropped: list[str] = []
    size = 0
    for name, value in present:
        fits = value.isascii() and value.isprintable() and len(value) <= MAX_RETURNED_VALUE_BYTES
        if fits and size + len(name) + len(value) <= MAX_RETURNED_BYTES:
            kept.append((name, value))
            size += len(name) + len(value)
        else:
            dropped.append(name)
    return ReplyMetadata(tuple(kept), tuple(dropped))


def response_metadata(
    headers: Mapping[str, str], returned: Iterable[str] = RETURNED_HEADERS
) -> tuple[tuple[str, str], ...]:
    """The metadata of `reply_metadata`, without the names of the headers dropped."""
    return reply_metadata(headers, returned).metadata


def correlation_id(headers: Mapping[str, str]) -> str | None:
    """The upstream's id of a request, from its reply headers (names in lower case, or case-insensitive),
    sanitised (bridge.redaction.header_value): printable ASCII, redacted, at most 256 bytes."""
    for name in CORRELATION_HEADERS:
        value = headers.get(name)
        if value and (cleaned := header_value(value)):
            return cleaned
    return None


_DECIMAL: Final = re.compile(r"\d+(?:\.\d+)?")


def retry_delay(lowered_headers: Mapping[str, str]) -> float | None:
    """Seconds the upstream asks callers to wait, from reply headers with lower-case names; None if none."""
    for name in _RETRY_MS_HEADERS:
        millis = lowered_headers.get(name, "").strip()
        if _DECIMAL.fullmatch(millis):
            return float(millis) / 1000
    for name in _RETRY_HEADERS:
        value = lowered_headers.get(name)
        if value is not None and (seconds := parse_retry_after(value)) is not None:
            return seconds
    return None


# grpc metadata keys: lower-case letters, digits, "-", "_", "."; "-bin" keys carry bytes, "grpc-" is
# reserved, and HTTP/2 connection headers are not metadata at all.
_METADATA_KEY: Final = re.compile(r"[0-9a-z_.-]+")
_RESERVED: Final = frozenset({"content-type", "te", "user-agent", "host", "connection", "transfer-encoding"})


def check_returned_header(name: str) -> str:
    """`name` (lower-cased) if gRPC can carry it as text metadata; ValueError saying why not otherwise."""
    key = name.strip().lower()
    if not _METADATA_KEY.fullmatch(key):
        raise ValueError(f"{name!r} is not a valid metadata key (letters, digits, '-', '_', '.')")
    if key.endswith("-bin") or key.startswith("grpc-") or key in _RESERVED:
        raise ValueError(f"{name!r} cannot be returned as metadata (binary, grpc- or connection header)")
    return key


# Headers the bridge writes itself, or forwards from a caller: an identity header must be none of them.
_NOT_IDENTITY: Final = frozenset(
    {
        *AUTH_HEADERS,
        *FORWARDED_HEADERS,
        *_RESERVED,
        "traceparent",
        "tracestate",
        "baggage",
        "accept",
        "accept-encoding",
        "content-length",
        "content-encoding",
        "cookie",
        "proxy-authorization",
    }
)


def check_identity_header(name: str) -> str:
    """`name` (lower-cased) if the bridge can send the caller's identity upstream in it; ValueError saying
    why not otherwise (not a header name, or a header that carries something else)."""
    key = name.strip().lower()
    if not _METADATA_KEY.fullmatch(key):
        raise ValueError(f"{name!r} is not a header name (letters, digits, '-', '_', '.')")
    if key in _NOT_IDENTITY or key.startswith("grpc-"):
        raise ValueError(f"{name!r} carries something else upstream; name a header of its own (x-caller-id)")
    return key


def _sends_credentials(metadata: Metadata) -> bool:
    """Whether `metadata` has a non-empty text `authorization` or `x-prismeai-api-key` (as forwarded)."""
    return any(_caller_credentials(_text_metadata(metadata)))


def _caller_credentials(incoming: Mapping[str, str]) -> dict[str, str]:
    """The caller's credentials among its text metadata `incoming`: non-empty auth headers."""
    return {name: incoming[name] for name in AUTH_HEADERS if incoming.get(name)}


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
