"""Pure parts of EmbeddingService: the upstream body, the reply in input order with base64 vectors
decoded, and request validation (bridge.embeddings.convert, validation)."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import pytest

from bridge.embeddings.convert import request_to_upstream, response_from_upstream
from bridge.embeddings.validation import validate_request
from bridge.gen.prisme.llmgateway.v1 import embedding_pb2 as pb
from bridge.jsonproto import ReplyShapeError, struct_to_json


def _b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def _reply(vectors: list[Any], **more: Any) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return {
        "object": "list",
        "model": "m",
        "data": data,
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
        **more,
    }


# ------------------------------------------------------------------------------------------- the body


def test_one_text_is_sent_as_a_string_several_as_an_array() -> None:
    one = pb.CreateEmbeddingRequest(model="m", input=["hello"])
    assert request_to_upstream(one) == {"model": "m", "input": "hello"}
    many = pb.CreateEmbeddingRequest(model="m", input=["a", "b"], dimensions=256, encoding_format="base64")
    many.user = "u-1"
    many.analytics_context.update({"team": "search", "n": 2})
    many.extra_body.update({"input_type": "query"})
    assert request_to_upstream(many) == {
        "model": "m",
        "input": ["a", "b"],
        "dimensions": 256,
        "encoding_format": "base64",
        "user": "u-1",
        "analytics_context": {"team": "search", "n": 2},
        "input_type": "query",
    }


# --------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({"input": ["a"]}, [("model", 'must not be empty: name the model, e.g. "text-embedding-3-small"')]),
        (
            {"model": "x" * 257, "input": ["a"]},
            [("model", "must be at most 256 characters (the gateway's limit), not 257")],
        ),
        ({"model": "m"}, [("input", "must contain at least one text to embed")]),
        ({"model": "m", "input": ["a", "", "c"]}, [("input[1]", "must not be empty")]),
        (
            {"model": "m", "input": ["a"], "dimensions": 0},
            [("dimensions", "must be positive; leave it unset for the model's default")],
        ),
        (
            {"model": "m", "input": ["a"], "encoding_format": "int8"},
            [("encoding_format", "must be float or base64 (or empty: not sent)")],
        ),
    ],
)
def test_plainly_wrong_requests_are_refused(
    fields: dict[str, Any], violations: list[tuple[str, str]]
) -> None:
    assert validate_request(pb.CreateEmbeddingRequest(**fields)) == violations


def test_valid_requests_pass() -> None:
    for fields in (
        {"model": "m", "input": ["a"]},
        {"model": "m", "input": ["a"] * 2048, "dimensions": 1, "encoding_format": "float"},
        {"model": "x" * 256, "input": ["a"], "encoding_format": "base64"},
    ):
        assert validate_request(pb.CreateEmbeddingRequest(**fields)) == []


def test_extra_body_may_not_set_the_encoding_or_repeat_a_field() -> None:
    request = pb.CreateEmbeddingRequest(model="m", input=["a"])
    request.extra_body.update({"encoding_format": "base64", "model": "n", "input_type": "query"})
    request.analytics_context.update({"score": math.inf})
    assert [field for field, _ in validate_request(request)] == [
        "extra_body.encoding_format",
        "extra_body.model",
        "analytics_context",
    ]


# ---------------------------------------------------------------------------------------- the reply


def test_float_and_base64_vectors_become_the_same_packed_floats() -> None:
    values = [[0.5, -0.25, 1.0], [3.0, 0.125, -1.5]]
    floats = response_from_upstream(_reply(values), 2)
    decoded = response_from_upstream(_reply([_b64(v) for v in values]), 2)
    assert floats == decoded
    assert [list(e.embedding) for e in floats.data] == values
    assert [(e.index, e.object) for e in floats.data] == [(0, "embedding"), (1, "embedding")]
    assert (floats.object, floats.model, floats.usage.prompt_tokens, floats.usage.total_tokens) == (
        "list",
        "m",
        3,
        3,
    )
    assert not floats.HasField("extra")


def test_json_floats_are_rounded_to_float32() -> None:
    (embedding,) = response_from_upstream(_reply([[0.1]]), 1).data
    assert embedding.embedding[0] == struct.unpack("<f", struct.pack("<f", 0.1))[0]


def test_data_is_put_in_input_order_by_index() -> None:
    reply = _reply([[float(i)] for i in range(5)])
    reply["data"].reverse()
    response = response_from_upstream(reply, 5)
    assert [e.embedding[0] for e in response.data] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [e.index for e in response.data] == [0, 1, 2, 3, 4]


def test_items_without_indexes_keep_the_array_order() -> None:
    reply = {"data": [{"embedding": [1.0]}, {"embedding": [2.0]}]}
    response = response_from_upstream(reply, 2)
    assert [(e.index, e.embedding[0]) for e in response.data] == [(0, 1.0), (1, 2.0)]


@pytest.mark.parametrize(
    ("data", "inputs"),
    [
        ([{"index": 0, "embedding": [1.0]}], 2),  # one missing
        ([{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}], 2),  # a duplicate
        ([{"index": 1, "embedding": [1.0]}, {"index": 2, "embedding": [2.0]}], 2),  # 1-based
        ([{"index": 0, "embedding": [1.0]}, {"embedding": [2.0]}], 2),  # some indexed, some not
        ([{"embedding": [1.0]}] * 3, 2),  # too many, no indexes
    ],
)
def test_anything_but_one_embedding_per_input_is_an_error(data: list[Any], inputs: int) -> None:
    with pytest.raises(ReplyShapeError) as raised:
        response_from_upstream({"data": data}, inputs)
    assert f"for {inputs} inputs" in str(raised.value)


@pytest.mark.parametrize(
    "vector",
    [
        "not base64!",
        base64.b64encode(b"\x00\x00\x80").decode(),
        [1.0, "2"],
        [True],
        [10**400],
        {"values": [1.0]},
        None,
    ],
)
def test_a_vector_that_is_no_vector_is_an_error(vector: Any) -> None:
    with pytest.raises(ReplyShapeError) as raised:
        response_from_upstream(_reply([vector]), 1)
    assert str(raised.value).startswith("embedding 0 is ")


@pytest.mark.parametrize("body", [{"object": "list"}, {"data": {"0": [1.0]}}])
def test_a_reply_without_a_data_list_is_an_error(body: dict[str, Any]) -> None:
    with pytest.raises(ReplyShapeError) as raised:
        response_from_upstream(body, 1)
    assert str(raised.value) == "reply to POST /embeddings has no `data` list"


def test_the_gateways_flat_copy_is_not_repeated() -> None:
    for vector in ([0.5, 0.25], _b64([0.5, 0.25])):
        response = response_from_upstream(_reply([vector], embedding=vector), 1)
        assert not response.HasField("extra")
        assert list(response.data[0].embedding) == [0.5, 0.25]


def test_a_flat_embedding_that_is_no_copy_is_kept() -> None:
    response = response_from_upstream(_reply([[0.5]], embedding=[9.0]), 1)
    assert struct_to_json(response.extra) == {"embedding": [9]}


def test_unknown_keys_are_kept_where_they_came() -> None:
    reply = _reply([[1.0]], id="emb-1")
    reply["data"][0]["norm"] = 1.0
    reply["usage"]["cost"] = 0.0001
    response = response_from_upstream(reply, 1)
    assert struct_to_json(response.extra) == {"id": "emb-1"}
    assert struct_to_json(response.data[0].extra) == {"norm": 1}
    assert struct_to_json(response.usage.extra) == {"cost": 0.0001}
