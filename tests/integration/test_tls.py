"""TLS on both sides, with certificates the tests make: the gRPC listener (TLS, mTLS, certificates rotated
the way the kubelet rotates a Secret volume, the plaintext health port beside it) and the upstream (a
private CA, a client certificate, proxies only when asked)."""

from __future__ import annotations

import datetime
import logging
import ssl
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.app import build_bridge
from bridge.chat.service import SERVICE_NAME
from bridge.cli import main
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import start_mock_gateway
from bridge.settings import ServeSettings
from tests.conftest import BridgeFactory
from tests.helpers import (
    TRANSPORTS,
    CertificateAuthority,
    SecretVolume,
    chat_request,
    status_details,
    tls_channel,
    tls_secret_volume,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _chat(channel: grpc.aio.Channel, text: str = "over TLS") -> str:
    stub = pb_grpc.ChatCompletionServiceStub(channel)
    response = await stub.CreateChatCompletion(chat_request(text=text), timeout=10)
    return str(response.choices[0].message.content)


async def _refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _chat(channel)
    return raised.value.code()


# --------------------------------------------------------------------------------------- the listener


async def test_tls_listener_serves_clients_that_trust_its_ca_and_no_plaintext(
    start_bridge: BridgeFactory, server_ca: CertificateAuthority, tmp_path: Path
) -> None:
    cert, key = server_ca.write(tmp_path, "server")
    bridge = await start_bridge(tls_cert=cert, tls_key=key)
    address = f"localhost:{bridge.port}"
    async with tls_channel(address, server_ca) as channel:
        assert await _chat(channel) == "over TLS"
    async with tls_channel(address, CertificateAuthority("another CA")) as channel:
        assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.insecure_channel(address) as channel:
        assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_accepts_a_client_certificate_and_refuses_calls_without_one(
    start_bridge: BridgeFactory,
    server_ca: CertificateAuthority,
    client_ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    cert, key = server_ca.write(tmp_path, "server")
    bridge = await start_bridge(
        tls_cert=cert, tls_key=key, tls_client_ca=client_ca.write_pem(tmp_path / "clients.pem")
    )
    address = f"localhost:{bridge.port}"
    async with tls_channel(address, server_ca, client_ca.issue("go-service", client=True)) as channel:
        assert await _chat(channel, "with a client certificate") == "with a client certificate"
    async with tls_channel(address, server_ca) as channel:
        assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE
    stranger = CertificateAuthority("stranger CA").issue("intruder", client=True)
    async with tls_channel(address, server_ca, stranger) as channel:
        assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE


async def test_rotated_certificates_are_picked_up_by_new_connections(
    start_bridge: BridgeFactory,
    server_ca: CertificateAuthority,
    client_ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    # A rotation that changes both CAs shows which files a handshake used: only clients that trust the
    # new server CA, with a certificate from the new client CA, get in afterwards.
    volume, files = tls_secret_volume(tmp_path, server_ca, client_ca, "server v1")
    bridge = await start_bridge(**files)
    address = f"localhost:{bridge.port}"
    old_client = client_ca.issue("client v1", client=True)
    async with tls_channel(address, server_ca, old_client) as before:
        assert await _chat(before, "before") == "before"

        new_server_ca = CertificateAuthority("server CA 2")
        new_client_ca = CertificateAuthority("client CA 2")
        cert, key = new_server_ca.issue("server v2")
        volume.write({"tls.crt": cert, "tls.key": key, "ca.crt": new_client_ca.pem})

        new_client = new_client_ca.issue("client v2", client=True)
        async with tls_channel(address, new_server_ca, new_client) as channel:
            assert await _chat(channel, "after") == "after"
        async with tls_channel(address, server_ca, old_client) as channel:
            assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE
        async with tls_channel(address, new_server_ca, old_client) as channel:
            assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE
        # a connection made before the rotation keeps its session
        assert await _chat(before, "still open") == "still open"


async def test_unusable_new_files_keep_the_current_certificate(
    start_bridge: BridgeFactory,
    server_ca: CertificateAuthority,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    volume = SecretVolume(tmp_path)
    volume.write(dict(zip(("tls.crt", "tls.key"), server_ca.issue("server v1"), strict=True)))
    bridge = await start_bridge(tls_cert=volume.path("tls.crt"), tls_key=volume.path("tls.key"))
    address = f"localhost:{bridge.port}"

    new_ca = CertificateAuthority("server CA 2")
    cert, _ = new_ca.issue("server v2")
    _, wrong_key = new_ca.issue("another server")
    with caplog.at_level(logging.WARNING, logger="bridge.rpc.tls"):
        volume.write({"tls.crt": cert, "tls.key": wrong_key})
        async with tls_channel(address, server_ca) as channel:
            assert await _chat(channel) == "over TLS"
    assert any("cannot be used" in record.getMessage() for record in caplog.records), caplog.text

    volume.write(dict(zip(("tls.crt", "tls.key"), new_ca.issue("server v3"), strict=True)))
    async with tls_channel(address, new_ca) as channel:
        assert await _chat(channel) == "over TLS"


async def test_unusable_files_at_start_are_an_error_naming_them(
    server_ca: CertificateAuthority, tmp_path: Path
) -> None:
    cert, _ = server_ca.write(tmp_path, "server")
    _, other_key = server_ca.write(tmp_path, "other")
    settings = ServeSettings(upstream_url="http://127.0.0.1:9/v1", tls_cert=cert, tls_key=other_key)
    with pytest.raises(OSError, match=r"server\.crt") as raised:
        await build_bridge(settings)
    assert "other.key" in str(raised.value)


async def test_health_port_answers_plaintext_probes_beside_a_tls_listener(
    start_bridge: BridgeFactory, server_ca: CertificateAuthority, tmp_path: Path
) -> None:
    cert, key = server_ca.write(tmp_path, "server")
    bridge = await start_bridge(tls_cert=cert, tls_key=key, health_listen="127.0.0.1:0")
    assert bridge.health_port not in (None, bridge.port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.health_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == SERVING, service
        # only health: the chat service (and reflection) stay behind TLS
        assert await _refused(channel) == grpc.StatusCode.UNIMPLEMENTED

        await bridge.begin_drain()
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        assert reply.status == NOT_SERVING
    async with tls_channel(f"localhost:{bridge.port}", server_ca) as channel:
        assert await _chat(channel, "still served while draining") == "still served while draining"


# --------------------------------------------------------------------------------------- the upstream


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_upstream_over_tls_with_a_private_ca(
    start_bridge: BridgeFactory, server_ca: CertificateAuthority, tmp_path: Path, transport: str
) -> None:
    cert, key = server_ca.write(tmp_path, "gateway")
    context = ssl_server_context(cert, key)
    async with await start_mock_gateway("127.0.0.1", 0, ssl_context=context) as gateway:
        trusting = await start_bridge(
            upstream_url=gateway.base_url,
            upstream_transport=transport,
            upstream_ca_file=server_ca.write_pem(tmp_path / "ca.pem"),
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{trusting.port}") as channel:
            assert await _chat(channel, "private CA") == "private CA"

        # certifi's public CAs only
        untrusting = await start_bridge(upstream_url=gateway.base_url, upstream_transport=transport)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{untrusting.port}") as channel:
            stub = pb_grpc.ChatCompletionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.CreateChatCompletion(chat_request(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "certificate" in (raised.value.details() or "").lower()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_upstream_mtls_with_a_client_certificate(
    start_bridge: BridgeFactory,
    server_ca: CertificateAuthority,
    client_ca: CertificateAuthority,
    tmp_path: Path,
    transport: str,
) -> None:
    cert, key = server_ca.write(tmp_path, "gateway")
    context = ssl_server_context(cert, key, client_ca=client_ca.write_pem(tmp_path / "clients.pem"))
    client_cert, client_key = client_ca.write(tmp_path, "bridge", client=True)
    ca_file = server_ca.write_pem(tmp_path / "ca.pem")
    async with await start_mock_gateway("127.0.0.1", 0, ssl_context=context) as gateway:
        bridge = await start_bridge(
            upstream_url=gateway.base_url,
            upstream_transport=transport,
            upstream_ca_file=ca_file,
            upstream_client_cert=client_cert,
            upstream_client_key=client_key,
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
            assert await _chat(channel, "with a client certificate") == "with a client certificate"

        anonymous = await start_bridge(
            upstream_url=gateway.base_url, upstream_transport=transport, upstream_ca_file=ca_file
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{anonymous.port}") as channel:
            assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE


DAY = datetime.timedelta(days=1)
# How each certificate the upstream can present fails verification, and the cause the bridge names.
TLS_FAILURES = {
    "expired": ({"valid": (-2 * DAY, -DAY)}, "certificate has expired"),
    "not-yet-valid": ({"valid": (DAY, 2 * DAY)}, "certificate is not yet valid"),
    "hostname-mismatch": (
        {"names": ("gateway.example.com",)},
        "hostname mismatch, certificate is not valid for 'localhost'",
    ),
    "unknown-issuer": ({"issuer": "another CA"}, "unknown issuer (unable to get local issuer certificate)"),
    "self-signed": ({"self_signed": True}, "self-signed certificate"),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("failure", list(TLS_FAILURES))
async def test_upstream_certificate_failures_name_their_cause(
    start_bridge: BridgeFactory, server_ca: CertificateAuthority, tmp_path: Path, transport: str, failure: str
) -> None:
    issue, cause = dict(TLS_FAILURES[failure][0]), TLS_FAILURES[failure][1]
    issuer = CertificateAuthority(issue.pop("issuer")) if "issuer" in issue else server_ca
    cert, key = issuer.write(tmp_path, "gateway", **issue)
    async with await start_mock_gateway("127.0.0.1", 0, ssl_context=ssl_server_context(cert, key)) as gateway:
        url = gateway.base_url.replace("127.0.0.1", "localhost")  # the name the bridge checks
        bridge = await start_bridge(
            upstream_url=url,
            upstream_transport=transport,
            upstream_ca_file=server_ca.write_pem(tmp_path / "ca.pem"),
            retries=0,
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
            stub = pb_grpc.ChatCompletionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.CreateChatCompletion(chat_request(), timeout=10)
    error = raised.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    expected = f"TLS certificate verification failed: {cause}"
    # "could not connect to upstream" or "TLS error with upstream", as each transport's exception says
    assert error.details().endswith(f" upstream (localhost:{gateway.port}): {expected}")
    info = status_details(error)["ErrorInfo"]
    assert (info.reason, info.metadata["cause"]) == ("UPSTREAM_UNREACHABLE", expected)


def ssl_server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_proxy_variables_are_used_only_when_asked(
    start_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    # The mock gateway also answers absolute-form requests, so it can stand in for a forward proxy in
    # front of a host that does not resolve.
    async with await start_mock_gateway("127.0.0.1", 0) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "bypassed.invalid")
        upstream = "http://gateway.invalid/v1"
        proxied = await start_bridge(
            upstream_url=upstream, upstream_transport=transport, upstream_trust_env=True
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{proxied.port}") as channel:
            assert await _chat(channel, "via the proxy") == "via the proxy"
        assert proxy.requests()[-1]["headers"]["host"] == "gateway.invalid"

        for settings in (
            {"upstream_url": upstream},  # environment ignored by default
            {"upstream_url": "http://bypassed.invalid/v1", "upstream_trust_env": True},  # NO_PROXY
        ):
            direct = await start_bridge(upstream_transport=transport, **settings)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{direct.port}") as channel:
                assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE
        assert len(proxy.requests()) == 1


def test_serve_with_unusable_tls_files_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], server_ca: CertificateAuthority, tmp_path: Path
) -> None:
    cert, _ = server_ca.write(tmp_path, "server")
    _, other_key = server_ca.write(tmp_path, "other")
    argv = ["serve", "--upstream-url", "http://127.0.0.1:9/v1", "--listen", "127.0.0.1:0"]
    assert main([*argv, "--tls-cert", str(cert), "--tls-key", str(other_key)]) == 1
    err = capsys.readouterr().err
    [line] = [text for text in err.splitlines() if text.strip()]
    assert line.startswith("prisme-bridge serve: error: ")
    assert str(cert) in line
    assert "Traceback" not in err
