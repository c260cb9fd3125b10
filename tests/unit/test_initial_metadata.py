"""Reply headers go back as initial metadata in a batch of their own only when there are some: without,
grpc sends the empty initial metadata with the first message (one batch fewer per call)."""

from __future__ import annotations

from typing import Any

from bridge.rpc.call import send_initial_metadata


class _Context:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send_initial_metadata(self, metadata: Any) -> None:
        self.sent.append(metadata)


async def test_metadata_is_sent_when_there_is_some() -> None:
    context = _Context()
    await send_initial_metadata(context, (("x-request-id", "r-1"),))  # type: ignore[arg-type]
    assert context.sent == [(("x-request-id", "r-1"),)]


async def test_nothing_is_sent_without_metadata() -> None:
    context = _Context()
    await send_initial_metadata(context, ())  # type: ignore[arg-type]
    assert context.sent == []
