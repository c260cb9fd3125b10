"""bridge.redaction: secrets never reach a status, whatever carried them in."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import (
    Reason,
    protocol_error,
)
from bridge.http.transports.httpx import error_for as error_from_transport_exception
from bridge.redaction import MAX_METADATA_BYTES, MAX_TEXT_BYTES, clean, header_value, printable, redact
from tests.helpers import everything_sent as _everything_sent
from tests.helpers import http_error as _http
from tests.helpers import stream_error as _stream

# -------------------------------------------------------------------------------------------- redaction

_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
_SECRETS = {
    "bearer": ("Authorization: Bearer abc.DEF-123_xyz~+/=", "abc.DEF-123_xyz"),
    "bearer-lower": ("header was bearer opaque0token1", "opaque0token1"),
    "iak": ("key iak_acme_7f0e9a4c-1b2d-4e5f-8a9b-0c1d2e3f4a5b rejected", "iak_acme_7f0e"),
    "sk": ("Incorrect API key provided: sk-abcdEFGH1234ijkl", "sk-abcdEFGH1234ijkl"),
    "sk-proj": ("key sk-proj-AbC_dEf-123456 is revoked", "AbC_dEf-123456"),
    "sk-litellm": ("master key sk-1234.", "sk-1234"),
    "jwt": (f"token {_JWT} expired", "dozjgNryP4J3"),
    "jwt-unsigned": ("token eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. used", "eyJzdWIiOiJ4In0"),
    "api-key-query": ("GET https://x/v1?api_key=hunter2hunter2&x=1", "hunter2hunter2"),
    "api-key-json": ('{"x-prismeai-api-key": "not-an-iak-format-key"}', "not-an-iak-format-key"),
    "password": ("password=Tr0ub4dor&3", "Tr0ub4dor"),
}


@pytest.mark.parametrize(("text", "secret"), list(_SECRETS.values()), ids=list(_SECRETS))
def test_redact_removes_secrets(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "[REDACTED]" in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "api.openai.com returned 502",
        "task-force risk-free desk-top",
        "version 1.2.3 of eyJ-less text",
        "Bearer",
        "messages[0].role: must not be empty",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_keeps_the_auth_scheme() -> None:
    assert redact("Authorization: Bearer abc123") == "Authorization: Bearer [REDACTED]"


@given(st.text(max_size=300))
def test_redact_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


@pytest.mark.parametrize(("text", "secret"), list(_SECRETS.values()), ids=list(_SECRETS))
def test_secrets_never_reach_http_errors(text: str, secret: str) -> None:
    body = {
        "error": {"message": text, "type": text, "param": text, "code": text},
    }
    headers = {"x-correlation-id": text, "Retry-After": "1"}
    for status in (400, 401, 500):
        sent = _everything_sent(_http(status, body, headers))
        assert secret not in sent
    prisme = {"error": "invalid_token", "message": text, "details": {"auth": text}}
    assert secret not in _everything_sent(_http(401, prisme))
    fastapi = {"detail": [{"loc": ["body", text], "msg": text}]}
    assert secret not in _everything_sent(_http(422, fastapi))
    assert secret not in _everything_sent(_http(502, text.encode()))


@pytest.mark.parametrize(("text", "secret"), list(_SECRETS.values()), ids=list(_SECRETS))
def test_secrets_never_reach_stream_or_transport_errors(text: str, secret: str) -> None:
    stream = _stream({"error": {"message": text, "type": text, "code": text}}, correlation_id=text)
    assert stream is not None
    assert secret not in _everything_sent(stream)
    event = _stream(text, event="error")
    assert secret not in _everything_sent(event)
    transport = error_from_transport_exception(httpx.ConnectError(text), address="gw:443")
    assert secret not in _everything_sent(transport)
    assert secret not in _everything_sent(
        protocol_error(text, host="gw", reason=Reason.UPSTREAM_INVALID_RESPONSE, correlation_id=text)
    )


def test_secret_in_huge_message_is_redacted_before_truncation() -> None:
    text = "x" * (MAX_TEXT_BYTES - 8) + " Bearer abcdefghijklmnop"
    error = _http(500, {"message": text})
    assert "abcdefgh" not in error.message


# --------------------------------------------------------------------- the sanitiser: escapes and bounds

_ESCAPED = {
    "esc": ("\x1b[31mRED\x1b[0m", r"\x1b[31mRED\x1b[0m"),
    "surrogate-escaped byte": ("r\udce9q-1", r"r\xe9q-1"),  # aiohttp's str for the byte 0xE9
    "lone surrogate": ("x\ud800y", r"x\ud800y"),  # json.loads accepts "\ud800"
    "bidi override": ("abc\u202edef", r"abc\u202edef"),
    "nul and del": ("a\x00b\x7f", r"a\x00b\x7f"),
    "c1 control": ("a\x9bb", r"a\x9bb"),
}


@pytest.mark.parametrize(("text", "escaped"), list(_ESCAPED.values()), ids=list(_ESCAPED))
def test_printable_escapes_what_a_terminal_or_status_must_not_carry(text: str, escaped: str) -> None:
    assert printable(text) == escaped
    assert clean(text) == escaped


@pytest.mark.parametrize("text", ["plain ascii", "réponse: modèle indisponible", "模型不可用", "emoji 😀"])
def test_printable_keeps_printable_text_as_it_is(text: str) -> None:
    assert printable(text) is text  # the fast path: no copy


def test_ascii_only_escapes_everything_beyond_ascii() -> None:
    assert printable("réq-1 😀", ascii_only=True) == r"r\xe9q-1 \U0001f600"
    assert printable("tab\tnewline\n", ascii_only=True) == r"tab\tnewline\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0f4c2d6e-5b1a-4c8e-9d7f-1a2b3c4d5e6f", "0f4c2d6e-5b1a-4c8e-9d7f-1a2b3c4d5e6f"),
        ("req_abc123", "req_abc123"),
        ("r\udce9q-1", r"r\xe9q-1"),
        ("réq-1", r"r\xe9q-1"),
        ("a\x1bb", r"a\x1bb"),
        ("Bearer abcdef123456", "Bearer [REDACTED]"),
        ("   ", None),
        (None, None),
    ],
)
def test_header_values_become_printable_ascii(value: str | None, expected: str | None) -> None:
    assert header_value(value) == expected


@given(
    st.text(max_size=600) | st.binary(max_size=600).map(lambda raw: raw.decode("utf-8", "surrogateescape"))
)
def test_header_values_are_always_printable_ascii_within_the_bound(text: str) -> None:
    value = header_value(text)
    assert value is None or (value.isascii() and value.isprintable() and len(value) <= MAX_METADATA_BYTES)


_ID_LIKE = st.text(st.sampled_from("0123456789abcdefABCDEFijkqsxyzJ-_./:= \t\x1b\u00e9"), max_size=300)
_SECRET_LIKE = st.sampled_from(["sk-abcd1234", "iak_org_5f1e", "eyJhbGciOi.eyJzdWIi.sig", "Bearer tok1234"])


@given(st.lists(_ID_LIKE | _SECRET_LIKE, min_size=1, max_size=4).map("".join))
def test_header_values_are_cleaned_as_clean_does_whatever_path(text: str) -> None:
    # header_value returns plain ids as they are without running clean: never a different answer
    assert header_value(text) == (clean(text, MAX_METADATA_BYTES, ascii_only=True) or None)


@given(
    st.text(max_size=2000) | st.binary(max_size=2000).map(lambda raw: raw.decode("utf-8", "surrogateescape"))
)
def test_cleaned_text_is_printable_valid_utf8_within_the_bound(text: str) -> None:
    cleaned = clean(text)
    assert cleaned.isprintable()
    assert len(cleaned.encode()) <= MAX_TEXT_BYTES  # encodes: no lone surrogate left
    assert clean(cleaned) == cleaned  # idempotent
