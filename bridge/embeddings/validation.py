"""Pure checks of a CreateEmbeddingRequest before anything is sent upstream (field paths AIP-193 style).

Rejected here: what is plainly wrong whatever the upstream is (no model, no text, an empty text, a
dimensionality of 0 or less), the gateway's documented model length, numbers JSON cannot carry, and an
encoding the bridge could not decode. Whether a model takes `dimensions` is the gateway's call: its
INVALID_DIMENSIONS reaches the caller as INVALID_ARGUMENT.
"""

from __future__ import annotations

from typing import Final

from bridge.errors import FieldViolation
from bridge.gen.prisme.llmgateway.v1 import embedding_pb2 as pb
from bridge.jsonproto import extra_body_violations, non_finite_violations, too_long

__all__ = ["ENCODINGS", "validate_request"]

ENCODINGS: Final = ("float", "base64")  # the encodings the bridge decodes
_MAX_MODEL_LENGTH: Final = 256  # the gateway's limit for `model` on its embeddings endpoint
_RESERVED: Final = {
    "encoding_format": "set the field encoding_format instead: the bridge decodes the answer by it",
}


def validate_request(request: pb.CreateEmbeddingRequest) -> list[FieldViolation]:
    """Every violation in `request` (empty when it may be sent upstream)."""
    violations: list[FieldViolation] = []
    if not request.model:
        violations.append(("model", 'must not be empty: name the model, e.g. "text-embedding-3-small"'))
    violations += too_long("model", request.model, _MAX_MODEL_LENGTH)
    if not request.input:
        violations.append(("input", "must contain at least one text to embed"))
    violations += [(f"input[{i}]", "must not be empty") for i, text in enumerate(request.input) if not text]
    if request.HasField("dimensions") and request.dimensions <= 0:
        violations.append(("dimensions", "must be positive; leave it unset for the model's default"))
    if request.encoding_format and request.encoding_format not in ENCODINGS:
        violations.append(("encoding_format", f"must be {' or '.join(ENCODINGS)} (or empty: not sent)"))
    violations += extra_body_violations(request, _RESERVED)
    violations += non_finite_violations("", request)
    return violations
