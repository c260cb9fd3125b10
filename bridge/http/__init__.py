"""The upstream HTTP layer, knowing nothing of chat: a client for JSON requests and SSE streams
(`client`), its network seam and the transports behind it, each with its library's exception map
(`transports`), retries (`retry`), redirects (`redirect`), trace context (`tracing`), the start's
reachability check (`reachability`), the pure SSE decoder (`sse`) and HTTP semantics (`status`)."""
