"""deploy/: the Kubernetes manifests and the Dockerfile agree with the code. Env names are the flags'
variables and their values are valid settings; ports and probes are the ones those settings open; the
termination grace covers the drain; Pod Security "restricted" holds; the image tag is the one the
Dockerfile's comment builds; no Secret ships; docs/operations.md names every flag and its first deploy
works as printed.

The manifests are read as `kustomize build` makes them (tests/manifests.py), for the base and every
overlay. scripts/check also validates the builds against the API schemas (kubernetes-validate --strict);
tests/integration/test_pod_start.py starts each built pod under its own securityContext."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge import __version__
from bridge.address import split_host_port
from bridge.app import default_services, upstream_client
from bridge.auth.callers import AllowList, PeerCertificate
from bridge.settings import ENV_PREFIX, ServeSettings, flag_table, flat_fields, load
from tests.helpers import find_tool
from tests.manifests import (
    DOCKERFILE,
    KUBERNETES,
    ROOT,
    Container,
    built,
    containers,
    find,
    image,
    kustomizations,
)

BASE = KUBERNETES / "base"
TLS_OVERLAY = KUBERNETES / "overlays" / "tls"
EXAMPLE_OVERLAY = KUBERNETES / "overlays" / "example"
SERVE_ENV = {field.env for field in flat_fields(ServeSettings)}
NAME = "prisme-grpc-bridge"

Doc = dict[str, Any]


def _documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def _by_name(docs: tuple[Doc, ...]) -> dict[tuple[str, str], Doc]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


@pytest.fixture(scope="module")
def base() -> dict[tuple[str, str], Doc]:
    return _by_name(built(BASE))


@pytest.fixture(scope="module")
def pod(base: dict[tuple[str, str], Doc]) -> Doc:
    spec: Doc = base["Deployment", NAME]["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: Doc) -> Doc:
    [bridge] = pod["containers"]
    return bridge  # type: ignore[no-any-return]


def _bridge_env(started: Container) -> dict[str, str]:
    """The BRIDGE_* variables, a file path under a mounted volume standing for an existing file (the
    files' contents are checked when the bridge starts: tests/integration/test_pod_start.py)."""
    env = {}
    for name, value in started.env.items():
        if name.startswith(ENV_PREFIX):
            mounted = any(Path(value).is_relative_to(m.path) for m in started.mounts if value.startswith("/"))
            env[name] = str(ROOT / "README.md") if mounted else value
    return env


@pytest.fixture(scope="module")
def settings() -> ServeSettings:
    [started] = containers(built(BASE))
    assert started.argv == ["prisme-bridge", "serve"]
    return load(ServeSettings, {}, _bridge_env(started))


def _env(container: Doc) -> dict[str, str]:
    """A container entry's literal `env`; a value from a Secret stands as a placeholder."""
    return {variable["name"]: variable.get("value", "from-a-secret") for variable in container.get("env", [])}


def _port(container: Doc, name: str) -> int:
    [port] = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


_BUILDS = pytest.mark.parametrize("directory", kustomizations(), ids=lambda path: path.name)


def test_every_yaml_file_is_listed_in_its_kustomization() -> None:
    for directory in kustomizations():
        kustomization = _documents(directory / "kustomization.yaml")[0]
        listed = {*kustomization.get("resources", []), *(p["path"] for p in kustomization.get("patches", []))}
        files = {path.name for path in directory.glob("*.yaml")} - {"kustomization.yaml"}
        assert files <= listed, f"{directory}: YAML files its kustomization does not use"


# ---------------------------------------------------------------------------------------- the bridge


@_BUILDS
def test_every_variable_is_a_serve_flag_and_the_values_are_valid(directory: Path) -> None:
    for started in containers(built(directory)):
        env = _bridge_env(started)
        assert set(env) <= SERVE_ENV, set(env) - SERVE_ENV
        settings = load(ServeSettings, {}, env)
        assert settings.lifecycle.health_listen is not None  # probes need the plaintext health port
        assert settings.lifecycle.workers >= 1


@_BUILDS
def test_the_config_map_sets_nothing_the_deployment_overrides(directory: Path) -> None:
    # `env` wins over `envFrom`: a setting in the ConfigMap that the Deployment also sets would be ignored.
    docs = built(directory)
    config_maps = {doc["metadata"]["name"]: set(doc.get("data", {})) for doc in find(docs, "ConfigMap")}
    for started in containers(docs):
        sources = [source["configMapRef"]["name"] for source in started.spec.get("envFrom", [])]
        from_maps = {key for name in sources for key in config_maps[name]}
        assert not from_maps & set(_env(started.spec)), from_maps & set(_env(started.spec))
        assert "BRIDGE_UPSTREAM_URL" in from_maps  # an operator's setting: in the ConfigMap


@_BUILDS
def test_a_read_only_root_leaves_the_temporary_directory_on_a_volume(directory: Path) -> None:
    # With --workers > 1 and --metrics-listen, the workers share metrics files in a temporary directory
    # (bridge.workers): TMPDIR, else /tmp. Under a read-only root that must be a writable volume.
    for started in containers(built(directory)):
        settings = load(ServeSettings, {}, _bridge_env(started))
        assert started.read_only_root
        if settings.lifecycle.workers > 1 and settings.metrics.listen is not None:
            tmp = started.env.get("TMPDIR", "/tmp")
            writable = [m for m in started.mounts if m.kind == "emptyDir" and not m.read_only]
            assert any(Path(tmp).is_relative_to(m.path) for m in writable), (tmp, writable)


@_BUILDS
def test_a_key_comes_from_a_secret_that_is_not_shipped_and_only_for_authenticated_callers(
    directory: Path,
) -> None:
    docs = built(directory)
    for started in containers(docs):
        keys = [v for v in started.spec["env"] if v["name"] == "BRIDGE_API_KEY"]
        assert "BRIDGE_API_KEY" not in {k for doc in find(docs, "ConfigMap") for k in doc.get("data", {})}
        for api_key in keys:
            assert "value" not in api_key
            assert api_key["valueFrom"]["secretKeyRef"] == {"name": NAME, "key": "api-key"}
        settings = load(ServeSettings, {}, _bridge_env(started))
        if keys:  # the bridge's key: for callers with an allowed client certificate, never for anyone
            assert settings.callers.api_key_for == "authenticated"
            assert settings.tls.client_ca is not None
            assert settings.callers.client_allow
            assert settings.warnings() == []
    assert not find(docs, "Secret")
    shipped = [doc for path in KUBERNETES.rglob("*.yaml") for doc in _documents(path)]
    assert not [doc for doc in shipped if doc.get("kind") == "Secret"]


def test_the_base_carries_no_key_and_says_where_one_goes() -> None:
    [started] = containers(built(BASE))
    assert not [name for name in started.env if name == "BRIDGE_API_KEY"]
    create = f"kubectl create secret generic {NAME} --from-literal=api-key="
    assert create in (BASE / "kustomization.yaml").read_text()
    assert create in (TLS_OVERLAY / "deployment-tls.yaml").read_text()


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


@_BUILDS
def test_the_pod_meets_pod_security_restricted(directory: Path) -> None:
    for deployment in find(built(directory), "Deployment"):
        assert restricted_violations(deployment["spec"]["template"]["spec"]) == []


def test_the_restricted_check_catches_each_missing_field(pod: Doc) -> None:
    # The checker itself: taking any one required field away is reported.
    for field in ("runAsNonRoot", "allowPrivilegeEscalation", "capabilities", "seccompProfile"):
        container = {**pod["containers"][0]}
        container["securityContext"] = {k: v for k, v in container["securityContext"].items() if k != field}
        context = {k: v for k, v in pod["securityContext"].items() if k != field}
        assert restricted_violations({**pod, "securityContext": context, "containers": [container]}), field


# ------------------------------------------------------------------------------------- image, Dockerfile


def test_the_image_tag_is_the_one_the_dockerfile_comment_builds(container: Doc) -> None:
    command = re.search(r"docker build -f deploy/Dockerfile -t (\S+) \.", DOCKERFILE.read_text())
    assert command, "deploy/Dockerfile's comment lost its docker build line"
    assert container["image"] == command.group(1) == f"{NAME}:{__version__}"


def test_the_dockerfile_pins_its_base_image_and_sets_a_working_directory() -> None:
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), re.M)
    assert stages
    for reference in stages:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", reference), reference
    assert len(set(stages)) == 1  # build and final stage on the same base
    assert image().workdir != "/"  # set in the final stage


def test_the_build_stage_copies_what_the_wheel_is_built_from() -> None:
    """The wheel built in the image carries the license and the README its metadata names: the build stage
    copies them (a missing one builds silently, without the LICENSE an Apache-2.0 distribution must carry)."""
    build_stage = DOCKERFILE.read_text().split("\nFROM ")[1]
    lines = re.findall(r"^COPY (?!--from)(.+)$", build_stage, re.M)
    copied = {source for line in lines for source in line.split()[:-1]}
    assert {"pyproject.toml", "README.md", "LICENSE", "constraints.txt", "bridge"} <= copied


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


# ---------------------------------------------------------------------------------------- NetworkPolicy

CALLER_LABEL = "prisme.ai/grpc-bridge-client"
OWN_NAMESPACE = "ai"


def _selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions In/Exists) selects `labels`; None: no
    selector given (every one)."""
    if selector is None:
        return True
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        if expression["operator"] == "Exists" and not present:
            return False
        if expression["operator"] == "In" and labels.get(expression["key"]) not in expression["values"]:
            return False
        if expression["operator"] not in ("Exists", "In"):
            raise AssertionError(f"selector operator {expression['operator']} not evaluated here")
    return True


def admits(
    policy: Doc, port: str, namespace: dict[str, str], pod: dict[str, str], *, own_namespace: bool = False
) -> bool:
    """Whether `policy` admits a connection to the container port named `port` from a pod labelled `pod` in
    a namespace labelled `namespace` (`own_namespace`: the policy's own), as the NetworkPolicy API defines
    it: a rule admits a port it lists (or every port), from a peer it lists (or from everyone); a peer with
    only a podSelector means the policy's namespace; namespaceSelector and podSelector together mean both."""
    for rule in policy["spec"].get("ingress", []):
        ports = rule.get("ports")
        if ports is not None and not any(p.get("port") in (port, None) for p in ports):
            continue
        peers = rule.get("from")
        if peers is None:
            return True
        for peer in peers:
            assert "ipBlock" not in peer, "ipBlock peers are not evaluated here"
            if "namespaceSelector" in peer:
                namespace_ok = _selects(peer["namespaceSelector"], namespace)
            else:
                namespace_ok = own_namespace
            if namespace_ok and _selects(peer.get("podSelector"), pod):
                return True
    return False


def test_the_network_policy_selects_the_bridge_and_is_ingress_only(base: dict[tuple[str, str], Doc]) -> None:
    policy = base["NetworkPolicy", NAME]
    labels = base["Deployment", NAME]["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["spec"]["podSelector"], labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    named = {
        p["name"] for p in base["Deployment", NAME]["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    listed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])}
    assert listed <= named  # named container ports: a port change cannot leave the policy behind


@pytest.mark.parametrize(
    ("namespace", "pod", "own", "ports"),
    [
        # the callers' namespace, labelled by the operator: every pod may call
        ({"kubernetes.io/metadata.name": "billing", CALLER_LABEL: "true"}, {}, False, {"grpc"}),
        # a labelled pod in the bridge's own namespace
        ({"kubernetes.io/metadata.name": OWN_NAMESPACE}, {CALLER_LABEL: "true"}, True, {"grpc"}),
        # a pod label alone in another namespace: whoever deploys there sets it
        ({"kubernetes.io/metadata.name": "elsewhere"}, {CALLER_LABEL: "true"}, False, set()),
        ({"kubernetes.io/metadata.name": "elsewhere"}, {}, False, set()),
        ({"kubernetes.io/metadata.name": OWN_NAMESPACE}, {"app": "other"}, True, set()),
        ({"kubernetes.io/metadata.name": "billing", CALLER_LABEL: "false"}, {}, False, set()),
        # Prometheus scrapes from the monitoring namespace, and may not call
        ({"kubernetes.io/metadata.name": "monitoring"}, {"app": "prometheus"}, False, {"metrics"}),
    ],
    ids=["labelled-namespace", "labelled-pod-here", "labelled-pod-elsewhere", "other-namespace",
         "unlabelled-pod-here", "label-false", "monitoring"],
)  # fmt: skip
def test_the_network_policy_admits_callers_by_the_operators_label_and_scrapes_from_monitoring(
    base: dict[tuple[str, str], Doc],
    namespace: dict[str, str],
    pod: dict[str, str],
    own: bool,
    ports: set[str],
) -> None:
    policy = base["NetworkPolicy", NAME]
    admitted = {
        port
        for port in ("grpc", "health", "metrics")
        if admits(policy, port, namespace, pod, own_namespace=own)
    }
    # health: no pod at all; the kubelet's probes come from the node, which Kubernetes always admits
    assert admitted == ports


def test_the_caller_label_is_documented_where_operators_look() -> None:
    command = f"kubectl label namespace billing {CALLER_LABEL}=true"
    assert command in (BASE / "networkpolicy.yaml").read_text()
    assert command in (ROOT / "docs" / "operations.md").read_text()
    assert CALLER_LABEL in (BASE / "kustomization.yaml").read_text()


# ------------------------------------------------------------------------------ TLS overlay, examples


def test_the_tls_overlay_allows_spiffe_ids_and_the_client_certificate_example_is_one_of_them() -> None:
    [started] = containers(built(TLS_OVERLAY))
    settings = load(ServeSettings, {}, _bridge_env(started))
    assert settings.callers.client_allow
    assert all(entry.startswith("spiffe://cluster.local/ns/") for entry in settings.callers.client_allow)
    [certificate] = _documents(KUBERNETES / "examples" / "client-certificate.yaml")
    assert certificate["spec"]["usages"] == ["client auth"]
    [uri] = certificate["spec"]["uris"]
    assert AllowList(settings.callers.client_allow).match(PeerCertificate(uris=(uri,))) == uri
    [server] = _documents(KUBERNETES / "examples" / "certificate.yaml")
    assert certificate["spec"]["issuerRef"] == server["spec"]["issuerRef"]  # the CA the bridge trusts


def test_tls_overlay_sets_tls_flags_and_mounts_the_secret_as_a_directory(settings: ServeSettings) -> None:
    overlay = _documents(TLS_OVERLAY / "kustomization.yaml")[0]
    assert overlay["resources"] == ["../../base"]
    [patch] = [_documents(TLS_OVERLAY / p["path"])[0] for p in overlay["patches"]]
    pod = patch["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = _env(container)
    assert set(env) == {"BRIDGE_TLS_CERT", "BRIDGE_TLS_KEY", "BRIDGE_TLS_CLIENT_CA", "BRIDGE_API_KEY"}
    files = {name: value for name, value in env.items() if name.startswith("BRIDGE_TLS_")}
    [mount] = container["volumeMounts"]
    assert "subPath" not in mount  # the kubelet never updates subPath files: rotation would not reach us
    assert all(Path(path).parent == Path(mount["mountPath"]) for path in files.values())
    [volume] = pod["volumes"]
    assert volume["name"] == mount["name"]
    assert set(volume) == {"name", "secret"}  # a restricted volume type
    assert "securityContext" not in container


def test_the_example_overlay_is_what_an_operator_sets_and_no_more() -> None:
    overlay = _documents(EXAMPLE_OVERLAY / "kustomization.yaml")[0]
    assert overlay["resources"] == ["../../base"]
    # the image, in the standard images: form, at the base's tag (the version)
    [entry] = overlay["images"]
    assert entry["name"] == NAME
    assert entry["newTag"] == __version__
    # the settings: a ConfigMap generator merged into the base's, from an env file
    [generator] = overlay["configMapGenerator"]
    assert (generator["name"], generator["behavior"]) == (NAME, "merge")
    [env_file] = generator["envs"]
    settings = dict(
        line.split("=", 1)
        for line in (EXAMPLE_OVERLAY / env_file).read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert "BRIDGE_UPSTREAM_URL" in settings
    # what the build makes of it
    docs = built(EXAMPLE_OVERLAY)
    [started] = containers(docs)
    assert started.spec["image"] == f"{entry['newName']}:{__version__}"
    assert {k: started.env[k] for k in settings} == settings
    assert {doc["metadata"].get("namespace") for doc in docs} == {overlay["namespace"]}
    # callers bring their own credentials (no key), from namespaces labelled for the NetworkPolicy
    assert "BRIDGE_API_KEY" not in started.env
    assert (
        f"kubectl label namespace billing {CALLER_LABEL}=true"
        in (EXAMPLE_OVERLAY / "kustomization.yaml").read_text()
    )


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


def test_the_first_deploy_in_the_operations_doc_works_as_printed(tmp_path: Path) -> None:
    # The commands of docs/operations.md "First deploy", run in a copy of deploy/ with the real kustomize;
    # kubectl is stood in for by a function that records its arguments and builds what `apply -k` gets.
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- first-deploy -->\n```sh\n(.*?)```\n<!-- /first-deploy -->", text, re.DOTALL)
    assert found, "docs/operations.md lost its <!-- first-deploy --> block"
    commands = found.group(1)
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    calls, applied = tmp_path / "kubectl-calls", tmp_path / "applied.yaml"
    stub = (
        'kubectl() { echo "$*" >> "$CALLS"; '
        'if [ "$1 $2" = "apply -k" ]; then kustomize build "$3" > "$APPLIED"; fi; }\n'
    )
    script = tmp_path / "first-deploy.sh"
    script.write_text("set -euo pipefail\n" + stub + commands)
    tools = Path(find_tool("kustomize")).parent
    env = {
        **os.environ,
        "CALLS": str(calls),
        "APPLIED": str(applied),
        "PATH": f"{tools}:{os.environ['PATH']}",
    }
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

    recorded = calls.read_text().splitlines()
    [namespace] = re.findall(r"^create namespace (\S+)$", "\n".join(recorded), re.M)
    # who may call: the callers' namespaces get the label the NetworkPolicy admits
    [(caller_namespace, label)] = re.findall(r"^label namespace (\S+) (\S+)=true$", "\n".join(recorded), re.M)
    assert "apply -k ." in recorded
    docs = tuple(doc for doc in yaml.safe_load_all(applied.read_text()) if doc)
    assert {doc["metadata"].get("namespace") for doc in docs} == {namespace}
    [started] = containers(docs)
    assert f"-n {namespace} rollout status deployment/{started.deployment}" in recorded
    [image_set] = re.findall(r"kustomize edit set image prisme-grpc-bridge=(\S+)", commands)
    assert started.spec["image"] == image_set
    [url] = re.findall(r"^BRIDGE_UPSTREAM_URL=(\S+)$", commands, re.M)
    assert started.env["BRIDGE_UPSTREAM_URL"] == url
    load(ServeSettings, {}, _bridge_env(started))  # the settings it starts with are valid
    assert "BRIDGE_API_KEY" not in started.env  # callers send their own credentials
    [policy] = find(docs, "NetworkPolicy")
    assert admits(policy, "grpc", {"kubernetes.io/metadata.name": caller_namespace, label: "true"}, {})
    # the check that follows calls with the caller's own key
    check = text.split("<!-- /first-deploy -->", 1)[1].split("\n## ", 1)[0]
    assert "grpcurl -plaintext -H 'authorization: Bearer " in check
