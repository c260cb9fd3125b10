"""A live bridge for the client's tests: `prisme-bridge mock-gateway` and `prisme-bridge serve` subprocesses
on loopback port 0, the ports read from their logs. The mock gateway requires an API key, which the bridge
forwards from the caller's `authorization` (auth mode passthrough), so credentials are tested end to end.

`prisme-bridge` comes from the environment that runs the tests (the project's .venv), unless the caller names
one (tests/release: the bridge installed from its wheel); a missing one fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

API_KEY = "iak_clienttests_0b7e"


@dataclass
class LiveBridge:
    address: str  # host:port of the bridge
    mock_url: str  # http://host:port of the mock gateway

    def upstream_requests(self) -> list[dict[str, Any]]:
        """What the mock gateway received, oldest first (headers lower-cased)."""
        with urllib.request.urlopen(f"{self.mock_url}/_mock/requests", timeout=10) as reply:
            records: list[dict[str, Any]] = json.load(reply)
        return records


def prisme_bridge() -> str:
    found = shutil.which(
        "prisme-bridge", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    if found is None:
        pytest.fail("prisme-bridge not found: install the project (scripts/bootstrap) to run the live tests")
    return found


class _Process:
    """A subprocess whose stderr (its log) goes to a file, read while waiting for a line."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log_path = log
        self._log: IO[bytes] = log.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._log, env=env)

    def wait_log(self, pattern: str, within: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if match := re.search(pattern, text):
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"{self.process.args!r} did not log {pattern!r}:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def start_live_bridge(logs: Path, exe: str | None = None) -> Iterator[LiveBridge]:
    """Starts mock gateway and bridge (the `exe` command, else prisme_bridge()), yields the bridge, stops
    both."""
    exe = exe or prisme_bridge()
    mock = _Process(
        [exe, "mock-gateway", "--listen", "127.0.0.1:0", "--require-api-key", API_KEY], logs / "mock.log"
    )
    try:
        mock_url = mock.wait_log(r"mock gateway listening on (http://127\.0\.0\.1:\d+)").group(1)
        bridge = _Process(
            [
                exe,
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--upstream-url",
                f"{mock_url}/v1",
                "--shutdown-grace",
                "1",
            ],
            logs / "bridge.log",
        )
        try:
            port = bridge.wait_log(r"bridge listening on 127\.0\.0\.1:(\d+)").group(1)
            yield LiveBridge(f"127.0.0.1:{port}", mock_url)
        finally:
            bridge.stop()
    finally:
        mock.stop()
