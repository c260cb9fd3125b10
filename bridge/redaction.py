r"""The one sanitiser of text taken from outside the bridge, before it reaches a status, a trailer, a log
record or a span.

Everything an upstream or a transport says (bodies, headers, exception texts) passes through `clean`:
secrets redacted, whitespace collapsed, what is not printable escaped, length capped, so neither a key
echoed back, nor a terminal escape sequence, nor a byte that is not UTF-8, nor a 2 MB HTML page reaches a
caller or a log. Values taken from headers go through `header_value`, which also escapes everything
beyond ASCII: gRPC metadata (the `x-correlation-id` trailer) carries printable ASCII only, and grpc core
fails the whole call over a value that is not.

Escapes are Python's: `\x1b` for a control byte, `\xe9` for a byte that was not UTF-8 (aiohttp hands
such header bytes over as surrogate escapes, `'\udce9'`, which cannot even be encoded), `\u200b` for
other unprintable characters. Lengths are UTF-8 bytes: trailers are limited in bytes, and grpc-message
percent-encodes non-ASCII.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_TEXT_BYTES",
    "clean",
    "clean_optional",
    "header_value",
    "printable",
    "redact",
    "truncate",
]

MAX_TEXT_BYTES: Final = 1024  # upstream text quoted in a status message
MAX_METADATA_BYTES: Final = 256  # one ErrorInfo metadata value or field violation

_REDACTED: Final = "[REDACTED]"
_ELLIPSIS: Final = "…"
_ASCII_ELLIPSIS: Final = "..."
_SECRET_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # Authorization values: keep the scheme so a reader knows what was there.
    (re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+"), rf"\1 {_REDACTED}"),
    # Prisme instance keys iak_{org}_{uuid}; OpenAI/LiteLLM/Anthropic keys sk-..., sk-proj-..., sk-ant-...
    (re.compile(r"\biak_[A-Za-z0-9_-]+"), _REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{4,}"), _REDACTED),
    # JWTs: a base64url JSON header always starts with "eyJ" ('{"'); unsigned tokens end with a dot.
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), _REDACTED),
    # key=value / "key": "value" with a secret-looking key name (query strings, headers, JSON, also
    # JSON escaped inside a JSON string, hence the optional backslashes).
    (
        re.compile(
            r"(?i)\b((?:[a-z0-9]+[_-])*(?:api[_-]?key|access[_-]?token|secret|password))"
            r"(\\?[\"']?\s*[:=]\s*\\?[\"']?)[^\s\"'&,;}\\]+"
        ),
        rf"\1\2{_REDACTED}",
    ),
)


def redact(text: str) -> str:
    """`text` with bearer tokens, iak_/sk- keys, JWTs and `api_key=...`-style values replaced."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def printable(text: str, *, ascii_only: bool = False) -> str:
    r"""`text` with every character a log line, a terminal or a status must not carry written as an escape:
    control characters (`\x1b`), bytes that were not UTF-8 (`\xe9`), lone surrogates and other
    unprintable characters (`\u202e`); with `ascii_only`, every character beyond ASCII too."""
    if text.isprintable() and (not ascii_only or text.isascii()):
        return text  # nearly always: one C-speed scan
    return "".join(_escape(char, ascii_only) for char in text)


_NAMED_ESCAPES: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_SURROGATE_ESCAPES: Final = range(0xDC80, 0xDD00)  # bytes 0x80-0xFF that were not UTF-8 (surrogateescape)


def _escape(char: str, ascii_only: bool) -> str:
    point = ord(char)
    if point in _SURROGATE_ESCAPES:
        return f"\\x{point - 0xDC00:02x}"  # the byte that arrived
    if char.isprintable() and (point < 0x80 or not ascii_only):
        return char
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    if point <= 0xFF:
        return f"\\x{point:02x}"
    return f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}"


def truncate(text: str, limit: int, ellipsis: str = _ELLIPSIS) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, `ellipsis` marking the cut (lone surrogates, which
    `printable` escapes, count as the bytes they stand for)."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    # "ignore" drops a character cut in half at the limit.
    return raw[: limit - len(ellipsis.encode())].decode("utf-8", "ignore") + ellipsis


def clean(text: str, limit: int = MAX_TEXT_BYTES, *, ascii_only: bool = False) -> str:
    """`text` redacted, its whitespace collapsed, its unprintable characters escaped (`printable`), and
    truncated to `limit` bytes."""
    # Redact before truncating: a cut could leave a secret's head too short for its pattern.
    escaped = printable(redact(" ".join(text.split())), ascii_only=ascii_only)
    return truncate(escaped, limit, _ASCII_ELLIPSIS if ascii_only else _ELLIPSIS)


def clean_optional(text: str | None, limit: int = MAX_METADATA_BYTES) -> str | None:
    """`clean(text)`, with None and what cleans to "" as None."""
    return (clean(text, limit) or None) if text is not None else None


# Ids (uuids, request ids, provider ids like "chatcmpl-9f2c.a1_b") are made of these characters: a value of
# them alone has nothing to escape and no whitespace to collapse. Without ":" and "=" no `key=value` secret
# can be written with them; the other secret shapes start with `iak_`, `sk-` or `eyJ` (their patterns are
# case-sensitive). Such a value within the bound is returned as it is, found by one byte translate.
_ID_BYTES: Final = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_./"


def _plain_id(value: str, limit: int) -> bool:
    if not value.isascii() or len(value) > limit:
        return False
    raw = value.encode("ascii")
    if raw.translate(None, _ID_BYTES):
        return False
    return "iak_" not in value and "sk-" not in value and "eyJ" not in value  # no generator: once per id


def header_value(value: str | None, limit: int = MAX_METADATA_BYTES) -> str | None:
    """A value taken from an upstream header (an id), fit for a status, a trailer and a log line: `clean`,
    with everything beyond printable ASCII escaped; None for None and what cleans to ""."""
    if value is None:
        return None
    if value and _plain_id(value, limit):
        return value  # the usual id: nothing to redact, escape or cut
    return clean(value, limit, ascii_only=True) or None
