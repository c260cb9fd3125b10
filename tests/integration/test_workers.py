"""`prisme-bridge serve --workers N` as a real subprocess: N processes on one port, connections spread by
the kernel, SIGTERM drains every worker (streams in flight complete), a dead worker is replaced, a crash
loop stops the pod, and the port checks of a single process still hold."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import tempfile

import grpc
import httpx
import pytest

from bridge.cli import main
from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
from bridge.mock_gateway import MockGateway
from bridge.workers import MAX_DEATHS
from tests.helpers import (
    CliProcess,
    chat_request,
    cli_env,
    collect,
    connections_served_by,
    run_cli,
    wait_request,
)

_SERVING = r"2 workers serving on 127\.0\.0\.1:(\d+)"
_WORKER = r"worker (\d) of 2 serving \(pid (\d+)\)"


def _own_channel(port: int) -> grpc.aio.Channel:
    """A channel with a connection of its own (the kernel picks a worker per connection)."""
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])


async def _start(bridge: CliProcess) -> tuple[int, dict[str, int]]:
    """The shared port and the pid of each worker, once all serve."""
    port = int((await bridge.wait_log(_SERVING)).group(1))
    pids = {m.group(1): int(m.group(2)) for line in bridge.log if (m := re.search(_WORKER, line))}
    assert len(pids) == 2, bridge.log
    return port, pids


async def test_two_workers_share_the_port_spread_connections_and_drain_on_sigterm(
    mock_gateway: MockGateway,
) -> None:
    env = cli_env(
        BRIDGE_UPSTREAM_URL=mock_gateway.base_url, BRIDGE_SHUTDOWN_GRACE="60", BRIDGE_DRAIN_DELAY="120"
    )
    async with run_cli("serve", "--listen", "127.0.0.1:0", "--workers", "2", env=env) as bridge:
        port, pids = await _start(bridge)
        channels = [_own_channel(port) for _ in range(16)]
        try:
            for i, channel in enumerate(channels):
                reply = await pb_grpc.ChatCompletionServiceStub(channel).CreateChatCompletion(
                    chat_request(text=f"call {i}"), timeout=10
                )
                assert reply.choices[0].message.content == f"call {i}"
            served = {worker: connections_served_by(pid, port) for worker, pid in pids.items()}
            assert sum(served.values()) == 16
            assert all(served.values()), f"connections per worker: {served}"  # 2**-15 chance to flake

            # a stream on every connection, so every worker has streams in flight at SIGTERM
            streams = [
                pb_grpc.ChatCompletionServiceStub(channel).StreamChatCompletion(
                    chat_request(model="slow-2000", text=f"stream {i}"), timeout=60
                )
                for i, channel in enumerate(channels)
            ]
            results = [asyncio.create_task(collect(stream)) for stream in streams]
            await wait_request(mock_gateway, lambda _: _count(mock_gateway, "slow-2000") == 16, within=10)
            bridge.process.send_signal(signal.SIGTERM)
            await bridge.wait_log("SIGTERM: stopping 2 workers")
            await bridge.wait_log("draining: readiness NOT_SERVING")
            # streams in flight run on while the workers drain (calls are still served)
            for i, (stream, result) in enumerate(zip(streams, results, strict=True)):
                chunks = await result
                assert await stream.code() == grpc.StatusCode.OK
                assert "".join(c.choices[0].delta.content for c in chunks) == f"stream {i}"
        finally:
            for channel in channels:
                await channel.close()
        bridge.process.send_signal(signal.SIGTERM)  # forwarded: ends every worker's drain delay
        assert await bridge.wait_exit(within=30) == 0
        logs = await bridge.logs()
    assert logs.count("draining: readiness NOT_SERVING") == 2
    assert logs.count("drain delay cut short") == 2
    assert logs.count("shutting down (grace 60 s)") == 2
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # every worker has exited


async def test_a_worker_that_dies_is_replaced_and_a_crash_loop_stops_the_pod(
    mock_gateway: MockGateway,
) -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url)
    async with run_cli("serve", "--listen", "127.0.0.1:0", "--workers", "2", env=env) as bridge:
        port, pids = await _start(bridge)
        victim, seen = pids["1"], [str(pids["1"])]
        for death in range(1, MAX_DEATHS + 1):
            os.kill(victim, signal.SIGKILL)
            await bridge.wait_log(rf"worker 1 \(pid {victim}\) was killed by SIGKILL; starting a new one")
            replaced = rf"worker 1 of 2 serving \(pid (?!(?:{'|'.join(seen)})\))(\d+)\)"
            victim = int((await bridge.wait_log(replaced)).group(1))
            seen.append(str(victim))
            async with _own_channel(port) as channel:
                reply = await pb_grpc.ChatCompletionServiceStub(channel).CreateChatCompletion(
                    chat_request(text=f"after death {death}"), timeout=10
                )
            assert reply.choices[0].message.content == f"after death {death}"
        os.kill(victim, signal.SIGKILL)  # one death too many within the window
        await bridge.wait_log(f"{MAX_DEATHS + 1} workers died within")
        assert await bridge.wait_exit(within=30) == 1


async def test_a_port_in_use_or_an_unusable_worker_setting_is_one_line(mock_gateway: MockGateway) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url)
        async with run_cli("serve", "--listen", address, "--workers", "2", env=env) as bridge:
            assert await bridge.wait_exit(within=20) == 1
            err = await bridge.logs()
    problem = f"cannot listen on {address}: address in use or not available"
    assert err.strip() == f"prisme-bridge serve: error: {problem}"

    not_pem = {"BRIDGE_TLS_CERT": "README.md", "BRIDGE_TLS_KEY": "README.md"}
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url, **not_pem)
    async with run_cli("serve", "--listen", "127.0.0.1:0", "--workers", "2", env=env) as bridge:
        assert await bridge.wait_exit(within=20) == 1
        err = await bridge.logs()
    lines = [line for line in err.splitlines() if line.startswith("prisme-bridge serve: error:")]
    assert len(lines) == 1, err
    assert "README.md" in lines[0]
    assert "Traceback" not in err


def _count(mock: MockGateway, model: str) -> int:
    return sum(record["model"] == model for record in mock.requests())


def _handled(text: str, method: str) -> float:
    """The sum of grpc_server_handled_total for `method` with code OK in a Prometheus text page."""
    total = 0.0
    for labels, value in re.findall(r"^grpc_server_handled_total\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        if f'grpc_method="{method}"' in labels and 'grpc_code="OK"' in labels:
            total += float(value)
    return total


async def test_metrics_of_two_workers_are_one_aggregate(mock_gateway: MockGateway) -> None:
    env = cli_env(BRIDGE_UPSTREAM_URL=mock_gateway.base_url, BRIDGE_LOG_FORMAT="text")
    argv = ("serve", "--listen", "127.0.0.1:0", "--workers", "2", "--metrics-listen", "127.0.0.1:0")
    async with run_cli(*argv, env=env) as bridge:
        port, pids = await _start(bridge)
        metrics_url = (await bridge.wait_log(r"metrics at (http://127\.0\.0\.1:\d+/metrics)")).group(1)
        channels = [_own_channel(port) for _ in range(16)]
        try:
            for channel in channels:
                await pb_grpc.ChatCompletionServiceStub(channel).CreateChatCompletion(
                    chat_request(), timeout=10
                )
            served = {worker: connections_served_by(pid, port) for worker, pid in pids.items()}
            assert all(served.values()), f"connections per worker: {served}"
        finally:
            for channel in channels:
                await channel.close()
        # Whichever worker answers a scrape (each scrape is a new connection), it reports the pod's total.
        for _ in range(8):
            async with httpx.AsyncClient(trust_env=False, timeout=5) as fresh:
                page = (await fresh.get(metrics_url)).text
            assert _handled(page, "CreateChatCompletion") == 16
        bridge.process.send_signal(signal.SIGTERM)
        assert await bridge.wait_exit(within=30) == 0


@pytest.mark.parametrize("tempdir", ["/nonexistent-prisme-test", "read-only"])
def test_no_writable_directory_for_the_metrics_files_is_one_line_naming_tmpdir(
    capsys, monkeypatch, tmp_path, tempdir: str
) -> None:
    # The Deployment's situation (read-only root, no volume at /tmp), as far as it can be made here without
    # a mount namespace: tests/integration/test_pod_start.py runs the real one.
    if tempdir == "read-only":
        tempdir = str(tmp_path)
        monkeypatch.setattr(tempfile, "mkdtemp", _refused)
    monkeypatch.setattr(tempfile, "tempdir", tempdir)
    argv = ["serve", "--upstream-url", "http://127.0.0.1:9/v1", "--listen", "127.0.0.1:0", "--workers", "2"]
    code = main([*argv, "--metrics-listen", "127.0.0.1:0"])
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 1
    [line] = lines
    assert line.startswith("prisme-bridge serve: error: --workers 2 with --metrics-listen")
    assert "set TMPDIR to a writable directory" in line
    assert tempdir in line


def _refused(*args: object, **kwargs: object) -> str:
    raise PermissionError(13, "Permission denied", os.path.join(tempfile.gettempdir(), "prisme-bridge-x"))
