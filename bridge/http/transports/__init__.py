"""The upstream transports: the `Transport` seam and what they share (`base`), one module per HTTP library
(`aiohttp`, the default; `httpx`), and an in-memory one for unit tests (`mock`). `build_transport` makes
the one `--upstream-transport` names; the implementations import only `base`, never this module."""

from __future__ import annotations

from typing import assert_never

from bridge.http.transports.aiohttp import AiohttpTransport
from bridge.http.transports.base import Transport, TransportSettings
from bridge.http.transports.httpx import HttpxTransport

__all__ = ["build_transport"]


def build_transport(settings: TransportSettings) -> Transport:
    """The transport `settings.name` names."""
    match settings.name:
        case "aiohttp":
            return AiohttpTransport(settings)
        case "httpx":
            return HttpxTransport(settings)
        case name:  # mypy checks that every TransportName has its case
            assert_never(name)
