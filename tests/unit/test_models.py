"""Pure parts of ModelService: paging tokens, the gateway's query and path, both /models reply shapes,
request validation (bridge.models.paging, convert, validation)."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor
from google.rpc import error_details_pb2

from bridge.errors import BridgeError
from bridge.gen.prisme.llmgateway.v1 import embedding_pb2, model_pb2
from bridge.jsonproto import ReplyShapeError, struct_to_json
from bridge.models import convert, paging
from bridge.models.paging import Position
from bridge.models.validation import validate_get, validate_list

STRUCT = struct_pb2.Struct.DESCRIPTOR.full_name
DOC: dict[str, Any] = {
    "model_id": "eu.anthropic.claude-sonnet-4-20250514-v1:0",
    "type": "completion",
    "display": {"name": "Claude Sonnet 4", "brand": "Anthropic", "hidden": False, "icon": "claude.svg"},
    "capabilities": {"vision": True, "audio": False, "text": True, "image": False},
    "limits": {"context_window": 200000, "max_output_tokens": 64000},
    "failover": "bedrock/anthropic.claude-3-haiku",
    "region": "eu-west-1",
    "dimensions": None,
    "supported_dimensions": [],
    "metrics": {"p50_latency_ms": 900},
    "provider_config": {"batch_size": 4},
    "pricing": {"input_per_1m_tokens": 3, "output_per_1m_tokens": 15.0, "currency": "EUR"},
    "tags": ["chat", "eu"],
    "org_slugs": ["acme"],
    "enabled": True,
}


# ----------------------------------------------------------------------------------------------- paging


def test_first_page_defaults_to_the_gateways_limit_and_caps_at_100() -> None:
    assert paging.position(0, "", {}) == (Position(0, 100), [])
    assert paging.position(25, "", {}) == (Position(0, 25), [])
    assert paging.position(500, "", {}) == (Position(0, 100), [])  # capped, not an error
    at = Position(0, 25)
    assert (at.limit, at.page) == (25, 0)


def test_a_token_continues_where_the_page_ended_with_the_same_filters() -> None:
    filters = {"type": "embeddings", "tags": "eu,fast"}
    token = paging.token(150, filters)
    at, violations = paging.position(50, token, dict(reversed(filters.items())))  # order does not matter
    assert violations == []
    assert at == Position(150, 50)
    assert (at.limit, at.page) == (50, 3)


@pytest.mark.parametrize(
    ("offset", "size", "limit", "page"),
    [(0, 40, 40, 0), (40, 40, 40, 1), (30, 20, 15, 2), (45, 100, 45, 1), (7, 5, 1, 7), (100, 100, 100, 1)],
)
def test_a_changed_page_size_never_skips_or_repeats(offset: int, size: int, limit: int, page: int) -> None:
    at = Position(offset, size)
    assert (at.limit, at.page) == (limit, page)
    assert at.page * at.limit == offset  # the page starts exactly where the previous one ended
    assert at.limit <= size


def test_a_token_for_other_filters_is_refused() -> None:
    token = paging.token(100, {"type": "completion"})
    at, violations = paging.position(0, token, {"type": "embeddings"})
    assert at is None
    assert violations == [
        ("page_token", "belongs to other filters: send the same filters as for the first page, or no token")
    ]


def _b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        "eyJ2IjoxLCJvIjozfQ",  # {"v":1,"o":3}: no filters
        _b64([1, 2]),
        _b64({"v": 2, "o": 0, "f": paging.fingerprint({})}),
        _b64({"v": 1, "o": -1, "f": paging.fingerprint({})}),
        _b64({"v": 1, "o": "3", "f": paging.fingerprint({})}),
        _b64({"v": 1, "o": True, "f": paging.fingerprint({})}),
        _b64({"v": 1, "o": 10**12, "f": paging.fingerprint({})}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_malformed_token_is_invalid_argument(token: str) -> None:
    at, violations = paging.position(10, token, {})
    assert at is None
    assert [field for field, _ in violations] == ["page_token"]
    assert "next_page_token" in violations[0][1]


def test_negative_page_size_is_refused() -> None:
    assert paging.position(-1, "", {}) == (
        None,
        [("page_size", "must not be negative (0 means the default, 100)")],
    )


# -------------------------------------------------------------------------------------- query and path


def test_every_filter_becomes_its_query_parameter() -> None:
    request = model_pb2.ListModelsRequest(
        type="embeddings",
        enabled=False,
        model_ids=["a/b", "c:0"],
        tags=["eu", "fast"],
        visible_only=True,
        brand="OpenAI",
        capability="vision",
        search="gpt",
    )
    filters = convert.filters_of(request)
    assert filters == {
        "type": "embeddings",
        "enabled": "false",
        "model_ids": "a/b,c:0",
        "tags": "eu,fast",
        "visible_only": "true",
        "brand": "OpenAI",
        "capability": "vision",
        "search": "gpt",
    }
    assert convert.query_of(filters, Position(30, 20)) == {**filters, "limit": "15", "page": "2"}


def test_unset_filters_are_not_sent() -> None:
    assert convert.filters_of(model_pb2.ListModelsRequest(page_size=10, visible_only=False)) == {}
    assert convert.filters_of(model_pb2.ListModelsRequest(enabled=True)) == {"enabled": "true"}


@pytest.mark.parametrize(
    ("model_id", "path"),
    [
        ("gpt-4o", "/models/gpt-4o"),
        ("bedrock/anthropic.claude-3-haiku", "/models/bedrock/anthropic.claude-3-haiku"),
        ("eu.anthropic.claude-sonnet-4-20250514-v1:0", "/models/eu.anthropic.claude-sonnet-4-20250514-v1:0"),
        ("my model?x=1#top", "/models/my%20model%3Fx=1%23top"),
        ("100%/ok", "/models/100%25/ok"),
        ("été", "/models/%C3%A9t%C3%A9"),
    ],
)
def test_model_path_keeps_slashes_and_colons_and_encodes_the_rest(model_id: str, path: str) -> None:
    assert convert.model_path(model_id) == path


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("model_id", "field"),
    [
        ("", "model_id"),
        ("x" * 129, "model_id"),
        ("../chat/completions", "model_id"),
        ("a/./b", "model_id"),
        ("a//b", "model_id"),
        ("trailing/", "model_id"),
        ("/leading", "model_id"),
    ],
)
def test_get_model_refuses_ids_the_path_cannot_carry(model_id: str, field: str) -> None:
    violations = validate_get(model_pb2.GetModelRequest(model_id=model_id))
    assert [f for f, _ in violations] == [field]


def test_get_model_accepts_the_gateways_ids() -> None:
    for model_id in ("gpt-4o", "bedrock/anthropic.claude-3-haiku", "a..b/c.d", "x" * 128):
        assert validate_get(model_pb2.GetModelRequest(model_id=model_id)) == []


def test_list_filters_the_query_cannot_carry() -> None:
    request = model_pb2.ListModelsRequest(model_ids=["ok", "a,b", ""], tags=["x,y"])
    assert validate_list(request) == [
        ("model_ids[1]", "must not contain a comma: the gateway takes a comma-separated list"),
        ("model_ids[2]", "must not be empty"),
        ("tags[0]", "must not contain a comma: the gateway takes a comma-separated list"),
    ]


# --------------------------------------------------------------------------------------- model documents


def test_a_catalogue_document_is_typed_and_its_unknown_keys_kept() -> None:
    model = convert.model_from_upstream(DOC)
    assert model.model_id == DOC["model_id"]
    assert (model.display.name, model.display.brand, model.display.hidden) == (
        "Claude Sonnet 4",
        "Anthropic",
        False,
    )
    assert dict(model.display.extra) == {"icon": "claude.svg"}
    assert (model.capabilities.vision, model.capabilities.text, model.capabilities.audio) == (
        True,
        True,
        False,
    )
    assert dict(model.limits) == {"context_window": 200000, "max_output_tokens": 64000}
    assert (model.failover, model.region) == ("bedrock/anthropic.claude-3-haiku", "eu-west-1")
    assert not model.HasField("dimensions")
    assert model.pricing.input_per_1m_tokens == 3.0
    assert model.pricing.output_per_1m_tokens == 15.0
    assert dict(model.pricing.extra) == {"currency": "EUR"}
    assert list(model.tags) == ["chat", "eu"]
    assert model.HasField("enabled")
    assert model.enabled
    assert struct_to_json(model.extra) == {
        "metrics": {"p50_latency_ms": 900},
        "provider_config": {"batch_size": 4},
        "org_slugs": ["acme"],
    }


def test_an_embeddings_document_has_its_dimensions() -> None:
    model = convert.model_from_upstream(
        {
            "model_id": "text-embedding-3-small",
            "type": "embeddings",
            "dimensions": 1536,
            "supported_dimensions": [256, 1536],
        }
    )
    assert model.dimensions == 1536
    assert list(model.supported_dimensions) == [256, 1536]


def test_mistyped_keys_are_kept_in_extra() -> None:
    model = convert.model_from_upstream(
        {"model_id": "m", "dimensions": "auto", "tags": "chat", "enabled": "yes"}
    )
    assert model.model_id == "m"
    assert not model.HasField("dimensions")
    assert not model.HasField("enabled")
    assert dict(model.extra) == {"dimensions": "auto", "tags": "chat", "enabled": "yes"}


def test_an_openai_model_object_reads_into_the_same_fields() -> None:
    model = convert.model_from_upstream(
        {
            "id": "meta-llama/Llama-3.1-8B-Instruct",
            "object": "model",
            "created": 1721000000,
            "owned_by": "vllm",
            "max_model_len": 131072,
        }
    )
    assert model.model_id == "meta-llama/Llama-3.1-8B-Instruct"
    assert (model.object, model.created, model.owned_by) == ("model", 1721000000, "vllm")
    assert dict(model.extra) == {"max_model_len": 131072}


# -------------------------------------------------------------------------------------------- list pages


def _gateway_reply(ids: list[str], total: Any, **more: Any) -> dict[str, Any]:
    return {"items": [{"model_id": i} for i in ids], "total": total, "page": 0, "limit": 100, **more}


def _ids(response: model_pb2.ListModelsResponse) -> list[str]:
    return [m.model_id for m in response.models]


def test_a_gateway_page_with_more_to_come_has_a_next_token() -> None:
    request = model_pb2.ListModelsRequest(page_size=2, type="completion")
    response = convert.list_from_upstream(_gateway_reply(["a", "b"], 5), request, Position(2, 2))
    assert _ids(response) == ["a", "b"]
    assert response.total_size == 5
    assert paging.position(2, response.next_page_token, {"type": "completion"}) == (Position(4, 2), [])


def test_the_last_gateway_page_has_no_token() -> None:
    request = model_pb2.ListModelsRequest(page_size=2)
    response = convert.list_from_upstream(_gateway_reply(["e"], 5), request, Position(4, 2))
    assert (_ids(response), response.next_page_token, response.total_size) == (["e"], "", 5)
    empty = convert.list_from_upstream(_gateway_reply([], 5), request, Position(6, 2))
    assert (_ids(empty), empty.next_page_token) == ([], "")  # the catalogue shrank: no endless paging


def test_more_items_than_asked_for_are_cut_to_the_limit() -> None:
    request = model_pb2.ListModelsRequest(page_size=2)
    response = convert.list_from_upstream(_gateway_reply(["a", "b", "c"], 3), request, Position(0, 2))
    assert _ids(response) == ["a", "b"]
    assert paging.position(2, response.next_page_token, {})[0] == Position(2, 2)


def test_without_a_count_a_full_page_may_have_a_successor() -> None:
    request = model_pb2.ListModelsRequest(page_size=2)
    full = convert.list_from_upstream(
        {"items": [{"model_id": "a"}, {"model_id": "b"}]}, request, Position(0, 2)
    )
    assert full.next_page_token
    assert full.total_size == 0  # not said
    short = convert.list_from_upstream({"items": [{"model_id": "c"}]}, request, Position(2, 2))
    assert short.next_page_token == ""


def test_a_mistyped_total_and_unknown_envelope_keys_are_kept() -> None:
    reply = _gateway_reply(["a"], "many", next="cursor-1")
    response = convert.list_from_upstream(reply, model_pb2.ListModelsRequest(), Position(0, 100))
    assert dict(response.extra) == {"total": "many", "next": "cursor-1"}
    assert response.total_size == 0


def _openai(ids: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "created": 1, "owned_by": "acme"} for i in ids],
    }


def test_the_openai_shape_is_one_page_by_default() -> None:
    ids = [f"m{i}" for i in range(250)]
    response = convert.list_from_upstream(_openai(ids), model_pb2.ListModelsRequest(), Position(0, 100))
    assert _ids(response) == ids
    assert (response.total_size, response.next_page_token) == (250, "")
    assert response.models[0].owned_by == "acme"
    assert not response.HasField("extra")


def test_the_openai_shape_is_paged_by_the_bridge_when_asked() -> None:
    ids = [f"m{i}" for i in range(5)]
    request = model_pb2.ListModelsRequest(page_size=2)
    first = convert.list_from_upstream(_openai(ids), request, Position(0, 2))
    at, _ = paging.position(2, first.next_page_token, {})
    assert at is not None
    second = convert.list_from_upstream(_openai(ids), request, at)
    at, _ = paging.position(2, second.next_page_token, {})
    assert at is not None
    last = convert.list_from_upstream(_openai(ids), request, at)
    assert [_ids(first), _ids(second), _ids(last)] == [["m0", "m1"], ["m2", "m3"], ["m4"]]
    assert last.next_page_token == ""


def test_the_openai_shape_is_filtered_by_model_ids_and_search() -> None:
    reply = _openai(["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "o3"])
    by_ids = model_pb2.ListModelsRequest(model_ids=["o3", "gpt-4o", "absent"])
    assert _ids(convert.list_from_upstream(reply, by_ids, Position(0, 100))) == ["gpt-4o", "o3"]
    by_search = model_pb2.ListModelsRequest(search="GPT")
    found = convert.list_from_upstream(reply, by_search, Position(0, 100))
    assert (_ids(found), found.total_size) == (["gpt-4o", "gpt-4o-mini"], 2)


@pytest.mark.parametrize(
    ("request_fields", "subjects"),
    [
        ({"type": "embeddings"}, ["type"]),
        ({"enabled": False}, ["enabled"]),
        ({"tags": ["eu"], "visible_only": True}, ["tags", "visible_only"]),
        ({"brand": "OpenAI", "capability": "vision"}, ["brand", "capability"]),
    ],
)
def test_a_filter_the_openai_shape_cannot_answer_is_failed_precondition(
    request_fields: dict[str, Any], subjects: list[str]
) -> None:
    with pytest.raises(BridgeError) as raised:
        convert.list_from_upstream(
            _openai(["a"]), model_pb2.ListModelsRequest(**request_fields), Position(0, 100)
        )
    error = raised.value
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "filter by model_ids or search only" in error.message
    info, (failure,) = error.error_info(), error.details
    assert (info.domain, info.reason) == ("grpc-bridge.prisme.ai", "UPSTREAM_FILTER_UNSUPPORTED")
    assert isinstance(failure, error_details_pb2.PreconditionFailure)
    assert [(v.type, v.subject) for v in failure.violations] == [
        ("FILTER_NOT_SUPPORTED", s) for s in subjects
    ]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"models": []}, "neither the gateway's"),
        ({"object": "list", "data": {"id": "a"}}, "neither the gateway's"),
        ({"items": ["gpt-4o"], "total": 1}, "a listed model is not a JSON object"),
        ({"object": "list", "data": [None]}, "a listed model is not a JSON object"),
    ],
)
def test_a_reply_that_is_no_model_list_is_a_shape_error(body: dict[str, Any], problem: str) -> None:
    with pytest.raises(ReplyShapeError, match=problem):
        convert.list_from_upstream(body, model_pb2.ListModelsRequest(), Position(0, 100))


# ------------------------------------------------------------------------------------- contract shape


def _object_messages(roots: tuple[Descriptor, ...]) -> dict[str, Descriptor]:
    seen: dict[str, Descriptor] = {}
    todo = list(roots)
    while todo:
        desc = todo.pop()
        if desc.full_name in seen or desc.full_name.startswith("google.protobuf."):
            continue
        seen[desc.full_name] = desc
        todo += [f.message_type for f in desc.fields if f.message_type is not None]
    return seen


def test_every_response_object_message_has_extra() -> None:
    """As in the chat contract (docs/proto-design.md, section 7): every message filled from upstream JSON
    has `extra` (field 100, a Struct); the embeddings request's top level has `extra_body`."""
    roots = (
        model_pb2.ListModelsResponse.DESCRIPTOR,
        model_pb2.GetModelResponse.DESCRIPTOR,
        embedding_pb2.CreateEmbeddingResponse.DESCRIPTOR,
    )
    found = _object_messages(roots)
    wrappers = {model_pb2.GetModelResponse.DESCRIPTOR.full_name}  # holds a Model, is no upstream object
    for name, desc in found.items():
        if name in wrappers:
            continue
        field = desc.fields_by_name.get("extra")
        assert field is not None, f"{name} has no extra"
        assert (field.number, field.message_type.full_name) == (100, STRUCT), name
    assert len(found) == 9
    extra_body = embedding_pb2.CreateEmbeddingRequest.DESCRIPTOR.fields_by_name["extra_body"]
    assert (extra_body.number, extra_body.message_type.full_name) == (100, STRUCT)
