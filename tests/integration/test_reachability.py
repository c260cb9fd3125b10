"""At start, the bridge resolves and connects to its upstream once, in the background (issue 20): one
WARNING line naming the host and the cause when it cannot, one INFO line when it can; the bridge serves
and stays ready either way (readiness is about the bridge: docs/operations.md)."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.app import check_reachability
from bridge.chat.service import SERVICE_NAME
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway, start_mock_gateway
from bridge.settings import ServeSettings
from tests.helpers import CertificateAuthority, call_failing, chat_request, cli_env, free_port, run_cli
from tests.integration.test_tls import ssl_server_context

_LISTENING = r'"bridge listening on 127\.0\.0\.1:(\d+)'
_CHECKED = r'"logger":"bridge\.http\.reachability"'


def _checks(logs: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    return [entry for entry in entries if entry["logger"] == "bridge.http.reachability"]


async def _check(caplog: pytest.LogCaptureFixture, **settings: Any) -> logging.LogRecord:
    caplog.set_level(logging.INFO, logger="bridge.http.reachability")
    await check_reachability(ServeSettings(**settings))
    [record] = [r for r in caplog.records if r.name == "bridge.http.reachability"]
    return record


async def test_an_unresolvable_host_is_one_warning_naming_it(caplog) -> None:
    record = await _check(caplog, upstream_url="https://no-such-host.invalid/v1")
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        "upstream no-such-host.invalid:443 not reachable at start: name resolution failed;"
    )


async def test_a_refused_connection_is_one_warning_naming_it(caplog) -> None:
    port = free_port()
    record = await _check(caplog, upstream_url=f"http://127.0.0.1:{port}/v1")
    assert record.levelno == logging.WARNING
    assert f"upstream 127.0.0.1:{port} not reachable at start: connection refused;" in record.getMessage()


async def test_with_several_upstreams_an_unreachable_one_says_calls_move_on(caplog, mock_gateway) -> None:
    caplog.set_level(logging.INFO, logger="bridge.http.reachability")
    port = free_port()
    await check_reachability(
        ServeSettings(upstream_url=f"http://127.0.0.1:{port}/v1,{mock_gateway.base_url}")
    )
    refused, reached = [r for r in caplog.records if r.name == "bridge.http.reachability"]
    assert refused.levelno == logging.WARNING
    assert (
        f"upstream 127.0.0.1:{port} not reachable at start: connection refused; calls move on to the other "
        in (refused.getMessage())
    )
    assert reached.levelno == logging.INFO


async def test_an_untrusted_certificate_says_why_and_a_trusted_one_is_verified(
    caplog, tmp_path: Path
) -> None:
    authority = CertificateAuthority("private CA")
    cert, key = authority.write(tmp_path, "gateway")
    async with await start_mock_gateway("127.0.0.1", 0, ssl_context=ssl_server_context(cert, key)) as gateway:
        gateway_port = urlsplit(gateway.base_url).port
        untrusted = await _check(caplog, upstream_url=gateway.base_url)
        caplog.clear()
        trusted = await _check(
            caplog, upstream_url=gateway.base_url, upstream_ca_file=authority.write_pem(tmp_path / "ca.pem")
        )
        assert gateway.requests() == []  # a connection and a handshake, no request
    assert untrusted.levelno == logging.WARNING
    assert f"upstream 127.0.0.1:{gateway_port} not reachable at start: " in untrusted.getMessage()
    assert "local issuer certificate" in untrusted.getMessage()  # what Python's ssl said, not just "TLS"
    assert trusted.levelno == logging.INFO
    assert ", TLS verified" in trusted.getMessage()


async def test_an_unreachable_upstream_neither_stops_the_bridge_nor_its_readiness() -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL="http://no-such-host.invalid/v1", BRIDGE_SHUTDOWN_GRACE="1")
    async with run_cli("serve", "--listen", "127.0.0.1:0", env=env) as bridge:
        port = (await bridge.wait_log(_LISTENING)).group(1)
        await bridge.wait_log(_CHECKED)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            ready = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
            assert ready.status == health_pb2.HealthCheckResponse.SERVING
            stub = pb_grpc.ChatCompletionServiceStub(channel)
            error, _ = await call_failing(stub, "unary", chat_request(), timeout=10)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert await bridge.stop(signal.SIGTERM, within=1 + 5) == 0
        logs = await bridge.logs()
    [check] = _checks(logs)
    assert check["level"] == "WARNING"
    assert "no-such-host.invalid:80" in check["message"]
    assert "name resolution failed" in check["message"]


async def test_a_pod_of_workers_checks_once(mock_gateway: MockGateway) -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url, BRIDGE_SHUTDOWN_GRACE="1")
    async with run_cli("serve", "--listen", "127.0.0.1:0", "--workers", "2", env=env) as bridge:
        await bridge.wait_log(r"2 workers serving")
        await bridge.wait_log(_CHECKED)
        assert await bridge.stop(signal.SIGTERM, within=1 + 10) == 0
        logs = await bridge.logs()
    [check] = _checks(logs)
    assert check["level"] == "INFO"
    assert check["message"].startswith(f"upstream 127.0.0.1:{urlsplit(mock_gateway.base_url).port} reachable")
    assert mock_gateway.requests() == []
