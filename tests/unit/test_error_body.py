"""bridge.upstream.error_body: every dialect of upstream error document, bounded and redacted."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.redaction import MAX_TEXT_BYTES
from bridge.upstream.error_body import UpstreamErrorBody, parse_error_body

# ----------------------------------------------------------------------------------- error bodies

_LONG = "x" * 5000

_BODIES: list[tuple[str, bytes, UpstreamErrorBody]] = [
    (
        "openai",
        b'{"error":{"message":"Invalid value for \'messages\'.","type":"invalid_request_error",'
        b'"param":"messages","code":"invalid_value"}}',
        UpstreamErrorBody(
            message="Invalid value for 'messages'.",
            code="invalid_value",
            type="invalid_request_error",
            param="messages",
        ),
    ),
    (
        "openai-null-code",
        b'{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}',
        UpstreamErrorBody(message="The server had an error", type="server_error"),
    ),
    (
        "vllm-int-code",
        b'{"object":"error","error":{"message":"prompt too long","type":"BadRequestError",'
        b'"param":null,"code":400}}',
        UpstreamErrorBody(message="prompt too long", code="400", type="BadRequestError"),
    ),
    (
        "vllm-flat",
        b'{"object":"error","message":"bad temperature","type":"BadRequestError","param":"temperature",'
        b'"code":400}',
        UpstreamErrorBody(message="bad temperature", code="400", type="BadRequestError", param="temperature"),
    ),
    (
        "litellm-string-code",
        b'{"error":{"message":"litellm.APIError: boom","type":null,"param":null,"code":"500"}}',
        UpstreamErrorBody(message="litellm.APIError: boom", code="500"),
    ),
    (
        "google-status",
        b'{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}',
        UpstreamErrorBody(message="Quota exceeded", code="429", type="RESOURCE_EXHAUSTED"),
    ),
    (
        "prisme",
        b'{"error":"rate_limit_exceeded","message":"Rate limit exceeded","details":{"limit":100}}',
        UpstreamErrorBody(message="Rate limit exceeded", code="rate_limit_exceeded", details='{"limit":100}'),
    ),
    (
        "prisme-empty-details",
        b'{"error":"MODEL_NOT_ALLOWED","message":"Not for you","details":{}}',
        UpstreamErrorBody(message="Not for you", code="MODEL_NOT_ALLOWED"),
    ),
    (
        "error-is-a-sentence",
        b'{"error":"Internal Server Error"}',
        UpstreamErrorBody(message="Internal Server Error"),
    ),
    ("error-is-a-bare-code", b'{"error":"invalid_token"}', UpstreamErrorBody(code="invalid_token")),
    ("bare-message", b'{"message":"Something broke"}', UpstreamErrorBody(message="Something broke")),
    ("fastapi-str", b'{"detail":"Not Found"}', UpstreamErrorBody(message="Not Found")),
    (
        "fastapi-list",
        b'{"detail":[{"loc":["body","messages",0,"role"],"msg":"Field required","type":"missing"},'
        b'{"loc":["body","temperature"],"msg":"Input should be a valid number","type":"float_type"},'
        b'{"loc":"junk"},"junk"]}',
        UpstreamErrorBody(
            message="messages[0].role: Field required (and 1 more)",
            violations=(
                ("messages[0].role", "Field required"),
                ("temperature", "Input should be a valid number"),
            ),
        ),
    ),
    ("fastapi-dict", b'{"detail":{"message":"nope","x":1}}', UpstreamErrorBody(message="nope")),
    ("error-null-with-message", b'{"error":null,"message":"m"}', UpstreamErrorBody(message="m")),
    ("error-null-alone", b'{"error":null}', UpstreamErrorBody()),
    ("error-object-empty", b'{"error":{}}', UpstreamErrorBody()),
    ("error-message-not-a-string", b'{"error":{"message":{"a":1}}}', UpstreamErrorBody(message='{"a":1}')),
    ("unknown-shape", b'{"oops":"it failed"}', UpstreamErrorBody(message='{"oops":"it failed"}')),
    ("json-list", b'["a",1]', UpstreamErrorBody(message='["a",1]')),
    ("json-string", b'"just a string"', UpstreamErrorBody(message="just a string")),
    ("json-null", b"null", UpstreamErrorBody(message="null")),
    (
        "plain-text",
        b"upstream connect error or disconnect/reset",
        UpstreamErrorBody(message="upstream connect error or disconnect/reset"),
    ),
    ("text-whitespace", b"  line one\n\n\tline two  ", UpstreamErrorBody(message="line one line two")),
    ("empty", b"", UpstreamErrorBody()),
    ("blank", b" \r\n ", UpstreamErrorBody()),
    (
        "truncated-json",
        b'{"error": {"message": "cut',
        UpstreamErrorBody(message='{"error": {"message": "cut'),
    ),
    ("bom", b'\xef\xbb\xbf{"message":"with bom"}', UpstreamErrorBody(message="with bom")),
    ("not-utf8", b"caf\xe9 \xff", UpstreamErrorBody(message="caf\ufffd \ufffd")),
    (
        "html-title",
        b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body><center><h1>502 Bad Gateway"
        b"</h1></center><hr><center>nginx</center></body></html>",
        UpstreamErrorBody(message="502 Bad Gateway"),
    ),
    (
        "html-no-title",
        b"<!DOCTYPE html><body><h1>Service &amp; friends</h1><p>down</p></body>",
        UpstreamErrorBody(message="Service & friends down"),
    ),
]


@pytest.mark.parametrize(("body", "expected"), [b[1:] for b in _BODIES], ids=[b[0] for b in _BODIES])
def test_parse_error_body_shapes(body: bytes, expected: UpstreamErrorBody) -> None:
    assert parse_error_body(body) == expected


def test_huge_bodies_are_capped() -> None:
    huge_html = b"<html><head><title>Oops</title></head><body>" + b"<p>filler</p>" * 500_000 + b"</body>"
    assert parse_error_body(huge_html).message == "Oops"
    huge_json = json.dumps({"error": {"message": _LONG * 400}}).encode()
    parsed = parse_error_body(huge_json)
    assert parsed.message is not None
    assert len(parsed.message.encode()) == MAX_TEXT_BYTES
    assert parsed.message.endswith("…")
    long_message = parse_error_body(json.dumps({"message": _LONG}).encode()).message
    assert long_message == "x" * (MAX_TEXT_BYTES - 3) + "…"  # the ellipsis is 3 bytes of UTF-8


def test_truncation_counts_bytes_and_never_splits_a_character() -> None:
    message = parse_error_body(("é" * 2000).encode()).message
    assert message is not None
    assert len(message.encode()) <= MAX_TEXT_BYTES
    assert message == "é" * ((MAX_TEXT_BYTES - 3) // 2) + "…"


def test_deeply_nested_json_does_not_blow_the_stack() -> None:
    parsed = parse_error_body(b"[" * 50_000)
    assert parsed.message is not None
    assert parsed.message.startswith("[[[")


@given(st.binary(max_size=2048))
def test_parse_error_body_never_raises_and_stays_bounded(body: bytes) -> None:
    parsed = parse_error_body(body)
    for value in (parsed.message, parsed.code, parsed.type, parsed.param, parsed.details):
        assert value is None or 0 < len(value.encode()) <= MAX_TEXT_BYTES
