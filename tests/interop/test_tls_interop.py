"""Interop over TLS: grpcurl (grpc-go's TLS stack) calls the bridge with mTLS and is refused without its
client certificate, and with a certificate whose SPIFFE ID the allow-list does not name; the plaintext
health port answers grpc-health-probe as it answers Kubernetes' native probes, and serves nothing else (no
reflection, no chat)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from bridge.chat.service import SERVICE_NAME
from bridge.mock_gateway import MockGateway
from tests.conftest import BridgeFactory
from tests.helpers import CertificateAuthority, find_tool, grpcurl

BODY = '{"model": "echo", "messages": [{"role": "user", "content": "through mTLS"}]}'


async def test_grpcurl_over_mtls_and_the_plaintext_health_port(
    start_bridge: BridgeFactory, tmp_path: Path
) -> None:
    server_ca, client_ca = CertificateAuthority("server CA"), CertificateAuthority("client CA")
    bridge = await _mtls_bridge(start_bridge, tmp_path, server_ca, client_ca, health_listen="127.0.0.1:0")
    address = f"localhost:{bridge.port}"
    trust = ["-cacert", str(server_ca.write_pem(tmp_path / "ca.pem"))]
    client_cert, client_key = client_ca.write(tmp_path, "client", client=True)
    identity = ["-cert", str(client_cert), "-key", str(client_key)]

    unary = f"{SERVICE_NAME}/CreateChatCompletion"
    code, out, err = await grpcurl(*trust, *identity, "-d", BODY, address, unary)
    assert code == 0, err
    assert json.loads(out)["choices"][0]["message"]["content"] == "through mTLS"

    code, _, err = await grpcurl(*trust, "-d", BODY, address, unary)
    assert code != 0, "a call without a client certificate was served"
    code, _, err = await grpcurl("-plaintext", "-d", BODY, address, unary)
    assert code != 0, "a plaintext call was served"

    # grpc-health-probe checks as the kubelet's native gRPC probe does: plaintext, one service
    health = f"127.0.0.1:{bridge.health_port}"
    for service in ("", SERVICE_NAME):
        code, out, err = await _run(find_tool("grpc-health-probe"), f"-addr={health}", f"-service={service}")
        assert code == 0, err
        assert "SERVING" in out + err
    code, _, err = await grpcurl("-plaintext", health, "list")
    assert code != 0  # health only: no reflection there
    assert "reflection" in err


async def test_grpcurl_with_an_allowed_spiffe_id_uses_the_key_and_another_is_refused_by_name(
    start_bridge: BridgeFactory, mock_gateway: MockGateway, tmp_path: Path
) -> None:
    allowed, other = "spiffe://cluster.local/ns/billing/sa/billing-api", "spiffe://cluster.local/ns/x/sa/y"
    server_ca, client_ca = CertificateAuthority("server CA"), CertificateAuthority("client CA")
    bridge = await _mtls_bridge(
        start_bridge, tmp_path, server_ca, client_ca, tls_client_allow=allowed, api_key="bridge-key-interop"
    )
    address = f"localhost:{bridge.port}"
    trust = ["-cacert", str(server_ca.write_pem(tmp_path / "ca.pem"))]

    def identity(name: str, uri: str) -> list[str]:
        client_cert, client_key = client_ca.write(tmp_path, name, client=True, uris=(uri,))
        return ["-cert", str(client_cert), "-key", str(client_key)]

    unary = f"{SERVICE_NAME}/CreateChatCompletion"
    code, out, err = await grpcurl(*trust, *identity("billing", allowed), "-d", BODY, address, unary)
    assert code == 0, err
    assert json.loads(out)["choices"][0]["message"]["content"] == "through mTLS"
    assert mock_gateway.requests()[-1]["headers"]["authorization"] == "Bearer bridge-key-interop"

    code, _, err = await grpcurl(*trust, *identity("other", other), "-d", BODY, address, unary)
    assert code != 0
    assert "PermissionDenied" in err
    assert f"client certificate {other}, localhost may not call this bridge" in err  # its URI and DNS SANs
    code, _, err = await grpcurl(*trust, *identity("other", other), address, "list")  # reflection too
    assert code != 0
    assert len(mock_gateway.requests()) == 1


async def _mtls_bridge(
    start_bridge: BridgeFactory,
    directory: Path,
    server_ca: CertificateAuthority,
    client_ca: CertificateAuthority,
    **settings: str,
) -> Any:
    cert, key = server_ca.write(directory, "server")
    clients = client_ca.write_pem(directory / "clients.pem")
    return await start_bridge(tls_cert=cert, tls_key=key, tls_client_ca=clients, **settings)


async def _run(*argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, out.decode(), err.decode()
