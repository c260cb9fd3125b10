"""The mock's embeddings: deterministic vectors that tests can check, and the gateway's refusals."""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any, Final

from bridge.mock_gateway.catalogue import by_id
from bridge.mock_gateway.records import Json

__all__ = ["DEFAULT_DIMENSIONS", "MAX_INPUTS", "embed", "problem", "vector"]

DEFAULT_DIMENSIONS: Final = 8  # for models outside the catalogue (and catalogue ones without a default)
MAX_INPUTS: Final = 2048  # OpenAI's limit per request
ENCODINGS: Final = ("float", "base64")
GOVERNED_PREFIX: Final = "governed/"  # refusals of these models come as 403, as governance overlays send them
# A governance rule's refusal sent as a rate limit: 429 with the code MODEL_NOT_ALLOWED (and Retry-After).
THROTTLED_MODEL: Final = "governed-throttled"


def vector(text: str, dimensions: int) -> list[float]:
    """The mock's embedding of `text`: element 0 is the text's length in characters, the others k/128 - 1
    for the bytes k of SHA-256 chained over the text (all exact in float32, so JSON and base64 agree)."""
    out = [float(len(text))]
    block = text.encode()
    while len(out) < dimensions:
        block = hashlib.sha256(block).digest()
        out += [k / 128 - 1 for k in block[: dimensions - len(out)]]
    return out[:dimensions]


def _encoded(values: list[float], encoding: str) -> Any:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


def problem(body: Any) -> str | None:
    """What is wrong with an embeddings request body, as the gateway would say it (a 400), or None."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' is required and must be a non-empty string"
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        return "'input' must be a non-empty string or a non-empty array of non-empty strings"
    if len(texts) > MAX_INPUTS:
        return f"'input' may hold at most {MAX_INPUTS} strings"
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        return "'dimensions' must be a positive integer"
    if body.get("encoding_format", "float") not in ENCODINGS:
        return f"'encoding_format' must be one of {', '.join(ENCODINGS)}"
    return None


def refusal(body: Json) -> tuple[int, Json] | None:
    """(status, body) refusing a well-formed request for a catalogue model that is no embeddings model, or
    whose `dimensions` is not one of the model's supported ones (the gateway's INVALID_DIMENSIONS), and
    every request for `THROTTLED_MODEL`."""
    if body["model"] == THROTTLED_MODEL:
        message = f"Usage of {THROTTLED_MODEL} is limited for this organisation: retry later"
        return 429, {"error": "MODEL_NOT_ALLOWED", "message": message, "details": {"window_seconds": 60}}
    doc = by_id(body["model"])
    if doc is not None and doc["type"] != "embeddings":
        message = f"'{body['model']}' is a {doc['type']} model, not an embeddings model"
        return 400, {"error": "invalid_request", "message": message, "details": {}}
    supported = doc.get("supported_dimensions") if doc else None
    dimensions = body.get("dimensions")
    if dimensions is None or not supported or dimensions in supported:
        return None
    status = 403 if body["model"].startswith(GOVERNED_PREFIX) else 400
    message = f"dimensions={dimensions} is not supported by {body['model']}: use one of {supported}"
    return status, {"error": "INVALID_DIMENSIONS", "message": message, "details": {"supported": supported}}


def embed(body: Json) -> Json:
    """The answer to a valid request: OpenAI's embeddings list, one item per input in order (reversed
    for the model `embed-shuffled`, each keeping its index), plus the gateway's flat `embedding` copy
    when the input was one string."""
    model = body["model"]
    texts: list[str] = [body["input"]] if isinstance(body["input"], str) else body["input"]
    doc = by_id(model)
    dimensions = body.get("dimensions") or (doc or {}).get("dimensions") or DEFAULT_DIMENSIONS
    encoding = body.get("encoding_format", "float")
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(vector(text, dimensions), encoding)}
        for i, text in enumerate(texts)
    ]
    tokens = sum(len(text.split()) for text in texts)
    answer: Json = {
        "object": "list",
        "model": model,
        "data": data[::-1] if model == "embed-shuffled" else data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    if isinstance(body["input"], str):
        answer["embedding"] = data[0]["embedding"]
    return answer
