"""Settings of who may call the bridge (issue 26): for whom the bridge's own key is used, which client
certificates may call, and whether the caller's identity goes upstream; with the checks and warnings that
need other groups (TLS, credentials, the listen address), given as arguments."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import BeforeValidator, Field

from bridge.address import split_host_port
from bridge.auth.callers import KeyFor, check_allow_list
from bridge.settings.base import Group
from bridge.settings.upstream import AuthSettings
from bridge.upstream.headers import check_identity_header

__all__ = ["CallersSettings", "caller_warnings", "callers_cannot_work"]


def _identities(value: object) -> object:
    # A comma-separated list (flag or environment variable) of allow-list entries, each checked.
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list | tuple):
        return check_allow_list(str(entry) for entry in value)
    return value


def _identity_header(value: object) -> object:
    return check_identity_header(value) if isinstance(value, str) else value


class CallersSettings(Group):
    title = "who may call"

    api_key_for: KeyFor = Field(
        "authenticated",
        alias="api_key_for",
        description="for whom the bridge calls the upstream with --api-key: authenticated (callers whose "
        "client certificate passed mTLS and --tls-client-allow) or anyone who reaches the port; a call "
        "that would use it for another caller is refused UNAUTHENTICATED (docs/operations.md, Who may call)",
    )
    client_allow: Annotated[tuple[str, ...], BeforeValidator(_identities)] = Field(
        (),
        alias="tls_client_allow",
        description="client certificate identities that may call (mTLS), comma-separated: URI SANs such as "
        "spiffe://cluster.local/ns/NS/sa/SA and DNS SANs, a trailing * matching any ending; others are "
        "refused PERMISSION_DENIED; unset: every certificate --tls-client-ca signed",
    )
    identity_header: Annotated[str | None, BeforeValidator(_identity_header)] = Field(
        None,
        alias="caller_identity_header",
        description="send the caller's identity (its allowed certificate SAN, or anonymous) upstream in "
        "this header, replacing any metadata of that name a caller sends; unset: not sent",
    )


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def callers_cannot_work(callers: CallersSettings, auth: AuthSettings, *, mtls: bool) -> str | None:
    """Why these caller settings cannot work with `auth` (and mTLS or not), or None."""
    if callers.client_allow and not mtls:
        return "--tls-client-allow / BRIDGE_TLS_CLIENT_ALLOW names client certificates: set --tls-client-ca"
    if auth.mode == "fixed" and callers.api_key_for == "authenticated" and not mtls:
        return (
            "--auth-mode fixed sends only the bridge's key, which --api-key-for authenticated keeps for "
            "callers with a client certificate, and without --tls-client-ca no caller has one: every call "
            "would be refused; set up mTLS, or --api-key-for anyone (BRIDGE_API_KEY_FOR)"
        )
    return None


def caller_warnings(callers: CallersSettings, auth: AuthSettings, *, mtls: bool, listen: str) -> list[str]:
    """Caller settings that work, but probably not as meant: who may use the key, in one line each."""
    if auth.api_key is None or auth.mode == "none":
        return []
    host, _ = split_host_port(listen)
    if callers.api_key_for == "anyone" and not mtls and not _is_loopback(host):
        return [
            f"--api-key-for anyone: every caller that reaches {listen} without credentials "
            "of its own gets the bridge's key; limit who can connect (a NetworkPolicy, a firewall) or use "
            "mTLS with --tls-client-allow (docs/operations.md, Who may call)"
        ]
    if callers.api_key_for == "authenticated" and not mtls:
        return [
            "--api-key / BRIDGE_API_KEY is for callers authenticated by a client certificate "
            "(--api-key-for authenticated), and without --tls-client-ca there are none: callers must send "
            "credentials of their own; set --api-key-for anyone to let others use the key"
        ]
    if mtls and not callers.client_allow:
        return [
            "mTLS without --tls-client-allow: every certificate --tls-client-ca signed may call and use the "
            "bridge's key; name the callers allowed with --tls-client-allow"
        ]
    return []
