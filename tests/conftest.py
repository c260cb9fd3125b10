"""Shared fixtures: a clean environment; the real mock gateway and the real bridge, on loopback, per test.

Suites: `unit/` (pure code, no sockets but the loopback server of the real transports' client tests),
`integration/` (the bridge against the mock gateway over loopback), `interop/` (real grpcurl, Go and Java
clients; marker `interop`). `pytest -m "not interop"` is the fast loop; CI runs everything. `release/`
checks built release artifacts: it is collected only with `--release-dir` (scripts/release-artifacts builds
them and runs it).

Options: `--upstream-transport NAME` makes every bridge a test starts use that transport unless the test
names one (modules that run on every transport say so with `upstream_transport = every_transport()`);
`--event-loop uvloop` runs every test, and so every in-process bridge, on uvloop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest

from bridge.app import build_bridge
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.http.transports.base import TRANSPORT_NAMES
from bridge.mock_gateway import MockGateway, start_mock_gateway
from bridge.rpc.server import GrpcServer
from bridge.settings import ServeSettings
from tests.helpers import CertificateAuthority

BridgeFactory = Callable[..., Any]
_SUITE_MARKERS = {"interop": pytest.mark.interop}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--upstream-transport",
        choices=TRANSPORT_NAMES,
        default=None,
        help="the upstream transport of every bridge a test starts, unless the test names one",
    )
    parser.addoption(
        "--event-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop every test (and every in-process bridge) runs on",
    )
    parser.addoption(
        "--release-dir",
        type=Path,
        default=None,
        help="the artifacts scripts/release-artifacts built: runs tests/release against them",
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/release needs built artifacts: skipped from collection unless --release-dir names them."""
    if collection_path == Path(__file__).parent / "release" and config.getoption("--release-dir") is None:
        return True
    return None


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if config.getoption("--event-loop") == "uvloop":
        import uvloop

        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/interop/ carries the `interop` marker."""
    here = Path(__file__).parent
    for item in items:
        suite = Path(item.path).relative_to(here).parts[0] if Path(item.path).is_relative_to(here) else ""
        if suite in _SUITE_MARKERS:
            item.add_marker(_SUITE_MARKERS[suite])


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BRIDGE_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def mock_gateway() -> AsyncIterator[MockGateway]:
    gateway = await start_mock_gateway("127.0.0.1", 0)
    try:
        yield gateway
    finally:
        await gateway.close()


@pytest.fixture
def upstream_transport(request: pytest.FixtureRequest) -> str | None:
    """The transport bridges get unless a test names one: --upstream-transport's (None: the default)."""
    value: str | None = request.config.getoption("--upstream-transport")
    return value


@pytest.fixture
async def start_bridge(
    mock_gateway: MockGateway, upstream_transport: str | None
) -> AsyncIterator[BridgeFactory]:
    """Starts bridges in front of the mock gateway; flat settings override the defaults (port 0; the
    `upstream_transport` fixture's transport); parts (`upstream=`, `services=`, `interceptors=`,
    `credentials=`, `metrics_registry=`, `tracer_provider=`) go to build_bridge."""
    started: list[GrpcServer] = []
    part_names = (
        "upstream",
        "services",
        "interceptors",
        "credentials",
        "metrics_registry",
        "tracer_provider",
    )

    async def start(**overrides: Any) -> GrpcServer:
        parts = {name: overrides.pop(name) for name in part_names if name in overrides}
        values: dict[str, Any] = {"listen": "127.0.0.1:0", "upstream_url": mock_gateway.base_url}
        if upstream_transport is not None:
            values["upstream_transport"] = upstream_transport
        values.update(overrides)
        server = await build_bridge(ServeSettings.model_validate(values), **parts)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(grace=0)


@pytest.fixture
async def bridge(start_bridge: BridgeFactory) -> GrpcServer:
    server: GrpcServer = await start_bridge()
    return server


@pytest.fixture
async def channel(bridge: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.ChatCompletionServiceStub:
    return pb_grpc.ChatCompletionServiceStub(channel)


@pytest.fixture
def server_ca() -> CertificateAuthority:
    """A private CA for the listener's certificate (TLS tests)."""
    return CertificateAuthority("server CA")


@pytest.fixture
def client_ca() -> CertificateAuthority:
    """A private CA for client certificates (mTLS tests)."""
    return CertificateAuthority("client CA")
