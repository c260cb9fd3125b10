"""Pure conversion for ModelService: requests -> the gateway's query and path, upstream JSON -> messages.

Two reply shapes are understood for `GET /models`: the gateway's page envelope `{items, total, page,
limit}`, and OpenAI's `{object: "list", data: [...]}` (OpenAI, vLLM, LiteLLM), which has no paging and no
filters: the bridge pages it itself and applies the filters its items can answer (model_ids, search);
the others are FAILED_PRECONDITION rather than a silently unfiltered list. An OpenAI model object's `id`
is read into `model_id`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import grpc
from google.rpc import error_details_pb2

from bridge.errors import BridgeError, Reason
from bridge.gen.prisme.llmgateway.v1 import model_pb2 as pb
from bridge.jsonproto import JSON, JsonMapping, ReplyShapeError, update_struct
from bridge.models.paging import Position, token

__all__ = [
    "filters_of",
    "list_from_upstream",
    "model_from_upstream",
    "model_path",
    "query_of",
]

_MAPPING: Final = JsonMapping(aliases={pb.Model.DESCRIPTOR.full_name: {"id": "model_id"}})
# Characters a path segment may hold unencoded (RFC 3986 pchar), plus "/": the gateway routes the id as a
# catch-all and asks for slashes unencoded. "%", "?", "#", spaces and the rest are percent-encoded.
_PATH_SAFE: Final = "/:@!$&'()*+,;="
_GATEWAY_ENVELOPE: Final[tuple[str, ...]] = ("items", "total", "page", "limit")
_OPENAI_ENVELOPE: Final[tuple[str, ...]] = ("object", "data")
_MAX_INT32: Final = 2**31 - 1
# ListModelsRequest filters the OpenAI list shape cannot answer (its items have id, created, owned_by).
_GATEWAY_ONLY: Final = ("type", "enabled", "tags", "visible_only", "brand", "capability")


# --- outbound -------------------------------------------------------------------------------------------


def filters_of(request: pb.ListModelsRequest) -> dict[str, str]:
    """The gateway's query parameters for the filters set in `request` (paging excluded)."""
    query: dict[str, str] = {}
    for name in ("type", "brand", "capability", "search"):
        if value := getattr(request, name):
            query[name] = value
    if request.HasField("enabled"):
        query["enabled"] = "true" if request.enabled else "false"
    for name in ("model_ids", "tags"):
        if values := getattr(request, name):
            query[name] = ",".join(values)
    if request.visible_only:
        query["visible_only"] = "true"
    return query


def query_of(filters: Mapping[str, str], at: Position) -> dict[str, str]:
    """The whole query of `GET /models` for the page at `at`."""
    return {**filters, "limit": str(at.limit), "page": str(at.page)}


def model_path(model_id: str) -> str:
    """`/models/{model_id}` as the gateway documents it: slashes unencoded (assumes a validated id)."""
    return "/models/" + quote(model_id, safe=_PATH_SAFE)


# --- inbound --------------------------------------------------------------------------------------------


def model_from_upstream(doc: Mapping[str, JSON]) -> pb.Model:
    """A catalogue document or an OpenAI model object as a Model; unknown or mistyped keys in `extra`."""
    model = pb.Model()
    _MAPPING.fill(model, doc)
    return model


def list_from_upstream(
    body: Mapping[str, JSON], request: pb.ListModelsRequest, at: Position
) -> pb.ListModelsResponse:
    """The page the reply to `GET /models` holds, with the token of the next one if there is one."""
    filters = filters_of(request)
    if isinstance(body.get("items"), list):
        page = _gateway_page(body, at)
        keys = _GATEWAY_ENVELOPE
    elif body.get("object") == "list" and isinstance(body.get("data"), list):
        page = _openai_page(body["data"], request, at.offset)
        keys = _OPENAI_ENVELOPE
    else:
        raise ReplyShapeError(
            "reply to GET /models is neither the gateway's {items, total, page, limit} nor OpenAI's "
            '{object: "list", data}'
        )
    response = pb.ListModelsResponse(models=[model_from_upstream(doc) for doc in page.items])
    response.total_size = page.total
    if page.next_offset is not None:
        response.next_page_token = token(page.next_offset, filters)
    rest = {key: value for key, value in body.items() if key not in keys and value is not None}
    if page.mistyped_total is not None:
        rest["total"] = page.mistyped_total
    if rest:
        update_struct(response.extra, rest)
    return response


@dataclass(frozen=True, slots=True)
class _Page:
    items: list[Mapping[str, JSON]]
    total: int
    next_offset: int | None  # where the next page starts, if there is one
    mistyped_total: Any = None  # a `total` that is no count, kept in `extra`


def _objects(items: list[JSON]) -> list[Mapping[str, JSON]]:
    if not all(isinstance(item, Mapping) for item in items):
        raise ReplyShapeError("a listed model is not a JSON object")
    return items


def _gateway_page(body: Mapping[str, JSON], at: Position) -> _Page:
    # More than asked for would overlap the next page: keep `limit` of them, and continue after those.
    items = _objects(body["items"])[: at.limit]
    raw_total = body.get("total")
    total = raw_total if type(raw_total) is int and 0 <= raw_total <= _MAX_INT32 else None
    end = at.offset + len(items)
    # Without a count, a full page may have a successor (an empty last page then ends the list).
    more = end < total if total is not None else len(items) == at.limit
    return _Page(
        items,
        total or 0,  # 0: the upstream did not say
        end if items and more else None,
        raw_total if total is None else None,
    )


def _openai_page(data: list[JSON], request: pb.ListModelsRequest, offset: int) -> _Page:
    unsupported = [name for name in _GATEWAY_ONLY if _is_set(request, name)]
    if unsupported:
        raise _not_filterable(unsupported)
    models = [item for item in _objects(data) if _matches(item, request)]
    size = request.page_size or len(models)  # no paging upstream: the default page is the whole list
    end = min(offset + size, len(models))
    return _Page(models[offset:end], len(models), end if end < len(models) else None)


def _is_set(request: pb.ListModelsRequest, name: str) -> bool:
    if name == "enabled":
        return request.HasField("enabled")
    return bool(getattr(request, name))


def _matches(item: Mapping[str, JSON], request: pb.ListModelsRequest) -> bool:
    model_id = item.get("id")
    if request.model_ids and model_id not in request.model_ids:
        return False
    if request.search:
        text = request.search.lower()
        fields = (item.get("id"), item.get("owned_by"))
        return any(isinstance(f, str) and text in f.lower() for f in fields)
    return True


def _not_filterable(names: list[str]) -> BridgeError:
    description = "the upstream lists its models in OpenAI's shape, which cannot answer this filter"
    failure = error_details_pb2.PreconditionFailure()
    for name in names:
        failure.violations.add(type="FILTER_NOT_SUPPORTED", subject=name, description=description)
    return BridgeError(
        "the upstream lists its models in OpenAI's {object: list, data} shape, without "
        f"{', '.join(names)}: filter by model_ids or search only",
        grpc.StatusCode.FAILED_PRECONDITION,
        reason=Reason.UPSTREAM_FILTER_UNSUPPORTED,
        details=[failure],
    )
