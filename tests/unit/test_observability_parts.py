"""Pure parts of metrics, tracing configuration and server limits: label bounding, grpc-go code names,
OTEL_* interpretation, the server options --max-* flags become."""

from __future__ import annotations

import ast
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from bridge.app import server_config
from bridge.rpc.access import AccessLog
from bridge.rpc.call import PLUMBING_SERVICES
from bridge.rpc.callers import CallerAuthorization
from bridge.rpc.limits import ConcurrencyLimit
from bridge.rpc.metrics import GO_CODE_NAMES, OTHER_MODEL, Metrics, ModelLabels
from bridge.rpc.server import server_options
from bridge.rpc.tracing import Tracing, TracingConfigError, tracer_provider_from_env
from bridge.settings import ServeSettings
from bridge.upstream.headers import AuthPolicy

# ------------------------------------------------------------------------------------------- metrics

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"


def test_go_code_names_are_grpc_go_spellings() -> None:
    # What go-grpc-prometheus dashboards filter on (grpc-go codes.Code.String()).
    assert GO_CODE_NAMES[grpc.StatusCode.OK] == "OK"
    assert GO_CODE_NAMES[grpc.StatusCode.CANCELLED] == "Canceled"
    assert GO_CODE_NAMES[grpc.StatusCode.RESOURCE_EXHAUSTED] == "ResourceExhausted"
    assert GO_CODE_NAMES[grpc.StatusCode.DEADLINE_EXCEEDED] == "DeadlineExceeded"
    assert GO_CODE_NAMES[grpc.StatusCode.UNAUTHENTICATED] == "Unauthenticated"
    assert len(set(GO_CODE_NAMES.values())) == len(grpc.StatusCode) == 17


def test_model_labels_admit_answered_models_up_to_the_cap() -> None:
    labels = ModelLabels(max_models=2)
    assert labels.label("made-up", admit=False) == OTHER_MODEL  # never answered: not a label value
    assert labels.label("gpt-4o", admit=True) == "gpt-4o"
    assert labels.label("gpt-4o", admit=False) == "gpt-4o"  # known: kept for its failures too
    assert labels.label("eu.anthropic.claude-sonnet-4-20250514-v1:0", admit=True).startswith("eu.")
    assert labels.label("third", admit=True) == OTHER_MODEL  # over the cap
    assert labels.label("", admit=True) == OTHER_MODEL


def test_model_labels_can_be_off() -> None:
    assert ModelLabels(max_models=0).label("gpt-4o", admit=True) == OTHER_MODEL


# --------------------------------------------------------------------------------------------- tracing


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_SERVICE_NAME": "bridge-a"},  # naming the service exports nothing
    ],
)
def test_tracing_is_off_unless_an_exporter_is_configured(environ: dict[str, str]) -> None:
    assert tracer_provider_from_env(environ) is None


def test_an_exporter_by_name_turns_tracing_on() -> None:
    provider = tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "console"})
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "prisme-bridge"
    provider.shutdown()


def test_an_otlp_endpoint_alone_means_otlp() -> None:
    provider = tracer_provider_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert isinstance(provider, TracerProvider)
    provider.shutdown()


def test_an_exporter_that_is_not_installed_is_a_clear_error() -> None:
    with pytest.raises(TracingConfigError, match=r"'zipkin'.*installed: .*console.*otlp"):
        tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})


# ------------------------------------------------------------------------------------------ server


def test_server_options_from_limits() -> None:
    default = dict(server_options())
    assert default["grpc.max_receive_message_length"] == 64 * 1024 * 1024
    assert "grpc.max_connection_age_ms" not in default  # never, unless asked
    assert "grpc.max_connection_age_grace_ms" not in default  # calls in flight: as long as they take
    settings = ServeSettings(
        upstream_url="http://gw/v1",
        max_receive_message_bytes=2048,
        max_send_message_bytes=4096,
        max_connection_age=300,
        max_connection_age_grace=30.5,
        health_listen="127.0.0.1:8081",
    )
    config = server_config(settings)  # the settings mapped to the RPC layer's own options
    assert (config.listen, config.health_listen) == ("127.0.0.1:50051", "127.0.0.1:8081")
    options = dict(server_options(config))
    assert options["grpc.max_receive_message_length"] == 2048
    assert options["grpc.max_send_message_length"] == 4096
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] == 30_500
    # The keepalive policy that accepts Go/Java pings stays whatever the limits.
    assert options["grpc.http2.min_recv_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1


def test_health_and_reflection_are_left_out_by_one_list() -> None:
    """The plumbing's services, named once (rpc.call.PLUMBING_SERVICES): no access line, no span, never
    refused by the limit; metrics still count them."""
    assert {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "xds.service.orca.v3.OpenRcaService",
    } == PLUMBING_SERVICES
    assert reflection.SERVICE_NAME in PLUMBING_SERVICES
    chat = "/prisme.llmgateway.v1.ChatCompletionService/CreateChatCompletion"
    plumbing = [
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    for interceptor in (AccessLog(), Tracing(), ConcurrencyLimit(1)):
        assert interceptor.applies_to(chat)
        assert not any(interceptor.applies_to(method) for method in plumbing), interceptor
    assert all(Metrics(CollectorRegistry()).applies_to(method) for method in plumbing)
    # Who may call: health is open to anyone (probes carry no certificate); reflection is identified.
    callers = CallerAuthorization(AuthPolicy(api_key="k"), mtls=True)
    assert [callers.applies_to(method) for method in (chat, *plumbing)] == [True, False, True]


def test_no_module_spells_the_plumbing_services_again() -> None:
    """Health's and reflection's service names come from their descriptors (rpc/call.py): a list of them
    written out elsewhere would drift from PLUMBING_SERVICES."""
    spelled = {
        path.relative_to(BRIDGE).as_posix()
        for path in BRIDGE.rglob("*.py")
        if "gen" not in path.relative_to(BRIDGE).parts
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in PLUMBING_SERVICES
    }
    assert spelled == set()
