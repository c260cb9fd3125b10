"""What the tests of the release artifacts share: where the artifacts are, running commands and fresh
virtualenvs, the README code blocks, what every consumer project prints."""

from __future__ import annotations

import json
import re
import subprocess
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONSUMERS = Path(__file__).parent / "consumers"
GROUP_PATH = "ai/prisme/prisme-llmgateway-client"
GO_MODULE = "github.com/prismeai/prisme-grpc-bridge/clients/go"


@dataclass(frozen=True)
class Release:
    dir: Path
    version: str

    def python_file(self, distribution: str, kind: str) -> Path:
        """The one sdist ("tar.gz") or wheel ("whl") of `distribution` (e.g. "prisme_grpc_bridge")."""
        suffix = "-py3-none-any.whl" if kind == "whl" else ".tar.gz"
        path = self.dir / "python" / f"{distribution}-{self.version}{suffix}"
        assert path.is_file(), f"{path.name} not built: {sorted(p.name for p in path.parent.iterdir())}"
        return path

    @property
    def maven(self) -> Path:
        """The artifact's directory in the Maven repository (Central's layout)."""
        return self.dir / "maven" / GROUP_PATH / self.version

    @property
    def goproxy(self) -> Path:
        return self.dir / "goproxy"


def run(
    *argv: str | Path, cwd: Path, env: dict[str, str] | None = None, status: int = 0, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Runs a command; fails, showing its output, unless it exits with `status`."""
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == status, (
        f"{[str(a) for a in argv]} exited {done.returncode}, not {status}:\n{done.stdout}\n{done.stderr}"
    )
    return done


def fresh_venv(path: Path) -> Path:
    """A new virtualenv with pip and nothing else; returns its bin/ directory."""
    venv.create(path, with_pip=True, clear=True)
    return path / "bin"


def consumer_output(stdout: str, language: str) -> dict[str, object]:
    """Checks what every consumer project prints (one JSON object: the echo of its greeting, unary and folded
    from a stream with usage, a page of models, an 8-dimension embedding, the reason of the refused call)
    and returns the rest, which each language spells its own way (status code, retry delay)."""
    out = json.loads(stdout)
    assert out.pop("models") > 0
    expected = {
        "unary": f"Hello from {language}",
        "folded": f"Hello from {language}",
        "total_tokens": 6,
        "dimensions": 8,
        "reason": "UPSTREAM_RATE_LIMITED",
    }
    assert {key: out.pop(key, None) for key in expected} == expected
    return dict(out)


def code_blocks(readme: Path, language: str) -> list[str]:
    """The fenced ```language blocks of a README, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", readme.read_text(), re.M | re.S)
