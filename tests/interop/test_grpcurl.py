"""grpcurl against the real bridge: reflection with the proto comments, pasted bodies, `dev`'s own lines."""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
from pathlib import Path

from bridge.chat.service import SERVICE_NAME
from bridge.embeddings.service import SERVICE_NAME as EMBEDDING_SERVICE
from bridge.mock_gateway import MockGateway
from bridge.models.service import SERVICE_NAME as MODEL_SERVICE
from bridge.rpc.call import ORCA_SERVICE
from bridge.rpc.server import GrpcServer
from tests.helpers import cli_env, find_grpcurl, grpcurl, run_cli

GOLDEN = Path(__file__).parents[1] / "golden" / "request_full.json"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"


async def test_reflection_lists_the_services(bridge: GrpcServer) -> None:
    code, out, err = await grpcurl("-plaintext", f"127.0.0.1:{bridge.port}", "list")
    assert code == 0, err
    services = {SERVICE_NAME, MODEL_SERVICE, EMBEDDING_SERVICE, HEALTH, REFLECTION, ORCA_SERVICE}
    assert set(out.split()) == services


async def test_describe_shows_the_load_report_service_and_message(bridge: GrpcServer) -> None:
    """The vendored ORCA protos are reflected like the contract's: grpcurl can open the out-of-band stream."""
    address = f"127.0.0.1:{bridge.port}"
    code, out, err = await grpcurl("-plaintext", address, "describe", ORCA_SERVICE)
    assert code == 0, err
    assert "rpc StreamCoreMetrics ( .xds.service.orca.v3.OrcaLoadReportRequest )" in out
    assert "returns ( stream .xds.data.orca.v3.OrcaLoadReport )" in out
    code, out, err = await grpcurl("-plaintext", address, "describe", "xds.data.orca.v3.OrcaLoadReport")
    assert code == 0, err
    assert "double application_utilization" in out
    assert "map<string, double> named_metrics" in out


async def test_describe_shows_the_model_and_embedding_services(bridge: GrpcServer) -> None:
    address = f"127.0.0.1:{bridge.port}"
    code, out, err = await grpcurl("-plaintext", address, "describe", MODEL_SERVICE)
    assert code == 0, err
    assert "rpc ListModels ( .prisme.llmgateway.v1.ListModelsRequest )" in out
    assert "must be sent as `x-prismeai-api-key`" in out  # what the catalogue's auth means for iak_ keys
    code, out, err = await grpcurl(
        "-plaintext", address, "describe", "prisme.llmgateway.v1.ListModelsRequest"
    )
    assert code == 0, err
    assert "above 100 is capped at 100" in out
    assert "Opaque: pass it back unchanged" in out
    code, out, err = await grpcurl("-plaintext", address, "describe", EMBEDDING_SERVICE)
    assert code == 0, err
    assert "Errors (stable, docs/errors.md)" in out
    assert "INVALID_DIMENSIONS -> INVALID_ARGUMENT, reason" in out
    code, out, err = await grpcurl("-plaintext", address, "describe", "prisme.llmgateway.v1.Embedding")
    assert code == 0, err
    assert "repeated float embedding = 2;" in out
    assert "a base64 answer is decoded exactly" in out


async def test_describe_shows_the_methods(bridge: GrpcServer) -> None:
    code, out, err = await grpcurl("-plaintext", f"127.0.0.1:{bridge.port}", "describe", SERVICE_NAME)
    assert code == 0, err
    assert "rpc CreateChatCompletion" in out
    assert "returns ( stream .prisme.llmgateway.v1.StreamChatCompletionResponse )" in out


async def test_describe_shows_the_proto_comments(bridge: GrpcServer) -> None:
    address = f"127.0.0.1:{bridge.port}"
    code, out, err = await grpcurl("-plaintext", address, "describe", SERVICE_NAME)
    assert code == 0, err
    assert "Chat completions through the Prisme.ai LLM gateway" in out
    assert "Streams the answer" in out
    code, out, err = await grpcurl("-plaintext", address, "describe", "prisme.llmgateway.v1.ChatMessage")
    assert code == 0, err
    assert "Author role" in out
    assert "Typed alternative to `content` for plain text" in out
    # Contract v1: the new fields and the gateway's own meanings are documented where callers look.
    request = "prisme.llmgateway.v1.CreateChatCompletionRequest"
    code, out, err = await grpcurl("-plaintext", address, "describe", request)
    assert code == 0, err
    assert "propagates to agent-to-agent (A2A) flows" in out
    assert "At most 128 characters" in out
    assert "safety_identifier (abuse detection) and prompt_cache_key" in out
    assert '"xhigh"' in out
    assert "map<string, string> metadata = 25;" in out
    message = "prisme.llmgateway.v1.ChatCompletionMessage"
    code, out, err = await grpcurl("-plaintext", address, "describe", message)
    assert code == 0, err
    assert "or `reasoning` (newer vLLM" in out
    assert "repeated .prisme.llmgateway.v1.Annotation annotations = 6;" in out


async def test_golden_request_pastes_into_grpcurl(bridge: GrpcServer, mock_gateway: MockGateway) -> None:
    body = json.loads(GOLDEN.read_text())
    del body["stream_options"]  # only valid on StreamChatCompletion
    code, out, err = await grpcurl(
        "-plaintext",
        "-d",
        json.dumps(body, ensure_ascii=False),
        f"127.0.0.1:{bridge.port}",
        f"{SERVICE_NAME}/CreateChatCompletion",
    )
    assert code == 0, err
    response = json.loads(out)
    assert response["object"] == "chat.completion"
    assert response["choices"][0]["message"]["content"] == "Merci ! Et demain ?"
    # The upstream received exactly the pasted body (plus the stream flag the RPC decides).
    assert mock_gateway.requests()[-1]["body"] == {**body, "stream": False}


async def test_golden_request_streams_through_grpcurl_from_stdin(bridge: GrpcServer) -> None:
    code, out, err = await grpcurl(
        "-plaintext",
        "-d",
        "@",
        f"127.0.0.1:{bridge.port}",
        f"{SERVICE_NAME}/StreamChatCompletion",
        stdin=GOLDEN.read_bytes(),
    )
    assert code == 0, err
    chunks = [json.loads(part) for part in out.replace("}\n{", "}\x00{").split("\x00")]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices")) == (
        "Merci ! Et demain ?"
    )
    assert "usage" in chunks[-1]
    assert "choices" not in chunks[-1]


async def test_dev_prints_grpcurl_lines_that_work() -> None:
    find_grpcurl()  # fail early, and clearly, without grpcurl
    env = cli_env()
    async with run_cli("dev", "--listen", "127.0.0.1:0", "--mock-listen", "127.0.0.1:0", env=env) as dev:
        assert dev.process.stdout is not None
        printed: list[str] = []
        while not printed or printed[-1] != "Ctrl-C stops both.":
            line = await asyncio.wait_for(dev.process.stdout.readline(), 20)
            assert line, "dev exited before printing its commands"
            printed.append(line.decode().strip())
        commands = [line for line in printed if line.startswith("grpcurl ")]
        assert len(commands) == 8

        results = []
        for command in commands:
            argv = shlex.split(command, comments=True)  # drops the trailing "# RESOURCE_EXHAUSTED ..." note
            assert argv[0] == "grpcurl"
            results.append((command, *await grpcurl(*argv[1:])))

        (unary, unary_code, unary_out, _), (stream, stream_code, stream_out, _) = results[:2]
        assert unary_code == 0, unary
        assert '"content": "Hello, bridge!"' in unary_out
        assert stream_code == 0, stream
        assert '"content": "Stream "' in stream_out
        assert '"total_tokens"' in stream_out
        error, error_code, _, error_err = results[2]
        assert error.endswith("# RESOURCE_EXHAUSTED + RetryInfo")
        assert error_code != 0  # grpcurl exits non-zero on a failed RPC: the comment says what to expect
        assert "Code: ResourceExhausted" in error_err
        assert "google.rpc.RetryInfo" in error_err
        describe, describe_code, describe_out, _ = results[3]
        assert describe_code == 0, describe
        assert "rpc StreamChatCompletion" in describe_out
        health, health_code, health_out, _ = results[4]
        assert health_code == 0, health
        assert '"status": "SERVING"' in health_out
        listed, listed_code, listed_out, _ = results[5]
        assert listed_code == 0, listed
        page = json.loads(listed_out)
        assert [m["type"] for m in page["models"]] == ["embeddings"] * 3
        assert page["next_page_token"]
        got, got_code, got_out, _ = results[6]
        assert got_code == 0, got
        assert json.loads(got_out)["model"]["model_id"] == "eu.anthropic.claude-sonnet-4-20250514-v1:0"
        embedded, embedded_code, embedded_out, _ = results[7]
        assert embedded_code == 0, embedded
        data = json.loads(embedded_out)["data"]
        assert [(d.get("index", 0), len(d["embedding"]), d["embedding"][0]) for d in data] == [
            (0, 4, 14),
            (1, 4, 12),
        ]

        assert await dev.stop(signal.SIGINT, within=5) == 0
