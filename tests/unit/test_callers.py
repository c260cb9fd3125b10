"""Who may call, the pure parts (issue 26): allow-list entries and how they match certificate SANs, the
identity read from a gRPC auth context, the rule that keeps the bridge's own key for authenticated
callers (every auth mode), the identity header, and the settings that cannot work or deserve a warning.
tests/integration/test_callers.py runs the same rules through the real bridge."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from bridge.auth.callers import (
    ANONYMOUS_CALLER,
    AllowList,
    Caller,
    IdentityPattern,
    PeerCertificate,
    certificate_of,
    identify,
)
from bridge.errors import BridgeError
from bridge.settings import ServeSettings
from bridge.upstream.headers import AuthPolicy, check_identity_header, upstream_headers
from tests.helpers import error_info

KEY = "bridge-key-0d1e"
BILLING = "spiffe://cluster.local/ns/billing/sa/billing-api"
ALLOWED = Caller(BILLING, authenticated=True)
CALLER_CREDENTIALS = (("authorization", "Bearer caller-token"),)


# ------------------------------------------------------------------------------------------ allow-list


@pytest.mark.parametrize(
    ("entry", "san", "matches"),
    [
        (BILLING, BILLING, True),
        (BILLING, BILLING + "-2", False),  # exact unless it ends with *
        (BILLING, BILLING.upper(), False),  # URIs compare exactly
        ("spiffe://cluster.local/ns/team-a/*", "spiffe://cluster.local/ns/team-a/sa/x", True),
        ("spiffe://cluster.local/ns/team-a/*", "spiffe://cluster.local/ns/team-ab/sa/x", False),
        ("spiffe://cluster.local/ns/team-a/*", "spiffe://cluster.local/ns/team-a", False),
        ("Reports.Example", "reports.example", True),  # DNS names ignore case
        ("reports.example", "reports.example.evil", False),
        ("billing-*", "BILLING-eu.example", True),
    ],
)
def test_an_entry_matches_a_san_exactly_or_by_its_prefix(entry: str, san: str, matches: bool) -> None:
    assert IdentityPattern.parse(entry).matches(san) is matches


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("*", "lone '*'"),
        ("spiffe://cluster.local/*/sa/x", "only allowed at the end"),
        ("*.example.com", "only allowed at the end"),
        ("spiffe://", "expected a URI"),
        ("://host", "expected a URI"),
        ("host name", "without spaces"),
        ("caf\u00e9.example", "printable ASCII"),
        ("host/path", "or a DNS name"),
    ],
)
def test_an_entry_that_cannot_mean_what_it_says_is_refused(entry: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        IdentityPattern.parse(entry)


def test_an_entry_names_one_kind_of_san() -> None:
    # A DNS SAN cannot pass for a URI entry, nor the reverse, whatever it spells.
    allow = AllowList([BILLING, "reports.example"])
    assert allow.match(PeerCertificate(dns=(BILLING,))) is None
    assert allow.match(PeerCertificate(uris=("reports.example",))) is None
    assert allow.match(PeerCertificate(uris=("spiffe://x/y", BILLING), dns=("reports.example",))) == BILLING
    # the first entry that matches decides, whatever the order of the SANs
    assert AllowList(["reports.example", BILLING]).match(
        PeerCertificate(uris=(BILLING,), dns=("reports.example",))
    ) == ("reports.example")


def test_without_entries_every_certificate_is_let_in_as_its_first_san() -> None:
    assert AllowList().match(PeerCertificate(uris=("spiffe://a/b",), dns=("c.example",))) == "spiffe://a/b"
    assert AllowList().match(PeerCertificate(dns=("c.example",))) == "c.example"
    assert AllowList().match(PeerCertificate(subject="CN=caller")) == "CN=caller"


# --------------------------------------------------------------------------------------------- identity


def test_the_certificate_is_read_from_the_auth_context_grpc_core_gives() -> None:
    # The properties grpcio 1.85 gives for a verified client certificate (seen in a real handshake).
    context = {
        "transport_security_type": [b"ssl"],
        "x509_common_name": [b"caller"],
        "x509_subject": [b"CN=caller"],
        "x509_pem_cert": [b"-----BEGIN CERTIFICATE-----\n..."],
        "x509_subject_alternative_name": [BILLING.encode(), b"svc.example", b"a@b.c"],
        "peer_uri": [BILLING.encode()],
        "peer_dns": [b"svc.example"],
        "peer_email": [b"a@b.c"],
    }
    assert certificate_of(context) == PeerCertificate((BILLING,), ("svc.example",), "CN=caller")
    assert certificate_of({}) is None  # plaintext
    assert certificate_of({"transport_security_type": [b"ssl"]}) is None  # TLS without a client certificate


def test_identify_names_the_allowed_san_and_refuses_the_others_naming_theirs() -> None:
    allow = AllowList([BILLING])
    assert identify(None, allow) == ANONYMOUS_CALLER
    assert identify(PeerCertificate(uris=(BILLING,)), allow) == ALLOWED
    with pytest.raises(BridgeError) as raised:
        identify(PeerCertificate(uris=("spiffe://x/a",), dns=("b.example",)), allow)
    assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(raised.value)
    assert (info.reason, info.metadata["callerIdentity"]) == ("CALLER_NOT_ALLOWED", "spiffe://x/a, b.example")


def test_an_identity_is_printable_ascii_and_bounded_whatever_the_certificate_holds() -> None:
    odd = "spiffe://cluster.local/ns/a/sa/\x1b[31mred\udce9" + "x" * 400
    caller = identify(PeerCertificate(uris=(odd,)), AllowList(["spiffe://cluster.local/ns/a/*"]))
    assert caller.identity.isascii()
    assert caller.identity.isprintable()
    assert len(caller.identity) <= 256
    assert caller.identity.startswith("spiffe://cluster.local/ns/a/sa/\\x1b[31mred\\xe9")


# ------------------------------------------------------------------------------------ the key's rule

ANONYMOUS = ANONYMOUS_CALLER


@pytest.mark.parametrize(
    ("policy", "caller", "metadata", "sent"),
    [
        # passthrough: a caller's own credentials always go; the key only to those who may use it
        (AuthPolicy(api_key=KEY), ANONYMOUS, CALLER_CREDENTIALS, "Bearer caller-token"),
        (AuthPolicy(api_key=KEY), ANONYMOUS, (), "refused"),
        (AuthPolicy(api_key=KEY), ALLOWED, (), f"Bearer {KEY}"),
        (AuthPolicy(api_key=KEY, key_for="anyone"), ANONYMOUS, (), f"Bearer {KEY}"),
        (AuthPolicy(), ANONYMOUS, (), None),  # no key: nothing to protect, nothing sent
        # an empty credential is no credential
        (AuthPolicy(api_key=KEY), ANONYMOUS, (("authorization", ""),), "refused"),
        # fixed: always the key, so only for those who may use it
        (AuthPolicy(mode="fixed", api_key=KEY), ANONYMOUS, CALLER_CREDENTIALS, "refused"),
        (AuthPolicy(mode="fixed", api_key=KEY), ALLOWED, CALLER_CREDENTIALS, f"Bearer {KEY}"),
        (AuthPolicy(mode="fixed", api_key=KEY, key_for="anyone"), ANONYMOUS, (), f"Bearer {KEY}"),
        # none: no credentials at all, so no key to refuse
        (AuthPolicy(mode="none", api_key=KEY), ANONYMOUS, CALLER_CREDENTIALS, None),
    ],
    ids=[
        "passthrough-own-credentials",
        "passthrough-anonymous",
        "passthrough-authenticated",
        "passthrough-anyone",
        "passthrough-no-key",
        "passthrough-empty-credentials",
        "fixed-anonymous",
        "fixed-authenticated",
        "fixed-anyone",
        "none",
    ],
)
def test_the_key_goes_only_to_callers_who_may_use_it_in_every_mode(
    policy: AuthPolicy, caller: Caller, metadata: tuple[tuple[str, str], ...], sent: str | None
) -> None:
    refusal = policy.refusal(caller, metadata)
    if sent == "refused":
        assert refusal is not None
        assert refusal.code == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(refusal).reason == "CALLER_CREDENTIALS_REQUIRED"
        # where the key is attached, the same rule (if the RPC layer's check were ever bypassed)
        with pytest.raises(BridgeError) as raised:
            upstream_headers(metadata, policy, caller)
        assert raised.value.message == refusal.message
        assert KEY not in refusal.message
        return
    assert refusal is None
    assert upstream_headers(metadata, policy, caller).get("authorization") == sent


def test_the_refusal_says_what_to_send_in_each_mode() -> None:
    passthrough = AuthPolicy(api_key=KEY).refusal(ANONYMOUS, ())
    fixed = AuthPolicy(mode="fixed", api_key=KEY).refusal(ANONYMOUS, ())
    assert passthrough is not None
    assert fixed is not None
    assert "send your own credentials as 'authorization: Bearer" in passthrough.message
    assert "x-prismeai-api-key" in passthrough.message
    assert "connect with a client certificate" in fixed.message
    assert "not used" in fixed.message  # sending credentials would not help


def test_the_identity_header_is_set_by_the_bridge_over_what_a_caller_sends() -> None:
    policy = AuthPolicy(identity_header="x-caller-id")
    forged = (("x-caller-id", "spiffe://forged"), ("X-Caller-Id", "again"))
    assert upstream_headers(forged, policy, ALLOWED)["x-caller-id"] == BILLING
    assert upstream_headers(forged, policy, ANONYMOUS)["x-caller-id"] == "anonymous"
    assert "x-caller-id" not in upstream_headers(forged, AuthPolicy(), ALLOWED)  # not forwarded either
    assert upstream_headers(forged, AuthPolicy(mode="none", identity_header="x-caller-id"), ALLOWED) == {
        "x-caller-id": BILLING
    }


@pytest.mark.parametrize(
    "name",
    ["authorization", "x-prismeai-api-key", "x-correlation-id", "x-request-id", "traceparent", "host",
     "grpc-status", "content-length", "x caller", "x-caller-id\r\nx-evil"],
)  # fmt: skip
def test_the_identity_header_cannot_be_one_that_carries_something_else(name: str) -> None:
    with pytest.raises(ValueError, match=r"header"):
        check_identity_header(name)
    assert check_identity_header(" X-Caller-ID ") == "x-caller-id"


# ---------------------------------------------------------------------------------------------- settings


def _serve(**settings: object) -> ServeSettings:
    return ServeSettings.model_validate({"upstream_url": "https://gw.example.com/v1", **settings})


def _mtls(directory: Path) -> dict[str, object]:
    files = {name: directory / name for name in ("tls.crt", "tls.key", "ca.crt")}
    for path in files.values():
        path.write_text("PEM")
    return {"tls_cert": files["tls.crt"], "tls_key": files["tls.key"], "tls_client_ca": files["ca.crt"]}


def test_allow_list_settings_are_a_comma_separated_checked_list(tmp_path: Path) -> None:
    settings = _serve(tls_client_allow=f" {BILLING} ,, reports.example,", **_mtls(tmp_path))
    assert settings.callers.client_allow == (BILLING, "reports.example")
    with pytest.raises(ValidationError, match="tls_client_allow"):
        _serve(tls_client_allow="*.example.com", **_mtls(tmp_path))
    with pytest.raises(ValidationError, match="set --tls-client-ca"):
        _serve(tls_client_allow=BILLING)
    with pytest.raises(ValidationError, match="caller_identity_header"):
        _serve(caller_identity_header="authorization")


def test_fixed_mode_without_mtls_keeps_the_key_for_nobody_and_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"every call\s+would be refused"):
        _serve(auth_mode="fixed", api_key=KEY)
    _serve(auth_mode="fixed", api_key=KEY, api_key_for="anyone")
    _serve(auth_mode="fixed", api_key=KEY, **_mtls(tmp_path))


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        ({"api_key": KEY, "api_key_for": "anyone", "listen": ":50051"}, "every caller that reaches"),
        ({"api_key": KEY, "api_key_for": "anyone", "listen": "10.0.0.7:50051"}, "every caller that reaches"),
        ({"api_key": KEY, "api_key_for": "anyone"}, None),  # loopback (the default listen address)
        ({"api_key": KEY, "api_key_for": "anyone", "listen": "[::1]:50051"}, None),
        ({"api_key": KEY, "api_key_for": "anyone", "listen": "localhost:50051"}, None),
        ({"api_key_for": "anyone", "listen": ":50051"}, None),  # no key
        ({"api_key": KEY, "api_key_for": "anyone", "auth_mode": "none", "listen": ":1"}, "is ignored"),
        ({"api_key": KEY, "listen": ":50051"}, "without --tls-client-ca there are none"),
        ({"listen": ":50051"}, None),
    ],
)
def test_start_up_warns_in_one_line_about_who_can_use_the_key(
    settings: dict[str, str], warned: str | None
) -> None:
    warnings = _serve(**settings).warnings()
    if warned is None:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert warned in warnings[0]
        assert "\n" not in warnings[0]
        assert KEY not in warnings[0]


def test_mtls_warns_when_no_allow_list_narrows_the_ca(tmp_path: Path) -> None:
    assert "name the callers allowed" in _serve(api_key=KEY, listen=":1", **_mtls(tmp_path)).warnings()[0]
    assert _serve(api_key=KEY, listen=":1", tls_client_allow=BILLING, **_mtls(tmp_path)).warnings() == []
    # anyone under mTLS is no open door: every caller has a certificate from the CA
    anyone = _serve(
        api_key=KEY, api_key_for="anyone", listen=":1", tls_client_allow=BILLING, **_mtls(tmp_path)
    )
    assert anyone.warnings() == []
