"""The Java release: the Maven repository scripts/release-artifacts deployed (what the workflow signs and
uploads to Maven Central), its POM's Central metadata, and the consumer project resolving
ai.prisme:prisme-llmgateway-client by its coordinates into an empty, throwaway local repository, then calling
the live bridge, with the README's example compiled into it and run as printed."""

from __future__ import annotations

import hashlib
import shutil
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from tests.release.artifacts import CONSUMERS, GROUP_PATH, ROOT, Release, code_blocks, consumer_output, run

POM = "{http://maven.apache.org/POM/4.0.0}"
ARTIFACT = "prisme-llmgateway-client"
README = ROOT / "clients/java/README.md"
M2 = Path.home() / ".m2" / "repository"


def _files(release: Release) -> dict[str, Path]:
    """Classifier ("" for the main jar, "pom") -> file in the deployed repository."""
    stem = f"{ARTIFACT}-{release.version}"
    names = {
        "pom": f"{stem}.pom",
        "": f"{stem}.jar",
        "sources": f"{stem}-sources.jar",
        "javadoc": f"{stem}-javadoc.jar",
    }
    return {kind: release.maven / name for kind, name in names.items()}


def test_the_repository_holds_what_central_requires(release: Release) -> None:
    files = _files(release)
    for path in files.values():
        assert path.is_file(), path
        for checksum, algorithm in ((".md5", "md5"), (".sha1", "sha1")):
            digest = hashlib.new(algorithm, path.read_bytes()).hexdigest()
            assert Path(f"{path}{checksum}").read_text().strip() == digest, f"{path.name}{checksum}"
    # Only this artifact, at this version (no SNAPSHOT, nothing else to upload by mistake).
    versions = [p.name for p in (release.dir / "maven" / GROUP_PATH).iterdir() if p.is_dir()]
    assert versions == [release.version]


def test_the_central_bundle_is_signed(release: Release) -> None:
    # scripts/maven-central-bundle (an ephemeral key here, the project's in the release workflow).
    with zipfile.ZipFile(release.dir / "maven-central-bundle.zip") as bundle:
        entries = {name: bundle.read(name) for name in bundle.namelist() if not name.endswith("/")}
    expected = set()
    for path in _files(release).values():
        name = str(path.relative_to(release.dir / "maven"))
        assert entries[name] == path.read_bytes()
        assert entries[f"{name}.asc"].startswith(b"-----BEGIN PGP SIGNATURE-----")
        expected |= {name, f"{name}.asc", f"{name}.md5", f"{name}.sha1"}
    assert set(entries) == expected


def test_the_pom_has_centrals_metadata(release: Release) -> None:
    pom = ET.parse(_files(release)["pom"]).getroot()

    def text(path: str) -> str:
        return (pom.findtext("/".join(f"{POM}{part}" for part in path.split("/"))) or "").strip()

    assert (text("groupId"), text("artifactId"), text("version")) == ("ai.prisme", ARTIFACT, release.version)
    for required in (
        "name",
        "description",
        "url",
        "licenses/license/name",
        "licenses/license/url",
        "developers/developer/name",
        "scm/url",
        "scm/connection",
        "scm/developerConnection",
    ):
        assert text(required), f"<{required}> is empty or missing"
    assert text("licenses/license/name") == "Apache-2.0"
    assert text("url").startswith("https://github.com/prismeai/prisme-grpc-bridge")


def test_the_jars(release: Release) -> None:
    files = _files(release)
    with zipfile.ZipFile(files[""]) as jar:
        classes = set(jar.namelist())
        assert jar.read("META-INF/LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert {
        "ai/prisme/llmgateway/client/ErrorDetails.class",
        "ai/prisme/llmgateway/v1/ChatCompletionServiceGrpc.class",
    } <= classes
    assert not any(name.endswith(".proto") for name in classes)
    with zipfile.ZipFile(files["sources"]) as jar:
        sources = set(jar.namelist())
    # The hand-written client and the generated stubs (what an IDE shows on "go to definition").
    assert {
        "ai/prisme/llmgateway/client/ErrorDetails.java",
        "ai/prisme/llmgateway/v1/ChatCompletionServiceGrpc.java",
    } <= sources
    with zipfile.ZipFile(files["javadoc"]) as jar:
        docs = set(jar.namelist())
    assert {"index.html", "ai/prisme/llmgateway/client/ErrorDetails.html"} <= docs


def _settings(local: Path, release: Release) -> str:
    """A throwaway local repository; the release's repository, then the developer's Maven cache (read as a
    plain file repository, so nothing is written to it) ahead of Maven Central for the rest."""
    repositories = {"release": release.dir / "maven", "m2-cache": M2}
    repos = "".join(
        f"<repository><id>{rid}</id><url>{path.as_uri()}</url></repository>"
        for rid, path in repositories.items()
    )
    plugins = f"<pluginRepository><id>m2-cache</id><url>{M2.as_uri()}</url></pluginRepository>"
    return (
        f"<settings><localRepository>{local}</localRepository><profiles><profile><id>release</id>"
        f"<repositories>{repos}</repositories><pluginRepositories>{plugins}</pluginRepositories>"
        "</profile></profiles><activeProfiles><activeProfile>release</activeProfile></activeProfiles></settings>"
    )


@pytest.fixture(scope="module")
def consumer(release: Release, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The consumer project built (with README's example added as src/main/java/Hello.java): its runnable
    jar and the local repository it resolved into."""
    work = tmp_path_factory.mktemp("java-consumer")
    project = shutil.copytree(CONSUMERS / "java", work / "project")
    examples = code_blocks(README, "java")
    assert len(examples) == 1
    assert "public class Hello" in examples[0]
    (project / "src/main/java/Hello.java").write_text(examples[0])
    local = work / "m2"
    (work / "settings.xml").write_text(_settings(local, release))
    run("mvn", "-B", "-q", "-s", work / "settings.xml", "package", cwd=project)
    return project / "target/prisme-consumer.jar", local


def test_the_consumer_resolved_the_released_artifact(release: Release, consumer: tuple[Path, Path]) -> None:
    _, local = consumer
    resolved = local / GROUP_PATH / release.version
    for name in (f"{ARTIFACT}-{release.version}.jar", f"{ARTIFACT}-{release.version}.pom"):
        assert (resolved / name).read_bytes() == (release.maven / name).read_bytes()
    assert "release=" in (resolved / "_remote.repositories").read_text()


def test_the_java_consumer_calls_the_live_bridge(
    consumer: tuple[Path, Path], consumer_env: dict[str, str]
) -> None:
    jar, _ = consumer
    done = run("java", "-jar", jar, cwd=jar.parent, env=consumer_env)
    assert consumer_output(done.stdout, "Java") == {"code": "RESOURCE_EXHAUSTED", "retry_delay_ms": 7000}


@pytest.mark.parametrize(
    ("model", "text", "status"),
    [(None, "Say hello", 0), ("error-429", "RESOURCE_EXHAUSTED UPSTREAM_RATE_LIMITED: retry in PT7S", 1)],
)
def test_the_readme_example_runs_as_printed(
    consumer: tuple[Path, Path], consumer_env: dict[str, str], model: str | None, text: str, status: int
) -> None:
    jar, _ = consumer
    env = consumer_env if model is None else {**consumer_env, "PRISME_MODEL": model}
    done = run("java", "-cp", jar, "Hello", cwd=jar.parent, env=env, status=status)
    assert text in done.stdout + done.stderr
