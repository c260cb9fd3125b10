"""Pure conversion for EmbeddingService: the request -> the upstream body, the reply -> the response.

One input text is sent as a JSON string, several as an array (the gateway takes both). The reply's
`data` is put in input order by each item's `index`, and must hold exactly one embedding per input: a
reply that does not is an upstream protocol error, not a silently shorter or shuffled list. A vector may
come as JSON numbers or as base64 (little-endian float32, OpenAI's `encoding_format: "base64"`); both
become packed floats. The gateway's flat `embedding` copy of data[0] (for one input) is not repeated.
"""

from __future__ import annotations

import array
import base64
import binascii
import sys
from collections.abc import Mapping, Sequence
from typing import Final

from bridge.gen.prisme.llmgateway.v1 import embedding_pb2 as pb
from bridge.jsonproto import JSON, JsonMapping, ReplyShapeError, update_struct

__all__ = ["request_to_upstream", "response_from_upstream"]

_MAPPING: Final = JsonMapping()
_FLOAT32: Final = 4  # bytes per base64-encoded number
_NUMBER: Final = (int, float)


def request_to_upstream(request: pb.CreateEmbeddingRequest) -> dict[str, JSON]:
    """The upstream JSON body for a validated `request`."""
    body = _MAPPING.request_body(request)
    if len(request.input) == 1:
        body["input"] = request.input[0]
    return body


def response_from_upstream(obj: Mapping[str, JSON], inputs: int) -> pb.CreateEmbeddingResponse:
    """The response for a request of `inputs` texts; raises ReplyShapeError if the reply does not hold
    exactly one usable embedding per text."""
    rest = dict(obj)
    data = rest.pop("data", None)
    flat = rest.pop("embedding", None)
    if not isinstance(data, list):
        raise ReplyShapeError("reply to POST /embeddings has no `data` list")
    response = pb.CreateEmbeddingResponse()
    _MAPPING.fill(response, rest)
    items = _in_input_order(data, inputs)
    for index, item in enumerate(items):
        _fill_embedding(response.data.add(), item, index)
    if flat is not None and not (inputs == 1 and flat == items[0].get("embedding")):
        update_struct(response.extra, {"embedding": flat})  # not the copy it should be: kept, not dropped
    return response


def _in_input_order(data: list[JSON], inputs: int) -> Sequence[Mapping[str, JSON]]:
    if not all(isinstance(item, Mapping) for item in data):
        raise ReplyShapeError("an item of `data` is not a JSON object")
    indexes = [item.get("index") for item in data]
    if all(type(i) is int for i in indexes):
        ordered = sorted(data, key=lambda item: item["index"])
        if sorted(indexes) == list(range(inputs)):
            return ordered
    elif all(i is None for i in indexes) and len(data) == inputs:
        return data  # no indexes at all: the array order is the input order
    raise ReplyShapeError(
        f"upstream returned {len(data)} embeddings with indexes {_sample(indexes)} for {inputs} inputs"
    )


def _sample(indexes: list[JSON]) -> str:
    shown = ", ".join(repr(i) for i in indexes[:5])
    return f"[{shown}, ...]" if len(indexes) > 5 else f"[{shown}]"


def _fill_embedding(message: pb.Embedding, item: Mapping[str, JSON], index: int) -> None:
    rest = dict(item)
    vector = rest.pop("embedding", None)
    _MAPPING.fill(message, rest)
    message.index = index
    if isinstance(vector, str):
        message.embedding.extend(_decoded(vector, index))
        return
    if isinstance(vector, list) and all(type(x) in _NUMBER for x in vector):
        try:
            message.embedding.extend(vector)
            return
        except OverflowError:  # a JSON integer beyond any float
            pass
    raise ReplyShapeError(f"embedding {index} is neither a list of numbers nor a base64 string")


def _decoded(text: str, index: int) -> array.array[float]:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = None
    if raw is None or len(raw) % _FLOAT32:
        raise ReplyShapeError(f"embedding {index} is not base64 of float32 numbers")
    values = array.array("f", raw)
    if sys.byteorder != "little":
        values.byteswap()  # OpenAI's base64 is little-endian float32
    return values
