"""The distribution on its own: a fresh virtualenv holding only `pip install ./clients/python` (and its
dependencies, from PyPI or pip's cache) calls the live bridge. The dependencies are installed at the lower
bounds pyproject.toml declares, so those bounds are known to work (the project's venv runs newer ones)."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest
from live import API_KEY, LiveBridge

pytestmark = pytest.mark.interop

DISTRIBUTION = Path(__file__).resolve().parents[1]
SERVER_ONLY = ("prisme-grpc-bridge", "aiohttp", "httpx", "pydantic", "pydantic-settings", "grpcio-reflection")

# Run by the fresh interpreter: one unary and one accumulated stream, printed as JSON.
SCRIPT = """
import json, sys
from google.protobuf import json_format, struct_pb2
import prisme.llmgateway.client as client
from prisme.llmgateway.client import Bearer, ChatClient, error_details
from prisme.llmgateway.v1 import chat_completion_pb2 as pb

address, key = sys.argv[1:3]
message = pb.ChatMessage(role="user", content=struct_pb2.Value(string_value="weather in Paris?"))
request = pb.CreateChatCompletionRequest(model="tools", messages=[message])
key = Bearer(key, allow_plaintext=True)
with ChatClient.connect(address, tls=False, credentials=key, timeout=30) as chat:
    unary = chat.complete(request)
    request.stream_options.include_usage = True
    folded = chat.stream(request).accumulate()
    try:
        chat.complete(pb.CreateChatCompletionRequest(model="error-429", messages=[message]))
    except Exception as error:
        retry = error_details(error).retry_delay.total_seconds()
for reply in (unary, folded):
    reply.ClearField("id"); reply.ClearField("created"); reply.usage.ClearField("duration_ms")
print(json.dumps({
    "client_file": client.__file__,
    "unary": json_format.MessageToDict(unary),
    "folded": json_format.MessageToDict(folded),
    "retry": retry,
}))
"""


def _lower_bounds() -> dict[str, str]:
    """Each dependency of the distribution at its declared lower bound, e.g. {"grpcio": "1.85.1"}."""
    project = tomllib.loads((DISTRIBUTION / "pyproject.toml").read_text())["project"]
    bounds = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)(,<[0-9.]+)?", requirement)
        assert match, f"{requirement}: declare a lower bound (and at most an upper one)"
        bounds[match[1].lower()] = match[2]
    return bounds


def _run(*argv: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_fresh_virtualenv_with_only_the_client(tmp_path: Path, live_bridge: LiveBridge) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, clear=True)
    python = env_dir / "bin" / "python"
    bounds = _lower_bounds()
    constraints = tmp_path / "lower-bounds.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in bounds.items()))
    pip_install = (python, "-m", "pip", "install", "-q", "--disable-pip-version-check")
    _run(*pip_install, "-c", constraints, DISTRIBUTION, cwd=tmp_path)

    freeze = _run(python, "-m", "pip", "freeze", "--all", cwd=tmp_path).splitlines()
    pairs = (re.split("==| @ ", line, maxsplit=1) for line in freeze)
    installed = {name.lower(): version for name, version in pairs}
    assert "prisme-llmgateway-client" in installed
    assert not set(installed) & set(SERVER_ONLY), "the client pulled in server dependencies"
    assert {name: installed.get(name) for name in bounds} == bounds

    out = json.loads(_run(python, "-c", SCRIPT, live_bridge.address, API_KEY, cwd=tmp_path))
    assert Path(out["client_file"]).is_relative_to(env_dir), "imported from the source tree, not the venv"
    assert out["folded"] == out["unary"]
    call = out["unary"]["choices"][0]["message"]["toolCalls"][0]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert out["retry"] == 7.0
