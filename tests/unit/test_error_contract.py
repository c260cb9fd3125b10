"""The stable error contract: the reasons and metadata keys clients match on are pinned here, and the code,
docs/errors.md and the chat service's proto comment all list exactly them; every other service's comment
points to docs/errors.md and names the reasons only it returns."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from bridge import errors
from bridge.auth import callers
from bridge.errors import DOMAIN, Key, Reason

ROOT = Path(__file__).parents[2]
DOCS = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
PROTOS = sorted((ROOT / "proto" / "prisme" / "llmgateway" / "v1").glob("*.proto"))

# Add to these lists, never rename or remove: callers switch on these strings.
PINNED_REASONS = [
    "INVALID_REQUEST", "INTERNAL", "DEADLINE_EXCEEDED", "OVERLOADED", "UPSTREAM_INVALID_REQUEST",
    "UPSTREAM_UNAUTHENTICATED",
    "UPSTREAM_PERMISSION_DENIED", "UPSTREAM_NOT_FOUND", "UPSTREAM_RATE_LIMITED", "UPSTREAM_QUOTA_EXCEEDED",
    "UPSTREAM_CONTEXT_LENGTH_EXCEEDED", "UPSTREAM_CONTENT_FILTERED", "UPSTREAM_PAYLOAD_TOO_LARGE",
    "UPSTREAM_UNAVAILABLE", "UPSTREAM_TIMEOUT", "UPSTREAM_ERROR", "UPSTREAM_INVALID_RESPONSE",
    "UPSTREAM_RESPONSE_TOO_LARGE", "UPSTREAM_STREAM_TRUNCATED", "UPSTREAM_STREAM_INCOMPLETE",
    "UPSTREAM_UNREACHABLE", "UPSTREAM_CONNECTION_LOST", "UPSTREAM_POOL_EXHAUSTED",
    "UPSTREAM_FILTER_UNSUPPORTED", "UPSTREAM_REDIRECTED", "CALLER_NOT_ALLOWED", "CALLER_CREDENTIALS_REQUIRED",
]  # fmt: skip
# Reasons only one service can return: its comment names them, the chat service's does not.
SERVICE_REASONS = {"ModelService": ["UPSTREAM_FILTER_UNSUPPORTED"]}
_REASON_PATTERN = (
    r"\b(?:INVALID_REQUEST|INTERNAL|DEADLINE_EXCEEDED|OVERLOADED|UPSTREAM_[A-Z_]+|CALLER_[A-Z_]+)\b"
)
PINNED_KEYS = [
    "httpStatus", "correlationId", "upstreamHost", "upstreamCode", "upstreamType", "upstreamParam",
    "upstreamDetails", "cause", "location", "callerIdentity",
]  # fmt: skip


def _first_column(heading: str) -> list[str]:
    """The backquoted names in the first column of the table under `## heading` in docs/errors.md."""
    section = DOCS.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Za-z_]+)` \|", section, re.MULTILINE)


def _service_comments() -> dict[str, str]:
    """Each service's comment (the `//` lines right above `service Name {`), as one line of text."""
    comments: dict[str, str] = {}
    for proto in PROTOS:
        lines = proto.read_text(encoding="utf-8").splitlines()
        for at, line in enumerate(lines):
            if match := re.match(r"service (\w+) \{", line):
                above = list(itertools.takewhile(lambda text: text.startswith("//"), reversed(lines[:at])))
                comments[match[1]] = " ".join(text.removeprefix("//").strip() for text in reversed(above))
    return comments


COMMENTS = _service_comments()


def test_the_code_has_exactly_the_pinned_reasons_and_keys() -> None:
    assert [reason.value for reason in Reason] == PINNED_REASONS
    assert [key.value for key in Key] == PINNED_KEYS
    assert DOMAIN == "grpc-bridge.prisme.ai"


def test_reasons_are_upper_snake_case_and_keys_lower_camel_case() -> None:
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]+[A-Z0-9]", r) and len(r) <= 63 for r in PINNED_REASONS)
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", k) for k in PINNED_KEYS)


def test_docs_list_every_reason_and_key() -> None:
    assert _first_column("Reasons") == PINNED_REASONS
    assert _first_column("Metadata keys") == PINNED_KEYS
    assert f"**`{DOMAIN}`**" in DOCS


def test_the_chat_proto_comment_lists_every_reason_it_can_return_and_every_key() -> None:
    comment = COMMENTS["ChatCompletionService"]
    elsewhere = {reason for reasons in SERVICE_REASONS.values() for reason in reasons}
    assert sorted(set(re.findall(_REASON_PATTERN, comment))) == sorted(set(PINNED_REASONS) - elsewhere)
    for key in PINNED_KEYS:
        assert re.search(rf"\b{key}\b", comment), key
    assert f'"{DOMAIN}"' in comment


def test_every_service_comment_points_to_the_contract() -> None:
    assert set(COMMENTS) == {"ChatCompletionService", "ModelService", "EmbeddingService"}
    for service, comment in COMMENTS.items():
        assert "docs/errors.md" in comment, service
        assert f'domain "{DOMAIN}"' in comment, service
        assert set(re.findall(_REASON_PATTERN, comment)) <= set(PINNED_REASONS), service
        for reason in SERVICE_REASONS.get(service, []):
            assert reason in comment, (service, reason)


def test_every_error_the_bridge_builds_is_inside_the_contract() -> None:
    built = [
        errors.invalid_request([("model", "must not be empty")]),
        errors.internal_error(),
        errors.deadline_exceeded("gw", "c"),
        errors.protocol_error("x", host="gw", reason=Reason.UPSTREAM_STREAM_INCOMPLETE, correlation_id="c"),
        callers.caller_not_allowed("spiffe://cluster.local/ns/x/sa/y"),
        callers.credentials_required(fixed=False),
        callers.credentials_required(fixed=True),
    ]
    for error in built:
        info = error.error_info()
        assert info.domain == DOMAIN
        assert info.reason in PINNED_REASONS
        assert set(info.metadata) <= set(PINNED_KEYS)
