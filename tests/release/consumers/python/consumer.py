"""Calls a live bridge the way a Python service does, with the released client wheel and nothing else: the
asyncio clients for a unary chat call, the same request streamed and folded, the model catalogue and an
embedding, and a refused call read with error_details(). Prints one JSON object for tests/release to check.

    PRISME_BRIDGE=127.0.0.1:50051 PRISME_API_KEY=... python consumer.py
"""

import asyncio
import json
import os

import grpc
from prisme.llmgateway.client import (
    AsyncChatClient,
    AsyncEmbeddingClient,
    AsyncModelClient,
    Bearer,
    error_details,
)
from prisme.llmgateway.v1 import chat_completion_pb2 as chat_pb
from prisme.llmgateway.v1 import embedding_pb2, model_pb2


async def main() -> None:
    address = os.environ["PRISME_BRIDGE"]
    token = Bearer(os.environ["PRISME_API_KEY"], allow_plaintext=True)
    request = chat_pb.CreateChatCompletionRequest(
        model="echo", messages=[chat_pb.ChatMessage(role="user", content_text="Hello from Python")]
    )
    streamed = chat_pb.CreateChatCompletionRequest()
    streamed.CopyFrom(request)
    streamed.stream_options.include_usage = True
    async with AsyncChatClient.connect(address, tls=False, credentials=token, timeout=30) as chat:
        unary = await chat.complete(request)
        folded = await chat.stream(streamed).accumulate()
        try:
            await chat.complete(
                chat_pb.CreateChatCompletionRequest(model="error-429", messages=request.messages)
            )
        except grpc.aio.AioRpcError as error:
            refused = error
    # The gateway's catalogue takes an org key (iak_*) as x-prismeai-api-key, a user identity as Bearer.
    org_key = {"x-prismeai-api-key": os.environ["PRISME_API_KEY"]}
    async with AsyncModelClient.connect(address, tls=False, metadata=org_key, timeout=30) as catalogue:
        models = [
            m.model_id async for m in catalogue.list_models(model_pb2.ListModelsRequest(type="embeddings"))
        ]
    async with AsyncEmbeddingClient.connect(address, tls=False, credentials=token, timeout=30) as embeddings:
        embedded = await embeddings.embed(
            embedding_pb2.CreateEmbeddingRequest(model="text-embedding-mock", input=["Hello, bridge!"])
        )
    details = error_details(refused)
    print(
        json.dumps(
            {
                "unary": unary.choices[0].message.content,
                "folded": folded.choices[0].message.content,
                "total_tokens": folded.usage.total_tokens,
                "models": len(models),
                "dimensions": len(embedded.data[0].embedding),
                "code": refused.code().name,
                "reason": details.reason,
                "retry_delay_s": details.retry_delay.total_seconds() if details.retry_delay else None,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
