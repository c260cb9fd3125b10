"""The real servers of the conformance suite: a pinned LiteLLM proxy in front of the mock gateway, and the
bridge (`prisme-bridge serve`) in front of LiteLLM, each a subprocess on 127.0.0.1.

LiteLLM comes from its own virtualenv (scripts/litellm-env; never a dependency of the bridge). A missing or
broken install is an error that names the fix, never a skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

ROOT: Final = Path(__file__).resolve().parents[2]
PINS: Final = ROOT / "tests" / "conformance" / "litellm-requirements.txt"
# Points the suite at another LiteLLM venv (tests use it to prove that a missing install fails the run).
VENV_OVERRIDE: Final = "PRISME_LITELLM_VENV"

MASTER_KEY: Final = "sk-conformance-master-0042"
PROVIDER_KEY: Final = "provider-key-0042"
# Model groups of the generated config: `mock/<script>` reaches the mock gateway's <script> model with the
# provider key; `badkey/<script>` reaches it with a key the mock refuses (a provider 401).
MOCK_PREFIX: Final = "mock/"
BAD_KEY_PREFIX: Final = "badkey/"

READY_WITHIN_S: Final = 90.0
_LOG_TAIL_LINES: Final = 60


class LiteLLMEnvError(Exception):
    """The LiteLLM venv is missing, incomplete or not the pinned version; the message says what to run."""


def pinned_litellm_version() -> str:
    match = re.search(r"^litellm\[proxy\]==(\S+)", PINS.read_text(), re.MULTILINE)
    assert match, f"{PINS} pins no litellm[proxy]"
    return match.group(1)


def litellm_venv() -> Path:
    """Where scripts/litellm-env keeps the venv (or the override)."""
    override = os.environ.get(VENV_OVERRIDE)
    if override:
        return Path(override)
    # The key includes the Python version: the one of this venv, which bootstrap also gave LiteLLM's.
    env = {**os.environ, "PYTHON": sys.executable}
    script = str(ROOT / "scripts" / "litellm-env")
    out = subprocess.run([script, "--path"], env=env, check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def check_litellm_venv(venv: Path) -> str:
    """The LiteLLM version installed in `venv`; LiteLLMEnvError unless it is a complete install of the pin."""
    fix = "run scripts/litellm-env (scripts/bootstrap does)"
    if not (venv / ".complete").is_file():
        raise LiteLLMEnvError(f"no complete LiteLLM install at {venv}: {fix}")
    python = venv / "bin" / "python"
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        raise LiteLLMEnvError(f"LiteLLM install at {venv} is broken ({probe.stderr.strip()[-300:]}): {fix}")
    version = probe.stdout.strip()
    if version != pinned_litellm_version():
        raise LiteLLMEnvError(f"{venv} has LiteLLM {version}, the pin is {pinned_litellm_version()}: {fix}")
    return version


def litellm_config(provider_url: str) -> dict[str, object]:
    """The proxy config: wildcard groups onto the mock as an OpenAI provider, a master key, no retries."""

    def group(prefix: str, api_key: str) -> dict[str, object]:
        params = {"model": "openai/*", "api_base": f"{provider_url}/v1", "api_key": api_key}
        return {"model_name": f"{prefix}*", "litellm_params": params}

    return {
        "model_list": [group(MOCK_PREFIX, PROVIDER_KEY), group(BAD_KEY_PREFIX, "not-the-provider-key")],
        # No retries: a provider 429/5xx is passed through at once instead of retried (LiteLLM's default
        # honours Retry-After: ~22 s for a 7 s hint), so the tests see the provider's own error.
        "litellm_settings": {"num_retries": 0, "request_timeout": 60},
        "router_settings": {"num_retries": 0},
        # cancel_on_disconnect: a client hang-up cancels the provider call of a non-streaming request too
        # (without it LiteLLM keeps that call open; streams end with their client either way).
        "general_settings": {"master_key": MASTER_KEY, "cancel_on_disconnect": True},
    }


def litellm_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "BRIDGE_", "OPENAI_"))}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # the bundled cost map, not a download at start
        LITELLM_TELEMETRY_DISABLED="true",
        PYTHONUNBUFFERED="1",
        NO_COLOR="1",
    )
    return env


def free_port() -> int:
    # LiteLLM has no "port 0 and tell me": a port free now may be taken before it binds (start_litellm).
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


# How a server that lost its port to another process says so (uvicorn: "[Errno 98] error while attempting
# to bind on address ...: address already in use").
_PORT_TAKEN: Final = re.compile(r"address already in use", re.IGNORECASE)
PORT_ATTEMPTS: Final = 3


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Server:
    """A subprocess whose stdout and stderr go to `log`."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def failure(self, what: str) -> str:
        return f"{self.name} {what}; last lines of {self.log}:\n{log_tail(self.log)}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _spawn(name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> Server:
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd)
    return Server(name, process, log)


async def start_litellm(venv: Path, provider_url: str, workdir: Path) -> Server:
    """LiteLLM on a free port; returns once /health/readiness answers 200. Fails with its log otherwise."""
    config = workdir / "litellm-config.yaml"
    config.write_text(json.dumps(litellm_config(provider_url), indent=1))  # YAML is a superset of JSON
    argv = [str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port"]
    return await start_on_free_port(
        lambda port: _spawn(
            "LiteLLM", [*argv, str(port)], litellm_environment(), workdir / "litellm.log", workdir
        ),
        "/health/readiness",
    )


async def start_on_free_port(spawn: Callable[[int], Server], ready_path: str) -> Server:
    """`spawn(port)` on a free port, ready once `ready_path` answers 200; on another port if the chosen one
    was taken by another process before the server bound it (said so in its log), up to PORT_ATTEMPTS."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        server = spawn(port)
        server.url = f"http://127.0.0.1:{port}"
        try:
            await _wait_ready(server, f"{server.url}{ready_path}")
        except RuntimeError:
            server.stop()
            if attempt == PORT_ATTEMPTS or not _PORT_TAKEN.search(log_tail(server.log)):
                raise
            continue
        except BaseException:
            server.stop()
            raise
        return server
    raise AssertionError("unreachable")


async def _wait_ready(server: Server, url: str) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(server.failure(f"exited with {server.process.returncode} before ready"))
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.2)
    raise RuntimeError(server.failure(f"not ready at {url} within {READY_WITHIN_S:.0f} s"))


_LISTENING: Final = re.compile(r"bridge listening on 127\.0\.0\.1:(\d+)")


async def start_bridge(upstream_url: str, workdir: Path, *extra: str) -> Server:
    """`prisme-bridge serve --listen 127.0.0.1:0 --upstream-url URL`; its port is read from its log."""
    executable = Path(sys.executable).parent / "prisme-bridge"
    argv = [str(executable), "serve", "--listen", "127.0.0.1:0", "--upstream-url", upstream_url, *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    server = _spawn("bridge", argv, env, workdir / "bridge.log", workdir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = _LISTENING.search(server.log.read_text(errors="replace"))
        if match:
            server.url = f"127.0.0.1:{match.group(1)}"
            return server
        if server.process.poll() is not None:
            break
        await asyncio.sleep(0.05)
    server.stop()
    raise RuntimeError(server.failure("did not log its listen address"))
