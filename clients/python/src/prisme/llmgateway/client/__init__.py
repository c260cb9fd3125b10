"""Python client of the prisme-grpc-bridge's services (prisme.llmgateway.v1).

- ChatClient / AsyncChatClient: complete(...) and stream(...), with per-call credentials (Bearer),
  metadata and deadlines; channels with keepalive within the bridge's policy and round_robin.
- ModelClient / AsyncModelClient: list_models(...) (every page, as they are read), list_page(...),
  get_model(...); EmbeddingClient / AsyncEmbeddingClient: embed(...). The same settings as the chat
  clients (SyncClient / AsyncClient).
- StreamAccumulator / accumulate(): fold a stream into the CreateChatCompletionResponse a unary call
  returns.
- error_details(): ErrorInfo reason, RetryInfo delay and BadRequest violations of a failed call.

The generated messages and stubs are in prisme.llmgateway.v1 (chat_completion_pb2,
chat_completion_service_pb2_grpc, model_pb2, model_service_pb2_grpc, embedding_pb2,
embedding_service_pb2_grpc).
"""

from prisme.llmgateway.client._accumulator import STREAM_ONLY_KEYS, StreamAccumulator, accumulate
from prisme.llmgateway.client._aio import AsyncChatClient, AsyncChatStream
from prisme.llmgateway.client._base import AsyncClient, SyncClient
from prisme.llmgateway.client._channel import (
    DEFAULT,
    KEEPALIVE_TIME_S,
    KEEPALIVE_TIMEOUT_S,
    MAX_MESSAGE_BYTES,
    SERVICE_CONFIG,
    Bearer,
    CallMetadata,
    channel_options,
    create_aio_channel,
    create_channel,
)
from prisme.llmgateway.client._embeddings import AsyncEmbeddingClient, EmbeddingClient
from prisme.llmgateway.client._errors import ErrorDetails, error_details
from prisme.llmgateway.client._models import AsyncModelClient, ModelClient
from prisme.llmgateway.client._sync import ChatClient, ChatStream

__all__ = [
    "DEFAULT",
    "KEEPALIVE_TIMEOUT_S",
    "KEEPALIVE_TIME_S",
    "MAX_MESSAGE_BYTES",
    "SERVICE_CONFIG",
    "STREAM_ONLY_KEYS",
    "AsyncChatClient",
    "AsyncChatStream",
    "AsyncClient",
    "AsyncEmbeddingClient",
    "AsyncModelClient",
    "Bearer",
    "CallMetadata",
    "ChatClient",
    "ChatStream",
    "EmbeddingClient",
    "ErrorDetails",
    "ModelClient",
    "StreamAccumulator",
    "SyncClient",
    "accumulate",
    "channel_options",
    "create_aio_channel",
    "create_channel",
    "error_details",
]
