"""Who may call: each call's caller identified from its client certificate, and refused unless allowed.

`CallerAuthorization` runs inside the interceptor chain, pinned by `bridge.rpc.server.build_server` just
outside error mapping so no composition can leave it out, for every method but health (a probe has no
certificate, and health tells nothing). Before the handler runs it

1. identifies the caller (`call.caller`) from the client certificate gRPC core verified (mTLS): the SAN
   that passed the allow-list, else "anonymous" (bridge.auth.callers); a certificate the allow-list does
   not name ends the call PERMISSION_DENIED, naming the identity it presented;
2. for the services that call the upstream (not reflection), refuses UNAUTHENTICATED a call that would
   use the bridge's own key when the caller may not use it (`AuthPolicy.refusal`), so an anonymous caller
   learns nothing and nothing is sent upstream.

Metrics, tracing and the access log, outside it, see the caller and the refusal like any other outcome.
It takes plain values (the allow-list, the auth policy), never the settings.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from bridge.auth.callers import AllowList, certificate_of, identify
from bridge.rpc.call import HEALTH_SERVICE, PLUMBING_SERVICES, Context, RpcCall
from bridge.rpc.interceptors import Interceptor
from bridge.upstream.headers import AuthPolicy

__all__ = ["OPEN_SERVICES", "CallerAuthorization"]

# Served to anyone who can connect (the TLS handshake still applies): probes carry no certificate. The
# plumbing (health, reflection: bridge.rpc.call.PLUMBING_SERVICES) never calls the upstream, so never
# uses the key: reflection is identified and allow-listed, with no key rule.
OPEN_SERVICES: Final = frozenset({HEALTH_SERVICE})


class CallerAuthorization(Interceptor):
    """Identifies each call's caller; refuses a certificate `allow` does not name, and a call that would
    use the bridge's key (`auth`) which its caller may not use. `mtls`: the listener verifies client
    certificates (without it every caller is anonymous)."""

    def __init__(
        self,
        auth: AuthPolicy,
        *,
        mtls: bool = False,
        allow: AllowList | None = None,
        open_services: Collection[str] = OPEN_SERVICES,
        upstreamless_services: Collection[str] = PLUMBING_SERVICES,
    ) -> None:
        self._auth = auth
        self._mtls = mtls
        self._allow = allow or AllowList()
        self.skip_services = frozenset(open_services)
        self._upstreamless = frozenset(upstreamless_services)

    def applies_to(self, method: str) -> bool:
        # Nothing to do without client certificates and with no key to guard: every caller is anonymous,
        # and the chain then skips this interceptor at no cost per call.
        return (self._mtls or self._auth.guards_key) and super().applies_to(method)

    def call_started(self, call: RpcCall, context: Context) -> object:
        """Identifies the caller, raises the refusal (ended by ErrorMapping, or in a chain that nests
        context managers by the hooks' scope: Interceptor.around)."""
        if self._mtls:
            call.caller = identify(certificate_of(context.auth_context()), self._allow)
        if call.service not in self._upstreamless:
            refusal = self._auth.refusal(call.caller, context.invocation_metadata() or ())
            if refusal is not None:
                raise refusal
        return None
