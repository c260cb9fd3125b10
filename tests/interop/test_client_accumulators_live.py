"""The three client accumulators (Go, Java, Python) on a live stream: each folds StreamChatCompletion from
the real bridge in front of the mock gateway into the message CreateChatCompletion returns for the same
request, and the three folded messages are identical (ignoring what differs per call: id, created,
usage.duration_ms).

Go and Java run their `prisme-chat` commands (`-stream -accumulate -json`); Python uses the
prisme-llmgateway-client package installed in the project's venv. A missing toolchain fails.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Protocol

import pytest
from google.protobuf import json_format, struct_pb2
from prisme.llmgateway.client import AsyncChatClient
from prisme.llmgateway.v1 import chat_completion_pb2 as client_pb

pytestmark = pytest.mark.interop


class _Bridge(Protocol):
    """The conftest's `bridge` fixture (a started bridge in front of the mock gateway): only its port."""

    port: int


ROOT = Path(__file__).resolve().parents[2]
JAR = ROOT / "clients" / "java" / "target" / "prisme-chat.jar"
PROMPT = "What is the weather in Paris?"


def _which(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found: CI installs it (scripts/bootstrap)")
    return path


@pytest.fixture(scope="module")
def go_chat(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """prisme-chat built from the current source (the Go build cache makes this quick)."""
    binary = tmp_path_factory.mktemp("go") / "prisme-chat"
    subprocess.run(
        [_which("go"), "build", "-o", str(binary), "./cmd/prisme-chat"], cwd=ROOT / "clients/go", check=True
    )
    return [str(binary)]


@pytest.fixture(scope="module")
def java_chat() -> list[str]:
    """The runnable jar `mvn package` writes (scripts/check builds it before pytest)."""
    if not JAR.is_file():
        subprocess.run([_which("mvn"), "-B", "-q", "package", "-DskipTests"], cwd=JAR.parents[1], check=True)
    return [_which("java"), "-jar", str(JAR)]


def _comparable(reply: dict[str, Any]) -> dict[str, Any]:
    reply = {k: v for k, v in reply.items() if k not in ("id", "created")}
    reply["usage"] = {k: v for k, v in reply.get("usage", {}).items() if k != "duration_ms"}
    return reply


async def _chat_json(
    argv: list[str], dash: str, address: str, model: str, *stream_flags: str
) -> dict[str, Any]:
    flags = [f"{dash}addr", address, f"{dash}model", model, f"{dash}prompt", PROMPT, f"{dash}json"]
    flags += [dash + flag for flag in stream_flags]
    # Asynchronous: the bridge under test serves from this event loop.
    process = await asyncio.create_subprocess_exec(
        *argv, *flags, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, f"{argv} {flags}: {err.decode()}"
    lines = out.decode().splitlines()
    assert len(lines) == 1, lines  # one message, folded or unary
    result: dict[str, Any] = json.loads(lines[0])
    return result


async def _python_replies(address: str, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    message = client_pb.ChatMessage(role="user", content=struct_pb2.Value(string_value=PROMPT))
    request = client_pb.CreateChatCompletionRequest(model=model, messages=[message])
    async with AsyncChatClient.connect(address, tls=False, timeout=60) as chat:
        unary = await chat.complete(request)
        request.stream_options.include_usage = True
        folded = await chat.stream(request).accumulate()
    as_dict = json_format.MessageToDict
    return as_dict(unary, preserving_proto_field_name=True), as_dict(folded, preserving_proto_field_name=True)


@pytest.mark.parametrize("model", ["tools", "tools-custom", "echo"])
async def test_accumulators_fold_a_live_stream_into_the_unary_reply(
    bridge: _Bridge, go_chat: list[str], java_chat: list[str], model: str
) -> None:
    address = f"127.0.0.1:{bridge.port}"
    replies: dict[str, dict[str, Any]] = {}
    for name, argv, dash in (("go", go_chat, "-"), ("java", java_chat, "--")):
        replies[f"{name} unary"] = await _chat_json(argv, dash, address, model)
        replies[f"{name} stream"] = await _chat_json(
            argv, dash, address, model, "stream", "accumulate", "include-usage"
        )
    replies["python unary"], replies["python stream"] = await _python_replies(address, model)

    for name, reply in replies.items():  # the per-call fields are there before they are set aside
        assert reply["id"], name
        assert reply["usage"]["total_tokens"] > 0, name
    expected = _comparable(replies["python unary"])
    assert {name: _comparable(reply) for name, reply in replies.items()} == dict.fromkeys(replies, expected)

    message = expected["choices"][0]["message"]
    if model == "tools":
        assert "content" not in message  # null in the unary reply, never set by the stream
        call = message["tool_calls"][0]
        assert (call["id"], call["function"]["name"]) == ("call_mock_1", "get_weather")
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    elif model == "tools-custom":
        assert "content" not in message
        [call] = message["tool_calls"]
        assert set(call) == {"id", "type", "custom"}  # no function object on a custom call
        assert (call["id"], call["type"]) == ("call_mock_custom_1", "custom")
        assert call["custom"]["name"] == "apply_patch"
        lines = call["custom"]["input"].splitlines()
        assert (lines[0], lines[-1], len(lines)) == ("*** Begin Patch", "*** End Patch", 4)
    else:
        assert message["content"] == PROMPT
