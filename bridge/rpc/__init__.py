"""The gRPC layer, knowing no service in particular: the server composition (`server`), the interceptor
chain (`interceptors`), the call being served (`call`) and reflection with proto comments (`reflection`)."""
