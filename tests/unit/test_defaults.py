"""Defaults users rely on, pinned: changing one must fail a test (and be a decision, written in the docs and
the changelog of the commit), not pass unnoticed. Ports the README's commands use, limits, timeouts, retry
policy, security postures (no TLS unless configured, credentials passed through, the bridge's own key for
authenticated callers only, no proxy from the environment, redirects never followed), the keepalive
policy Go and Java clients need, the trace exporter."""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from bridge.http.transports.aiohttp import AiohttpTransport
from bridge.http.transports.base import TransportSettings
from bridge.http.transports.httpx import HttpxTransport
from bridge.rpc.server import server_options
from bridge.rpc.tracing import tracer_provider_from_env
from bridge.settings import DevSettings, MockGatewaySettings, ServeSettings

SERVE_DEFAULTS = {
    "server": {"listen": "127.0.0.1:50051", "shutdown_grace": 15.0},
    "upstream": {
        "urls": ("https://gw.example.com/v1",),  # required: given
        "connect_timeout": 10.0,
        "read_timeout": 300.0,
        "max_connections": 1024,
        "max_event_bytes": 16 * 1024 * 1024,
        "transport": "aiohttp",
    },
    "auth": {"mode": "passthrough", "api_key": None, "api_key_header": "authorization"},
    # the bridge's key only for callers with an allowed client certificate; no identity header upstream
    "callers": {"api_key_for": "authenticated", "client_allow": (), "identity_header": None},
    "headers": {"reply_metadata": True, "response_headers": ()},
    "limits": {
        "max_concurrent_rpcs": None,
        "max_receive_message_bytes": 64 * 1024 * 1024,
        "max_send_message_bytes": 64 * 1024 * 1024,
        "max_connection_age": None,
        "max_connection_age_grace": None,
    },
    "metrics": {"listen": None, "max_models": 100},  # no metrics port unless asked
    # load reports on: their cost is within the benchmark's noise (docs/PERFORMANCE.md)
    "orca": {"enabled": True, "window": 10.0, "min_interval": 1.0},
    "tls": {"cert": None, "key": None, "client_ca": None},  # plaintext unless configured
    "upstream_tls": {"ca_file": None, "client_cert": None, "client_key": None, "trust_env": False},
    "retry": {"retries": 2, "backoff": 0.2, "max_backoff": 2.0, "streams": False},
    "failover": {"breaker_failures": 5, "breaker_cooldown": 30.0, "hedge_after": 0, "hedge_max_ratio": 0.1},
    "lifecycle": {"workers": 1, "event_loop": "uvloop", "drain_delay": 0.0, "health_listen": None},
    "logging": {"level": "INFO", "format": "json"},
}


def test_serve_defaults() -> None:
    settings = ServeSettings.model_validate({"upstream_url": "https://gw.example.com/v1"})
    assert settings.model_dump() == SERVE_DEFAULTS


def test_mock_gateway_and_dev_defaults() -> None:
    assert MockGatewaySettings.model_validate({}).model_dump() == {
        "mock": {"listen": "127.0.0.1:8080", "require_api_key": None},
        "logging": {"level": "INFO", "format": "text"},
    }
    assert DevSettings.model_validate({}).model_dump() == {
        "servers": {"listen": "127.0.0.1:50051", "mock_listen": "127.0.0.1:8080"},
        "logging": {"level": "INFO", "format": "text"},
    }


def test_server_channel_options() -> None:
    assert dict(server_options()) == {
        "grpc.so_reuseport": 0,  # a port in use is an error, not silently shared
        "grpc.max_receive_message_length": 64 * 1024 * 1024,
        "grpc.max_send_message_length": 64 * 1024 * 1024,
        # Go/Java clients pinging every 10-30 s are not sent GOAWAY too_many_pings
        "grpc.http2.min_recv_ping_interval_without_data_ms": 10_000,
        "grpc.keepalive_permit_without_calls": 1,
        "grpc.http2.max_ping_strikes": 0,
        "grpc.keepalive_time_ms": 60_000,
        "grpc.keepalive_timeout_ms": 20_000,
    }


def _exporters(provider: TracerProvider | None) -> list[type[Any]]:
    assert provider is not None
    processors = provider._active_span_processor._span_processors  # no public accessor
    exporters = [type(processor.span_exporter) for processor in processors]
    provider.shutdown()
    return exporters


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"},
        {"OTEL_TRACES_EXPORTER": "otlp"},
    ],
)
def test_the_trace_exporter_is_otlp_over_grpc_unless_named(environ: dict[str, str]) -> None:
    assert _exporters(tracer_provider_from_env(environ)) == [OTLPSpanExporter]


def test_tracing_is_off_by_default_and_console_only_when_named() -> None:
    assert tracer_provider_from_env({}) is None
    assert _exporters(tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "console"})) == [ConsoleSpanExporter]


async def test_the_transports_follow_no_redirect_and_read_no_environment() -> None:
    transport = HttpxTransport(TransportSettings(name="httpx"))
    client = transport._client
    try:
        assert client.follow_redirects is False
        assert client._trust_env is False
    finally:
        await transport.aclose()
    session = AiohttpTransport(TransportSettings())._new_session()
    assert session.trust_env is False  # redirects: allow_redirects=False on every request (test_http_client)
    await session.close()


async def test_no_transport_keeps_a_cookie() -> None:
    """One caller's cookie must never travel with another's request: every transport drops Set-Cookie."""
    transport = HttpxTransport(TransportSettings(name="httpx"))
    reply = httpx.Response(
        200, headers={"set-cookie": "session=abc"}, request=httpx.Request("GET", "http://gw/")
    )
    transport._client.cookies.extract_cookies(reply)
    assert not transport._client.cookies
    await transport.aclose()
    session = AiohttpTransport(TransportSettings())._new_session()
    assert isinstance(session.cookie_jar, aiohttp.DummyCookieJar)
    await session.close()
