"""One gRPC call made with a bare HTTP/2 client (h2): what goes on the wire, as sent and as received.

For what no gRPC client library lets a test do: send metadata values gRPC refuses (tests/integration/
test_bad_input.py), or read metadata a library keeps to itself: Python's grpc (C-core) takes the ORCA
trailer `endpoint-load-metrics-bin` for its own balancers and never shows it to the application.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

__all__ = ["RawReply", "raw_call"]


@dataclass
class RawReply:
    """The reply: its headers, its trailers (a trailers-only reply's one block counts as both), and the
    messages of its body."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    messages: list[bytes] = field(default_factory=list)

    @property
    def metadata(self) -> dict[bytes, bytes]:
        return {**self.headers, **self.trailers}

    def binary_trailer(self, name: str) -> bytes | None:
        """The value of a `-bin` trailer, decoded (gRPC sends binary values as unpadded base64)."""
        value = self.trailers.get(name.encode())
        return None if value is None else base64.b64decode(value + b"=" * (-len(value) % 4))


async def raw_call(
    port: int,
    path: str,
    message: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    limit_s: float = 10,
) -> RawReply:
    """Sends one unary-request gRPC call to 127.0.0.1:`port` (`path` "/pkg.Service/Method", `headers` as
    given: no validation) and reads its reply to the end of the stream."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    connection = h2.connection.H2Connection(config)
    connection.initiate_connection()
    stream_id = connection.get_next_available_stream_id()
    base = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"bridge"),
    ]
    grpc_headers = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
    connection.send_headers(stream_id, [*base, *grpc_headers, *headers])
    connection.send_data(stream_id, b"\x00" + struct.pack(">I", len(message)) + message, end_stream=True)
    writer.write(connection.data_to_send())
    reply, body = RawReply(), bytearray()
    try:
        async with asyncio.timeout(limit_s):
            while data := await reader.read(65536):
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        reply.headers = dict(event.headers)
                    elif isinstance(event, h2.events.TrailersReceived):
                        reply.trailers = dict(event.headers)
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        connection.acknowledge_received_data(event.flow_controlled_length, stream_id)
                    elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        if not reply.trailers:  # trailers-only: the status came in the one header block
                            reply.trailers = reply.headers
                        reply.messages = _messages(bytes(body))
                        return reply
                writer.write(connection.data_to_send())
    finally:
        writer.close()
    return reply


def _messages(body: bytes) -> list[bytes]:
    messages, at = [], 0
    while at + 5 <= len(body):
        (size,) = struct.unpack(">I", body[at + 1 : at + 5])
        messages.append(body[at + 5 : at + 5 + size])
        at += 5 + size
    return messages
