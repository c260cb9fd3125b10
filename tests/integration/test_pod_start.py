"""Every Deployment that `kustomize build` makes from deploy/ starts and serves under its own
securityContext: its command, with its environment, as its user, in a root where only its emptyDir volumes
are writable (tests/pod_sandbox.py). A kubelet's startup, liveness and readiness probes pass, a caller gets
an answer (unary and stream) through the upstream, the metrics endpoint answers for the pod, and SIGTERM
drains and stops it with exit code 0.

This is what kubernetes-validate and the Pod Security checks cannot see: issue 20 found the base Deployment
crash-looping ("No usable temporary directory") under its own read-only root. Without the namespaces this
needs (root, or unprivileged user namespaces) the test fails: it is never skipped."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CertificateAuthority
from tests.manifests import Container, built, containers, kustomizations
from tests.pod_sandbox import Plan, SandboxUnavailableError, mode, run_drive

API_KEY = "iak_podtest_0000-key-from-the-secret"
SECRETS = {"prisme-grpc-bridge": {"api-key": API_KEY}}
_UNITS = {"Ki": "k", "Mi": "m", "Gi": "g"}


@pytest.fixture(scope="module")
def sandbox() -> str:
    try:
        name = mode()
    except SandboxUnavailableError as exc:
        pytest.fail(f"cannot run a pod here: {exc}. Run as root, or enable unprivileged user namespaces.")
    if name != "root":
        print(f"\npod sandbox: FALLBACK {name}: the pods run as the namespace's root, not their runAsUser")
    return name


def _tmpfs_size(limit: str | None) -> str:
    if limit is None:
        return "64m"
    number, unit = re.fullmatch(r"(\d+)([KMG]i)?", limit).groups()  # type: ignore[union-attr]
    return number + _UNITS.get(unit or "", "")


def _plan(container: Container, volumes: dict[str, Path], tls: dict[str, str] | None) -> Plan:
    """What tests/pod_sandbox.py needs of a built container."""
    mounts = []
    for mount in container.mounts:
        if mount.kind == "emptyDir":
            size = _tmpfs_size(mount.volume["emptyDir"].get("sizeLimit"))
            mounts.append({"path": mount.path, "kind": "emptyDir", "size": size})
        elif mount.kind == "secret":
            source = volumes[mount.volume["secret"]["secretName"]]
            mounts.append({"path": mount.path, "kind": "secret", "source": str(source)})
        else:
            pytest.fail(f"{container.deployment}: volume kind {mount.kind} is not simulated here")
    spec, pod = container.spec, container.pod
    # The image's PATH (python:3.11-slim's), with this checkout's interpreter where the image has its own;
    # HOME as the runtime sets it for a user without a home directory.
    path = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
    return {
        "argv": container.argv,
        "env": {"PATH": path, "HOME": "/home/bridge", "HOSTNAME": container.deployment, **container.env},
        "workdir": container.workdir,
        "uid": container.uid,
        "gid": container.gid,
        "read_only_root": container.read_only_root,
        "mounts": mounts,
        "ports": {**container.ports, "health": spec["startupProbe"]["grpc"]["port"]},
        "probes": {
            "startup": {
                "service": spec["startupProbe"]["grpc"].get("service", ""),
                "period": spec["startupProbe"].get("periodSeconds", 10),
                "failure_threshold": spec["startupProbe"].get("failureThreshold", 3),
            },
            "liveness": spec["livenessProbe"]["grpc"].get("service", ""),
            "readiness": spec["readinessProbe"]["grpc"].get("service", ""),
        },
        "termination_grace": pod.get("terminationGracePeriodSeconds", 30),
        "api_key": API_KEY,
        # Who may call: a pod without the key (the base) serves callers that bring theirs; a pod with it
        # (overlays/tls) uses it for the client certificate its allow-list names (`tls`), sent nothing.
        "metadata": [] if "BRIDGE_API_KEY" in container.env else [["authorization", f"Bearer {API_KEY}"]],
        "tls": tls,
    }


def _secret_volumes(container: Container, directory: Path) -> tuple[dict[str, Path], dict[str, str] | None]:
    """The Secret volumes the container mounts, made here (the TLS Secret: a CA, a server certificate for
    127.0.0.1, and a client certificate for mTLS), and what a caller needs to reach a TLS port."""
    volumes: dict[str, Path] = {}
    tls = None
    for mount in container.mounts:
        if mount.kind != "secret":
            continue
        name = mount.volume["secret"]["secretName"]
        assert name == "prisme-grpc-bridge-tls", f"no content made here for the Secret {name}"
        source = directory / name
        source.mkdir(mode=0o755)
        authority = CertificateAuthority("pod-test-ca")
        cert, key = authority.issue("prisme-grpc-bridge")
        files = {"tls.crt": cert, "tls.key": key, "ca.crt": authority.pem}
        for file_name, content in files.items():
            (source / file_name).write_bytes(content)
            (source / file_name).chmod(0o644)  # the kubelet's defaultMode
        # a caller the allow-list names, and one it does not (refused PERMISSION_DENIED)
        allowed = _allowed_identity(container)
        for file_name, uri in (("client", allowed), ("stranger", "spiffe://cluster.local/ns/elsewhere/sa/x")):
            client_cert, client_key = authority.issue("caller", client=True, uris=(uri,))
            (directory / f"{file_name}.crt").write_bytes(client_cert)
            (directory / f"{file_name}.key").write_bytes(client_key)
        (directory / "ca.crt").write_bytes(authority.pem)
        tls = {
            "ca": str(directory / "ca.crt"),
            "cert": str(directory / "client.crt"),
            "key": str(directory / "client.key"),
            "stranger_cert": str(directory / "stranger.crt"),
            "stranger_key": str(directory / "stranger.key"),
        }
        volumes[name] = source
    return volumes, tls


def _allowed_identity(container: Container) -> str:
    """An identity the container's --tls-client-allow names (a prefix entry completed)."""
    allow = container.env.get("BRIDGE_TLS_CLIENT_ALLOW", "")
    assert allow, f"{container.deployment}: mTLS without an allow-list"
    first = allow.split(",")[0].strip()
    return first.removesuffix("*") + "pod-test" if first.endswith("*") else first


def _run(container: Container, sandbox: str, tmp_path: Path) -> dict[str, Any]:
    volumes, tls = _secret_volumes(container, tmp_path)
    plan = _plan(container, volumes, tls)
    # The driver's own limit: the pod's startup budget, its termination period and a margin for the rest.
    return run_drive(plan, sandbox, tmp_path, within=30 + 2 * plan["termination_grace"] + 30)


@pytest.mark.parametrize("directory", kustomizations(), ids=lambda path: path.name)
def test_every_built_deployment_starts_and_serves_under_its_own_security_context(
    directory: Path, sandbox: str, tmp_path: Path
) -> None:
    [container] = containers(built(directory), SECRETS)
    report = _run(container, sandbox, tmp_path)
    log = "\n".join(report["log"])
    # only the emptyDir volumes were writable, even for root
    assert report["writable"] == sorted(m.path for m in container.mounts if m.kind == "emptyDir"), report
    assert report.get("ready") is True, f"the pod never became ready (exit {report.get('exit_code')}):\n{log}"
    assert report["liveness"] is True
    if sandbox == "root":  # as its runAsUser (in the fallback only the namespace's root exists)
        assert (report["uid"], report["gid"]) == (container.uid, container.gid) == (10001, 10001)
    # through the upstream: with the caller's own key, or the key from the Secret for an allowed certificate
    assert report["reply"] == "from the pod"
    assert report["chunks"] > 1
    if "BRIDGE_TLS_CLIENT_ALLOW" in container.env:
        assert report["stranger"] == "PERMISSION_DENIED", (
            log
        )  # a certificate of the CA the list does not name
    if "metrics" in container.ports:
        assert report["metrics_calls"] >= 1, log  # the pod's aggregate over its workers
    assert report["draining"] is True, log
    assert report["exit_code"] == 0, log
    assert "Traceback" not in log
    assert not [line for line in log.splitlines() if '"level":"ERROR"' in line or " ERROR " in line], log


def test_the_base_without_its_volume_fails_in_one_line_naming_the_setting(
    sandbox: str, tmp_path: Path
) -> None:
    # Issue 20's crash loop, as the pod would see it: the same pod without the emptyDir at /tmp. The
    # bridge must say in one line what to change (TMPDIR), not crash with a traceback.
    [container] = containers(built(kustomizations()[0]), SECRETS)
    assert [m.path for m in container.mounts] == ["/tmp"]
    without = dataclasses.replace(container, mounts=[])
    report = _run(without, sandbox, tmp_path)
    log = report["log"]
    assert report["writable"] == []
    assert "ready" not in report
    assert report["exit_code"] == 1, log
    errors = [line for line in log if line.startswith("prisme-bridge serve: error:")]
    assert len(errors) == 1, log
    assert "set TMPDIR to a writable directory" in errors[0]
    assert not [line for line in log if "Traceback" in line]
