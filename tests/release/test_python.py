"""The Python release: the bridge's and the client's sdists and wheels as PyPI will show them, the bridge's
wheel alone in a fresh virtualenv serving the live bridge, the client's wheel alone in another one running
the consumer project and the README's examples as printed."""

from __future__ import annotations

import re
import tarfile
import zipfile
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path

import pytest
from live import LiveBridge

from tests.release.artifacts import CONSUMERS, ROOT, Release, code_blocks, consumer_output, fresh_venv, run

DISTRIBUTIONS = {  # distribution: (file name stem, README shown on the index)
    "prisme-grpc-bridge": ("prisme_grpc_bridge", ROOT / "README.md"),
    "prisme-llmgateway-client": ("prisme_llmgateway_client", ROOT / "clients/python/README.md"),
}
SERVER_ONLY = {"prisme-grpc-bridge", "aiohttp", "httpx", "pydantic", "grpcio-reflection", "opentelemetry-sdk"}
CLIENT_README = ROOT / "clients/python/README.md"
DISTRIBUTION = "prisme-llmgateway-client"
RATE_LIMITED = (("RESOURCE_EXHAUSTED UPSTREAM_RATE_LIMITED: retry in 0:00:07",), 1)


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return HeaderParser().parsestr(archive.read(name).decode())


def test_exactly_the_two_sdists_and_wheels_were_built(release: Release) -> None:
    expected = {
        f"{stem}-{release.version}{ext}"
        for stem, _ in DISTRIBUTIONS.values()
        for ext in (".tar.gz", "-py3-none-any.whl")
    }
    assert {p.name for p in (release.dir / "python").iterdir()} == expected


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_the_index_page_metadata(release: Release, distribution: str) -> None:
    stem, readme = DISTRIBUTIONS[distribution]
    wheel = release.python_file(stem, "whl")
    meta = _metadata(wheel)
    assert (meta["Name"], meta["Version"]) == (distribution, release.version)
    assert meta["License-Expression"] == "Apache-2.0"
    with zipfile.ZipFile(wheel) as archive:
        licence = archive.read(f"{stem}-{release.version}.dist-info/licenses/LICENSE")
    assert licence == (ROOT / "LICENSE").read_bytes()
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues", "Changelog", "Documentation"} <= set(urls)
    assert all(u.startswith("https://github.com/prismeai/prisme-grpc-bridge") for u in urls.values())
    classifiers = set(meta.get_all("Classifier") or [])
    assert {
        "Programming Language :: Python :: 3.11",
        "Typing :: Typed",
        "Intended Audience :: Developers",
    } <= classifiers
    # The README is the page: markdown, whole, and with no link that would be relative to pypi.org.
    assert meta["Description-Content-Type"] == "text/markdown"
    description = meta.get_payload()
    assert isinstance(description, str)
    assert description.strip() == readme.read_text().strip()
    relative = re.findall(r"\]\((?!https?://|#|mailto:)([^)]+)\)", description)
    assert relative == [], f"links that break on the index: {relative}"


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_the_sdist_holds_what_a_rebuild_needs(release: Release, distribution: str) -> None:
    stem, _ = DISTRIBUTIONS[distribution]
    with tarfile.open(release.python_file(stem, "tar.gz")) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= names


def test_the_bridge_wheel_alone_serves(release: Release, bridge_bin: Path, live_bridge: LiveBridge) -> None:
    version = run(bridge_bin / "prisme-bridge", "--version", cwd=bridge_bin).stdout.strip()
    assert version == f"prisme-bridge {release.version}"
    where = run(bridge_bin / "python", "-c", "import bridge; print(bridge.__file__)", cwd=bridge_bin).stdout
    assert Path(where.strip()).is_relative_to(bridge_bin.parent), "imported from the source tree"
    run(bridge_bin / "pip", "check", cwd=bridge_bin)
    # Reflection answers from the descriptors packaged in the wheel (bridge/gen/descriptors.binpb).
    listed = run(
        ROOT / ".tools/bin/grpcurl", "-plaintext", live_bridge.address, "list", cwd=bridge_bin
    ).stdout
    assert {
        "prisme.llmgateway.v1.ChatCompletionService",
        "prisme.llmgateway.v1.ModelService",
        "prisme.llmgateway.v1.EmbeddingService",
        "grpc.health.v1.Health",
    } <= set(listed.split())


@pytest.fixture(scope="session")
def client_bin(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv where the consumer's requirements.txt was installed, the client found (by its
    pinned version) among the built wheels and its dependencies on PyPI."""
    bin_dir = fresh_venv(tmp_path_factory.mktemp("client-venv"))
    requirements = CONSUMERS / "python/requirements.txt"
    run(
        bin_dir / "pip",
        "install",
        "-q",
        "--find-links",
        release.dir / "python",
        "-r",
        requirements,
        cwd=bin_dir,
    )
    return bin_dir


def test_the_client_installed_is_the_built_wheel_alone(release: Release, client_bin: Path) -> None:
    wheel = release.python_file("prisme_llmgateway_client", "whl")
    with zipfile.ZipFile(wheel) as archive:
        built = archive.read(f"prisme_llmgateway_client-{release.version}.dist-info/RECORD").decode()
    script = f"import importlib.metadata as m; print(m.distribution({DISTRIBUTION!r}).read_text('RECORD'))"
    installed = run(client_bin / "python", "-c", script, cwd=client_bin).stdout
    # The same files with the same hashes (pip adds its own INSTALLER/REQUESTED lines and .pyc files).
    files = {line for line in built.splitlines() if ",sha256=" in line and ".dist-info/" not in line}
    assert files
    assert files <= set(installed.splitlines())
    freeze = run(client_bin / "pip", "freeze", "--all", cwd=client_bin).stdout.lower()
    names = {re.split("==| @ ", line)[0].replace("_", "-") for line in freeze.splitlines()}
    assert f"prisme-llmgateway-client=={release.version}" in freeze
    assert not names & SERVER_ONLY, "the client pulled in server dependencies"


def test_the_python_consumer_calls_the_live_bridge(client_bin: Path, consumer_env: dict[str, str]) -> None:
    done = run(client_bin / "python", CONSUMERS / "python/consumer.py", cwd=client_bin, env=consumer_env)
    assert consumer_output(done.stdout, "Python") == {"code": "RESOURCE_EXHAUSTED", "retry_delay_s": 7.0}


# What each ```python block of clients/python/README.md prints: {PRISME_MODEL: (lines, exit status)}.
README_OUTPUT: list[dict[str | None, tuple[tuple[str, ...], int]]] = [
    {None: (("Say hello", "4 tokens"), 0), "error-429": RATE_LIMITED},
    {None: (("text-embedding-3-small [256, 512, 1024, 1536]", "2 vectors of 1536 dimensions"), 0)},
]


def test_the_readme_examples_run_as_printed(
    client_bin: Path, consumer_env: dict[str, str], tmp_path: Path
) -> None:
    blocks = code_blocks(CLIENT_README, "python")
    assert len(blocks) == len(README_OUTPUT), "a README example was added or removed: say what it prints"
    for number, (block, outcomes) in enumerate(zip(blocks, README_OUTPUT, strict=True)):
        example = tmp_path / f"example_{number}.py"
        example.write_text(block)
        for model, (lines, status) in outcomes.items():
            env = consumer_env if model is None else {**consumer_env, "PRISME_MODEL": model}
            done = run(client_bin / "python", example, cwd=tmp_path, env=env, status=status)
            printed = (done.stdout + done.stderr).splitlines()
            assert set(lines) <= set(printed), f"example {number} ({model}): {printed}"
