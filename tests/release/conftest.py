"""tests/release: the artifacts scripts/release-artifacts built (`--release-dir`), checked as their users meet
them. The live bridge is the bridge's wheel installed alone into a fresh virtualenv (`prisme-bridge
mock-gateway` + `serve` from there); the consumer projects in consumers/ get the clients by version from what
was built: the Python wheel, the Maven repository, the Go module proxy. Nothing here imports the source tree.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.release.artifacts import ROOT, Release, fresh_venv, run

# The client's own live-bridge helper (mock gateway + bridge subprocesses), pointed at the wheel's bridge.
sys.path.insert(0, str(ROOT / "clients/python/tests"))
from live import API_KEY, LiveBridge, start_live_bridge


@pytest.fixture(scope="session")
def release(pytestconfig: pytest.Config) -> Release:
    directory: Path = pytestconfig.getoption("--release-dir").resolve()
    return Release(directory, (ROOT / "VERSION").read_text().strip())


@pytest.fixture(scope="session")
def bridge_bin(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh virtualenv holding the bridge's wheel and its dependencies (at the versions CI tests,
    constraints.txt, as deploy/Dockerfile installs them)."""
    bin_dir = fresh_venv(tmp_path_factory.mktemp("bridge-venv"))
    wheel = release.python_file("prisme_grpc_bridge", "whl")
    run(bin_dir / "pip", "install", "-q", "-c", ROOT / "constraints.txt", wheel, cwd=bin_dir)
    return bin_dir


@pytest.fixture(scope="session")
def live_bridge(bridge_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveBridge]:
    """mock-gateway + serve, both from the wheel's virtualenv; the mock requires API_KEY, which the bridge
    forwards from each caller."""
    yield from start_live_bridge(
        tmp_path_factory.mktemp("live-bridge"), exe=str(bridge_bin / "prisme-bridge")
    )


@pytest.fixture(scope="session")
def consumer_env(live_bridge: LiveBridge) -> dict[str, str]:
    """What a consumer (and a README example) reads: the bridge's address and the key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRISME_", "BRIDGE_"))}
    return {**env, "PRISME_BRIDGE": live_bridge.address, "PRISME_API_KEY": API_KEY}
