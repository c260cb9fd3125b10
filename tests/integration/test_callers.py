"""Who may call, against the real bridge and the real mock gateway (issue 26): the bridge's own key only for
callers it authenticated unless the operator opens it to anyone, the mTLS allow-list of certificate
identities (minted here with URI and DNS SANs), rotation of the client CA under the allow-list, the
caller's identity in the access line, the trace and the metrics, and the identity header upstream."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bridge.chat.service import SERVICE_NAME
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.gen.prisme.llmgateway.v1 import embedding_pb2, model_pb2
from bridge.gen.prisme.llmgateway.v1 import embedding_service_pb2_grpc as embedding_grpc
from bridge.gen.prisme.llmgateway.v1 import model_service_pb2_grpc as model_grpc
from bridge.mock_gateway import MockGateway
from bridge.rpc.server import GrpcServer
from tests.conftest import BridgeFactory
from tests.helpers import (
    CertificateAuthority,
    call_failing,
    chat_request,
    cli_env,
    collect,
    free_port,
    rpc_error,
    run_cli,
    status_details,
    tls_channel,
    tls_secret_volume,
)

BRIDGE_KEY = "K3y-of-the-bridge-26c0de"  # shaped like nothing bridge.redaction knows: absent, not redacted
CALLER_TOKEN = "Bearer caller-own-token-5a1e"
BILLING = "spiffe://cluster.local/ns/billing/sa/billing-api"
TEAM_A = "spiffe://cluster.local/ns/team-a/sa/*"
REPORTS = "reports.internal.example"
ALLOW = ",".join((BILLING, TEAM_A, REPORTS))


# -------------------------------------------------------------------------------------------- helpers


@asynccontextmanager
async def _plaintext(bridge: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        yield channel


async def _every_upstream_rpc(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()
) -> list[Any]:
    """Each service's RPCs that call the upstream, once: their replies, or the errors they ended with."""
    chat = pb_grpc.ChatCompletionServiceStub(channel)
    outcomes: list[Any] = []
    for call in (
        lambda: chat.CreateChatCompletion(chat_request(), metadata=metadata, timeout=10),
        lambda: collect(chat.StreamChatCompletion(chat_request(), metadata=metadata, timeout=10)),
        lambda: model_grpc.ModelServiceStub(channel).ListModels(
            model_pb2.ListModelsRequest(), metadata=metadata, timeout=10
        ),
        lambda: embedding_grpc.EmbeddingServiceStub(channel).CreateEmbedding(
            embedding_pb2.CreateEmbeddingRequest(model="text-embedding-mock", input=["hi"]),
            metadata=metadata,
            timeout=10,
        ),
    ):
        try:
            outcomes.append(await call())
        except grpc.aio.AioRpcError as error:
            outcomes.append(error)
    return outcomes


def _reason(error: grpc.aio.AioRpcError) -> str:
    info = status_details(error)["ErrorInfo"]
    assert info.domain == "grpc-bridge.prisme.ai"
    return str(info.reason)


def _nothing_secret(error: grpc.aio.AioRpcError) -> None:
    sent = f"{error.details()} {error.debug_error_string()} {error.trailing_metadata()!r}"
    assert BRIDGE_KEY not in sent


@pytest.fixture
async def mtls_bridge(
    start_bridge: BridgeFactory,
    server_ca: CertificateAuthority,
    client_ca: CertificateAuthority,
    tmp_path: Path,
) -> Any:
    """Starts a bridge with TLS from `server_ca`, client certificates from `client_ca`, and `settings`."""

    async def start(**settings: Any) -> GrpcServer:
        cert, key = server_ca.write(tmp_path, "server")
        client_cas = client_ca.write_pem(tmp_path / "clients.pem")
        bridge: GrpcServer = await start_bridge(
            tls_cert=cert, tls_key=key, tls_client_ca=client_cas, **settings
        )
        return bridge

    return start


def _client(ca: CertificateAuthority, *uris: str, names: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    return ca.issue("a caller", client=True, uris=uris, names=names)


# ------------------------------------------------------------------------------- the key, by default


async def test_an_anonymous_caller_is_refused_the_key_before_anything_reaches_the_upstream(
    start_bridge: BridgeFactory, mock_gateway: MockGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.access")
    bridge = await start_bridge(api_key=BRIDGE_KEY)  # plaintext: no caller is authenticated
    async with _plaintext(bridge) as channel:
        outcomes = await _every_upstream_rpc(channel)
        # refused before the request is even checked: an anonymous caller learns nothing more
        error, _ = await call_failing(
            pb_grpc.ChatCompletionServiceStub(channel), "unary", chat_request(model="")
        )
        outcomes.append(error)
    assert mock_gateway.requests() == []  # the key never left the bridge
    for error in outcomes:
        assert isinstance(error, grpc.aio.AioRpcError), error
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _reason(error) == "CALLER_CREDENTIALS_REQUIRED"
        # what to send instead
        assert "'authorization: Bearer <token or iak_ key>'" in (error.details() or "")
        assert "x-prismeai-api-key" in (error.details() or "")
        _nothing_secret(error)
    lines = [record for record in caplog.records if record.name == "bridge.access"]
    assert len(lines) == len(outcomes)
    for record in lines:
        fields = record.fields  # type: ignore[attr-defined]
        assert (fields["code"], fields["caller"], fields["reason"]) == (
            "UNAUTHENTICATED",
            "anonymous",
            "CALLER_CREDENTIALS_REQUIRED",
        )


async def test_a_caller_with_its_own_credentials_is_served_with_them(
    start_bridge: BridgeFactory, mock_gateway: MockGateway
) -> None:
    bridge = await start_bridge(api_key=BRIDGE_KEY)
    async with _plaintext(bridge) as channel:
        outcomes = await _every_upstream_rpc(channel, (("authorization", CALLER_TOKEN),))
    assert not [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)], outcomes
    sent = mock_gateway.requests()
    assert len(sent) == 4
    assert {record["headers"]["authorization"] for record in sent} == {CALLER_TOKEN}


async def test_anyone_is_an_explicit_opt_in_that_gives_anonymous_callers_the_key(
    start_bridge: BridgeFactory, mock_gateway: MockGateway
) -> None:
    bridge = await start_bridge(api_key=BRIDGE_KEY, api_key_for="anyone")
    async with _plaintext(bridge) as channel:
        outcomes = await _every_upstream_rpc(channel)
    assert not [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)], outcomes
    assert {record["headers"]["authorization"] for record in mock_gateway.requests()} == {
        f"Bearer {BRIDGE_KEY}"
    }


async def test_without_a_key_a_callers_missing_credentials_stay_missing(
    start_bridge: BridgeFactory, mock_gateway: MockGateway
) -> None:
    # No key to protect: an upstream that needs no credentials (vLLM without --api-key) is served as before.
    bridge = await start_bridge()
    async with _plaintext(bridge) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        assert (await stub.CreateChatCompletion(chat_request(), timeout=10)).choices
    assert "authorization" not in mock_gateway.requests()[-1]["headers"]


# --------------------------------------------------------------------------------- the mTLS allow-list


@pytest.mark.parametrize(
    ("uris", "names", "identity"),
    [
        ((BILLING,), (), BILLING),
        (("spiffe://cluster.local/ns/team-a/sa/reports",), (), "spiffe://cluster.local/ns/team-a/sa/reports"),
        ((), ("REPORTS.internal.example", "localhost"), "REPORTS.internal.example"),
        # several SANs: the one an entry names is the identity
        (("spiffe://cluster.local/ns/other/sa/x", BILLING), ("localhost",), BILLING),
    ],
    ids=["spiffe-exact", "spiffe-prefix", "dns", "several-sans"],
)
async def test_an_allowed_identity_is_served_with_the_bridges_key_and_named_in_the_access_line(
    mtls_bridge: Any,
    mock_gateway: MockGateway,
    server_ca: CertificateAuthority,
    client_ca: CertificateAuthority,
    caplog: pytest.LogCaptureFixture,
    uris: tuple[str, ...],
    names: tuple[str, ...],
    identity: str,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.access")
    bridge = await mtls_bridge(api_key=BRIDGE_KEY, tls_client_allow=ALLOW)
    async with tls_channel(
        f"localhost:{bridge.port}", server_ca, _client(client_ca, *uris, names=names)
    ) as channel:
        outcomes = await _every_upstream_rpc(channel)
    assert not [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)], outcomes
    assert {record["headers"]["authorization"] for record in mock_gateway.requests()} == {
        f"Bearer {BRIDGE_KEY}"
    }
    callers = {record.fields["caller"] for record in caplog.records if record.name == "bridge.access"}  # type: ignore[attr-defined]
    assert callers == {identity}


@pytest.mark.parametrize(
    ("uris", "names", "presented"),
    [
        (
            ("spiffe://cluster.local/ns/team-b/sa/billing-api",),
            (),
            "spiffe://cluster.local/ns/team-b/sa/billing-api",
        ),
        # an exact entry is not a prefix
        ((BILLING + "-2",), (), BILLING + "-2"),
        # a prefix entry ends with "/*": team-ab is not team-a
        (("spiffe://cluster.local/ns/team-ab/sa/x",), (), "spiffe://cluster.local/ns/team-ab/sa/x"),
        # a DNS SAN spelled like an allowed URI is still a DNS name
        ((), ("billing.cluster.local",), "billing.cluster.local"),
        ((), (), "with subject 'CN=a caller'"),
    ],
    ids=["other-namespace", "exact-is-not-prefix", "prefix-lookalike", "dns-not-listed", "no-san"],
)
async def test_a_certificate_the_allow_list_does_not_name_is_refused_naming_its_identity(
    mtls_bridge: Any,
    mock_gateway: MockGateway,
    server_ca: CertificateAuthority,
    client_ca: CertificateAuthority,
    uris: tuple[str, ...],
    names: tuple[str, ...],
    presented: str,
) -> None:
    bridge = await mtls_bridge(api_key=BRIDGE_KEY, tls_client_allow=ALLOW)
    address = f"localhost:{bridge.port}"
    async with tls_channel(address, server_ca, _client(client_ca, *uris, names=names)) as channel:
        # even with credentials of its own: the allow-list says who may call at all
        outcomes = await _every_upstream_rpc(channel, (("authorization", CALLER_TOKEN),))
        health = health_pb2_grpc.HealthStub(channel)  # probes and health stay open
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert mock_gateway.requests() == []
    for error in outcomes:
        assert isinstance(error, grpc.aio.AioRpcError), error
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        info = status_details(error)["ErrorInfo"]
        assert (info.reason, info.metadata["callerIdentity"]) == ("CALLER_NOT_ALLOWED", presented)
        assert presented in (error.details() or "")
        assert "--tls-client-allow" in (error.details() or "")


async def test_mtls_without_an_allow_list_lets_every_certificate_of_the_ca_in(
    mtls_bridge: Any,
    mock_gateway: MockGateway,
    server_ca: CertificateAuthority,
    client_ca: CertificateAuthority,
) -> None:
    bridge = await mtls_bridge(api_key=BRIDGE_KEY)
    client = _client(client_ca, "spiffe://cluster.local/ns/anything/sa/x")
    async with tls_channel(f"localhost:{bridge.port}", server_ca, client) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        assert (await stub.CreateChatCompletion(chat_request(), timeout=10)).choices
    assert mock_gateway.requests()[-1]["headers"]["authorization"] == f"Bearer {BRIDGE_KEY}"


async def test_fixed_mode_uses_the_key_for_allowed_identities_only(
    mtls_bridge: Any,
    mock_gateway: MockGateway,
    server_ca: CertificateAuthority,
    client_ca: CertificateAuthority,
) -> None:
    bridge = await mtls_bridge(api_key=BRIDGE_KEY, auth_mode="fixed", tls_client_allow=BILLING)
    address = f"localhost:{bridge.port}"
    metadata = (("authorization", CALLER_TOKEN),)  # never forwarded in fixed mode
    async with tls_channel(address, server_ca, _client(client_ca, BILLING)) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        assert (await stub.CreateChatCompletion(chat_request(), metadata=metadata, timeout=10)).choices
    assert mock_gateway.requests()[-1]["headers"]["authorization"] == f"Bearer {BRIDGE_KEY}"
    async with tls_channel(address, server_ca, _client(client_ca, TEAM_A.replace("*", "x"))) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        error = await rpc_error(stub.CreateChatCompletion(chat_request(), metadata=metadata, timeout=10))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(mock_gateway.requests()) == 1


async def test_the_allow_list_holds_across_a_client_ca_rotation(
    start_bridge: BridgeFactory,
    server_ca: CertificateAuthority,
    client_ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    volume, files = tls_secret_volume(tmp_path, server_ca, client_ca)
    bridge = await start_bridge(**files, tls_client_allow=BILLING, api_key=BRIDGE_KEY)
    address = f"localhost:{bridge.port}"
    async with tls_channel(address, server_ca, _client(client_ca, BILLING)) as channel:
        assert await pb_grpc.ChatCompletionServiceStub(channel).CreateChatCompletion(
            chat_request(), timeout=10
        )

    new_ca = CertificateAuthority("client CA 2")
    cert, key = server_ca.issue("server")
    volume.write({"tls.crt": cert, "tls.key": key, "ca.crt": new_ca.pem})
    async with tls_channel(address, server_ca, _client(new_ca, BILLING)) as channel:
        assert await pb_grpc.ChatCompletionServiceStub(channel).CreateChatCompletion(
            chat_request(), timeout=10
        )
    async with tls_channel(
        address, server_ca, _client(new_ca, "spiffe://cluster.local/ns/x/sa/y")
    ) as channel:
        error = await rpc_error(
            pb_grpc.ChatCompletionServiceStub(channel).CreateChatCompletion(chat_request())
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    async with tls_channel(address, server_ca, _client(client_ca, BILLING)) as channel:  # the old CA's
        error = await rpc_error(
            pb_grpc.ChatCompletionServiceStub(channel).CreateChatCompletion(chat_request())
        )
        assert error.code() == grpc.StatusCode.UNAVAILABLE  # refused at the handshake


# ------------------------------------------------------------------ the identity: upstream, trace, metrics


async def test_the_identity_header_is_the_bridges_never_the_callers(
    mtls_bridge: Any,
    start_bridge: BridgeFactory,
    mock_gateway: MockGateway,
    server_ca: CertificateAuthority,
    client_ca: CertificateAuthority,
) -> None:
    forged = (("x-caller-id", "spiffe://cluster.local/ns/billing/sa/forged"), ("authorization", CALLER_TOKEN))
    bridge = await mtls_bridge(tls_client_allow=ALLOW, caller_identity_header="x-caller-id")
    async with tls_channel(f"localhost:{bridge.port}", server_ca, _client(client_ca, BILLING)) as channel:
        await _every_upstream_rpc(channel, forged)
    anonymous = await start_bridge(caller_identity_header="X-Caller-Id")
    async with _plaintext(anonymous) as channel:
        await _every_upstream_rpc(channel, forged)
    sent = mock_gateway.requests()
    assert len(sent) == 8
    assert [record["headers"]["x-caller-id"] for record in sent] == [BILLING] * 4 + ["anonymous"] * 4


async def test_the_identity_is_on_the_server_span_and_in_bounded_metrics(
    mtls_bridge: Any, server_ca: CertificateAuthority, client_ca: CertificateAuthority
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    port = free_port()
    bridge = await mtls_bridge(
        tls_client_allow=ALLOW,
        api_key=BRIDGE_KEY,
        tracer_provider=provider,
        metrics_registry=CollectorRegistry(),
        metrics_listen=f"127.0.0.1:{port}",
    )
    address = f"localhost:{bridge.port}"
    async with tls_channel(address, server_ca, _client(client_ca, BILLING)) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        await stub.CreateChatCompletion(chat_request(text="one two three"), timeout=10)
        usage = pb.StreamOptions(include_usage=True)
        await collect(stub.StreamChatCompletion(chat_request(text="a b", stream_options=usage), timeout=10))
    async with tls_channel(
        address, server_ca, _client(client_ca, "spiffe://cluster.local/ns/x/sa/y")
    ) as channel:
        await call_failing(pb_grpc.ChatCompletionServiceStub(channel), "unary", chat_request())

    servers = [span for span in exporter.get_finished_spans() if span.kind == SpanKind.SERVER]
    assert sorted(str((span.attributes or {}).get("enduser.id")) for span in servers) == [
        "anonymous",  # the refused one: its identity is not one that may call
        BILLING,
        BILLING,
    ]
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(name: str, **labels: str) -> float:
        return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())

    calls = "prisme_bridge_caller_calls_total"
    assert value(calls, caller=BILLING, grpc_code="OK") == 2
    assert value(calls, caller="anonymous", grpc_code="PermissionDenied") == 1
    assert value("prisme_bridge_llm_tokens_total", caller=BILLING, type="prompt") == 3 + 2
    assert value("prisme_bridge_llm_cost_total", caller=BILLING) > 0
    assert "spiffe://cluster.local/ns/x/sa/y" not in text  # refused identities take no label


# ------------------------------------------------------------------------------------------ start-up


async def test_start_up_warns_in_one_line_when_anyone_may_use_the_key_off_loopback(
    mock_gateway: MockGateway,
) -> None:
    env = cli_env(
        BRIDGE_UPSTREAM_URL=mock_gateway.base_url, BRIDGE_API_KEY=BRIDGE_KEY, BRIDGE_SHUTDOWN_GRACE="1"
    )
    async with run_cli("serve", "--listen", "0.0.0.0:0", "--api-key-for", "anyone", env=env) as bridge:
        port = (await bridge.wait_log(r"bridge listening on 0\.0\.0\.0:(\d+)")).group(1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ChatCompletionServiceStub(channel)
            assert (await stub.CreateChatCompletion(chat_request(), timeout=10)).choices
        assert await bridge.stop(signal.SIGTERM, within=1 + 5) == 0
        logs = await bridge.logs()
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    warned = [r for r in records if r["level"] == "WARNING" and "--api-key-for anyone" in r["message"]]
    assert len(warned) == 1, logs
    assert "0.0.0.0:0" in warned[0]["message"]
    [listening] = [r["message"] for r in records if r["message"].startswith("bridge listening on")]
    assert listening.endswith(
        "(plaintext), upstream "
        + mock_gateway.base_url
        + " (/chat/completions, /models, /embeddings), its own key for anyone"
    )
    assert mock_gateway.requests()[-1]["headers"]["authorization"] == f"Bearer {BRIDGE_KEY}"
    assert BRIDGE_KEY not in logs
