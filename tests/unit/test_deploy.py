"""deploy/: the Kubernetes manifests and the Dockerfile agree with the code. Env names are the flags'
variables and their values are valid settings; ports and probes are the ones those settings open; the
termination grace covers the drain; Pod Security "restricted" holds; the image tag is the one the
Dockerfile's comment builds; no Secret ships; docs/operations.md names every flag.

scripts/check also builds the base and the overlay with kustomize and validates them against the API
schemas (kubernetes-validate --strict)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge import __version__
from bridge.app import default_services, upstream_client
from bridge.cli import flag_table
from bridge.settings import ServeSettings, flat_fields, load, split_host_port

ROOT = Path(__file__).parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
TLS_OVERLAY = KUBERNETES / "overlays" / "tls"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SERVE_ENV = {field.env for field in flat_fields(ServeSettings)}
NAME = "prisme-grpc-bridge"

Doc = dict[str, Any]


def _documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def _resources(directory: Path) -> dict[tuple[str, str], Doc]:
    """The resources a kustomization lists, by (kind, name); every YAML file beside it must be listed."""
    listed = _documents(directory / "kustomization.yaml")[0]["resources"]
    files = {path.name for path in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == files, f"{directory}: files not in its kustomization, or missing"
    docs = [doc for name in listed for doc in _documents(directory / name)]
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


@pytest.fixture(scope="module")
def base() -> dict[tuple[str, str], Doc]:
    return _resources(BASE)


@pytest.fixture(scope="module")
def pod(base: dict[tuple[str, str], Doc]) -> Doc:
    spec: Doc = base["Deployment", NAME]["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: Doc) -> Doc:
    [bridge] = pod["containers"]
    return bridge  # type: ignore[no-any-return]


def _env(container: Doc) -> dict[str, str]:
    """The container's BRIDGE_* variables; a value from a Secret stands as a placeholder."""
    env: dict[str, str] = {}
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value", "from-a-secret")
    return env


@pytest.fixture(scope="module")
def settings(container: Doc) -> ServeSettings:
    assert container["args"] == ["serve"]
    return load(ServeSettings, {}, _env(container))


def _port(container: Doc, name: str) -> int:
    [port] = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


# ---------------------------------------------------------------------------------------- the bridge


def test_every_variable_is_a_serve_flag_and_the_values_are_valid(
    container: Doc, settings: ServeSettings
) -> None:
    assert set(_env(container)) <= SERVE_ENV, set(_env(container)) - SERVE_ENV
    assert settings.lifecycle.health_listen is not None  # probes need the plaintext health port
    assert settings.lifecycle.workers >= 1


def test_the_key_comes_from_a_secret_that_is_not_shipped(
    base: dict[tuple[str, str], Doc], container: Doc
) -> None:
    [api_key] = [v for v in container["env"] if v["name"] == "BRIDGE_API_KEY"]
    assert "value" not in api_key
    assert api_key["valueFrom"]["secretKeyRef"] == {"name": NAME, "key": "api-key"}
    shipped = [doc for path in KUBERNETES.rglob("*.yaml") for doc in _documents(path)]
    assert not [doc for doc in shipped if doc.get("kind") == "Secret"]
    assert (
        f"kubectl create secret generic {NAME} --from-literal=api-key="
        in (BASE / "kustomization.yaml").read_text()
    )


def test_container_ports_are_the_ones_the_settings_listen_on(container: Doc, settings: ServeSettings) -> None:
    assert split_host_port(settings.server.listen) == ("0.0.0.0", _port(container, "grpc"))
    assert settings.lifecycle.health_listen is not None
    assert split_host_port(settings.lifecycle.health_listen) == ("0.0.0.0", _port(container, "health"))
    assert settings.metrics.listen is not None
    assert split_host_port(settings.metrics.listen) == ("0.0.0.0", _port(container, "metrics"))
    assert len({p["containerPort"] for p in container["ports"]}) == len(container["ports"])


async def test_probes_are_native_grpc_health_on_the_health_port(
    container: Doc, settings: ServeSettings
) -> None:
    client = upstream_client(settings.upstream)
    try:
        served = {service.name for service in default_services(settings, client)}
    finally:
        await client.aclose()
    health = _port(container, "health")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert set(container[probe]) >= {"grpc"}, probe
        assert container[probe]["grpc"]["port"] == health, probe
    assert container["livenessProbe"]["grpc"]["service"] == ""
    assert container["startupProbe"]["grpc"]["service"] == ""
    assert container["readinessProbe"]["grpc"]["service"] in served


def test_termination_grace_covers_the_drain_delay_and_the_shutdown_grace(
    pod: Doc, container: Doc, settings: ServeSettings
) -> None:
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert "exec" not in container.get("lifecycle", {}).get("preStop", {})  # the image has no shell tools
    drain = settings.lifecycle.drain_delay + settings.server.shutdown_grace
    assert settings.lifecycle.drain_delay > 0
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain


def test_resources_are_requested_and_memory_limited(container: Doc, settings: ServeSettings) -> None:
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    assert int(resources["requests"]["cpu"]) == settings.lifecycle.workers  # one worker per core


# ------------------------------------------------------------------------------ Pod Security restricted

_RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
}  # fmt: skip


def restricted_violations(pod: Doc) -> list[str]:
    """What the Pod Security Standard "restricted" (with "baseline") refuses in a pod spec."""
    problems = [f"spec.{key}" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    context = pod.get("securityContext", {})
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: {kinds}")
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        name, own = container["name"], container.get("securityContext", {})
        if own.get("privileged"):
            problems.append(f"{name}: privileged")
        if own.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in own.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(own.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities added")
        if own.get("runAsNonRoot", context.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot must be true")
        if own.get("runAsUser", context.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = own.get("seccompProfile", context.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        if any("hostPort" in port for port in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


def test_the_pod_meets_pod_security_restricted(pod: Doc) -> None:
    assert restricted_violations(pod) == []


def test_the_restricted_check_catches_each_missing_field(pod: Doc) -> None:
    # The checker itself: taking any one required field away is reported.
    for field in ("runAsNonRoot", "allowPrivilegeEscalation", "capabilities", "seccompProfile"):
        container = {**pod["containers"][0]}
        container["securityContext"] = {k: v for k, v in container["securityContext"].items() if k != field}
        context = {k: v for k, v in pod["securityContext"].items() if k != field}
        assert restricted_violations({**pod, "securityContext": context, "containers": [container]}), field


# ------------------------------------------------------------------------------------- image, Dockerfile


def test_the_image_tag_is_the_one_the_dockerfile_comment_builds(container: Doc) -> None:
    built = re.search(r"docker build -f deploy/Dockerfile -t (\S+) \.", DOCKERFILE.read_text())
    assert built, "deploy/Dockerfile's comment lost its docker build line"
    assert container["image"] == built.group(1) == f"{NAME}:{__version__}"


def test_dockerfile_variables_and_ports(container: Doc) -> None:
    text = DOCKERFILE.read_text()
    assert set(re.findall(r"\b(BRIDGE_[A-Z_]+)", text)) <= SERVE_ENV
    exposed = {int(port) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for port in line.split()}
    assert exposed == {p["containerPort"] for p in container["ports"]}
    assert re.search(r"^USER 10001$", text, re.M)  # numeric, so runAsNonRoot can be verified


# ------------------------------------------------------------------------------- services, HPA, PDB


def test_services_select_the_pods_and_target_their_ports(base: dict[tuple[str, str], Doc], pod: Doc) -> None:
    labels = base["Deployment", NAME]["spec"]["template"]["metadata"]["labels"]
    assert base["Deployment", NAME]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    services = {name: doc["spec"] for (kind, name), doc in base.items() if kind == "Service"}
    assert set(services) == {NAME, f"{NAME}-headless"}
    assert services[f"{NAME}-headless"]["clusterIP"] == "None"
    assert services[NAME].get("type", "ClusterIP") == "ClusterIP"
    assert "clusterIP" not in services[NAME]
    named_ports = {p["name"] for p in pod["containers"][0]["ports"]}
    for spec in services.values():
        assert spec["selector"].items() <= labels.items()
        assert {port["targetPort"] for port in spec["ports"]} <= named_ports
    # Callers of the headless name get every pod's gRPC port and nothing else; scrapes use the ClusterIP's.
    assert [port["name"] for port in services[f"{NAME}-headless"]["ports"]] == ["grpc"]
    assert [port["targetPort"] for port in services[NAME]["ports"]] == ["grpc", "metrics"]


def test_hpa_and_pdb_target_the_deployment(base: dict[tuple[str, str], Doc], pod: Doc) -> None:
    labels = base["Deployment", NAME]["spec"]["template"]["metadata"]["labels"]
    hpa = base["HorizontalPodAutoscaler", NAME]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert "replicas" not in base["Deployment", NAME]["spec"]  # the HPA owns it
    pdb = base["PodDisruptionBudget", NAME]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["maxUnavailable"] < hpa["minReplicas"]


# ------------------------------------------------------------------------------ TLS overlay, examples


def test_tls_overlay_sets_tls_flags_and_mounts_the_secret_as_a_directory(settings: ServeSettings) -> None:
    overlay = _documents(TLS_OVERLAY / "kustomization.yaml")[0]
    assert overlay["resources"] == ["../../base"]
    [patch] = [_documents(TLS_OVERLAY / p["path"])[0] for p in overlay["patches"]]
    pod = patch["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = _env(container)
    assert set(env) == {"BRIDGE_TLS_CERT", "BRIDGE_TLS_KEY", "BRIDGE_TLS_CLIENT_CA"}
    [mount] = container["volumeMounts"]
    assert "subPath" not in mount  # the kubelet never updates subPath files: rotation would not reach us
    assert all(Path(path).parent == Path(mount["mountPath"]) for path in env.values())
    [volume] = pod["volumes"]
    assert volume["name"] == mount["name"]
    assert set(volume) == {"name", "secret"}  # a restricted volume type
    assert "securityContext" not in container


def test_the_certificate_example_fills_the_overlay_secret_for_both_services() -> None:
    [certificate] = _documents(KUBERNETES / "examples" / "certificate.yaml")
    patch = _documents(TLS_OVERLAY / "deployment-tls.yaml")[0]
    [volume] = patch["spec"]["template"]["spec"]["volumes"]
    assert certificate["spec"]["secretName"] == volume["secret"]["secretName"]
    names = certificate["spec"]["dnsNames"]
    for service in (NAME, f"{NAME}-headless"):
        assert f"{service}.NAMESPACE.svc.cluster.local" in names


def test_the_service_monitor_scrapes_the_metrics_port_of_the_cluster_ip_service(
    base: dict[tuple[str, str], Doc], container: Doc, settings: ServeSettings
) -> None:
    [monitor] = _documents(KUBERNETES / "examples" / "servicemonitor.yaml")
    assert monitor["kind"] == "ServiceMonitor"
    selected = [
        doc
        for (kind, _), doc in base.items()
        if kind == "Service"
        and monitor["spec"]["selector"]["matchLabels"].items() <= doc["metadata"]["labels"].items()
    ]
    scraped = [
        port
        for doc in selected
        for port in doc["spec"]["ports"]
        for e in monitor["spec"]["endpoints"]
        if port["name"] == e["port"]
    ]
    assert [port["targetPort"] for port in scraped] == ["metrics"]  # once per pod, not once per Service
    assert [e["path"] for e in monitor["spec"]["endpoints"]] == ["/metrics"]
    assert settings.lifecycle.workers > 1  # so the one scrape must be the aggregate: test_workers.py


# ------------------------------------------------------------------------------------------- docs


def test_operations_doc_covers_every_flag_and_both_services() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for field in flat_fields(ServeSettings):
        assert field.flag in text, field.flag
    assert f"dns:///{NAME}-headless." in text
    assert "round_robin" in text


def test_operations_doc_flag_table_is_generated_from_the_settings() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- flags:serve -->\n(.*?)\n<!-- /flags:serve -->", text, re.DOTALL)
    assert found, "docs/operations.md lacks the <!-- flags:serve --> table"
    assert found.group(1) == flag_table("serve"), "stale: run scripts/flag-table"
