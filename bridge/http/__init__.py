"""The upstream HTTP layer, knowing nothing of chat: a client for JSON requests and SSE streams
(`client`), its network seam (`transport`) and that transport's exception map (`transport_errors`), the
pure SSE decoder (`sse`) and HTTP semantics (`status`)."""
