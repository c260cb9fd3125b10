"""`prisme-bridge dev`: the mock gateway and a bridge in front of it, in one process, with calls to try."""

from __future__ import annotations

import logging
import shlex

from bridge.address import split_host_port
from bridge.app import StopSignals, build_bridge
from bridge.chat.service import SERVICE_NAME
from bridge.embeddings.service import SERVICE_NAME as EMBEDDING_SERVICE
from bridge.mock_gateway import MockGateway, start_mock_gateway
from bridge.models.service import SERVICE_NAME as MODEL_SERVICE
from bridge.rpc.server import unbindable
from bridge.settings import DevSettings, ServeSettings

__all__ = ["run_dev", "try_commands"]

log = logging.getLogger(__name__)


def try_commands(address: str) -> list[str]:
    """grpcurl command lines that work against a bridge at `address` in front of the mock gateway."""
    unary = '{"model": "echo", "messages": [{"role": "user", "content": "Hello, bridge!"}]}'
    stream = (
        '{"model": "echo", "messages": [{"role": "user", "content": "Stream these words back"}], '
        '"stream_options": {"include_usage": true}}'
    )
    error = '{"model": "error-429", "messages": [{"role": "user", "content": "hi"}]}'
    health = f'{{"service": "{SERVICE_NAME}"}}'
    models = '{"page_size": 3, "type": "embeddings"}'
    model = '{"model_id": "eu.anthropic.claude-sonnet-4-20250514-v1:0"}'
    embed = '{"model": "text-embedding-mock", "input": ["Hello, bridge!", "Embed me too"], "dimensions": 4}'

    def call(body: str, method: str) -> str:
        return f"grpcurl -plaintext -d {shlex.quote(body)} {address} {method}"

    return [
        call(unary, f"{SERVICE_NAME}/CreateChatCompletion"),
        call(stream, f"{SERVICE_NAME}/StreamChatCompletion"),
        call(error, f"{SERVICE_NAME}/CreateChatCompletion") + "   # RESOURCE_EXHAUSTED + RetryInfo",
        f"grpcurl -plaintext {address} describe {SERVICE_NAME}",
        call(health, "grpc.health.v1.Health/Check"),
        call(models, f"{MODEL_SERVICE}/ListModels"),
        call(model, f"{MODEL_SERVICE}/GetModel"),
        call(embed, f"{EMBEDDING_SERVICE}/CreateEmbedding"),
    ]


async def start_mock(host: str, port: int, *, require_api_key: str | None = None) -> MockGateway:
    """The mock gateway on host:port; an address it cannot listen on is one clear OSError."""
    problem = unbindable(host, port)
    if problem is None:
        try:
            return await start_mock_gateway(host, port, require_api_key=require_api_key)
        except OSError as exc:
            problem = exc.strerror or str(exc)
    raise OSError(f"cannot listen on {host}:{port} (--mock-listen / BRIDGE_MOCK_LISTEN): {problem}")


async def run_dev(settings: DevSettings) -> None:
    """Runs mock gateway + bridge until SIGINT/SIGTERM."""
    mock_host, mock_port = split_host_port(settings.servers.mock_listen)
    async with StopSignals() as signals:
        mock = await start_mock(mock_host, mock_port)
        try:
            serve = ServeSettings.model_validate(
                {
                    "listen": settings.servers.listen,
                    "upstream_url": mock.base_url,
                    # The mock takes any key: who may use the bridge's is no question here.
                    "api_key_for": "anyone",
                    "log_level": settings.logging.level,
                    "log_format": settings.logging.format,
                }
            )
            bridge = await build_bridge(serve)
            await bridge.start()
            host, _ = split_host_port(settings.servers.listen)
            print(_banner(mock, f"{host}:{bridge.port}"), flush=True)
            await signals.wait()
            await bridge.stop(grace=1.0)
        finally:
            await mock.close()


def _banner(mock: MockGateway, address: str) -> str:
    return "\n".join(
        [
            f"mock gateway: {mock.base_url}  (models: `prisme-bridge mock-gateway --list-models`)",
            f"bridge:       {address}  (upstream {mock.base_url}: /chat/completions, /models, /embeddings)",
            "",
            "Try:",
            *(f"  {command}" for command in try_commands(address)),
            "",
            "Ctrl-C stops both.",
        ]
    )
