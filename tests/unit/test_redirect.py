"""bridge.http.redirect: a redirect names where it pointed and the base URL to use instead; never UNKNOWN."""

from __future__ import annotations

import grpc
import pytest

from bridge.http.redirect import redirect_error
from tests.helpers import error_info

SENT = "http://gw.example.com/v1/chat/completions"


def _redirect(location: str | None, status: int = 301) -> tuple[str, dict[str, str]]:
    headers = {"location": location} if location is not None else {}
    error = redirect_error(status, headers, url=SENT, path="/chat/completions", host="gw.example.com")
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.http_status == status
    info = error_info(error)
    assert info.reason == "UPSTREAM_REDIRECTED"
    return error.message, dict(info.metadata)


@pytest.mark.parametrize(
    ("location", "advice"),
    [
        (
            "https://gw.example.com/v1/chat/completions",
            "use https://gw.example.com/v1 (https:// instead of http://)",
        ),
        (
            "/gateway/v1/chat/completions",
            "use http://gw.example.com/gateway/v1 (path /gateway/v1 instead of /v1)",
        ),
        (
            "https://other.example.com:8443/v1/chat/completions?x=1",
            "use https://other.example.com:8443/v1 (https:// instead of http://; host other.example.com:8443 "
            "instead of gw.example.com)",
        ),
    ],
    ids=["https", "relative-path", "another-host"],
)
def test_the_message_suggests_the_base_url_the_location_implies(location: str, advice: str) -> None:
    message, metadata = _redirect(location)
    shown = metadata["location"]
    assert message.startswith(f"upstream redirected the request (HTTP 301) to {shown}, not followed")
    assert message.endswith(f"fix --upstream-url (BRIDGE_UPSTREAM_URL): {advice}")
    assert metadata["httpStatus"] == "301"
    assert metadata["upstreamHost"] == "gw.example.com"


def test_a_location_elsewhere_is_named_without_a_suggestion() -> None:
    message, _ = _redirect("https://login.example.com/sso", status=302)
    assert message.endswith(
        "it does not lead to the API's /chat/completions (a sign-in page or a proxy?): "
        "check --upstream-url (BRIDGE_UPSTREAM_URL)"
    )


def test_what_a_location_may_hide_credentials_in_is_left_out() -> None:
    _, metadata = _redirect("https://user:secret@gw.example.com/v1/chat/completions?api_key=k#frag")
    assert metadata["location"] == "https://gw.example.com/v1/chat/completions"


@pytest.mark.parametrize("location", [None, "", "http://[::1", "ftp://gw.example.com/x", "r\udce9q"])
def test_a_redirect_without_a_usable_location_still_says_what_to_check(location: str | None) -> None:
    message, metadata = _redirect(location, status=307)
    if location == "r\udce9q":  # relative: resolved against the URL the request went to
        assert metadata["location"] == r"http://gw.example.com/v1/chat/r\xe9q"
        return
    assert message == (
        "upstream answered HTTP 307, a redirect without a usable Location, not followed: "
        "check --upstream-url (BRIDGE_UPSTREAM_URL)"
    )
    assert "location" not in metadata


def test_control_bytes_and_non_ascii_in_a_location_are_escaped() -> None:
    message, metadata = _redirect("https://gw.example.com/\x1b[31m/é/v1/chat/completions")
    assert "\x1b" not in message
    assert metadata["location"] == r"https://gw.example.com/\x1b[31m/\xe9/v1/chat/completions"
