"""Pure checks of ModelService requests before anything is sent upstream (field paths AIP-193 style).

Filter values (a type or capability the gateway does not know) are the gateway's call: its 400 reaches
the caller as INVALID_ARGUMENT. Rejected here is only what the query or path cannot carry faithfully.
"""

from __future__ import annotations

from typing import Final

from bridge.errors import FieldViolation
from bridge.gen.prisme.llmgateway.v1 import model_pb2 as pb
from bridge.jsonproto import too_long

__all__ = ["validate_get", "validate_list"]

# The gateway's catalogue documents model_id as at most 128 characters.
_MAX_MODEL_ID_LENGTH: Final = 128
_NO_COMMA: Final = "must not contain a comma: the gateway takes a comma-separated list"


def validate_list(request: pb.ListModelsRequest) -> list[FieldViolation]:
    """Violations of the filters (page_size and page_token are checked with the token: models.paging)."""
    violations: list[FieldViolation] = []
    for name in ("model_ids", "tags"):
        for i, value in enumerate(getattr(request, name)):
            if not value:
                violations.append((f"{name}[{i}]", "must not be empty"))
            elif "," in value:
                violations.append((f"{name}[{i}]", _NO_COMMA))
    return violations


def validate_get(request: pb.GetModelRequest) -> list[FieldViolation]:
    model_id = request.model_id
    if not model_id:
        return [("model_id", 'must not be empty: name the model, e.g. "gpt-4o"')]
    violations = too_long("model_id", model_id, _MAX_MODEL_ID_LENGTH)
    # Slashes are sent unencoded: a segment that is empty, "." or ".." would name another path upstream.
    if any(segment in ("", ".", "..") for segment in model_id.split("/")):
        violations.append(("model_id", 'must not have an empty, "." or ".." segment between slashes'))
    return violations
