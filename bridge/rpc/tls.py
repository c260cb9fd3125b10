"""TLS and mTLS credentials of the gRPC listener, re-read from their files when they change.

gRPC core asks `CertificateFiles.fetch` for a certificate configuration before each new TLS handshake
(`grpc.dynamic_ssl_server_credentials`); it answers None ("unchanged") unless a file's identity changed
since the last load, so rotation costs a few `stat` calls per new connection and connections already
open keep their session. cert-manager and the kubelet rotate a mounted Secret by swapping a symlink, so
the certificate and the key change together; a load that straddles a swap, or files that cannot be used
(a key that does not match the certificate, a half-written file), keep the current certificate and are
retried once the files change again.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["CertificateFiles", "server_credentials"]

log = logging.getLogger(__name__)

_Signature = tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True, slots=True)
class _Loaded:
    config: grpc.ServerCertificateConfiguration
    signature: _Signature


class CertificateFiles:
    """The listener's certificate, key and (for mTLS) client CA files, loaded now and on each change.

    Raises OSError (ssl.SSLError is one) at construction if the files cannot be used.
    """

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        loaded = self._load()
        if loaded is None:
            raise OSError(f"TLS files {cert} and {key} changed while they were read; try again")
        self.initial = loaded.config
        self._signature = loaded.signature
        self._lock = threading.Lock()  # gRPC core may call fetch from several threads

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) if self.client_ca is None else (self.cert, self.key, self.client_ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration if the files changed and can be used, else None (keep the current one).
        Never raises: it runs inside gRPC core's handshake."""
        try:
            with self._lock:
                return self._reload_if_changed()
        except Exception:  # a bug here must not break handshakes
            log.exception("checking the TLS files failed; keeping the current certificate")
            return None

    def _reload_if_changed(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            signature = self._signature_now()
        except OSError as exc:
            if self._signature != ():
                log.warning("TLS files unreadable (%s); keeping the current certificate", exc)
                self._signature = ()
            return None
        if signature == self._signature:
            return None
        try:
            loaded = self._load()
        except OSError as exc:
            log.warning("TLS files changed but cannot be used (%s); keeping the current certificate", exc)
            self._signature = signature  # retried when they change again
            return None
        if loaded is None:
            return None  # changed while read: retried at the next handshake
        self._signature = loaded.signature
        log.info("TLS certificate reloaded from %s", self.cert)
        return loaded.config

    def _signature_now(self) -> _Signature:
        # stat follows the kubelet's symlinks: a swapped Secret volume shows new inodes.
        stats = [os.stat(path) for path in self.paths]
        return tuple((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) for st in stats)

    def _load(self) -> _Loaded | None:
        """The files as a configuration, checked by OpenSSL (the key matches the certificate, the CA
        parses); None if they changed while being read. Raises OSError if they cannot be used."""
        before = self._signature_now()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert, self.key)
        except ssl.SSLError as exc:
            problem = (
                "the key does not match the certificate"
                if exc.reason == "KEY_VALUES_MISMATCH"
                else "expected a PEM certificate chain and its unencrypted PEM key"
            )
            raise OSError(f"TLS certificate {self.cert} with key {self.key}: {problem}") from exc
        if self.client_ca is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except ssl.SSLError as exc:
                raise OSError(f"TLS client CA {self.client_ca}: no PEM CA certificate in it") from exc
        cert, key = self.cert.read_bytes(), self.key.read_bytes()
        client_ca = self.client_ca.read_bytes() if self.client_ca is not None else None
        if self._signature_now() != before:
            return None
        config = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)
        return _Loaded(config, before)


def server_credentials(files: CertificateFiles) -> grpc.ServerCredentials:
    """TLS credentials that follow `files`; mTLS (a client certificate required and verified against the
    client CA) when `files.client_ca` is set."""
    return grpc.dynamic_ssl_server_credentials(
        files.initial,
        files.fetch,  # type: ignore[arg-type]  # grpc takes None for "unchanged"; grpc-stubs says otherwise
        require_client_authentication=files.client_ca is not None,
    )
