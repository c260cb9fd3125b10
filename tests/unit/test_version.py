"""One version for a release (docs/releasing.md): VERSION is the source, and the bridge, the Python client,
the Java artifact, the container image (Dockerfile label default and every kustomize image tag under deploy/)
and the Go module's consumer agree with it. Each copy is read here the way its own tool reads it (tomllib, the
POM's XML, YAML), not with scripts/set-version's patterns, so a pattern that misses a copy fails too."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import bridge

ROOT = Path(__file__).resolve().parents[2]
SET_VERSION = ROOT / "scripts" / "set-version"
IMAGE = "prisme-grpc-bridge"
POM = "{http://maven.apache.org/POM/4.0.0}"
GO_MODULE = "github.com/prismeai/prisme-grpc-bridge/clients/go"


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of a parsed YAML document, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def image_tags(root: Path) -> dict[str, str]:
    """`file: entry -> tag` for every image of the bridge in deploy/'s YAML: containers' `image:` and
    kustomize `images:` entries (newTag), in every overlay present now or added later."""
    tags: dict[str, str] = {}
    for path in sorted((root / "deploy").rglob("*.y*ml")):
        for number, doc in enumerate(yaml.safe_load_all(path.read_text())):
            for key, value in _walk(doc):
                where = f"{path.relative_to(root)}#{number}"
                if key == "image" and isinstance(value, str) and IMAGE in value.rsplit("/", 1)[-1]:
                    name, _, tag = value.rsplit("/", 1)[-1].partition(":")
                    tags[f"{where} image {value}"] = tag if name == IMAGE else f"(another image: {name})"
                if key == "images" and isinstance(value, list):
                    for entry in value:
                        if IMAGE in str(entry.get("name", "")):
                            tags[f"{where} images[{entry['name']}]"] = str(entry.get("newTag", "(no newTag)"))
    return tags


def copies(root: Path) -> dict[str, str]:
    """Where the version is written down, each read as its tool reads it."""
    found = {"VERSION": (root / "VERSION").read_text().strip()}
    init = re.search(r'^__version__ = "([^"]+)"$', (root / "bridge/__init__.py").read_text(), re.M)
    found["bridge/__init__.py"] = init.group(1) if init else "(missing)"
    client = tomllib.loads((root / "clients/python/pyproject.toml").read_text())["project"]
    found["clients/python/pyproject.toml"] = client["version"]
    pom = ET.parse(root / "clients/java/pom.xml").getroot()
    found["clients/java/pom.xml"] = pom.findtext(f"{POM}version", "(missing)")
    dockerfile = (root / "deploy/Dockerfile").read_text()
    arg = re.search(r"^ARG VERSION=(\S+)$", dockerfile, re.M)
    found["deploy/Dockerfile ARG VERSION"] = arg.group(1) if arg else "(missing)"
    found.update(image_tags(root))
    consumer = ET.parse(root / "tests/release/consumers/java/pom.xml").getroot()
    for dependency in consumer.iter(f"{POM}dependency"):
        if dependency.findtext(f"{POM}artifactId") == "prisme-llmgateway-client":
            found["consumers/java dependency"] = dependency.findtext(f"{POM}version", "(missing)")
    go_mod = (root / "tests/release/consumers/go/go.mod").read_text()
    go = re.search(rf"^\s*(?:require\s+)?{re.escape(GO_MODULE)} v(\S+)", go_mod, re.M)
    found["consumers/go go.mod"] = go.group(1) if go else "(missing)"
    python = (root / "tests/release/consumers/python/requirements.txt").read_text()
    pin = re.search(r"^prisme-llmgateway-client==(\S+)$", python, re.M)
    found["consumers/python requirements.txt"] = pin.group(1) if pin else "(missing)"
    return found


def test_every_copy_of_the_version_agrees_with_version_file() -> None:
    found = copies(ROOT)
    version = found["VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert {where: v for where, v in found.items() if v != version} == {}
    assert bridge.__version__ == version
    # At least the base Deployment's image: a scan that finds nothing would pass vacuously.
    assert any(where.startswith("deploy/kubernetes/base/") for where in found if " image " in where)


def set_version(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, SET_VERSION, *map(str, args)], capture_output=True, text=True)


def test_set_version_check_agrees() -> None:
    done = set_version("--check")
    assert done.returncode == 0, done.stderr


def test_the_image_labels_carry_the_version() -> None:
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^ARG VERSION=", final_stage, re.M), "ARG VERSION must be declared in the final stage"
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z]+)="([^"]*)"', final_stage))
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert {"title", "source", "revision", "created"} <= {key.rsplit(".", 1)[1] for key in labels}


def test_changelog_has_the_version_and_an_unreleased_section() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    version = (ROOT / "VERSION").read_text().strip()
    assert "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    assert re.search(rf"^\[{re.escape(version)}\]: https://", changelog, re.M)


def test_the_python_client_ships_the_repository_licence() -> None:
    assert (ROOT / "clients/python/LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert "Apache License" in (ROOT / "LICENSE").read_text()


def _copy_tree(dest: Path) -> Path:
    """The files set-version reads and writes, copied (the working tree is never touched)."""
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    wanted = re.compile(
        r"^(VERSION|CHANGELOG\.md|[^/]+\.md|bridge/__init__\.py|docs/.*\.md|deploy/.*|"
        r"clients/(python/pyproject\.toml|java/pom\.xml|.*README\.md)|tests/release/consumers/.*)$"
    )
    for name in filter(wanted.match, tracked):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.mark.parametrize("new", ["0.1.1", "12.0.0"])
def test_set_version_writes_every_copy(tmp_path: Path, new: str) -> None:
    tree = _copy_tree(tmp_path)
    old = (tree / "VERSION").read_text().strip()
    done = set_version(new, "--root", tree)
    assert done.returncode == 0, done.stderr
    found = copies(tree)
    assert {where: v for where, v in found.items() if v != new} == {}
    changelog = (tree / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[Unreleased\]\n\n## \[{re.escape(new)}\] - \d{{4}}-", changelog, re.M)
    assert f"compare/v{old}...v{new}" in changelog
    # Nothing that was a copy still says the old version (the Java POM's dependencies keep theirs).
    again = set_version("--check", "--root", tree)
    assert again.returncode == 0, again.stderr


def test_set_version_check_names_a_disagreeing_copy(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    pom = tree / "clients/java/pom.xml"
    version = (tree / "VERSION").read_text().strip()
    pom.write_text(pom.read_text().replace(f"<version>{version}</version>", "<version>9.9.9</version>", 1))
    done = set_version("--check", "--root", tree)
    assert done.returncode == 1
    assert "clients/java/pom.xml:" in done.stderr
    assert "9.9.9" in done.stderr
    assert copies(tree)["clients/java/pom.xml"] == "9.9.9"


def test_a_kustomize_overlay_added_later_is_covered(tmp_path: Path) -> None:
    # What issue 20's example overlay (or any new one) looks like: its tag is checked and rewritten too.
    tree = _copy_tree(tmp_path)
    overlay = tree / "deploy/kubernetes/overlays/added"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(
        "resources: [../../base]\nimages:\n  - name: prisme-grpc-bridge\n"
        "    newName: registry.example.com/team/prisme-grpc-bridge\n    newTag: 0.0.9\n"
    )
    entry = "deploy/kubernetes/overlays/added/kustomization.yaml#0 images[prisme-grpc-bridge]"
    assert copies(tree)[entry] == "0.0.9"
    check = set_version("--check", "--root", tree)
    assert check.returncode == 1
    assert "overlays/added/kustomization.yaml:5: 0.0.9" in check.stderr
    assert set_version("3.2.1", "--root", tree).returncode == 0
    assert set(image_tags(tree).values()) == {"3.2.1"}
