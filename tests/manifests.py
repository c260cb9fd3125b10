"""What deploy/ makes, read the way Kubernetes and a container runtime read it: every kustomization built
with the pinned kustomize, the image's configuration from deploy/Dockerfile, and each container as it would
start (command, environment with ConfigMaps resolved, working directory, user, volumes).

Shared by tests/unit/test_deploy.py (the manifests agree with the code) and
tests/integration/test_pod_start.py (the pods start under their own securityContext)."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import find_tool

ROOT = Path(__file__).parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

Doc = dict[str, Any]


def kustomizations() -> list[Path]:
    """Every directory `kustomize build` makes a deployable whole from: the base and each overlay (what
    scripts/check builds and validates)."""
    return [KUBERNETES / "base", *sorted(p.parent for p in KUBERNETES.glob("overlays/*/kustomization.yaml"))]


@cache
def built(directory: Path) -> tuple[Doc, ...]:
    """The documents `kustomize build DIRECTORY` prints."""
    result = subprocess.run(
        [find_tool("kustomize"), "build", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"kustomize build {directory}: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)


def find(docs: tuple[Doc, ...], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc.get("kind") == kind]


# ------------------------------------------------------------------------------------------ the image


@dataclass(frozen=True)
class Image:
    """The final stage of deploy/Dockerfile, as the runtime applies it to a container."""

    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    workdir: str
    user: str


@cache
def image() -> Image:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))  # continuation lines joined
    final = re.split(r"^FROM .*$", text, flags=re.M)[-1]
    instructions = [
        (match.group(1), match.group(2).strip()) for match in re.finditer(r"^([A-Z]+)\s+(.*)$", final, re.M)
    ]
    env: dict[str, str] = {}
    workdir, user, entrypoint, cmd = "/", "root", [], []
    for instruction, argument in instructions:
        if instruction == "ENV":
            env.update(pair.split("=", 1) for pair in argument.split())
        elif instruction == "WORKDIR":
            workdir = argument
        elif instruction == "USER":
            user = argument
        elif instruction == "ENTRYPOINT":
            entrypoint = json.loads(argument)
        elif instruction == "CMD":
            cmd = json.loads(argument)
    return Image(entrypoint, cmd, env, workdir, user)


# ------------------------------------------------------------------------------------ a container


@dataclass(frozen=True)
class Mount:
    path: str
    volume: Doc  # the pod's volume entry (name and source)
    read_only: bool

    @property
    def kind(self) -> str:
        [kind] = set(self.volume) - {"name"}
        return kind


@dataclass(frozen=True)
class Container:
    """One container of a built Deployment, as it would start."""

    deployment: str
    name: str
    argv: list[str]  # command (else the image's ENTRYPOINT) + args (else its CMD)
    env: dict[str, str]  # the image's ENV, then envFrom, then env; Secret values as `secrets` gives them
    workdir: str
    uid: int
    gid: int
    read_only_root: bool
    mounts: list[Mount]
    ports: dict[str, int]
    spec: Doc = field(repr=False)  # the container entry itself
    pod: Doc = field(repr=False)  # the pod spec


def containers(docs: tuple[Doc, ...], secrets: dict[str, dict[str, str]] | None = None) -> list[Container]:
    """Every container of every Deployment in `docs`. `secrets`: Secret name -> {key: value} for the values
    env takes from Secrets (a missing one stands as a placeholder)."""
    config_maps = {doc["metadata"]["name"]: doc.get("data", {}) for doc in find(docs, "ConfigMap")}
    found = []
    for deployment in find(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for spec in pod["containers"]:
            context = {**pod.get("securityContext", {}), **spec.get("securityContext", {})}
            found.append(
                Container(
                    deployment=deployment["metadata"]["name"],
                    name=spec["name"],
                    argv=spec.get("command", image().entrypoint) + spec.get("args", image().cmd),
                    env=_env(spec, config_maps, secrets or {}),
                    workdir=spec.get("workingDir", image().workdir),
                    uid=int(context.get("runAsUser", image().user)),
                    gid=int(context.get("runAsGroup", context.get("runAsUser", image().user))),
                    read_only_root=context.get("readOnlyRootFilesystem", False),
                    mounts=[
                        Mount(m["mountPath"], volumes[m["name"]], m.get("readOnly", False))
                        for m in spec.get("volumeMounts", [])
                    ],
                    ports={port["name"]: port["containerPort"] for port in spec.get("ports", [])},
                    spec=spec,
                    pod=pod,
                )
            )
    return found


def _env(
    spec: Doc, config_maps: dict[str, dict[str, str]], secrets: dict[str, dict[str, str]]
) -> dict[str, str]:
    env = dict(image().env)
    for source in spec.get("envFrom", []):
        assert set(source) <= {"configMapRef", "prefix"}, f"envFrom {source}: only ConfigMaps are resolved"
        reference = source["configMapRef"]
        assert reference["name"] in config_maps, f"envFrom names ConfigMap {reference['name']}, not built"
        env.update({source.get("prefix", "") + k: v for k, v in config_maps[reference["name"]].items()})
    for variable in spec.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        reference = variable["valueFrom"]
        if "secretKeyRef" in reference:
            ref = reference["secretKeyRef"]
            env[variable["name"]] = secrets.get(ref["name"], {}).get(ref["key"], "from-a-secret")
        elif "configMapKeyRef" in reference:
            ref = reference["configMapKeyRef"]
            env[variable["name"]] = config_maps[ref["name"]][ref["key"]]
        else:
            raise AssertionError(f"{variable['name']}: valueFrom {reference} is not resolved here")
    return env
