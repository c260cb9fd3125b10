"""A caller's identity, the allow-list of identities that may call, and the refusals (pure: no IO).

Identity comes from the client certificate gRPC core verified against `--tls-client-ca` during the TLS
handshake, as the call's auth context gives it: its URI subject alternative names (`peer_uri`: SPIFFE IDs
such as `spiffe://cluster.local/ns/team-a/sa/billing`) and DNS SANs (`peer_dns`), typed by gRPC core so a
DNS name can never pass for a URI. An allow-list entry names one kind: with a scheme (`spiffe://...`) it
matches URI SANs exactly, otherwise DNS SANs ignoring case; a trailing `*` matches any SAN that starts with
the rest (`spiffe://cluster.local/ns/team-a/*`). The first entry that matches one of the certificate's SANs
decides: that SAN is the caller's identity. With no allow-list every certificate the CA signed is let in,
and its first URI SAN (else DNS SAN, else subject) is the identity.

A caller with no certificate is "anonymous": it is not authenticated, and may use the bridge's own key only
if the operator said anyone may (`--api-key-for anyone`; the rule itself is in bridge.upstream.headers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import grpc

from bridge.errors import BridgeError, Key, Reason
from bridge.redaction import MAX_METADATA_BYTES, clean

__all__ = [
    "ANONYMOUS",
    "ANONYMOUS_CALLER",
    "AllowList",
    "Caller",
    "IdentityPattern",
    "KeyFor",
    "PeerCertificate",
    "caller_not_allowed",
    "certificate_of",
    "check_allow_list",
    "credentials_required",
    "identify",
]

ANONYMOUS: Final = "anonymous"
KeyFor = Literal["authenticated", "anyone"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: `identity` is the certificate SAN that passed the allow-list (printable ASCII,
    bounded: fit for a log line, a metric label, a header), or "anonymous"; `authenticated` says a client
    certificate passed mTLS and the allow-list."""

    identity: str = ANONYMOUS
    authenticated: bool = False


ANONYMOUS_CALLER: Final = Caller()


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The identities a verified client certificate presented."""

    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    subject: str = ""

    def presented(self) -> str:
        """What the certificate says it is, for a refusal and a log line: its SANs, else its subject."""
        names = ", ".join((*self.uris, *self.dns)) or f"with subject {self.subject or 'empty'!r}"
        return _shown(names)

    def first(self) -> str:
        """Its identity when every certificate is allowed: the first URI SAN, else DNS SAN, else subject."""
        return next(iter((*self.uris, *self.dns)), self.subject)


_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://.")
_DNS_PART: Final = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class IdentityPattern:
    """One `--tls-client-allow` entry: a URI SAN (it has a scheme) or a DNS SAN, maybe ending in `*`."""

    entry: str  # as the operator wrote it
    kind: Literal["uri", "dns"]
    value: str  # without the `*`; lower-case for DNS names
    prefix: bool

    @classmethod
    def parse(cls, text: str) -> IdentityPattern:
        """The pattern `text` stands for; ValueError saying what is wrong with it."""
        entry = text.strip()
        if not entry.isascii() or not entry.isprintable() or " " in entry:
            raise ValueError(f"{entry!r}: an identity is printable ASCII without spaces")
        prefix = entry.endswith("*")
        value = entry.removesuffix("*")
        if "*" in value:
            raise ValueError(f"{entry!r}: '*' is only allowed at the end (spiffe://DOMAIN/ns/NAMESPACE/*)")
        if "://" in value:
            if not _SCHEME.match(value):
                raise ValueError(f"{entry!r}: expected a URI such as spiffe://cluster.local/ns/NS/sa/SA")
            return cls(entry, "uri", value, prefix)
        if not value:
            raise ValueError("a lone '*' would allow any certificate: leave --tls-client-allow unset instead")
        if not _DNS_PART.fullmatch(value):
            raise ValueError(
                f"{entry!r}: expected a URI SAN (spiffe://cluster.local/ns/NS/sa/SA) or a DNS name"
            )
        return cls(entry, "dns", value.lower(), prefix)

    def matches(self, san: str) -> bool:
        name = san.lower() if self.kind == "dns" else san
        return name.startswith(self.value) if self.prefix else name == self.value


def check_allow_list(entries: Iterable[str]) -> tuple[str, ...]:
    """The entries, stripped, empty ones left out, each a valid pattern (ValueError naming the first that
    is not)."""
    kept = tuple(entry.strip() for entry in entries if entry.strip())
    for entry in kept:
        IdentityPattern.parse(entry)
    return kept


class AllowList:
    """The identities that may call; empty: every certificate the client CA signed."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.patterns = tuple(IdentityPattern.parse(entry) for entry in entries)

    def match(self, certificate: PeerCertificate) -> str | None:
        """The SAN of `certificate` the first matching entry names; None if no entry matches."""
        if not self.patterns:
            return certificate.first()
        for pattern in self.patterns:
            for san in certificate.uris if pattern.kind == "uri" else certificate.dns:
                if pattern.matches(san):
                    return san
        return None


# Auth context properties gRPC core sets for a TLS peer (grpc/grpc_security_constants.h).
_PEM_CERT: Final = "x509_pem_cert"
_URI_SANS: Final = "peer_uri"
_DNS_SANS: Final = "peer_dns"
_SUBJECT: Final = "x509_subject"


def certificate_of(auth_context: Mapping[str, Iterable[bytes]]) -> PeerCertificate | None:
    """The client certificate of a call's auth context (`ServicerContext.auth_context()`), if it has one."""
    if not auth_context.get(_PEM_CERT):
        return None

    def texts(name: str) -> tuple[str, ...]:
        return tuple(value.decode("utf-8", "surrogateescape") for value in auth_context.get(name, ()))

    subject = texts(_SUBJECT)
    return PeerCertificate(texts(_URI_SANS), texts(_DNS_SANS), subject[0] if subject else "")


def identify(certificate: PeerCertificate | None, allow: AllowList) -> Caller:
    """The caller presenting `certificate` (None: no client certificate, anonymous). Raises the
    PERMISSION_DENIED `caller_not_allowed` for a certificate no entry of `allow` names."""
    if certificate is None:
        return ANONYMOUS_CALLER
    matched = allow.match(certificate)
    if matched is None:
        raise caller_not_allowed(certificate.presented())
    return Caller(_shown(matched), authenticated=True)


def _shown(text: str) -> str:
    # Printable ASCII within a metadata value's bound: a certificate's bytes are the peer's.
    return clean(text, MAX_METADATA_BYTES, ascii_only=True) or "unprintable"


# ----------------------------------------------------------------------------------------------- refusals


def caller_not_allowed(presented: str) -> BridgeError:
    """PERMISSION_DENIED for a client certificate the allow-list does not name, naming what it presented."""
    return BridgeError(
        f"client certificate {presented} may not call this bridge: its identity is not in the bridge's "
        "allow-list (--tls-client-allow); ask the bridge's operator to add it",
        code=grpc.StatusCode.PERMISSION_DENIED,
        reason=Reason.CALLER_NOT_ALLOWED,
        metadata={Key.CALLER_IDENTITY: presented},
    )


def credentials_required(*, fixed: bool) -> BridgeError:
    """UNAUTHENTICATED for a call that would use the bridge's own key, made by a caller who may not use
    it; the message says what to send instead. `fixed`: the bridge never forwards callers' credentials."""
    if fixed:
        what = (
            "this bridge calls the upstream with its own key only for callers it authenticated with an "
            "allowed client certificate (mTLS): connect with a client certificate its operator allows "
            "(credentials sent as metadata are not used)"
        )
    else:
        what = (
            "this bridge uses its own upstream key only for callers it authenticated with an allowed "
            "client certificate (mTLS): send your own credentials as 'authorization: Bearer <token or "
            "iak_ key>' or 'x-prismeai-api-key: <iak_ key>' metadata"
        )
    return BridgeError(
        f"no credentials: {what}",
        code=grpc.StatusCode.UNAUTHENTICATED,
        reason=Reason.CALLER_CREDENTIALS_REQUIRED,
    )
