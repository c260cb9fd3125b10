"""Addresses and URLs as operators type them: listen addresses (HOST:PORT, :PORT) and the upstream's base
URL (pure; imports nothing of the bridge, so every layer may use it).

The checks raise ValueError with a message that says what was expected; the settings turn it into a
one-line error naming the flag and its environment variable.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "ALL_INTERFACES",
    "ENDPOINT_PATHS",
    "check_listen",
    "check_upstream_url",
    "same_address",
    "shown_url",
    "split_host_port",
]

ALL_INTERFACES: Final = "0.0.0.0"
# The paths the bridge appends to the base URL (its services' upstream endpoints).
ENDPOINT_PATHS: Final = ("/chat/completions", "/embeddings", "/models")
# A DNS name (labels of letters, digits, "-", "_"), or an IPv4 address; IPv6 comes in brackets.
_LABEL: Final = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}"
_HOSTNAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def split_host_port(value: str) -> tuple[str, int]:
    """("host", port) of "HOST:PORT" (IPv6 as "[::1]:50051"); ValueError if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:50051), got {value!r}")
    return host, int(port)


def check_listen(value: str) -> str:
    """A listen address as HOST:PORT; ":PORT" is all interfaces, as in Go and grpc-go listen addresses."""
    if value.startswith(":"):
        value = ALL_INTERFACES + value
    try:
        split_host_port(value)
    except ValueError:
        raise ValueError(
            f"expected HOST:PORT or :PORT for all interfaces (e.g. 127.0.0.1:50051, :50051), got {value!r}"
        ) from None
    return value


def check_upstream_url(value: str) -> str:
    """An http(s) base URL without credentials, query or fragment, not ending in an endpoint the bridge
    appends itself; returned without its trailing slashes."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) base URL like https://host/v1, got {shown_url(value)!r}")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials: use --api-key")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or fragment")
    if any(char.isspace() for char in value):
        raise ValueError(f"must not contain white space, got {shown_url(value)!r}")
    if not _valid_host(parts.hostname, bracketed=parts.netloc.rpartition("@")[2].startswith("[")):
        raise ValueError(f"{parts.hostname!r} is not a host name or IP address")
    try:
        parts.port  # noqa: B018 - urllib checks the port when it is read
    except ValueError:
        raise ValueError(f"has an invalid port, got {shown_url(value)!r}") from None
    base = value.rstrip("/")
    for endpoint in ENDPOINT_PATHS:
        if base.endswith(endpoint):
            # The whole endpoint pasted from the gateway's docs: every call would go to .../chat/completions/
            # chat/completions and fail NOT_FOUND with no hint. Refused, naming the URL meant.
            raise ValueError(
                f"ends in {endpoint}, which the bridge adds itself: use the base URL "
                f"{shown_url(base.removesuffix(endpoint))}"
            )
    return base


def _valid_host(host: str, *, bracketed: bool) -> bool:
    if bracketed:
        try:
            return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
        except ValueError:
            return False
    return _HOSTNAME.fullmatch(host) is not None


def same_address(listen: str, url: str) -> bool:
    """Whether `url` points at the listen address `listen` (a server that would call itself)."""
    host, port = split_host_port(listen)
    parts = urlsplit(url)
    url_port = parts.port or (443 if parts.scheme == "https" else 80)
    same_host = host.strip("[]") == parts.hostname or (
        host in (ALL_INTERFACES, "[::]") and parts.hostname in ("localhost", "127.0.0.1", "::1")
    )
    return port != 0 and port == url_port and same_host


def shown_url(value: str) -> str:
    """`value` fit for an error message: no userinfo, query or fragment (they may hold secrets)."""
    parts = urlsplit(value)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else host + parts.path
