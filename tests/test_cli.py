"""`prisme-bridge` command line: settings errors in one line, --help, and the three commands run as real
subprocesses (serve with env vars and SIGTERM, mock-gateway, dev with its printed grpcurl lines)."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.cli import main
from bridge.config import DevSettings, MockGatewaySettings, ServeSettings
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from bridge.service import SERVICE_NAME
from tests.conftest import chat_request
from tests.test_integration_ops import find_grpcurl, grpcurl

SECRET = "Sup3r-secret-bridge-key-0042"


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors and --help
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------------- settings errors


def test_serve_without_upstream_url(capsys, monkeypatch) -> None:
    monkeypatch.setenv("BRIDGE_API_KEY", SECRET)
    code, out, err = _run_main(["serve"], capsys)
    assert code == 2
    line = _one_line_error(err)
    assert line.startswith("prisme-bridge serve: error: ")
    assert "--upstream-url" in line
    assert "BRIDGE_UPSTREAM_URL" in line
    assert SECRET not in out + err


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["serve", "--listen", "nonsense"], {}, ("--listen", "BRIDGE_LISTEN", "nonsense")),
        (["serve", "--connect-timeout", "-1"], {}, ("--connect-timeout", "BRIDGE_CONNECT_TIMEOUT", "-1")),
        (["serve"], {"BRIDGE_AUTH_MODE": "bogus"}, ("--auth-mode", "BRIDGE_AUTH_MODE", "bogus")),
        (["serve", "--upstream-url", "ftp://host/v1"], {}, ("--upstream-url", "BRIDGE_UPSTREAM_URL", "http")),
        (["serve", "--max-connections", "0"], {}, ("--max-connections", "BRIDGE_MAX_CONNECTIONS")),
        (["serve"], {"BRIDGE_API_KEY_HEADER": "x-api-key"}, ("--api-key-header", "BRIDGE_API_KEY_HEADER")),
        (["mock-gateway", "--listen", "host:port"], {}, ("--listen", "BRIDGE_LISTEN")),
        (["dev", "--mock-listen", "8080"], {}, ("--mock-listen", "BRIDGE_MOCK_LISTEN")),
    ],
    ids=[
        "listen",
        "connect-timeout",
        "auth-mode-env",
        "url-scheme",
        "max-connections",
        "key-header",
        "mock",
        "dev",
    ],
)
def test_bad_values_give_one_line(
    capsys, monkeypatch, argv: list[str], env: dict[str, str], names: tuple[str, ...]
) -> None:
    monkeypatch.setenv("BRIDGE_API_KEY", SECRET)
    if argv[0] == "serve" and "--upstream-url" not in argv:
        monkeypatch.setenv("BRIDGE_UPSTREAM_URL", "http://127.0.0.1:9/v1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = _run_main(argv, capsys)
    assert code == 2
    line = _one_line_error(err)
    assert line.startswith(f"prisme-bridge {argv[0]}: error: ")
    for name in names:
        assert name in line
    assert SECRET not in out + err


def test_the_key_is_never_echoed(capsys, monkeypatch) -> None:
    # Values of key settings are not shown, even when they are what is wrong.
    monkeypatch.setenv("BRIDGE_UPSTREAM_URL", "http://127.0.0.1:9/v1")
    code, out, err = _run_main(
        ["serve", "--api-key", SECRET, "--listen", "bad", "--read-timeout", "x"], capsys
    )
    assert code == 2
    line = _one_line_error(err)
    assert "--listen" in line
    assert "--read-timeout" in line
    assert SECRET not in out + err
    code, out, err = _run_main(["mock-gateway", "--require-api-key", SECRET, "--listen", "bad"], capsys)
    assert code == 2
    assert SECRET not in out + err


@pytest.mark.parametrize(
    "url",
    [
        "https://gw.example/v1?api_key=" + SECRET,
        "ftp://user:" + SECRET + "@gw.example/v1",
        "https://user:" + SECRET + "@gw.example/v1",
    ],
)
def test_credentials_in_a_rejected_upstream_url_are_not_echoed(capsys, url: str) -> None:
    code, out, err = _run_main(["serve", "--upstream-url", url], capsys)
    assert code == 2
    assert "--upstream-url" in _one_line_error(err)
    assert SECRET not in out + err


@pytest.mark.parametrize(
    ("command", "model"),
    [("serve", ServeSettings), ("mock-gateway", MockGatewaySettings), ("dev", DevSettings)],
)
def test_help_lists_every_flag_with_its_env_var(capsys, command: str, model: Any) -> None:
    code, out, _ = _run_main([command, "--help"], capsys)
    assert code == 0
    entries = _help_entries(out)
    for name, field in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = "BRIDGE_" + name.upper()
        assert flag in entries, flag
        assert f"(env {env};" in entries[flag], (flag, entries[flag])
        if field.is_required():
            assert f"(env {env}; required)" in entries[flag]
    assert set(entries) == {"-h", *("--" + name.replace("_", "-") for name in model.model_fields)}


def _help_entries(help_text: str) -> dict[str, str]:
    """argparse's option entries: flag -> its text (metavar and help, wrapped lines joined)."""
    entries: dict[str, str] = {}
    current = None
    for line in help_text.split("options:", 1)[1].splitlines():
        match = re.match(r"  (-{1,2}[a-z][a-z-]*)", line)
        if match:
            current = match.group(1)
            entries[current] = line
        elif current and line.startswith("   "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return {flag: " ".join(text.split()) for flag, text in entries.items()}


def test_top_level_help_lists_the_commands(capsys) -> None:
    code, out, _ = _run_main(["--help"], capsys)
    assert code == 0
    for command in ("serve", "mock-gateway", "dev"):
        assert command in out


# ------------------------------------------------------------------------------------------ subprocesses


def _env(**bridge_vars: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(bridge_vars)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Cli:
    """`python -m bridge.cli ARGS` as a subprocess, its stderr (the logs) read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log: list[str] = []

    async def wait_log(self, pattern: str, within: float = 20) -> re.Match[str]:
        """The first match of `pattern` in a line of the logs, waiting for it to be written."""
        assert self.process.stderr is not None
        for line in self.log:
            if match := re.search(pattern, line):
                return match
        async with asyncio.timeout(within):
            while raw := await self.process.stderr.readline():
                self.log.append(raw.decode())
                if match := re.search(pattern, self.log[-1]):
                    return match
        pytest.fail(f"exited ({await self.process.wait()}) before logging {pattern!r}:\n{''.join(self.log)}")

    async def stop(self, sig: signal.Signals, within: float) -> int:
        """Sends `sig` and returns the exit code; fails, showing the logs, if it takes over `within` s."""
        self.process.send_signal(sig)
        return await self.wait_exit(within)

    async def wait_exit(self, within: float) -> int:
        """The exit code; fails, showing the logs, if the process is still running after `within` s."""
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            self.process.kill()
            _, err = await self.process.communicate()
            pytest.fail(f"still running after {within} s:\n{''.join(self.log)}{err.decode()}")

    async def logs(self) -> str:
        """Everything logged, once the process has exited."""
        assert self.process.stderr is not None
        return "".join(self.log) + (await self.process.stderr.read()).decode()


@asynccontextmanager
async def _cli(*args: str, env: dict[str, str]) -> AsyncIterator[_Cli]:
    """Runs `prisme-bridge ARGS`; killed on the way out if it is still running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.cli",
        *args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield _Cli(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.communicate()


_BRIDGE_LISTENING = r"bridge listening on 127\.0\.0\.1:(\d+)"


async def _check_serving(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_serve_subprocess_from_env_answers_and_stops_on_sigterm(mock_gateway: MockGateway) -> None:
    env = _env(
        BRIDGE_LISTEN="127.0.0.1:0",  # the OS picks a free port; the log line says which
        BRIDGE_UPSTREAM_URL=mock_gateway.base_url,
        BRIDGE_API_KEY=SECRET,
        BRIDGE_SHUTDOWN_GRACE="3",
    )
    async with _cli("serve", env=env) as bridge:
        address = f"127.0.0.1:{(await bridge.wait_log(_BRIDGE_LISTENING)).group(1)}"
        await _check_serving(address)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.ChatCompletionServiceStub(channel)
            response = await stub.CreateChatCompletion(chat_request(text="from a subprocess"), timeout=10)
        assert response.choices[0].message.content == "from a subprocess"
        assert mock_gateway.requests()[-1]["headers"]["authorization"] == f"Bearer {SECRET}"

        assert await bridge.stop(signal.SIGTERM, within=3 + 2) == 0
        logs = await bridge.logs()
    assert "shutting down" in logs
    assert SECRET not in logs


async def test_serve_subprocess_drains_a_stream_then_exits_0(mock_gateway: MockGateway) -> None:
    env = _env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url, BRIDGE_SHUTDOWN_GRACE="1")
    async with _cli("serve", "--listen", "127.0.0.1:0", env=env) as bridge:
        address = f"127.0.0.1:{(await bridge.wait_log(_BRIDGE_LISTENING)).group(1)}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.ChatCompletionServiceStub(channel)
            call = stub.StreamChatCompletion(chat_request(model="endless"))
            assert (await call.read()).choices[0].delta.role == "assistant"
            signalled = time.monotonic()
            bridge.process.send_signal(signal.SIGTERM)
            await bridge.wait_log("shutting down")
            # the in-flight stream holds the 1 s grace open, is then cut, and the process exits 0
            assert (await call.read()).choices[0].delta.content == "tick "
            assert await bridge.wait_exit(within=1 + 3) == 0
            assert time.monotonic() - signalled > 0.9
            with pytest.raises(grpc.aio.AioRpcError):
                await _drain(call)


async def _drain(call: Any) -> None:
    # read() style throughout: grpc.aio refuses mixing it with `async for`
    while await call.read() is not grpc.aio.EOF:
        pass


async def test_mock_gateway_subprocess_answers_http() -> None:
    async with _cli("mock-gateway", "--listen", "127.0.0.1:0", env=_env()) as mock:
        url = (await mock.wait_log(r"mock gateway listening on (http://127\.0\.0\.1:\d+)")).group(1)
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5) as client:
            health = await client.get("/healthz")
            assert health.json() == {"status": "ok"}
            reply = await client.post(
                "/v1/chat/completions",
                json={"model": "echo", "messages": [{"role": "user", "content": "ping"}]},
            )
            assert reply.status_code == 200
            assert reply.json()["choices"][0]["message"]["content"] == "ping"
            limited = await client.post(
                "/v1/chat/completions",
                json={"model": "error-429", "messages": [{"role": "user", "content": "x"}]},
            )
            assert (limited.status_code, limited.headers["retry-after"]) == (429, "7")
        # SIGTERM stops it cleanly, as it does `serve` (Kubernetes and process managers send SIGTERM).
        assert await mock.stop(signal.SIGTERM, within=5) == 0


async def test_dev_prints_grpcurl_lines_that_work() -> None:
    find_grpcurl()  # fail early, and clearly, without grpcurl
    env = _env()
    async with _cli("dev", "--listen", "127.0.0.1:0", "--mock-listen", "127.0.0.1:0", env=env) as dev:
        assert dev.process.stdout is not None
        printed: list[str] = []
        while not printed or printed[-1] != "Ctrl-C stops both.":
            line = await asyncio.wait_for(dev.process.stdout.readline(), 20)
            assert line, "dev exited before printing its commands"
            printed.append(line.decode().strip())
        commands = [line for line in printed if line.startswith("grpcurl ")]
        assert len(commands) == 5

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

        assert await dev.stop(signal.SIGINT, within=5) == 0


@pytest.mark.parametrize("command", ["serve", "mock-gateway"])
def test_listen_address_in_use_is_a_one_line_error(capsys, command: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        argv = [command, "--listen", address]
        if command == "serve":
            argv += ["--upstream-url", "http://127.0.0.1:9/v1"]
        code, _, err = _run_main(argv, capsys)
    assert code == 1
    line = [text for text in err.splitlines() if text.startswith("prisme-bridge")]
    assert len(line) == 1, err
    assert address.split(":")[1] in line[0]
    assert "Traceback" not in err
