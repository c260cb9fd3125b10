"""bridge.settings: grouped settings keep their flat public names; precedence; the README's flag table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from bridge.settings import (
    CommandSettings,
    DevSettings,
    MockGatewaySettings,
    ServeSettings,
    flag_table,
    flat_fields,
    load,
)
from bridge.settings.flags import one_line_error

README = Path(__file__).parents[2] / "README.md"

# The public names: flags and BRIDGE_* variables users and deployments depend on. Add, never rename.
PINNED = {
    ServeSettings: [
        "listen", "shutdown_grace", "upstream_url", "connect_timeout", "read_timeout", "max_connections",
        "upstream_transport", "max_event_bytes", "api_key", "auth_mode", "api_key_header", "response_headers",
        "reply_metadata", "max_concurrent_rpcs", "max_receive_message_bytes", "max_send_message_bytes",
        "max_connection_age", "max_connection_age_grace", "metrics_listen", "metrics_max_models",
        "orca", "orca_window", "orca_min_interval",
        "tls_cert", "tls_key", "tls_client_ca", "api_key_for", "tls_client_allow", "caller_identity_header",
        "upstream_ca_file", "upstream_client_cert", "upstream_client_key", "upstream_trust_env",
        "retries", "retry_backoff", "retry_max_backoff", "retry_streams",
        "breaker_failures", "breaker_cooldown", "hedge_after", "hedge_max_ratio",
        "workers", "event_loop", "drain_delay", "health_listen",
        "log_level", "log_format",
    ],
    MockGatewaySettings: ["mock_listen", "require_api_key", "log_level", "log_format"],
    DevSettings: ["listen", "mock_listen", "log_level", "log_format"],
}  # fmt: skip


@pytest.mark.parametrize("model", list(PINNED), ids=lambda m: m.__name__)
def test_flat_names_flags_and_env_vars_are_pinned(model: type[CommandSettings]) -> None:
    fields = list(flat_fields(model))
    assert [f.name for f in fields] == PINNED[model]
    assert [f.flag for f in fields] == ["--" + n.replace("_", "-") for n in PINNED[model]]
    assert [f.env for f in fields] == ["BRIDGE_" + n.upper() for n in PINNED[model]]


@pytest.mark.parametrize("model", list(PINNED), ids=lambda m: m.__name__)
def test_every_group_field_has_its_flat_name_and_a_description(model: type[CommandSettings]) -> None:
    for field in flat_fields(model):
        assert field.info.alias, f"{field.group}.{field.attribute} has no flat name (alias)"
        assert field.info.description, field.name


def test_groups_are_reached_by_flat_names_and_by_their_own() -> None:
    settings = ServeSettings(
        listen="127.0.0.1:0",
        upstream_url="http://gw/v1/",
        auth_mode="fixed",
        api_key="k",
        api_key_for="anyone",
    )
    assert settings.server.listen == "127.0.0.1:0"
    assert settings.upstream.url == "http://gw/v1"
    assert settings.auth.mode == "fixed"
    assert settings.logging.level == "INFO"
    by_group = ServeSettings.model_validate(
        {"upstream": {"url": "http://gw/v1"}, "logging": {"level": "DEBUG"}}
    )
    assert (by_group.upstream.url, by_group.logging.level) == ("http://gw/v1", "DEBUG")


def test_flag_beats_env_beats_default() -> None:
    env = {"BRIDGE_UPSTREAM_URL": "http://env/v1", "BRIDGE_READ_TIMEOUT": "3", "UNRELATED": "x"}
    settings = load(ServeSettings, {"upstream_url": "http://flag/v1", "read_timeout": None}, env)
    assert settings.upstream.url == "http://flag/v1"
    assert settings.upstream.read_timeout == 3.0
    assert settings.upstream.connect_timeout == 10.0


def test_a_missing_setting_is_reported_by_its_flat_name() -> None:
    with pytest.raises(ValidationError) as raised:
        load(ServeSettings, {}, {})
    assert [error["loc"][-1] for error in raised.value.errors()] == ["upstream_url"]


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValidationError):
        ServeSettings(upstream_url="http://gw/v1", no_such_setting=1)


@pytest.mark.parametrize("command", ["serve", "mock-gateway", "dev"])
def test_readme_flag_table_is_generated_from_the_settings(command: str) -> None:
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- flags:{command} -->\n(.*?)\n<!-- /flags:{command} -->", text, re.DOTALL)
    assert found, f"README.md lacks the <!-- flags:{command} --> table"
    assert found.group(1) == flag_table(command), "README flag table is stale: run scripts/flag-table"


@pytest.mark.parametrize("given", ["aiohttp-direct", "aiohttp", "httpx"])
def test_the_previous_name_of_the_aiohttp_transport_is_taken_with_a_warning(given: str) -> None:
    for settings in (
        load(ServeSettings, {"upstream_url": "http://gw/v1", "upstream_transport": given}, {}),
        load(ServeSettings, {}, {"BRIDGE_UPSTREAM_URL": "http://gw/v1", "BRIDGE_UPSTREAM_TRANSPORT": given}),
        ServeSettings.model_validate({"upstream": {"url": "http://gw/v1", "transport": given}}),
    ):
        assert settings.upstream.transport == ("aiohttp" if given == "aiohttp-direct" else given)
        renamed = [text for text in settings.warnings() if "--upstream-transport" in text]
        if given == "aiohttp-direct":
            assert renamed == [
                "--upstream-transport / BRIDGE_UPSTREAM_TRANSPORT aiohttp-direct is now named aiohttp (the "
                "same transport); the old name will be refused from the next release"
            ]
        else:
            assert renamed == []


def test_serve_logs_json_and_the_other_commands_text_by_default() -> None:
    assert ServeSettings(upstream_url="http://gw/v1").logging.format == "json"
    assert DevSettings().logging.format == "text"
    assert MockGatewaySettings().logging.format == "text"
    assert ServeSettings(upstream_url="http://gw/v1", log_format="text").logging.format == "text"


# ------------------------------------------------------------------ TLS pairs, workers, drain, health port

_CERT, _KEY = str(README), str(README)  # existing files; their content is checked when the bridge starts


@pytest.mark.parametrize(
    ("flat", "reported", "message"),
    [
        ({"tls_cert": _CERT}, "tls_key", "--tls-cert and --tls-key go together"),
        ({"tls_key": _KEY}, "tls_key", "--tls-cert and --tls-key go together"),
        ({"tls_client_ca": _CERT}, "tls_client_ca", "mTLS needs TLS"),
        ({"tls_cert": "/no/such.crt", "tls_key": _KEY}, "tls_cert", "does not point to a file"),
        ({"upstream_client_cert": _CERT}, "upstream_client_key", "go together"),
        ({"upstream_client_key": _KEY}, "upstream_client_key", "go together"),
        ({"workers": 0}, "workers", "greater than or equal to 1"),
        ({"drain_delay": -1}, "drain_delay", "greater than or equal to 0"),
        ({"health_listen": "8081"}, "health_listen", "HOST:PORT"),
        ({"response_headers": "x-a", "reply_metadata": False}, "reply_metadata", "--reply-metadata is false"),
    ],
)
def test_settings_that_cannot_work_are_refused_by_their_flat_name(
    flat: dict[str, object], reported: str, message: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        ServeSettings(upstream_url="http://gw/v1", **flat)
    [error] = raised.value.errors()
    assert error["loc"][-1] == reported
    assert message in error["msg"]


def test_tls_pairs_and_lifecycle_defaults() -> None:
    plain = ServeSettings(upstream_url="http://gw/v1")
    assert (plain.tls.cert, plain.tls.key, plain.tls.client_ca) == (None, None, None)
    lifecycle = plain.lifecycle
    assert (lifecycle.workers, lifecycle.drain_delay, lifecycle.health_listen) == (1, 0, None)
    assert plain.upstream_tls.trust_env is False
    mtls = ServeSettings(upstream_url="http://gw/v1", tls_cert=_CERT, tls_key=_KEY, tls_client_ca=_CERT)
    assert mtls.tls.client_ca == README
    env = {"BRIDGE_UPSTREAM_URL": "http://gw/v1", "BRIDGE_UPSTREAM_TRUST_ENV": "true", "BRIDGE_WORKERS": "4"}
    loaded = load(ServeSettings, {}, env)
    assert (loaded.upstream_tls.trust_env, loaded.lifecycle.workers) == (True, 4)


# ---------------------------------------------------------------------- what operators type (issue 20)


@pytest.mark.parametrize(("typed", "level"), [("debug", "DEBUG"), ("Info", "INFO"), ("warn", "WARNING")])
def test_log_levels_are_taken_in_any_case(typed: str, level: str) -> None:
    assert ServeSettings(upstream_url="http://gw/v1", log_level=typed).logging.level == level
    assert load(MockGatewaySettings, {}, {"BRIDGE_LOG_LEVEL": typed}).logging.level == level


def test_an_unknown_log_level_is_still_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        ServeSettings(upstream_url="http://gw/v1", log_level="verbose")
    assert [error["loc"][-1] for error in raised.value.errors()] == ["log_level"]


@pytest.mark.parametrize("name", ["listen", "health_listen", "metrics_listen"])
def test_colon_port_listens_on_all_interfaces(name: str) -> None:
    settings = ServeSettings(upstream_url="http://gw/v1", **{name: ":50099"})
    listened = {
        "listen": settings.server.listen,
        "health_listen": settings.lifecycle.health_listen,
        "metrics_listen": settings.metrics.listen,
    }[name]
    assert listened == "0.0.0.0:50099"
    assert DevSettings(listen=":0").servers.listen == "0.0.0.0:0"


@pytest.mark.parametrize("endpoint", ["/chat/completions", "/embeddings", "/models", "/chat/completions/"])
def test_an_upstream_url_ending_in_an_endpoint_is_refused_naming_the_base_url(endpoint: str) -> None:
    base = "https://gw.example/v2/workspaces/slug:llm-gateway/webhooks/v1"
    with pytest.raises(ValidationError) as raised:
        ServeSettings(upstream_url=base + endpoint)
    [error] = raised.value.errors()
    assert error["loc"][-2:] == ("upstream_url", 0)  # the first (and only) URL of the list
    assert f"ends in {endpoint.rstrip('/')}" in error["msg"]
    assert error["msg"].endswith(f"use the base URL {base}")


@pytest.mark.parametrize("url", ["https://gw.example/v1", "https://gw.example/v1/models-eu", "http://h/chat"])
def test_base_urls_that_only_resemble_an_endpoint_are_kept(url: str) -> None:
    assert ServeSettings(upstream_url=url).upstream.url == url


def test_several_upstream_urls_are_taken_comma_separated_each_checked_as_one_is() -> None:
    settings = load(
        ServeSettings, {}, {"BRIDGE_UPSTREAM_URL": "https://a.example/v1, http://b.example:8080/v1/"}
    )
    assert settings.upstream.urls == ("https://a.example/v1", "http://b.example:8080/v1")
    assert settings.upstream.url == "https://a.example/v1"  # the preferred one
    for value, said in [
        ("https://a.example/v1,ftp://b.example", "item 2: expected an http(s) base URL"),
        ("https://a.example/v1,https://a.example/v1", "names the same base URL twice"),
        ("https://a.example/v1,https://b.example/v1/chat/completions", "item 2: ends in /chat/completions"),
    ]:
        with pytest.raises(ValidationError) as raised:
            load(ServeSettings, {"upstream_url": value}, {})
        assert one_line_error(raised.value).startswith(f"--upstream-url / BRIDGE_UPSTREAM_URL: {said}")
