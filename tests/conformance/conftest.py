"""Conformance fixtures: the mock gateway (in process) as the provider of a pinned LiteLLM proxy, and the
bridge in front of LiteLLM, started once per session. Every test here carries the `conformance` marker and
runs in the session's event loop (the in-process mock serves LiteLLM from that loop).

A missing or broken LiteLLM install fails every test that needs it, with the command that fixes it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from pytest_asyncio import is_async_test

from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway, start_mock_gateway
from tests.conformance import servers

HERE = Path(__file__).parent
_setup_seconds: dict[str, float] = {}
_versions: dict[str, str] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    session_loop = pytest.mark.asyncio(loop_scope="session")
    # The first test also starts LiteLLM (its readiness wait alone may take 90 s on a loaded machine).
    setup_timeout = pytest.mark.timeout(240)
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.conformance)
            item.add_marker(setup_timeout)
            if is_async_test(item):
                item.add_marker(session_loop, append=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _setup_seconds:
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in _setup_seconds.items())
        versions = " ".join(f"{name} {version}" for name, version in _versions.items())
        terminalreporter.write_line(f"conformance setup ({versions}): {parts}")


class _Timer:
    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        _setup_seconds[self.name] = time.monotonic() - self.started


@pytest.fixture(scope="session")
def litellm_venv() -> Path:
    """The pinned LiteLLM's venv, checked: a missing or broken one fails the test, saying how to fix it."""
    with _Timer("LiteLLM env check"):
        venv = servers.litellm_venv()
        try:
            version = servers.check_litellm_venv(venv)
        except servers.LiteLLMEnvError as error:
            pytest.fail(str(error), pytrace=False)
    _versions["LiteLLM"] = version
    return venv


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def provider() -> AsyncIterator[MockGateway]:
    """The mock gateway as LiteLLM's OpenAI provider; it wants LiteLLM's provider key."""
    gateway = await start_mock_gateway("127.0.0.1", 0, require_api_key=servers.PROVIDER_KEY)
    yield gateway
    await gateway.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def litellm(
    litellm_venv: Path, provider: MockGateway, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[servers.Server]:
    workdir = tmp_path_factory.mktemp("litellm")
    with _Timer("LiteLLM start"):
        try:
            server = await servers.start_litellm(litellm_venv, provider.url, workdir)
        except RuntimeError as error:
            pytest.fail(str(error), pytrace=False)
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def bridge(
    litellm: servers.Server, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[servers.Server]:
    """The bridge in front of LiteLLM, in passthrough mode: each call brings its key as metadata."""
    with _Timer("bridge start"):
        try:
            server = await servers.start_bridge(f"{litellm.url}/v1", tmp_path_factory.mktemp("bridge"))
        except RuntimeError as error:
            pytest.fail(str(error), pytrace=False)
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stub(bridge: servers.Server) -> AsyncIterator[pb_grpc.ChatCompletionServiceStub]:
    async with grpc.aio.insecure_channel(bridge.url) as channel:
        yield pb_grpc.ChatCompletionServiceStub(channel)
