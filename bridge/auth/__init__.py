"""Who is calling the bridge, and what they may do (pure: no network IO, no settings).

`bridge.auth.callers`: a caller's identity from the client certificate gRPC verified (mTLS), the allow-list
of identities that may call (`--tls-client-allow`), and the refusals a caller gets (PERMISSION_DENIED for a
certificate the list does not name, UNAUTHENTICATED for a call that would use the bridge's own key without
being allowed to). The RPC layer applies them to every call (bridge.rpc.callers); the upstream headers
apply the key rule again where the key is attached (bridge.upstream.headers).
"""
