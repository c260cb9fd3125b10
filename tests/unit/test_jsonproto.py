"""Tests for bridge.jsonproto beyond what the chat conversion tests cover: a service's own rewrites and
aliases, the request body with extra_body, and the request checks shared by every service."""

from __future__ import annotations

import math

from google.protobuf import struct_pb2

from bridge.gen.prisme.llmgateway.v1 import embedding_pb2, model_pb2
from bridge.jsonproto import JsonMapping, extra_body_violations, non_finite_violations, too_long


def test_aliases_and_rewrites_are_per_mapping() -> None:
    model = model_pb2.Model.DESCRIPTOR.full_name
    aliased = JsonMapping(aliases={model: {"id": "model_id"}})
    plain = JsonMapping()
    doc = {"id": "gpt-4o", "owned_by": "openai"}
    a, b = model_pb2.Model(), model_pb2.Model()
    assert aliased.fill(a, doc)
    assert plain.fill(b, doc)
    assert (a.model_id, a.owned_by, a.HasField("extra")) == ("gpt-4o", "openai", False)
    assert (b.model_id, dict(b.extra)) == ("", {"id": "gpt-4o"})
    # Both keys with different values: the field's own key is typed, the second one kept.
    c = model_pb2.Model()
    aliased.fill(c, {"id": "a", "model_id": "b"})
    assert (c.model_id, dict(c.extra)) == ("b", {"id": "a"})

    upper = JsonMapping(rewrites={model_pb2.ModelDisplay.DESCRIPTOR.full_name: lambda o: {"NAME": o["name"]}})
    shown = model_pb2.Model(model_id="m", display=model_pb2.ModelDisplay(name="M"))
    assert upper.to_json(shown) == {"model_id": "m", "display": {"NAME": "M"}}


def test_request_body_merges_extra_body_and_sends_integral_numbers_as_integers() -> None:
    request = embedding_pb2.CreateEmbeddingRequest(model="m", input=["a"], dimensions=256)
    request.extra_body.update({"input_type": "query", "top": 3})
    request.analytics_context.update({"team": "search", "bucket": 2})
    assert JsonMapping().request_body(request) == {
        "model": "m",
        "input": ["a"],
        "dimensions": 256,
        "analytics_context": {"team": "search", "bucket": 2},
        "input_type": "query",
        "top": 3,
    }


def test_extra_body_may_not_repeat_a_set_field_or_a_reserved_key() -> None:
    request = embedding_pb2.CreateEmbeddingRequest(model="m")
    request.extra_body.update({"model": "x", "input": ["unset field: allowed"], "stream": True})
    assert extra_body_violations(request, {"stream": "is not a thing here"}) == [
        ("extra_body.model", "duplicates the field model; set it in one place"),
        ("extra_body.stream", "is not a thing here"),
    ]


def test_non_finite_numbers_are_found_with_their_path() -> None:
    request = embedding_pb2.CreateEmbeddingRequest(model="m")
    request.analytics_context.update({"x": math.nan})
    request.extra_body.update({"ok": 1.5})
    assert non_finite_violations("", request) == [
        ("analytics_context", "contains a NaN or infinite number, which JSON cannot carry")
    ]
    fine = struct_pb2.Struct()
    fine.update({"a": [1, {"b": 2.5}]})
    assert non_finite_violations("", embedding_pb2.CreateEmbeddingRequest(analytics_context=fine)) == []


def test_too_long_counts_characters() -> None:
    assert too_long("model", "é" * 128, 128) == []
    assert too_long("model_id", "x" * 129, 128) == [
        ("model_id", "must be at most 128 characters (the gateway's limit), not 129")
    ]
