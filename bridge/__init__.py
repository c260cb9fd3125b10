"""prisme-grpc-bridge: a gRPC front for OpenAI-compatible chat-completions gateways."""

__version__ = "0.1.0"
