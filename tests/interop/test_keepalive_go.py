"""A Go client pinging every 10 s keeps a long idle stream open (the server's keepalive policy).

grpc-go pings at most every 10 s. A server with grpc's default policy (one ping per 5 min without data,
2 strikes) refuses the fourth such ping, 40 s into an idle stream, with GOAWAY too_many_pings and the
stream fails UNAVAILABLE (measured here with that policy). So the stream is held idle for 45 s: the mock
gateway's `slow-45000` sends nothing upstream for that long, so no data flows either way while the client
pings. tests/interop/goping is the client, dialled through clients/go/prisme.NewClient.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.rpc.server import GrpcServer

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
GOPING = ROOT / "tests" / "interop" / "goping"


@pytest.fixture(scope="session")
def goping(tmp_path_factory: pytest.TempPathFactory) -> str:
    go = shutil.which("go")
    if go is None:
        pytest.fail("go not found on PATH: install Go (CI does; this test is never skipped)")
    binary = tmp_path_factory.mktemp("goping") / "goping"
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=GOPING, check=True)
    return str(binary)


@pytest.mark.timeout(150)
async def test_go_client_pinging_every_10s_keeps_an_idle_stream_open(goping: str, bridge: GrpcServer) -> None:
    process = await asyncio.create_subprocess_exec(
        goping,
        "-addr",
        f"127.0.0.1:{bridge.port}",
        "-model",
        "slow-45000",
        "-ping",
        "10s",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stdout.decode() + stderr.decode()
    assert stdout.decode().split()[0] == "OK"
    assert int(stdout.decode().split()[1]) > 2  # role chunk, the words, the finish chunk
    assert "too_many_pings" not in stderr.decode()
