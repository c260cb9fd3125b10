"""bridge.http.transports.base: the proxy the environment names for the upstream (only asked for with
--upstream-trust-env) and the TLS context's files."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from bridge.http.transports.base import TransportSettings, proxy_for, tls_context
from tests.helpers import CertificateAuthority

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.parametrize(
    ("env", "url", "proxy"),
    [
        ({}, "https://gw.example/v1", None),
        ({"HTTPS_PROXY": "http://p:3128"}, "https://gw.example/v1", "http://p:3128"),
        ({"HTTPS_PROXY": "http://p:3128"}, "http://gw.example/v1", None),
        ({"HTTP_PROXY": "http://p:3128"}, "http://gw.example/v1", "http://p:3128"),
        ({"ALL_PROXY": "http://all:3128"}, "https://gw.example/v1", "http://all:3128"),
        (
            {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"},
            "https://gw/v1",
            "http://lower:1",
        ),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "example"}, "https://gw.example/v1", None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".example"}, "https://gw.example/v1", None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "gw.example:8443"}, "https://gw.example:8443/v1", None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}, "https://gw.example/v1", None),
        (
            {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "other.example"},
            "https://gw.example/v1",
            "http://p:3128",
        ),
    ],
)
def test_proxy_for_the_upstream_url(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, proxy: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(url) == proxy


def testtls_context_verifies_the_upstream_with_the_given_ca_file(tmp_path: Path) -> None:
    ca = CertificateAuthority("private CA")
    context = tls_context(TransportSettings(ca_file=ca.write_pem(tmp_path / "ca.pem")))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "private CA"),),)]
    public = tls_context(TransportSettings())
    assert len(public.get_ca_certs()) > 50  # certifi's bundle


def test_a_client_key_that_does_not_match_its_certificate_is_an_error(tmp_path: Path) -> None:
    ca = CertificateAuthority("client CA")
    cert, _ = ca.write(tmp_path, "bridge", client=True)
    _, other_key = ca.write(tmp_path, "other", client=True)
    with pytest.raises(OSError, match="KEY_VALUES_MISMATCH") as raised:
        tls_context(TransportSettings(client_cert=(cert, other_key)))
    assert str(cert) in str(raised.value)
    with pytest.raises(OSError, match="no PEM CA certificate"):
        tls_context(TransportSettings(ca_file=cert.with_suffix(".key")))
