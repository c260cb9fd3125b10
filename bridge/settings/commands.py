"""The settings of each command: `serve`, `mock-gateway`, `dev`, each made of groups, with the checks across
groups and the warnings logged at start."""

from __future__ import annotations

from typing import Final

from pydantic import Field, SecretStr, model_validator

from bridge.address import same_address, split_host_port
from bridge.settings.base import CommandSettings, Group, ListenAddress
from bridge.settings.callers import CallersSettings, caller_warnings, callers_cannot_work
from bridge.settings.serving import (
    LifecycleSettings,
    LimitsSettings,
    MetricsSettings,
    OrcaSettings,
    ServeLoggingSettings,
    ServerSettings,
    TlsSettings,
)
from bridge.settings.upstream import (
    AuthSettings,
    FailoverSettings,
    HeadersSettings,
    RetrySettings,
    UpstreamSettings,
    UpstreamTlsSettings,
)

__all__ = [
    "COMMANDS",
    "DevServersSettings",
    "DevSettings",
    "MockGatewaySettings",
    "MockSettings",
    "ServeSettings",
]


class ServeSettings(CommandSettings):
    """Settings of `prisme-bridge serve`."""

    server: ServerSettings = ServerSettings()
    upstream: UpstreamSettings
    auth: AuthSettings = AuthSettings()
    headers: HeadersSettings = HeadersSettings()
    limits: LimitsSettings = LimitsSettings()
    metrics: MetricsSettings = MetricsSettings()
    orca: OrcaSettings = OrcaSettings()
    tls: TlsSettings = TlsSettings()
    callers: CallersSettings = CallersSettings()
    upstream_tls: UpstreamTlsSettings = UpstreamTlsSettings()
    retry: RetrySettings = RetrySettings()
    failover: FailoverSettings = FailoverSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    logging: ServeLoggingSettings = ServeLoggingSettings()

    @model_validator(mode="after")
    def _settings_that_cannot_work(self) -> ServeSettings:
        if self.auth.mode == "fixed" and self.auth.api_key is None:
            raise ValueError(
                "--api-key / BRIDGE_API_KEY is required with --auth-mode fixed (BRIDGE_AUTH_MODE): "
                "every upstream request would go without credentials"
            )
        problem = callers_cannot_work(self.callers, self.auth, mtls=self.tls.client_ca is not None)
        if problem is not None:
            raise ValueError(problem)
        if any(same_address(self.server.listen, url) for url in self.upstream.urls):
            raise ValueError(
                "--upstream-url / BRIDGE_UPSTREAM_URL points at the bridge's own --listen address: "
                "it would call itself"
            )
        return self

    def warnings(self) -> list[str]:
        """Settings that work, but not as their author probably meant."""
        found = self.upstream.renamed()
        if self.auth.mode == "none" and self.auth.api_key is not None:
            found.append(
                "--api-key / BRIDGE_API_KEY is ignored with --auth-mode none: no credentials are sent"
            )
        if self.auth.api_key is None and self.auth.api_key_header != "authorization":
            found.append("--api-key-header / BRIDGE_API_KEY_HEADER has no effect without --api-key")
        mtls = self.tls.client_ca is not None
        return found + caller_warnings(self.callers, self.auth, mtls=mtls, listen=self.server.listen)


class MockSettings(Group):
    title = "mock gateway"

    # Its own name, not BRIDGE_LISTEN: a shell that configures `serve` must not move the mock as well.
    listen: ListenAddress = Field(
        "127.0.0.1:8080",
        alias="mock_listen",
        description="HTTP listen address HOST:PORT of the mock gateway",
        json_schema_extra={"flag_aliases": ["--listen"]},
    )
    require_api_key: SecretStr | None = Field(
        None, alias="require_api_key", description="answer 401 unless requests carry this key"
    )


class MockGatewaySettings(CommandSettings):
    """Settings of `prisme-bridge mock-gateway`."""

    mock: MockSettings = MockSettings()


class DevServersSettings(Group):
    title = "listen addresses"

    listen: ListenAddress = Field(
        "127.0.0.1:50051", alias="listen", description="gRPC listen address of the bridge"
    )
    mock_listen: ListenAddress = Field(
        "127.0.0.1:8080", alias="mock_listen", description="HTTP listen address of the mock gateway"
    )


class DevSettings(CommandSettings):
    """Settings of `prisme-bridge dev` (mock gateway + bridge in one process)."""

    servers: DevServersSettings = DevServersSettings()

    @model_validator(mode="after")
    def _distinct_addresses(self) -> DevSettings:
        listen, mock = (split_host_port(a) for a in (self.servers.listen, self.servers.mock_listen))
        if listen == mock and listen[1] != 0:
            raise ValueError("--listen / BRIDGE_LISTEN and --mock-listen / BRIDGE_MOCK_LISTEN must differ")
        return self


# Each command: its settings and its one-line summary (the CLI's and --help's).
COMMANDS: Final[dict[str, tuple[type[CommandSettings], str]]] = {
    "serve": (ServeSettings, "run the gRPC bridge in front of an OpenAI-compatible upstream"),
    "mock-gateway": (MockGatewaySettings, "run the mock LLM gateway (JSON + SSE, scripted by model name)"),
    "dev": (DevSettings, "run the mock gateway and a bridge in front of it, and print grpcurl calls to try"),
}
