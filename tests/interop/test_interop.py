"""Interop: the real Go and Java clients and grpcurl against the real bridge and mock gateway.

The client binaries are built once per session if `scripts/check` has not built them already. A missing
toolchain fails these tests: CI installs Go, Java and Maven, and nothing here is skipped.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.mock_gateway import MockGateway
from bridge.rpc.server import GrpcServer

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"
JAR = ROOT / "clients" / "java" / "target" / "prisme-chat.jar"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def _tool(name: str) -> str:
    """Path of a command-line tool: .tools/bin (scripts/bootstrap), PATH, then Go's bin directory."""
    for candidate in (TOOLS / name, shutil.which(name), Path.home() / "go" / "bin" / name):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail(f"{name} not found: run scripts/bootstrap (CI installs it)")


@pytest.fixture(scope="session")
def go_client() -> list[str]:
    binary = TOOLS / "prisme-chat"
    if not binary.is_file():
        TOOLS.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [_tool("go"), "build", "-o", str(binary), "./cmd/prisme-chat"],
            cwd=ROOT / "clients/go",
            check=True,
        )
    return [str(binary)]


@pytest.fixture(scope="session")
def java_client() -> list[str]:
    if not JAR.is_file():
        subprocess.run(
            [_tool("mvn"), "-B", "-q", "package", "-DskipTests"], cwd=ROOT / "clients/java", check=True
        )
    return [_tool("java"), "-jar", str(JAR)]


async def _run(*argv: str, limit_s: float = 60) -> Result:
    # Asynchronous on purpose: the bridge under test serves from this same event loop.
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), limit_s)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


def _address(bridge: GrpcServer) -> str:
    return f"127.0.0.1:{bridge.port}"


CLIENTS = ["go", "java"]


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> list[str]:
    """The Go client or the Java one; the two share flags and output (clients/README.md)."""
    argv: list[str] = request.getfixturevalue(f"{request.param}_client")
    return argv


def _flags(client: list[str], **flags: str | bool) -> list[str]:
    """Flags in the client's spelling: Go `-flag`, Java `--flag`."""
    dash = "--" if client[0].endswith("java") else "-"
    argv: list[str] = []
    for name, value in flags.items():
        flag = dash + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False:
            argv += [flag, str(value)]
    return argv


async def test_unary(client: list[str], bridge: GrpcServer) -> None:
    result = await _run(
        *client, *_flags(client, addr=_address(bridge), model="echo", prompt="Hello from a client")
    )
    assert result.code == 0, result.stderr
    assert result.stdout == "Hello from a client\n"


async def test_stream_with_usage(client: list[str], bridge: GrpcServer) -> None:
    argv = _flags(
        client,
        addr=_address(bridge),
        model="echo-crlf",
        prompt="one two three four five",
        stream=True,
        include_usage=True,
    )
    result = await _run(*client, *argv)
    assert result.code == 0, result.stderr
    assert result.stdout == "one two three four five\n"
    assert re.search(r"usage: prompt_tokens=\d+ completion_tokens=5 total_tokens=\d+", result.stderr)


async def test_stream_json_is_chunk_for_chunk(client: list[str], bridge: GrpcServer) -> None:
    argv = _flags(client, addr=_address(bridge), model="tools", prompt="weather?", stream=True, json=True)
    result = await _run(*client, *argv)
    assert result.code == 0, result.stderr
    chunks = [json.loads(line) for line in result.stdout.splitlines()]
    fragments = [c["choices"][0]["delta"].get("tool_calls", [{}])[0] for c in chunks if c["choices"]]
    arguments = "".join(f.get("function", {}).get("arguments", "") for f in fragments)
    assert json.loads(arguments) == {"city": "Paris", "unit": "celsius"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_error_details(client: list[str], bridge: GrpcServer) -> None:
    result = await _run(*client, *_flags(client, addr=_address(bridge), model="error-429", prompt="hi"))
    assert result.code == 1
    lines = result.stderr.splitlines()
    assert lines[-1] == "grpc-status: RESOURCE_EXHAUSTED"
    assert "retry_info: retry_delay=7s" in lines
    assert any(
        line.startswith("error_info: reason=UPSTREAM_RATE_LIMITED domain=grpc-bridge.prisme.ai")
        and "httpStatus=429" in line
        for line in lines
    )


async def test_api_key_and_metadata_reach_upstream(
    client: list[str], bridge: GrpcServer, mock_gateway: MockGateway
) -> None:
    argv = _flags(
        client,
        addr=_address(bridge),
        model="echo",
        prompt="hi",
        api_key="iak_acme_1234",
        metadata="x-correlation-id=corr-42",
    )
    result = await _run(*client, *argv, "-v")  # the one flag both spell alike
    assert result.code == 0, result.stderr
    headers = mock_gateway.requests()[-1]["headers"]
    assert headers["authorization"] == "Bearer iak_acme_1234"
    assert headers["x-correlation-id"] == "corr-42"
    assert "header x-correlation-id: corr-42" in result.stderr  # echoed back as initial metadata


async def test_models_lists_every_page(
    client: list[str], bridge: GrpcServer, mock_gateway: MockGateway
) -> None:
    argv = _flags(client, addr=_address(bridge), page_size="40")
    result = await _run(*client, "models", *argv)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(set(lines)) == 250  # the mock's whole catalogue, one line per model
    assert "eu.anthropic.claude-sonnet-4-20250514-v1:0\tcompletion" in lines
    assert [r["query"]["page"] for r in mock_gateway.requests()] == [str(n) for n in range(7)]


async def test_models_filters_and_json(
    client: list[str], bridge: GrpcServer, mock_gateway: MockGateway
) -> None:
    argv = _flags(
        client, addr=_address(bridge), type="embeddings", visible_only=True, tags="embeddings", json=True
    )
    result = await _run(*client, "models", *argv)
    assert result.code == 0, result.stderr
    (page,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert [m["model_id"] for m in page["models"]] == [
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-mock",
        "governed/text-embedding-3-small",
    ]
    assert mock_gateway.requests()[-1]["query"] == {
        "type": "embeddings",
        "tags": "embeddings",
        "visible_only": "true",
        "limit": "100",
        "page": "0",
    }


async def test_models_filter_an_openai_list_cannot_answer(
    client: list[str], start_bridge, mock_gateway: MockGateway
) -> None:
    bridge = await start_bridge(upstream_url=mock_gateway.openai_base_url)
    result = await _run(*client, "models", *_flags(client, addr=_address(bridge), type="embeddings"))
    assert result.code == 1
    lines = result.stderr.splitlines()
    assert lines[-1] == "grpc-status: FAILED_PRECONDITION"
    assert any(
        line.startswith("error_info: reason=UPSTREAM_FILTER_UNSUPPORTED domain=grpc-bridge.prisme.ai")
        for line in lines
    )
    assert any(
        line.startswith("precondition_failure: type=FILTER_NOT_SUPPORTED subject=type description=")
        for line in lines
    )


async def test_embed(client: list[str], bridge: GrpcServer, mock_gateway: MockGateway) -> None:
    texts = ["Hello", "embeddings from Go and Java", "!"]
    inputs = [arg for text in texts for arg in (_flags(client, input=text))]
    argv = _flags(client, addr=_address(bridge), model="text-embedding-3-small", dimensions="256")
    result = await _run(*client, "embed", *argv, *inputs)
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == [f"embedding {i}: 256 dimensions" for i in range(3)]
    assert result.stderr == "usage: prompt_tokens=7 total_tokens=7\n"  # words of the texts
    assert mock_gateway.requests()[-1]["body"]["input"] == texts
    as_json = await _run(
        *client, "embed", *argv, *inputs, *_flags(client, json=True, encoding_format="base64")
    )
    assert as_json.code == 0, as_json.stderr
    data = json.loads(as_json.stdout)["data"]
    assert [d["embedding"][0] for d in data] == [len(t) for t in texts]  # one per input, in order


async def test_embed_refusal(client: list[str], bridge: GrpcServer) -> None:
    argv = _flags(
        client, addr=_address(bridge), model="governed/text-embedding-3-small", dimensions="4", input="x"
    )
    result = await _run(*client, "embed", *argv)
    assert result.code == 1
    lines = result.stderr.splitlines()
    assert lines[-1] == "grpc-status: INVALID_ARGUMENT"
    assert any(
        line.startswith("error_info: reason=UPSTREAM_INVALID_REQUEST domain=grpc-bridge.prisme.ai")
        and "upstreamCode=INVALID_DIMENSIONS" in line
        for line in lines
    )
    assert any(line.startswith("bad_request: field=dimensions") for line in lines)


def _readme_grpcurl_lines(readme: str = "README.md") -> list[str]:
    text = (ROOT / readme).read_text()
    return [line for line in text.splitlines() if line.startswith("grpcurl ")]


def _chat_reply(out: str) -> None:
    assert "Hello, bridge!" in out or "Stream " in out
    # Output keys are the upstream's own snake_case JSON keys (reflection serves no json_name).
    assert '"finish_reason": "stop"' in out


def _model_page(out: str) -> None:
    page = json.loads(out)
    assert [m["type"] for m in page["models"]] == ["embeddings"] * 3
    assert page["next_page_token"]
    assert page["total_size"] > 3


def _one_model(out: str) -> None:
    assert json.loads(out)["model"]["model_id"] == "bedrock/anthropic.claude-3-haiku"


def _embeddings(out: str) -> None:
    data = json.loads(out)["data"]
    # The mock's vectors start with the text's length: one per input, in order.
    assert [(len(d["embedding"]), d["embedding"][0]) for d in data] == [(8, 14), (8, 12)]


README_CHECKS = {
    "ChatCompletionService/CreateChatCompletion": _chat_reply,
    "ChatCompletionService/StreamChatCompletion": _chat_reply,
    "ModelService/ListModels": _model_page,
    "ModelService/GetModel": _one_model,
    "EmbeddingService/CreateEmbedding": _embeddings,
}


async def _check_grpcurl_lines(bridge: GrpcServer, lines: list[str], methods: list[str]) -> None:
    for line, method in zip(lines, methods, strict=True):
        argv = shlex.split(line.replace("127.0.0.1:50051", _address(bridge)))
        result = await _run(_tool(argv[0]), *argv[1:])
        assert result.code == 0, f"{line}\n{result.stderr}"
        README_CHECKS[method](result.stdout)


async def test_readme_grpcurl_calls_work_as_printed(bridge: GrpcServer) -> None:
    lines = _readme_grpcurl_lines()
    methods = [line.rsplit("prisme.llmgateway.v1.", 1)[-1] for line in lines]
    assert methods == list(README_CHECKS), "README's grpcurl examples changed: update README_CHECKS"
    await _check_grpcurl_lines(bridge, lines, methods)


async def test_clients_readme_grpcurl_calls_work_as_printed(bridge: GrpcServer) -> None:
    lines = _readme_grpcurl_lines("clients/README.md")
    methods = [line.rsplit("prisme.llmgateway.v1.", 1)[-1] for line in lines]
    assert methods == ["ModelService/ListModels", "EmbeddingService/CreateEmbedding"]
    await _check_grpcurl_lines(bridge, lines, methods)


async def test_dev_printed_grpcurl_lines_work(bridge: GrpcServer) -> None:
    from bridge.dev import try_commands

    for line in try_commands(_address(bridge)):
        argv = shlex.split(line.split("   #")[0])
        result = await _run(_tool(argv[0]), *argv[1:])
        expected_failure = "error-429" in line
        assert (result.code != 0) == expected_failure, f"{line}\n{result.stderr}"
        if expected_failure:
            assert "ResourceExhausted" in result.stderr


async def test_grpc_health_probe(bridge: GrpcServer) -> None:
    probe = _tool("grpc-health-probe")
    services = ("ChatCompletionService", "ModelService", "EmbeddingService")
    for service in ("", *(f"prisme.llmgateway.v1.{name}" for name in services)):
        result = await _run(probe, f"-addr={_address(bridge)}", f"-service={service}")
        assert result.code == 0, result.stderr
        assert "SERVING" in result.stdout + result.stderr
