"""What an upstream's error document says, whatever its dialect (pure).

Understood shapes: OpenAI / vLLM / LiteLLM ``{"error": {"message", "type", "param", "code"}}`` (Google-style
puts the name in ``status``), Prisme ``{"error": "<code>", "message", "details"}``, flat ``{"message"}`` and
old vLLM ``{"object": "error", ...}``, FastAPI ``{"detail": str | list | dict}``, HTML pages of proxies and
plain text. Everything kept is redacted and bounded (bridge.redaction).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Final

from bridge.errors import FieldViolation, summarise
from bridge.redaction import MAX_METADATA_BYTES, MAX_TEXT_BYTES, clean, clean_optional

__all__ = ["MAX_ERROR_BODY_BYTES", "UpstreamErrorBody", "parse_error_body", "parse_error_document"]

# Error documents are small; past this a body is some page or dump and only its head is kept, as text.
MAX_ERROR_BODY_BYTES: Final = 64 * 1024
_MAX_VIOLATIONS: Final = 10


@dataclass(frozen=True, slots=True)
class UpstreamErrorBody:
    """What an upstream error document says, already redacted and truncated.

    ``code`` keeps the upstream's spelling ("rate_limit_exceeded", "400" for vLLM's integer).
    ``violations`` come from FastAPI/pydantic ``detail`` lists: (field path, description).
    """

    message: str | None = None
    code: str | None = None
    type: str | None = None
    param: str | None = None
    details: str | None = None
    violations: tuple[FieldViolation, ...] = ()


def parse_error_body(body: bytes) -> UpstreamErrorBody:
    """Read an upstream error body: OpenAI, vLLM, LiteLLM, Prisme, FastAPI, HTML or plain text."""
    if len(body) > MAX_ERROR_BODY_BYTES:
        return _from_text(body[:MAX_ERROR_BODY_BYTES].decode("utf-8", "replace"))
    text = body.decode("utf-8", "replace").lstrip("\ufeff").strip()
    if not text:
        return UpstreamErrorBody()
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the parser's depth
        return _from_text(text)
    return parse_error_document(doc)


_HTML_START: Final = re.compile(r"<(?:!doctype|html|head|body|title)\b", re.IGNORECASE)
_HTML_TITLE: Final = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_TAG: Final = re.compile(r"<[^>]*>")


def _from_text(text: str) -> UpstreamErrorBody:
    if _HTML_START.match(text.lstrip()):
        # Proxies answer with pages ("502 Bad Gateway"): the title says it all, the markup says nothing.
        title = _HTML_TITLE.search(text)
        text = html.unescape(title.group(1) if title else _HTML_TAG.sub(" ", text))
    return UpstreamErrorBody(message=clean(text) or None)


def parse_error_document(doc: object) -> UpstreamErrorBody:
    """Read an already parsed JSON error document (see parse_error_body)."""
    if isinstance(doc, str):
        return _from_text(doc)
    if not isinstance(doc, dict):
        return UpstreamErrorBody(message=clean(_compact(doc)) or None)
    error = doc.get("error")
    if isinstance(error, dict):
        return _from_error_object(error, doc)
    if isinstance(error, str) and error.strip():
        return _from_prisme(error, doc)
    return _from_flat(doc)


def _from_error_object(error: dict[str, object], doc: dict[str, object]) -> UpstreamErrorBody:
    # OpenAI/vLLM/LiteLLM {"error": {message, type, param, code}}; Google-style puts the name in "status".
    message = _text(error.get("message")) or _text(doc.get("message"))
    return UpstreamErrorBody(
        message=clean_optional(message, MAX_TEXT_BYTES),
        code=clean_optional(_scalar(error.get("code"))),
        type=clean_optional(_scalar(error.get("type")) or _scalar(error.get("status"))),
        param=clean_optional(_scalar(error.get("param"))),
    )


_IDENTIFIER: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]*")


def _from_prisme(error: str, doc: dict[str, object]) -> UpstreamErrorBody:
    # Prisme {"error": "<code>", "message", "details"}; a sentence in "error" is a message, not a code.
    is_code = _IDENTIFIER.fullmatch(error.strip()) is not None
    message = _text(doc.get("message")) or (None if is_code else error)
    details = doc.get("details")
    return UpstreamErrorBody(
        message=clean_optional(message, MAX_TEXT_BYTES),
        code=clean_optional(error if is_code else _scalar(doc.get("code"))),
        type=clean_optional(_scalar(doc.get("type"))),
        param=clean_optional(_scalar(doc.get("param"))),
        details=clean_optional(_compact(details)) if details not in (None, "", {}, []) else None,
    )


def _from_flat(doc: dict[str, object]) -> UpstreamErrorBody:
    # {"message": ...}, old vLLM {"object": "error", ...}, FastAPI {"detail": str | list | dict}.
    detail = doc.get("detail")
    violations = _violations(detail) if isinstance(detail, list) else ()
    message = _text(doc.get("message")) or _detail_message(detail, violations)
    if message is None and any(value not in (None, "", [], {}) for value in doc.values()):
        message = _compact(doc)  # unknown shape: better raw than nothing
    return UpstreamErrorBody(
        message=clean_optional(message, MAX_TEXT_BYTES),
        code=clean_optional(_scalar(doc.get("code"))),
        type=clean_optional(_scalar(doc.get("type"))),
        param=clean_optional(_scalar(doc.get("param"))),
        violations=violations,
    )


def _detail_message(detail: object, violations: tuple[FieldViolation, ...]) -> str | None:
    if violations:
        return summarise(violations)
    if isinstance(detail, dict):
        return _text(detail.get("message")) or _compact(detail)
    return _text(detail)


def _violations(items: list[object]) -> tuple[FieldViolation, ...]:
    found = []
    for item in items[:_MAX_VIOLATIONS]:
        if isinstance(item, dict):
            field = _loc_path(item.get("loc"))
            description = _text(item.get("msg")) or _text(item.get("message"))
            if field and description:
                found.append((clean(field, MAX_METADATA_BYTES), clean(description, MAX_METADATA_BYTES)))
    return tuple(found)


_LOC_SOURCES: Final = frozenset({"body", "query", "path", "header", "cookie"})


def _loc_path(loc: object) -> str | None:
    # pydantic ["body", "messages", 0, "role"] -> AIP-193 style "messages[0].role".
    if not isinstance(loc, list):
        return _scalar(loc)
    parts = loc[1:] if loc and loc[0] in _LOC_SOURCES else loc
    path = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or None


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else _compact(value)


def _scalar(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str | int | float):
        return str(value).strip() or None
    return None


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
