"""`prisme-bridge` command line: settings errors in one line, --help, and the three commands run as real
subprocesses (serve with env vars and SIGTERM, mock-gateway, dev with its printed grpcurl lines)."""

from __future__ import annotations

import re
import signal
import time
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.chat.service import SERVICE_NAME
from bridge.cli import main
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from bridge.settings import DevSettings, MockGatewaySettings, ServeSettings, flat_fields, group_title
from tests.helpers import chat_request, cli_env, run_cli

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
        (["mock-gateway", "--listen", "host:port"], {}, ("--mock-listen", "BRIDGE_MOCK_LISTEN")),
        (["dev", "--mock-listen", "8080"], {}, ("--mock-listen", "BRIDGE_MOCK_LISTEN")),
        (
            ["serve", "--upstream-url", "https://gw.example/v1/chat/completions"],
            {},
            ("--upstream-url", "BRIDGE_UPSTREAM_URL", "use the base URL https://gw.example/v1"),
        ),
        (["serve", "--log-format", "jsn"], {}, ("--log-format", "did you mean 'json'?")),
        (["serve"], {"BRIDGE_UPSTREAM_TRANSPORT": "htpx"}, ("did you mean 'httpx'?",)),
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
        "url-endpoint",
        "choice-typo",
        "choice-typo-env",
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
    for field in flat_fields(model):
        assert field.flag in entries, field.flag
        assert f"(env {field.env};" in entries[field.flag], (field.flag, entries[field.flag])
        if field.info.is_required():
            assert f"(env {field.env}; required)" in entries[field.flag]
    actions = {"--list-models"} if command in ("mock-gateway", "dev") else set()
    flags = {field.flag for field in flat_fields(model)}  # aliases share their flag's entry
    assert set(entries) == {"-h", *actions, *flags}


def _help_entries(help_text: str) -> dict[str, str]:
    """argparse's option entries of every options section: flag -> its text (wrapped lines joined)."""
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


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["serve", "--upstream-ur", "http://gw/v1"], "flag --upstream-ur (did you mean --upstream-url?)"),
        (["serve", "--log-levle=debug"], "unknown flag --log-levle (did you mean --log-level?)"),
        (["mock-gateway", "--lisen", "127.0.0.1:0"], "unknown flag --lisen (did you mean --listen?)"),
        (["serve", "--no-such-thing"], "unknown flag --no-such-thing"),
        (["serve", "stray"], "unexpected argument 'stray'"),
        (["serve", "--listen"], "argument --listen: expected one argument"),
        (["serv"], "invalid choice: 'serv'"),
    ],
    ids=["typo", "typo-equals", "mock-typo", "unknown", "stray", "no-value", "command-typo"],
)
def test_argument_errors_are_at_most_three_lines_with_a_suggestion(
    capsys, argv: list[str], expected: str
) -> None:
    code, _, err = _run_main(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 3, err
    assert expected in lines[0]
    assert lines[0].startswith(f"prisme-bridge{' ' + argv[0] if argv[0] != 'serv' else ''}: error: ")
    assert "usage:" not in err
    if argv == ["serv"]:
        assert "did you mean 'serve'?" in lines[0]


def test_abbreviated_flags_are_not_taken_for_the_full_flag(capsys) -> None:
    # argparse's default takes `--upstream-ur` as `--upstream-url`: a typo would start a bridge.
    code, _, err = _run_main(["serve", "--upstream-ur", "http://127.0.0.1:9/v1"], capsys)
    assert code == 2
    assert "did you mean --upstream-url?" in err


@pytest.mark.parametrize("command", ["serve", "mock-gateway", "dev"])
def test_help_starts_with_one_usage_line_then_the_groups(capsys, command: str) -> None:
    code, out, _ = _run_main([command, "--help"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"usage: prisme-bridge {command} [flags]"
    assert lines[1] == ""
    headings = [line for line in lines if line.endswith("options:")]
    model = {"serve": ServeSettings, "mock-gateway": MockGatewaySettings, "dev": DevSettings}[command]
    groups = dict.fromkeys(group_title(model, field.group) for field in flat_fields(model))
    assert headings == ["options:", *(f"{title} options:" for title in groups)]
    # the description (one paragraph) is all there is between the usage line and the groups
    assert lines.index("options:") <= 6


def test_top_level_help_lists_the_commands(capsys) -> None:
    code, out, _ = _run_main(["--help"], capsys)
    assert code == 0
    for command in ("serve", "mock-gateway", "dev"):
        assert command in out


# ------------------------------------------------------------------------------------------ subprocesses


_BRIDGE_LISTENING = r"bridge listening on 127\.0\.0\.1:(\d+)"


async def _check_serving(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_serve_subprocess_from_env_answers_and_stops_on_sigterm(mock_gateway: MockGateway) -> None:
    env = cli_env(
        BRIDGE_LISTEN="127.0.0.1:0",  # the OS picks a free port; the log line says which
        BRIDGE_UPSTREAM_URL=mock_gateway.base_url,
        BRIDGE_API_KEY=SECRET,
        BRIDGE_API_KEY_FOR="anyone",  # on loopback: no warning
        BRIDGE_SHUTDOWN_GRACE="3",
    )
    async with run_cli("serve", env=env) as bridge:
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
    assert "--api-key-for" not in logs  # no warning on loopback


async def test_serve_listens_on_all_interfaces_for_colon_port_and_takes_a_lower_case_level(
    mock_gateway: MockGateway,
) -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url, BRIDGE_LOG_FORMAT="text")
    async with run_cli("serve", "--listen", ":0", "--log-level", "debug", env=env) as bridge:
        port = (await bridge.wait_log(r"bridge listening on 0\.0\.0\.0:(\d+)")).group(1)
        await _check_serving(f"127.0.0.1:{port}")
        assert await bridge.stop(signal.SIGTERM, within=15 + 5) == 0
        logs = await bridge.logs()
    assert " DEBUG " in logs  # the level took effect


async def test_serve_takes_the_previous_transport_name_and_says_it_is_renamed(
    mock_gateway: MockGateway,
) -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url, BRIDGE_LOG_FORMAT="text")
    argv = ("serve", "--listen", "127.0.0.1:0", "--upstream-transport", "aiohttp-direct")
    async with run_cli(*argv, env=env) as bridge:
        warning = await bridge.wait_log(r"WARNING .*aiohttp-direct is now named aiohttp")
        address = f"127.0.0.1:{(await bridge.wait_log(_BRIDGE_LISTENING)).group(1)}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.ChatCompletionServiceStub(channel)
            response = await stub.CreateChatCompletion(chat_request(text="renamed"), timeout=10)
        assert response.choices[0].message.content == "renamed"
        assert await bridge.stop(signal.SIGTERM, within=15 + 5) == 0
    assert "refused from the next release" in warning.string


async def test_serve_subprocess_drains_a_stream_then_exits_0(mock_gateway: MockGateway) -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url, BRIDGE_SHUTDOWN_GRACE="1")
    async with run_cli("serve", "--listen", "127.0.0.1:0", env=env) as bridge:
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
    async with run_cli("mock-gateway", "--listen", "127.0.0.1:0", env=cli_env()) as mock:
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
