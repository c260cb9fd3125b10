"""A missing or broken LiteLLM install fails the conformance run with the command that fixes it: never a skip,
never a pass."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Final

import httpx
import pytest

from tests.conformance import servers


def _fake_venv(root: Path, *, python: str, litellm: str | None = None, complete: bool = True) -> Path:
    """A directory shaped like the venv, whose `bin/python` (and `bin/litellm`) run the given shell code."""
    (root / "bin").mkdir(parents=True)
    for name, code in (("python", python), ("litellm", litellm)):
        if code is not None:
            script = root / "bin" / name
            script.write_text(f"#!/bin/sh\n{code}\n")
            script.chmod(script.stat().st_mode | stat.S_IXUSR)
    if complete:
        (root / ".complete").write_text("test\n")
    return root


def test_the_real_venv_is_the_pinned_litellm() -> None:
    assert servers.check_litellm_venv(servers.litellm_venv()) == servers.pinned_litellm_version()


def test_the_venv_is_cached_outside_the_repository_by_the_hash_of_the_pins(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHON": sys.executable}
    script = str(servers.ROOT / "scripts" / "litellm-env")
    out = subprocess.run([script, "--path"], env=env, capture_output=True, text=True, check=True).stdout
    python = "python {}.{}\n".format(*sys.version_info[:2])
    key = hashlib.sha256(servers.PINS.read_bytes() + python.encode()).hexdigest()[:16]
    assert Path(out.strip()) == tmp_path / "prisme-grpc-bridge" / f"litellm-{key}"


@pytest.mark.parametrize(
    ("python", "complete", "says"),
    [
        (None, False, "no complete LiteLLM install at"),
        ("echo 'bad interpreter' >&2; exit 1", True, "is broken (bad interpreter)"),
        ("echo 1.0.0", True, "has LiteLLM 1.0.0, the pin is"),
    ],
    ids=["missing", "broken", "other-version"],
)
def test_a_bad_venv_is_refused_with_the_fix(
    tmp_path: Path, python: str | None, complete: bool, says: str
) -> None:
    venv = tmp_path / "venv"
    if python is not None or complete:
        _fake_venv(venv, python=python or "exit 1", complete=complete)
    with pytest.raises(servers.LiteLLMEnvError) as raised:
        servers.check_litellm_venv(venv)
    assert says in str(raised.value)
    assert "run scripts/litellm-env" in str(raised.value)


async def test_a_litellm_that_does_not_start_fails_showing_its_log(tmp_path: Path) -> None:
    venv = _fake_venv(
        tmp_path / "venv", python="exit 0", litellm="echo 'ImportError: no module named x'; exit 3"
    )
    with pytest.raises(RuntimeError) as raised:
        await servers.start_litellm(venv, "http://127.0.0.1:9", tmp_path)
    assert "LiteLLM exited with 3 before ready" in str(raised.value)
    assert "ImportError: no module named x" in str(raised.value)


_SERVE_200: Final = (
    "import http.server, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.end_headers()\n"
    "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
)


async def test_a_litellm_whose_port_was_taken_starts_again_on_another(tmp_path: Path) -> None:
    # The port is chosen free, then closed before LiteLLM binds it: another process may take it meanwhile.
    # The first start says so (as uvicorn does) and exits; the second, on a new port, serves.
    (tmp_path / "serve.py").write_text(_SERVE_200)
    first = tmp_path / "first-start-done"
    litellm = (
        f'port=$(eval echo "\\${{$#}}"); if [ ! -e {first} ]; then touch {first}; '
        f"echo \"[Errno 98] error while attempting to bind on address ('127.0.0.1', $port): \"; "
        "echo 'address already in use'; "
        f'exit 1; fi; exec {sys.executable} {tmp_path / "serve.py"} "$port"'
    )
    venv = _fake_venv(tmp_path / "venv", python="exit 0", litellm=litellm)
    server = await servers.start_litellm(venv, "http://127.0.0.1:9", tmp_path)
    try:
        assert first.exists()
        assert (await _get(server.url + "/health/readiness")) == 200
    finally:
        server.stop()


async def test_a_litellm_that_keeps_losing_its_port_fails_showing_its_log(tmp_path: Path) -> None:
    litellm = "echo 'address already in use'; exit 1"
    venv = _fake_venv(tmp_path / "venv", python="exit 0", litellm=litellm)
    with pytest.raises(RuntimeError, match="address already in use"):
        await servers.start_litellm(venv, "http://127.0.0.1:9", tmp_path)


async def _get(url: str) -> int:
    async with httpx.AsyncClient(trust_env=False) as client:
        return (await client.get(url)).status_code


def test_a_run_without_the_install_fails(tmp_path: Path) -> None:
    # Whole pytest runs of conformance tests pointed at a venv that does not exist: they error, saying why;
    # an xfail test of a bridge gap errors too rather than count as an expected failure.
    missing = tmp_path / "no-such-venv"
    env = {**os.environ, servers.VENV_OVERRIDE: str(missing)}
    module = "tests/conformance/test_litellm_upstream.py"
    tests = [f"{module}::test_unary_reply", f"{module}::test_provider_429_retry_after_becomes_retry_info"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "addopts=", *tests],
        cwd=servers.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "2 errors" in output
    for outcome in ("passed", "skipped", "xfailed", "xpassed"):
        assert outcome not in output
    assert f"no complete LiteLLM install at {missing}: run scripts/litellm-env" in output
