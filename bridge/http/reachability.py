"""Once, at start: can the upstream be reached? Its host resolved, a connection opened, TLS verified.

A misconfigured upstream (a host that does not resolve, a port nobody listens on, a certificate the
bridge does not trust) would otherwise show only in callers' errors. The check runs in the background and
never stops the bridge: an upstream that is down at start may be up a minute later, and the bridge's
readiness is about the bridge (docs/operations.md says why). Its outcome is one log line; nothing is sent
upstream (no request, no credentials): the TCP connection and, for https, the TLS handshake only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from bridge.http.transports.base import describe_cause
from bridge.redaction import clean

__all__ = ["Reachability", "check_upstream", "log_reachability"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reachability:
    """What the check found: `cause` is None when the upstream was reached."""

    address: str  # host:port connected to (the proxy's, through a proxy)
    cause: str | None
    peer: str | None = None  # the address the name resolved to, once connected
    tls: bool = False  # the TLS handshake was made (and the certificate verified)
    via_proxy: bool = False
    elapsed_ms: float = 0.0


async def check_upstream(
    url: str, *, tls: ssl.SSLContext | None, proxy: str | None, connect_timeout: float
) -> Reachability:
    """Resolves and connects to `url`'s host (through `proxy`, to the proxy itself), with a TLS
    handshake for https when no proxy is in the way, within `connect_timeout` seconds."""
    target = urlsplit(proxy or url)
    https = not proxy and target.scheme == "https"
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    started = time.perf_counter()
    try:
        async with asyncio.timeout(connect_timeout):
            _, writer = await asyncio.open_connection(
                host, port, ssl=tls if https else None, server_hostname=host if https else None
            )
    except TimeoutError:
        return Reachability(
            address,
            f"no connection within {connect_timeout:g} s (--connect-timeout)",
            via_proxy=proxy is not None,
        )
    except OSError as exc:
        # as a call's status would say it ("certificate has expired", "connection refused", ...)
        cause = describe_cause(exc) or clean(str(exc) or type(exc).__name__, 200)
        return Reachability(address, cause, via_proxy=proxy is not None)
    peer = writer.get_extra_info("peername")
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):  # a peer that hangs up first fails no check
        await writer.wait_closed()
    elapsed = (time.perf_counter() - started) * 1000
    return Reachability(
        address,
        None,
        peer=str(peer[0]) if isinstance(peer, tuple) else None,
        tls=https,
        via_proxy=proxy is not None,
        elapsed_ms=elapsed,
    )


def log_reachability(found: Reachability, *, others: bool = False) -> None:
    """One line: INFO when the upstream was reached, WARNING naming the host and the cause otherwise;
    `others`: there are other upstreams a call moves on to (several --upstream-url)."""
    via = " (the proxy)" if found.via_proxy else ""
    if found.cause is None:
        how = ", TLS verified" if found.tls else ""
        at = f" at {found.peer}" if found.peer else ""
        log.info("upstream %s%s reachable%s%s (%.0f ms)", found.address, via, at, how, found.elapsed_ms)
        return
    then = "calls move on to the other upstreams" if others else "calls will fail UNAVAILABLE"
    log.warning(
        "upstream %s%s not reachable at start: %s; %s until it is (the bridge keeps serving and does not "
        "check again)",
        found.address,
        via,
        found.cause,
        then,
    )
