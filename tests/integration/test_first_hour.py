"""What a new user and an operator hit in their first hour (issue 14), each kept fixed: settings that cannot
work stop the start in one line, a busy port is one line naming its flag, the mock's models are listed by a
command, a command's own usage on a bad flag, large prompts, the mock's own address variable."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from bridge.cli import main
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from bridge.settings import ServeSettings
from tests.helpers import TRANSPORTS, chat_request, cli_env, run_cli

ROOT = Path(__file__).resolve().parents[2]
KEY = "iak_acme_0123456789abcdef"


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------ settings that cannot work


def test_fixed_auth_without_a_key_is_a_startup_error(capsys) -> None:
    code, _, err = _main(["serve", "--upstream-url", "http://gw/v1", "--auth-mode", "fixed"], capsys)
    assert code == 2
    line = _one_line(err)
    assert line.startswith("prisme-bridge serve: error: --api-key / BRIDGE_API_KEY is required")
    assert "--auth-mode fixed" in line


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (
            ["serve", "--listen", "127.0.0.1:50051", "--upstream-url", "http://127.0.0.1:50051/v1"],
            "--upstream-url",
        ),
        (["dev", "--listen", "127.0.0.1:7000", "--mock-listen", "127.0.0.1:7000"], "--mock-listen"),
    ],
    ids=["bridge-calls-itself", "dev-one-port-twice"],
)
def test_other_settings_that_cannot_work(capsys, argv: list[str], named: str) -> None:
    code, _, err = _main(argv, capsys)
    assert code == 2
    assert named in _one_line(err)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://exa mple.com/v1", "white space"),
        ("http://host:99999/v1", "invalid port"),
        ("http://x..y/v1", "not a host name"),
        ("https://[not-v6]/v1", "IPv6 address"),
    ],
)
def test_a_malformed_upstream_url_is_refused_at_start(capsys, url: str, said: str) -> None:
    code, _, err = _main(["serve", "--upstream-url", url], capsys)
    assert code == 2
    line = _one_line(err)
    assert "--upstream-url / BRIDGE_UPSTREAM_URL" in line
    assert said in line


def test_well_formed_urls_still_pass() -> None:
    for url in (
        "http://[::1]:8000/v1",
        "http://gw_internal.svc.cluster.local/v1",
        "https://10.0.0.7:8443/v1",
    ):
        assert ServeSettings(upstream_url=url).upstream.url == url


async def test_a_key_with_auth_mode_none_is_a_warning_at_start(mock_gateway: MockGateway) -> None:
    env = cli_env(
        BRIDGE_UPSTREAM_URL=mock_gateway.base_url,
        BRIDGE_AUTH_MODE="none",
        BRIDGE_API_KEY=KEY,
        BRIDGE_LOG_FORMAT="text",
    )
    async with run_cli("serve", "--listen", "127.0.0.1:0", env=env) as bridge:
        line = (await bridge.wait_log(r"WARNING .*(--api-key / BRIDGE_API_KEY is ignored.*)")).group(1)
        await bridge.wait_log(r"bridge listening on")
        assert await bridge.stop(signal.SIGTERM, within=10) == 0
    assert "--auth-mode none" in line
    assert KEY not in await bridge.logs()


# ------------------------------------------------------------------------------------ busy ports


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["serve", "--upstream-url", "http://gw/v1", "--listen"], "--listen / BRIDGE_LISTEN"),
        (["mock-gateway", "--listen"], "--mock-listen / BRIDGE_MOCK_LISTEN"),
        (["dev", "--listen", "127.0.0.1:0", "--mock-listen"], "--mock-listen / BRIDGE_MOCK_LISTEN"),
        (["dev", "--mock-listen", "127.0.0.1:0", "--listen"], "--listen / BRIDGE_LISTEN"),
    ],
    ids=["serve", "mock-gateway", "dev-mock", "dev-bridge"],
)
def test_a_busy_port_is_one_line_naming_its_flag(busy_port: int, argv: list[str], flag: str) -> None:
    # A real process: grpc's core would print its own "Failed to add port" line to stderr first.
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli", *argv, f"127.0.0.1:{busy_port}"],
        capture_output=True,
        text=True,
        timeout=30,
        env=cli_env(),
    )
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert line.endswith(f"cannot listen on 127.0.0.1:{busy_port} ({flag}): address already in use")
    assert "Errno" not in line


# ----------------------------------------------------------------------------------------- friction


def test_scripts_check_before_bootstrap_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "check", tmp_path / "scripts" / "check")
    result = subprocess.run(
        ["bash", "scripts/check"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "run scripts/bootstrap first" in result.stderr


def test_list_models_into_a_reader_that_stops_early_is_quiet() -> None:
    """`prisme-bridge mock-gateway --list-models | head -1`: no BrokenPipeError traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "mock-gateway", "--list-models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line is written
    with process.stderr:
        assert process.stderr.read() == b""
    assert process.wait(timeout=30) == 0


def test_help_shows_boolean_defaults_as_the_values_the_flags_take(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "BRIDGE_RETRY_STREAMS; default: false)" in out
    assert "default: False" not in out


@pytest.mark.parametrize("command", ["mock-gateway", "dev"])
def test_list_models_prints_the_scripted_behaviours(capsys, command: str) -> None:
    code, out, _ = _main([command, "--list-models"], capsys)
    assert code == 0
    assert out.startswith("Chat completions (``POST /chat/completions``): behaviours chosen by")
    for model in ("echo", "tools", "error-<status>", "slow-<ms>", "stream-error", "litellm"):
        assert f"``{model}``" in out
    # The catalogue and embeddings sections follow, each under its heading.
    assert "\nThe model catalogue (``GET /models``)\n---" in out
    assert "\nEmbeddings (``POST /embeddings``)\n---" in out
    for name in ("visible_only=true", "text-embedding-mock", "governed/text-embedding-3-small"):
        assert f"``{name}``" in out


def test_a_bad_flag_names_the_command_and_where_its_help_is(capsys) -> None:
    # Two lines, not the usage block of every flag (issue 20): the command's own name, and its --help.
    code, _, err = _main(["serve", "--bogus"], capsys)
    assert code == 2
    assert err.splitlines() == [
        "prisme-bridge serve: error: unknown flag --bogus",
        "Try 'prisme-bridge serve --help'.",
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_3_mb_prompt_reaches_the_mock(
    start_bridge, mock_gateway: MockGateway, transport: str
) -> None:
    # 3 MB: over aiohttp's default 1 MiB body limit (the mock's, before), under the bridge's 64 MiB; sent
    # in pieces with its length (aiohttp warns that one large write holds the event loop).
    text = "word " * 600_000
    bridge = await start_bridge(upstream_transport=transport)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        reply = await stub.CreateChatCompletion(chat_request(text=text), timeout=30)
    assert reply.choices[0].message.content == text
    record = mock_gateway.requests()[-1]
    assert record["outcome"] == "completed"
    assert "transfer-encoding" not in record["headers"]
    assert int(record["headers"]["content-length"]) > 3_000_000


async def test_the_mock_has_its_own_address_variable(mock_gateway: MockGateway) -> None:
    # BRIDGE_LISTEN (set for `serve` in the same shell) is not the mock's; BRIDGE_MOCK_LISTEN is.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        taken_by_serve = probe.getsockname()[1]
        env = cli_env(BRIDGE_LISTEN=f"127.0.0.1:{taken_by_serve}", BRIDGE_MOCK_LISTEN="127.0.0.1:0")
        async with run_cli("mock-gateway", env=env) as mock:
            url = (await mock.wait_log(r"mock gateway listening on (http://127\.0\.0\.1:\d+)")).group(1)
            assert not url.endswith(f":{taken_by_serve}")
            async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
                assert (await client.get(f"{url}/healthz")).status_code == 200
            assert await mock.stop(signal.SIGTERM, within=5) == 0


async def test_dev_banner_names_a_command_that_works() -> None:
    async with run_cli(
        "dev", "--listen", "127.0.0.1:0", "--mock-listen", "127.0.0.1:0", env=cli_env()
    ) as dev:
        assert dev.process.stdout is not None
        first = (await asyncio.wait_for(dev.process.stdout.readline(), 20)).decode()
        assert "prisme-bridge mock-gateway --list-models" in first
        assert "pydoc" not in first
        assert await dev.stop(signal.SIGINT, within=10) == 0
