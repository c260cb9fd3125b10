"""The breaking-change gate of the contract (docs/proto-design.md section 10), run with the real buf.

Each test works on a copy of the contract (proto/, buf.yaml, the two scripts and a docs/proto-design.md
whose Status line it sets), so it can build a baseline and then break the contract on purpose:
scripts/proto-breaking must then fail once the Status line says v1 is stable, and only report while it
says pre-release. buf comes from .tools/bin (scripts/bootstrap); a missing buf fails, never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"
PROTO = Path("proto/prisme/llmgateway/v1/chat_completion.proto")
BASELINE = Path("proto/baseline/v1.binpb")
STABLE = "Status: v1 stable (breaking changes fail CI against proto/baseline/v1.binpb)."
PRE_RELEASE = "Status: pre-release (breaking changes are reported by CI, not yet blocking)."


@pytest.fixture(scope="module")
def buf_env() -> dict[str, str]:
    if not (TOOLS / "buf").is_file():
        pytest.fail("buf not found in .tools/bin: run scripts/bootstrap (CI installs it)")
    return {**os.environ, "PATH": f"{TOOLS}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture
def contract(tmp_path: Path) -> Path:
    """A copy of the contract and its gate, outside any git repository, with the Status pre-release."""
    shutil.copytree(ROOT / "proto", tmp_path / "proto", ignore=shutil.ignore_patterns("baseline"))
    shutil.copy2(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    (tmp_path / "scripts").mkdir()
    for script in ("proto-breaking", "proto-baseline"):
        shutil.copy2(ROOT / "scripts" / script, tmp_path / "scripts" / script)
    (tmp_path / "docs").mkdir()
    _set_status(tmp_path, PRE_RELEASE)
    return tmp_path


def _set_status(root: Path, status: str) -> None:
    (root / "docs" / "proto-design.md").write_text(f"# Proto contract design\n\n{status}\n\nText.\n")


def _run(root: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(root / "scripts" / argv[0]), *argv[1:]],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _edit(root: Path, old: str, new: str) -> None:
    path = root / PROTO
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def _declare_v1(root: Path, env: dict[str, str]) -> None:
    result = _run(root, env, "proto-baseline")
    assert result.returncode == 0, result.stderr
    assert (root / BASELINE).is_file()
    _set_status(root, STABLE)


def test_unchanged_contract_passes_against_its_baseline(contract: Path, buf_env: dict[str, str]) -> None:
    _declare_v1(contract, buf_env)
    result = _run(contract, buf_env, "proto-breaking")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "compatible with the v1 baseline" in result.stdout


BREAKS: dict[str, tuple[str, str, str]] = {
    # name: (old text, new text, what buf's message names)
    "renumbered_field": ("  string model = 1;", "  string model = 250;", 'name "model"'),
    "renamed_json_name": (
        "  string task_id = 13;",
        '  string task_id = 13 [json_name = "taskIdentifier"];',
        'changed option "json_name"',
    ),
    "renamed_field": ("  string user = 20;", "  string end_user = 20;", '"user"'),
    "changed_type": ("  optional int32 n = 15;", "  optional int64 n = 15;", '"n"'),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_breaking_change_fails_once_v1_is_stable(name: str, contract: Path, buf_env: dict[str, str]) -> None:
    old, new, named = BREAKS[name]
    _declare_v1(contract, buf_env)
    _edit(contract, old, new)
    result = _run(contract, buf_env, "proto-breaking")
    assert result.returncode != 0, result.stdout
    assert named in result.stdout + result.stderr


@pytest.mark.parametrize("name", list(BREAKS))
def test_breaking_change_is_only_reported_while_pre_release(
    name: str, contract: Path, buf_env: dict[str, str]
) -> None:
    old, new, named = BREAKS[name]
    assert _run(contract, buf_env, "proto-baseline").returncode == 0
    _edit(contract, old, new)
    result = _run(contract, buf_env, "proto-breaking")
    assert result.returncode == 0, result.stderr
    assert named in result.stdout + result.stderr
    assert "ADVISORY" in result.stdout


def test_additive_change_passes_once_v1_is_stable(contract: Path, buf_env: dict[str, str]) -> None:
    _declare_v1(contract, buf_env)
    _edit(
        contract,
        "  string model = 1;",
        "  string model = 1;\n  // A later addition.\n  string added_later = 99;",
    )
    _edit(
        contract,
        "// One message of the conversation",
        "// An edited comment.\n// One message of the conversation",
    )
    result = _run(contract, buf_env, "proto-breaking")
    assert result.returncode == 0, result.stdout + result.stderr


def test_stable_without_a_baseline_fails(contract: Path, buf_env: dict[str, str]) -> None:
    _set_status(contract, STABLE)
    result = _run(contract, buf_env, "proto-breaking")
    assert result.returncode != 0
    assert "scripts/proto-baseline" in result.stderr


@pytest.mark.parametrize(
    "status",
    ["Status: stable.", "Status: v1 stable", "Status: V1 Stable (since 2025-09)."],
)
def test_status_lines_that_declare_v1(status: str, contract: Path, buf_env: dict[str, str]) -> None:
    _set_status(contract, status)
    assert "scripts/proto-baseline" in _run(contract, buf_env, "proto-breaking").stderr


@pytest.mark.parametrize(
    "status",
    [PRE_RELEASE, "Status: not yet stable.", "Status: pre-release; will become stable with issue 8."],
)
def test_status_lines_that_do_not(status: str, contract: Path, buf_env: dict[str, str]) -> None:
    _set_status(contract, status)
    _edit(contract, "  string model = 1;", "  string model = 250;")
    assert _run(contract, buf_env, "proto-baseline").returncode == 0  # a baseline of the broken contract
    _edit(contract, "  string model = 250;", "  string model = 1;")  # ...which the real one now breaks
    result = _run(contract, buf_env, "proto-breaking")
    assert result.returncode == 0, result.stderr
    assert "ADVISORY" in result.stdout


def test_baseline_is_fixed_once_v1_is_stable(contract: Path, buf_env: dict[str, str]) -> None:
    _declare_v1(contract, buf_env)
    before = (contract / BASELINE).read_bytes()
    _edit(contract, "  string model = 1;", "  string model = 250;")
    refused = _run(contract, buf_env, "proto-baseline")
    assert refused.returncode != 0
    assert "--force" in refused.stderr
    assert (contract / BASELINE).read_bytes() == before
    assert _run(contract, buf_env, "proto-breaking").returncode != 0  # still held to the v1 contract
    assert _run(contract, buf_env, "proto-baseline", "--force").returncode == 0


def test_baseline_is_reproducible(contract: Path, buf_env: dict[str, str]) -> None:
    # The same contract gives the same bytes: a regenerated baseline shows up in git only if it changed.
    assert _run(contract, buf_env, "proto-baseline").returncode == 0
    first = (contract / BASELINE).read_bytes()
    assert _run(contract, buf_env, "proto-baseline").returncode == 0
    assert (contract / BASELINE).read_bytes() == first
    assert first


# --- lock-ins WIRE_JSON does not see ------------------------------------------------------------------

GO_PACKAGE = "github.com/prismeai/prisme-grpc-bridge/clients/go/gen/prisme/llmgateway/v1"


def test_generated_code_locations_are_fixed() -> None:
    """File options are outside WIRE_JSON, yet changing one breaks every Go or Java importer: they are
    decided for v1 (docs/proto-design.md, "Lock-ins") and pinned here."""
    from bridge.gen.prisme.llmgateway.v1 import (
        chat_completion_pb2,
        chat_completion_service_pb2,
        embedding_pb2,
        embedding_service_pb2,
        model_pb2,
        model_service_pb2,
    )

    for module, outer in (
        (chat_completion_pb2, "ChatCompletionProto"),
        (chat_completion_service_pb2, "ChatCompletionServiceProto"),
        (model_pb2, "ModelProto"),
        (model_service_pb2, "ModelServiceProto"),
        (embedding_pb2, "EmbeddingProto"),
        (embedding_service_pb2, "EmbeddingServiceProto"),
    ):
        options = module.DESCRIPTOR.GetOptions()
        assert options.go_package == f"{GO_PACKAGE};llmgatewayv1"
        assert options.java_package == "ai.prisme.llmgateway.v1"
        assert options.java_multiple_files
        assert options.java_outer_classname == outer
        assert module.DESCRIPTOR.package == "prisme.llmgateway.v1"
    # The Go import path is the module path of clients/go plus the generated directory.
    go_mod = (ROOT / "clients" / "go" / "go.mod").read_text().splitlines()
    assert f"{go_mod[0].removeprefix('module ')}/gen/prisme/llmgateway/v1" == GO_PACKAGE
    assert (ROOT / "clients/go/gen/prisme/llmgateway/v1/chat_completion.pb.go").is_file()
