"""`prisme-bridge dev`: the mock gateway and a bridge in front of it, in one process, with calls to try."""

from __future__ import annotations

import logging
import shlex

from bridge.app import build_bridge, wait_for_signal
from bridge.chat.service import SERVICE_NAME
from bridge.embeddings.service import SERVICE_NAME as EMBEDDING_SERVICE
from bridge.mock_gateway import start_mock_gateway
from bridge.models.service import SERVICE_NAME as MODEL_SERVICE
from bridge.settings import DevSettings, ServeSettings, split_host_port

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


async def run_dev(settings: DevSettings) -> None:
    """Runs mock gateway + bridge until SIGINT/SIGTERM."""
    mock_host, mock_port = split_host_port(settings.servers.mock_listen)
    mock = await start_mock_gateway(mock_host, mock_port)
    try:
        serve = ServeSettings.model_validate(
            {"listen": settings.servers.listen, "upstream_url": mock.base_url, "logging": settings.logging}
        )
        bridge = await build_bridge(serve)
        await bridge.start()
        host, _ = split_host_port(settings.servers.listen)
        address = f"{host}:{bridge.port}"
        lines = [
            f"mock gateway: {mock.base_url}  (models: see `pydoc bridge.mock_gateway`)",
            f"bridge:       {address}  (upstream {mock.base_url}: /chat/completions, /models, /embeddings)",
            "",
            "Try:",
            *(f"  {command}" for command in try_commands(address)),
            "",
            "Ctrl-C stops both.",
        ]
        print("\n".join(lines), flush=True)
        await wait_for_signal()
        await bridge.stop(grace=1.0)
    finally:
        await mock.close()
