"""The Go release: the module proxy scripts/release-artifacts built (the go command's own download of the tag
clients/go/vVERSION), and the consumer module requiring the client by that version through
GOPROXY=file://... (no replace), vetted, built and run against the live bridge, with the README's example
built beside it and run as printed."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.release.artifacts import CONSUMERS, GO_MODULE, ROOT, Release, code_blocks, consumer_output, run

README = ROOT / "clients/go/README.md"


def _go_env(name: str) -> str:
    return run("go", "env", name, cwd=ROOT).stdout.strip()


def test_the_proxy_serves_the_version(release: Release) -> None:
    versions = release.goproxy / GO_MODULE / "@v"
    version = f"v{release.version}"
    assert (versions / "list").read_text().split() == [version]
    info = json.loads((versions / f"{version}.info").read_text())
    assert info["Version"] == version
    # Resolved from the tag a module in a subdirectory needs, not from a plain vX.Y.Z.
    assert info["Origin"]["Ref"] == f"refs/tags/clients/go/{version}"
    assert (versions / f"{version}.mod").read_text() == (ROOT / "clients/go/go.mod").read_text()
    with zipfile.ZipFile(versions / f"{version}.zip") as archive:
        names = archive.namelist()
    prefix = f"{GO_MODULE}@{version}/"
    assert all(name.startswith(prefix) for name in names)
    files = {name.removeprefix(prefix) for name in names}
    # The repository's LICENSE comes along (the go command copies it into a subdirectory module), so
    # pkg.go.dev shows the package documentation.
    assert {
        "go.mod",
        "go.sum",
        "LICENSE",
        "README.md",
        "prisme/errors.go",
        "cmd/prisme-chat/main.go",
    } <= files
    assert any(name.startswith("gen/prisme/llmgateway/v1/") for name in files)
    assert not any(name.startswith("bin/") for name in files)


@pytest.fixture(scope="module")
def consumer(release: Release, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The consumer module (plus README's example as ./readme) with its requirement resolved through the
    release's module proxy into a throwaway module cache; the other modules come from the developer's module
    cache (read as a file proxy) or the usual GOPROXY."""
    work = tmp_path_factory.mktemp("go-consumer")
    project = shutil.copytree(CONSUMERS / "go", work / "project")
    examples = [block for block in code_blocks(README, "go") if block.startswith("package main")]
    assert len(examples) == 1
    (project / "readme").mkdir()
    (project / "readme/main.go").write_text(examples[0])
    cache = Path(_go_env("GOMODCACHE")) / "cache" / "download"
    proxies = [release.goproxy.as_uri(), cache.as_uri(), _go_env("GOPROXY")]
    env = {
        **os.environ,
        "GOPROXY": ",".join(proxies),
        "GOMODCACHE": str(work / "modcache"),
        "GONOSUMDB": GO_MODULE,  # not yet in the checksum database: this build is not the published one
        "GOFLAGS": f"{os.environ.get('GOFLAGS', '')} -mod=mod -modcacherw".strip(),
    }
    run("go", "mod", "tidy", cwd=project, env=env)
    run("go", "vet", "./...", cwd=project, env=env)
    run("go", "build", "-o", work / "consumer", ".", cwd=project, env=env)
    run("go", "build", "-o", work / "hello", "./readme", cwd=project, env=env)
    return project, env


def test_the_consumer_requires_the_release_by_version(
    release: Release, consumer: tuple[Path, dict[str, str]]
) -> None:
    project, env = consumer
    listed = json.loads(run("go", "list", "-m", "-json", GO_MODULE, cwd=project, env=env).stdout)
    assert listed["Version"] == f"v{release.version}"
    assert "Replace" not in listed
    assert Path(listed["Dir"]).is_relative_to(env["GOMODCACHE"])


def test_the_go_consumer_calls_the_live_bridge(
    consumer: tuple[Path, dict[str, str]], consumer_env: dict[str, str]
) -> None:
    project, _ = consumer
    done = run(project.parent / "consumer", cwd=project, env=consumer_env)
    assert consumer_output(done.stdout, "Go") == {"code": "ResourceExhausted", "retry_delay": "7s"}


@pytest.mark.parametrize(
    ("model", "text", "status"),
    [(None, "Say hello", 0), ("error-429", "UPSTREAM_RATE_LIMITED: retry in 7s", 1)],
)
def test_the_readme_example_runs_as_printed(
    consumer: tuple[Path, dict[str, str]],
    consumer_env: dict[str, str],
    model: str | None,
    text: str,
    status: int,
) -> None:
    project, _ = consumer
    env = consumer_env if model is None else {**consumer_env, "PRISME_MODEL": model}
    done = run(project.parent / "hello", cwd=project, env=env, status=status)
    assert text in done.stdout + done.stderr
