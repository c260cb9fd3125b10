"""The Go and Java client tests' fake servers send what the bridge sends: their statuses are files the
bridge's own code writes (tests/client_fixtures.py), and every ErrorInfo any client test builds by hand uses
only the reasons and keys of docs/errors.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bridge.errors import DOMAIN, Key, Reason
from tests.client_fixtures import DIRECTORY, STATUSES, rendered

ROOT = Path(__file__).parents[2]
CLIENT_TESTS = sorted(
    [
        *(ROOT / "clients" / "go").rglob("*_test.go"),
        *(ROOT / "clients" / "java" / "src" / "test").rglob("*.java"),
    ]
)


@pytest.mark.parametrize("name", list(STATUSES))
def test_each_fixture_is_what_the_bridge_sends_today(name: str) -> None:
    path = DIRECTORY / f"{name}.json"
    assert path.read_text(encoding="utf-8") == rendered(name), (
        f"{path} is stale: run `.venv/bin/python -m tests.client_fixtures` and commit the result"
    )


def test_there_is_no_fixture_the_bridge_does_not_write() -> None:
    assert sorted(path.stem for path in DIRECTORY.glob("*.json")) == sorted(STATUSES)


def test_the_fixtures_use_the_contract_only() -> None:
    for name in STATUSES:
        status = json.loads((DIRECTORY / f"{name}.json").read_text(encoding="utf-8"))
        (info,) = [d for d in status["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
        assert info["domain"] == DOMAIN
        assert info["reason"] in set(Reason)
        assert set(info.get("metadata", {})) <= set(Key)  # proto JSON leaves an empty map out


def test_the_client_tests_use_the_fixtures() -> None:
    sources = {path.name: path.read_text(encoding="utf-8") for path in CLIENT_TESTS}
    assert 'filepath.Join("..", "..", "..", "testdata", "errors"' in sources["main_test.go"]
    assert 'Path.of("..", "testdata", "errors"' in sources["PrismeChatTest.java"]


# Go: Metadata: map[string]string{"k": "v", ...}; Java: .putMetadata("k", "v")
_GO_METADATA = re.compile(r"Metadata:\s*map\[string\]string\{([^}]*)\}")
_GO_KEY = re.compile(r'"([^"]+)"\s*:')
_JAVA_KEY = re.compile(r'\.putMetadata\(\s*"([^"]+)"')
_REASON = re.compile(r'(?:Reason:\s*|\.setReason\(\s*)"([A-Z_]+)"')


def test_every_error_info_a_client_test_builds_by_hand_is_inside_the_contract() -> None:
    keys: set[str] = set()
    reasons: set[str] = set()
    for path in CLIENT_TESTS:
        source = path.read_text(encoding="utf-8")
        for block in _GO_METADATA.findall(source):
            keys.update(_GO_KEY.findall(block))
        keys.update(_JAVA_KEY.findall(source))
        reasons.update(_REASON.findall(source))
    assert keys, "the patterns found nothing: update them"
    assert keys <= set(Key), sorted(keys - set(Key))
    assert reasons <= set(Reason), sorted(reasons - set(Reason))
