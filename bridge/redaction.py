"""Redaction and bounding of text taken from outside the bridge, before it reaches a status, log or metric.

Everything an upstream or a transport says (bodies, headers, exception texts) passes through `clean`:
secrets redacted, whitespace collapsed, length capped, so neither a key echoed back nor a 2 MB HTML page
reaches a caller. Lengths are UTF-8 bytes: trailers are limited in bytes, and grpc-message percent-encodes
non-ASCII.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_METADATA_BYTES", "MAX_TEXT_BYTES", "clean", "clean_optional", "redact", "truncate"]

MAX_TEXT_BYTES: Final = 1024  # upstream text quoted in a status message
MAX_METADATA_BYTES: Final = 256  # one ErrorInfo metadata value or field violation

_REDACTED: Final = "[REDACTED]"
_ELLIPSIS: Final = "…"
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


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, an ellipsis marking the cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    # "ignore" drops a character cut in half at the limit.
    return raw[: limit - len(_ELLIPSIS.encode())].decode("utf-8", "ignore") + _ELLIPSIS


def clean(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """`text` redacted, its whitespace collapsed, and truncated to `limit` bytes."""
    # Redact before truncating: a cut could leave a secret's head too short for its pattern.
    return truncate(redact(" ".join(text.split())), limit)


def clean_optional(text: str | None, limit: int = MAX_METADATA_BYTES) -> str | None:
    """`clean(text)`, with None and what cleans to "" as None."""
    return (clean(text, limit) or None) if text is not None else None
