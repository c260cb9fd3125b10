"""AIP-132/158 paging of ListModels over the gateway's page-numbered `GET /models` (pure).

A page token is opaque to callers; inside it says where the next page starts (an offset into the
filtered catalogue) and which filters it belongs to (a fingerprint), so a token sent with other filters
is refused instead of silently paging another list. page_size may change between pages: the gateway
pages by number (`page` * `limit`), so the bridge asks for the largest `limit` not above page_size that
divides the offset, which can make such a page shorter than page_size but never skips or repeats a model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from bridge.errors import FieldViolation

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "Position", "fingerprint", "position", "token"]

MAX_PAGE_SIZE: Final = 100  # the gateway's cap on `limit`
DEFAULT_PAGE_SIZE: Final = 100  # the gateway's default `limit`
_VERSION: Final = 1
_MAX_OFFSET: Final = 10**9
_NOT_A_TOKEN: Final = "is not a next_page_token of ListModels: pass the previous page's token unchanged"


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page starts and how large it may be."""

    offset: int  # models before this page, in the filtered catalogue
    size: int  # page_size as the gateway takes it: 1..MAX_PAGE_SIZE

    @property
    def limit(self) -> int:
        """The gateway's `limit` for this page: the largest divisor of `offset` not above `size`."""
        return next(d for d in range(self.size, 0, -1) if self.offset % d == 0)

    @property
    def page(self) -> int:
        """The gateway's zero-based `page` holding `offset` first."""
        return self.offset // self.limit


def fingerprint(filters: Mapping[str, str]) -> str:
    """A short, stable digest of the filters a token belongs to (the query without paging)."""
    canonical = json.dumps(sorted(filters.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def token(offset: int, filters: Mapping[str, str]) -> str:
    """The page token of the page starting at `offset` for `filters`."""
    payload = json.dumps({"v": _VERSION, "o": offset, "f": fingerprint(filters)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def position(
    page_size: int, page_token: str, filters: Mapping[str, str]
) -> tuple[Position | None, list[FieldViolation]]:
    """The position a request asks for, or the violations of its page_size and page_token."""
    violations: list[FieldViolation] = []
    if page_size < 0:
        violations.append(("page_size", f"must not be negative (0 means the default, {DEFAULT_PAGE_SIZE})"))
    offset = 0
    if page_token:
        offset, problem = _read(page_token, filters)
        if problem:
            violations.append(("page_token", problem))
    if violations:
        return None, violations
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    return Position(offset, size), []


def _read(page_token: str, filters: Mapping[str, str]) -> tuple[int, str | None]:
    try:
        raw = base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        return 0, _NOT_A_TOKEN
    if not isinstance(payload, dict) or payload.get("v") != _VERSION:
        return 0, _NOT_A_TOKEN
    offset = payload.get("o")
    if type(offset) is not int or not 0 <= offset <= _MAX_OFFSET or not isinstance(payload.get("f"), str):
        return 0, _NOT_A_TOKEN
    if payload["f"] != fingerprint(filters):
        return 0, "belongs to other filters: send the same filters as for the first page, or no token"
    return offset, None
