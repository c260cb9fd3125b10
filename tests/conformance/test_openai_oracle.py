"""The OpenAI Python SDK (pinned, test-only) as the oracle of wire shapes: every reply, chunk and error body
the mock gateway can send, fetched over real HTTP with the SDK's own client and SSE decoder, must validate
against the SDK's own types (`ChatCompletion`, `ChatCompletionChunk`, `ErrorObject`; for embeddings
`CreateEmbeddingResponse`, for an OpenAI-compatible model list `Model`) in pydantic's strict mode.

Strict mode rejects missing required fields, wrong types and values outside a Literal (a `finish_reason` of
"done"). The SDK's models accept unknown keys (extra="allow"), so unknown keys are checked here against a list
of the extensions the mock is meant to send, each with its origin. `test_the_oracle_rejects_wrong_shapes`
proves the check fails on a server that sends wrong shapes.

Shapes the SDK has no type for, said so where they are checked:
- Prisme's error body `{"error": "<code>", "message", "details"}` (docs.prisme.ai) is not OpenAI's
  `{"error": {...}}`: the SDK raises the right status class but reads neither its code nor its message.
- Prisme's usage extensions `cost`, `duration_ms`, `carbon` are unknown keys to the SDK's CompletionUsage.
- Real servers' deviations the mock reproduces on purpose: Azure's first chunk (`"object": ""`), vLLM's
  in-stream error with an integer `code`.
- The gateway's model catalogue `{items, total, page, limit}` (the SDK lists models in OpenAI's shape only;
  the mock's OpenAI-compatible list under /openai/v1 is checked instead).
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import openai
import pydantic
import pytest
import pytest_asyncio
from aiohttp import web
from openai import AsyncOpenAI, AsyncStream
from openai.types import CreateEmbeddingResponse
from openai.types import Model as OpenAIModel
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.shared import ErrorObject

import bridge.mock_gateway
from bridge.mock_gateway import MockGateway
from tests.conformance import servers

MESSAGES: Final = [{"role": "user", "content": "Shapes under the oracle"}]

# Unknown keys the mock sends on purpose, by path ("[]" = every item of a list), and why.
PRISME_USAGE: Final = {"usage.cost", "usage.duration_ms", "usage.carbon"}  # Prisme gateway docs
REASONING: Final = {
    "choices[].message.reasoning_content",
    "choices[].delta.reasoning_content",
}  # vLLM, DeepSeek
AZURE: Final = {"prompt_filter_results", "choices[].content_filter_results"}  # Azure OpenAI
# Streamed custom tool calls: not in the SDK's chunk types yet (openai/openai-openapi#576).
CUSTOM_TOOL_DELTAS: Final = {"choices[].delta.tool_calls[].custom"}
# The gateway's flat copy of data[0] when the input was one string (docs.prisme.ai, Create text embeddings).
PRISME_EMBEDDING: Final = {"embedding"}
VLLM_MODEL: Final = {"max_model_len"}  # vLLM's /v1/models items
ALLOWED_EXTRAS: Final = PRISME_USAGE | REASONING | AZURE | CUSTOM_TOOL_DELTAS | PRISME_EMBEDDING | VLLM_MODEL


class OpenAIErrorBody(pydantic.BaseModel):
    """OpenAI's error reply: nothing but `error`, an ErrorObject."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    error: ErrorObject


class PrismeErrorBody(pydantic.BaseModel):
    """The Prisme gateway's documented error body; the SDK has no type for it."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    error: str  # a code: invalid_token, rate_limit_exceeded, MODEL_NOT_ALLOWED, ...
    message: str
    details: dict[str, Any] | None = None  # the mock's own 401 for a missing key has none


# ---------------------------------------------------------------------------------------- what was seen


@dataclass
class Seen:
    """One call as the SDK saw it: its decoded JSON payloads in order, and what it raised, if anything."""

    status: int | None = None
    content_type: str = ""
    payloads: list[Any] = field(default_factory=list)
    error: openai.APIError | None = None

    def body(self) -> Any:
        """The JSON body of an error reply."""
        assert isinstance(self.error, openai.APIStatusError), self.error
        return self.error.response.json()


async def unary(client: AsyncOpenAI, model: str, **body: Any) -> Seen:
    return await one_reply(
        client.chat.completions.with_raw_response.create, model=model, messages=MESSAGES, **body
    )


async def one_reply(call: Callable[..., Awaitable[Any]], **arguments: Any) -> Seen:
    """A call of the SDK's (a `with_raw_response` method) answered by one JSON document, undecoded."""
    try:
        raw = await call(**arguments)
    except openai.APIStatusError as error:
        return Seen(error.status_code, error.response.headers["content-type"], error=error)
    except openai.APIError as error:  # the connection broke: no status
        return Seen(error=error)
    return Seen(raw.status_code, raw.headers["content-type"], [raw.parse(to=object)])


async def stream(client: AsyncOpenAI, model: str, *, limit: int | None = None, **body: Any) -> Seen:
    """A streamed call read to its end (or `limit` payloads) through the SDK's own SSE decoder."""
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, stream=True, **body
        )
    except openai.APIStatusError as error:
        return Seen(error.status_code, error.response.headers["content-type"], error=error)
    seen = Seen(raw.status_code, raw.headers["content-type"])
    if seen.content_type.startswith("application/json"):  # the SDK's stream would yield nothing at all
        seen.payloads.append(json.loads(await raw.http_response.aread()))
        return seen
    events = raw.parse(to=AsyncStream[object])  # the SDK's decoding, untyped: the checks type it
    try:
        async for payload in events:
            seen.payloads.append(payload)
            if limit is not None and len(seen.payloads) == limit:
                break
    except openai.APIError as error:
        seen.error = error
    finally:
        await events.close()
    return seen


# --------------------------------------------------------------------------------------------- checks


def _extras(value: Any, path: str = "") -> Iterator[str]:
    """Paths of the keys the SDK's models did not declare."""
    if isinstance(value, pydantic.BaseModel):
        yield from (path + key for key in value.model_extra or {})
        for name in type(value).model_fields:
            yield from _extras(getattr(value, name), f"{path}{name}.")
    elif isinstance(value, list):
        for item in value:
            yield from _extras(item, path.rstrip(".") + "[].")


def strict(model: type[pydantic.BaseModel], payload: Any) -> pydantic.BaseModel:
    """`payload` validated strictly as `model`, with no unknown key outside ALLOWED_EXTRAS."""
    parsed = model.model_validate(payload, strict=True)
    unknown = set(_extras(parsed)) - ALLOWED_EXTRAS
    assert not unknown, f"keys the SDK does not know and no documented extension explains: {sorted(unknown)}"
    return parsed


def _errors(model: type[pydantic.BaseModel], payload: Any) -> set[tuple[Any, ...]]:
    try:
        model.model_validate(payload, strict=True)
    except pydantic.ValidationError as error:
        return {tuple(e["loc"]) for e in error.errors()}
    return set()


def check_completion(seen: Seen) -> None:
    assert seen.error is None, seen.error
    assert seen.status == 200
    [payload] = seen.payloads
    strict(ChatCompletion, payload)


def check_chunks(seen: Seen, *, azure: bool = False) -> None:
    assert seen.status == 200
    assert seen.content_type.startswith("text/event-stream")
    assert seen.payloads, "no chunk"
    payloads = seen.payloads
    if azure:
        # Azure's real first chunk: `"object": ""` (and empty id/model, `choices: []`); the SDK's Literal
        # rejects it in strict mode, while the SDK's own client parses it leniently and yields it.
        assert _errors(ChatCompletionChunk, payloads[0]) == {("object",)}
        payloads = payloads[1:]
    for payload in payloads:
        if _custom_tool_fragments(payload):
            # Streamed custom tool calls are not in the SDK's chunk types yet (its delta tool call is
            # type "function" only; the shape is openai/openai-openapi#576): that one key, nothing else.
            paths = {
                ("choices", 0, "delta", "tool_calls", i, "type") for i in _custom_tool_fragments(payload)
            }
            assert _errors(ChatCompletionChunk, payload) == paths
        else:
            strict(ChatCompletionChunk, payload)


def _custom_tool_fragments(payload: Any) -> list[int]:
    calls = (payload.get("choices") or [{}])[0].get("delta", {}).get("tool_calls") or []
    return [i for i, call in enumerate(calls) if call.get("type") == "custom"]


def check_prisme_error(seen: Seen, status: int) -> None:
    assert isinstance(seen.error, openai.APIStatusError)
    assert seen.status == status
    assert type(seen.error) is _sdk_error_class(status)
    body = seen.body()
    strict(PrismeErrorBody, body)
    assert seen.error.response.headers["x-correlation-id"]
    # Not OpenAI's shape: `error` is a string, so the SDK has neither a message nor a code from it.
    assert _errors(OpenAIErrorBody, body) >= {("error",)}
    assert seen.error.message == f"Error code: {status}"
    assert seen.error.code is None


def check_openai_error(seen: Seen, status: int) -> None:
    assert isinstance(seen.error, openai.APIStatusError)
    assert seen.status == status
    assert type(seen.error) is _sdk_error_class(status)
    body = seen.body()
    parsed = strict(OpenAIErrorBody, body)
    assert isinstance(parsed, OpenAIErrorBody)
    assert parsed.error.message in seen.error.message  # the SDK read it


def check_stream_error(seen: Seen, *, integer_code: bool = False) -> None:
    """Chunks, then an in-stream error event, which the SDK raises as an APIError (not a status error)."""
    check_chunks(Seen(seen.status, seen.content_type, seen.payloads))
    assert type(seen.error) is openai.APIError
    if integer_code:
        # vLLM's real in-stream error: `"code": 400`, an integer where ErrorObject has a string.
        assert _errors(ErrorObject, seen.error.body) == {("code",)}
    else:
        strict(ErrorObject, seen.error.body)
    assert "upstream provider failed" in seen.error.message


def _sdk_error_class(status: int) -> type[openai.APIStatusError]:
    classes: dict[int, type[openai.APIStatusError]] = {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        403: openai.PermissionDeniedError,
        404: openai.NotFoundError,
        429: openai.RateLimitError,
    }
    return classes.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)


# ------------------------------------------------------------------ every scripted model, unary and stream

ERROR_STATUSES: Final = (400, 401, 403, 404, 418, 429, 500, 503)
REPLY_MODELS: Final = (
    "echo",
    "echo-crlf",
    "echo-cr",
    "echo-bytewise",
    "echo-comments",
    "echo-nospace",
    "echo-multiline",
    "tools",
    "tools-custom",
    "reasoning",
    "azure",
    "slow-10",
    "paced-10",
    "no-done",
    "no-finish",
    "litellm",
)
# Echo with the usage (when asked) as other servers send it: counts of payloads carrying one.
USAGE_MODELS: Final = {
    "usage-empty-choice": lambda chunks: 1,
    "usage-on-finish": lambda chunks: 1,
    "usage-every-chunk": lambda chunks: chunks,
    "usage-ignored": lambda chunks: 0,
}
STREAM_ERROR_MODELS: Final = (
    "stream-error",
    "stream-error-event",
    "stream-error-vllm",
    "stream-error-content",
)
COVERED: Final = (
    *REPLY_MODELS,
    *USAGE_MODELS,
    *STREAM_ERROR_MODELS,
    "error-<status>",
    "openai-error-<status>",
    "slow-<ms>",
    "paced-<ms>",
    "endless",
    "truncated",
    "truncated-eof",
    "json-on-stream",
    "litellm-error-429",
    "litellm-stream-error",
    "reset",
    "reset-before-content",
    "flaky-<N>-<status>",
    "flaky-<N>-reset",
    "stall-<ms>",
    "late-content-<ms>",
    "bad-json",
    "bad-utf8",
    "html-200",
)


def _documented(section: str, end: str | None) -> set[str]:
    """The scripted names in the first column of the mock docstring's tables from `section` to `end`."""
    text = (bridge.mock_gateway.__doc__ or "").split(section, 1)[1]
    text = text.split(end, 1)[0] if end else text
    return set(re.findall(r"^``([a-z0-9<>/.-]+)``\s{2,}", text, re.MULTILINE))


def test_every_documented_script_is_covered() -> None:
    """The mock's docstring lists its scripted models; each one is under the oracle here."""
    documented = _documented("Chat completions (``POST", "The model catalogue (``GET")
    documented |= {"echo"}  # the "anything else" row
    assert len(documented) > 20
    assert documented - set(COVERED) == set()
    embeddings = _documented("Embeddings (``POST", None)
    assert len(embeddings) > 5
    assert embeddings - set(EMBEDDING_MODELS) - set(EMBEDDING_REFUSALS) == set()


@pytest_asyncio.fixture(loop_scope="session")
async def sdk(provider: MockGateway) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(
        base_url=f"{provider.url}/v1", api_key=servers.PROVIDER_KEY, max_retries=0, timeout=10
    )
    async with client:
        yield client


@pytest.mark.parametrize("model", [*REPLY_MODELS, "json-on-stream"])
@pytest.mark.parametrize("n", [1, 2])
async def test_unary_replies(sdk: AsyncOpenAI, model: str, n: int) -> None:
    seen = await unary(sdk, model, n=n)
    check_completion(seen)
    assert len(seen.payloads[0]["choices"]) == n


@pytest.mark.parametrize("model", REPLY_MODELS)
@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_chunks(sdk: AsyncOpenAI, model: str, include_usage: bool) -> None:
    seen = await stream(sdk, model, stream_options={"include_usage": include_usage})
    check_chunks(seen, azure=model == "azure")
    usage = [p for p in seen.payloads if p.get("usage")]
    finished = model != "no-finish"
    assert len(usage) == (1 if include_usage and finished else 0)


@pytest.mark.parametrize("model", USAGE_MODELS)
@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_usage_shapes(sdk: AsyncOpenAI, model: str, include_usage: bool) -> None:
    seen = await stream(sdk, model, stream_options={"include_usage": include_usage})
    check_chunks(seen)
    usage = [p for p in seen.payloads if p.get("usage")]
    assert len(usage) == (USAGE_MODELS[model](len(seen.payloads)) if include_usage else 0)


async def test_stream_of_n_choices(sdk: AsyncOpenAI) -> None:
    seen = await stream(sdk, "echo", n=2, stream_options={"include_usage": True})
    check_chunks(seen)
    assert {c["index"] for p in seen.payloads for c in p["choices"]} == {0, 1}


@pytest.mark.parametrize("status", ERROR_STATUSES)
@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_prisme_error_bodies(sdk: AsyncOpenAI, status: int, streamed: bool) -> None:
    call = stream if streamed else unary
    check_prisme_error(await call(sdk, f"error-{status}"), status)


@pytest.mark.parametrize("status", ERROR_STATUSES)
@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_openai_error_bodies(sdk: AsyncOpenAI, status: int, streamed: bool) -> None:
    call = stream if streamed else unary
    check_openai_error(await call(sdk, f"openai-error-{status}"), status)


async def test_the_mocks_own_errors(provider: MockGateway) -> None:
    """Its 401 for a missing key and its 400 for an invalid body are Prisme bodies too."""
    async with AsyncOpenAI(base_url=f"{provider.url}/v1", api_key="wrong", max_retries=0) as wrong_key:
        check_prisme_error(await unary(wrong_key, "echo"), 401)
    async with AsyncOpenAI(base_url=f"{provider.url}/v1", api_key=servers.PROVIDER_KEY, max_retries=0) as sdk:
        seen = await unary(sdk, "echo", n=99)
        with pytest.raises(openai.BadRequestError) as unknown_role:
            await sdk.chat.completions.create(model="echo", messages=[{"role": "robot", "content": "hi"}])
    check_prisme_error(seen, 400)
    assert "'n' must be" in seen.body()["message"]
    # An unknown role gets OpenAI's own 400, which names the parameter.
    parsed = strict(OpenAIErrorBody, unknown_role.value.response.json())
    assert isinstance(parsed, OpenAIErrorBody)
    assert (parsed.error.param, parsed.error.code) == ("messages[0].role", "invalid_value")


@pytest.mark.parametrize("model", STREAM_ERROR_MODELS)
async def test_stream_errors(sdk: AsyncOpenAI, model: str) -> None:
    seen = await stream(sdk, model)
    if model == "stream-error-content":  # Prisme's documented form: the error as content, then [DONE]
        check_chunks(seen)
        assert seen.error is None
        assert seen.payloads[-1]["choices"][0]["delta"]["content"] == "\n\n[upstream provider failed]"
    else:
        check_stream_error(seen, integer_code=model == "stream-error-vllm")
    # a unary request for these models is a plain 500
    check_prisme_error(await unary(sdk, model), 500)


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_litellm_style_errors(sdk: AsyncOpenAI, streamed: bool) -> None:
    """The mock's LiteLLM imitations are OpenAI-shaped documents with LiteLLM's own deviation: a real
    LiteLLM proxy (1.108, tests/conformance/test_litellm_upstream.py) sends `"type": null`, where the SDK's
    ErrorObject has a string, and its code as a string ("429", "500")."""
    call = stream if streamed else unary
    seen = await call(sdk, "litellm-error-429")
    assert (type(seen.error), seen.status) == (openai.RateLimitError, 429)
    assert _errors(OpenAIErrorBody, seen.body()) == {("error", "type")}
    assert seen.body()["error"]["code"] == "429"
    assert "litellm.RateLimitError" in str(seen.error.message)
    failed = await unary(sdk, "litellm-stream-error")
    assert (type(failed.error), failed.status) == (openai.InternalServerError, 500)
    assert _errors(OpenAIErrorBody, failed.body()) == {("error", "type")}
    midway = await stream(sdk, "litellm-stream-error")
    check_chunks(Seen(midway.status, midway.content_type, midway.payloads))
    assert type(midway.error) is openai.APIError
    assert _errors(ErrorObject, midway.error.body) == {("type",)}
    assert "litellm.APIConnectionError" in midway.error.message


@pytest.mark.parametrize("model", ["truncated", "truncated-eof"])
async def test_truncated(sdk: AsyncOpenAI, model: str) -> None:
    seen = await stream(sdk, model)
    check_chunks(seen)
    assert len(seen.payloads) == 3  # the half event at the cut is never dispatched
    if model == "truncated":
        assert type(seen.error) is openai.APIConnectionError
    else:
        assert seen.error is None  # a clean EOF after half an event: the SDK ends the stream quietly
    cut = await unary(sdk, model)
    assert isinstance(cut.error, openai.APIConnectionError)  # half a JSON body: nothing to parse


async def test_reset(sdk: AsyncOpenAI) -> None:
    seen = await stream(sdk, "reset")
    check_chunks(seen)
    assert len(seen.payloads) == 1 + len(MESSAGES[0]["content"].split())  # role chunk, one per word
    assert type(seen.error) is openai.APIConnectionError
    assert type((await unary(sdk, "reset")).error) is openai.APIConnectionError


async def test_reset_before_content(sdk: AsyncOpenAI) -> None:
    seen = await stream(sdk, "reset-before-content")
    check_chunks(seen)
    assert [p["choices"][0]["delta"] for p in seen.payloads] == [{"role": "assistant", "content": ""}]
    assert type(seen.error) is openai.APIConnectionError
    assert type((await unary(sdk, "reset-before-content")).error) is openai.APIConnectionError


async def test_flaky(sdk: AsyncOpenAI) -> None:
    """The first N requests of a flaky model fail (Prisme error bodies without Retry-After unless asked,
    or a reset before any reply), the next ones are answered as echo."""
    refused = await unary(sdk, "flaky-1-503")
    check_prisme_error(refused, 503)
    assert isinstance(refused.error, openai.APIStatusError)
    assert "retry-after" not in refused.error.response.headers
    check_completion(await unary(sdk, "flaky-1-503"))
    limited = await stream(sdk, "flaky-1-429-after-3")
    check_prisme_error(limited, 429)
    assert isinstance(limited.error, openai.APIStatusError)
    assert limited.error.response.headers["retry-after"] == "3"
    check_chunks(await stream(sdk, "flaky-1-429-after-3"))
    assert type((await unary(sdk, "flaky-1-reset")).error) is openai.APIConnectionError
    check_completion(await unary(sdk, "flaky-1-reset"))


async def test_stall(sdk: AsyncOpenAI) -> None:
    check_chunks(await stream(sdk, "stall-10"))
    check_completion(await unary(sdk, "stall-10"))


async def test_late_content(sdk: AsyncOpenAI) -> None:
    seen = await stream(sdk, "late-content-10")
    check_chunks(seen)
    assert seen.payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in seen.payloads)
    assert text == MESSAGES[0]["content"]
    check_completion(await unary(sdk, "late-content-10"))


@pytest.mark.parametrize(
    ("model", "raised"), [("bad-json", json.JSONDecodeError), ("bad-utf8", UnicodeDecodeError)]
)
async def test_garbled(sdk: AsyncOpenAI, model: str, raised: type[Exception]) -> None:
    """The chunks before the garbled one are valid; the SDK itself raises its decoder's error on the
    garbled reply or event (the bridge reads invalid UTF-8 in an event stream as U+FFFD, as WHATWG says)."""
    check_chunks(await stream(sdk, model, limit=3))
    with pytest.raises(raised):
        await stream(sdk, model)
    with pytest.raises(raised):
        await unary(sdk, model)


async def test_html_200(sdk: AsyncOpenAI) -> None:
    """A sign-in page with a 200: the SDK hands the text back as the reply, and its stream yields nothing."""
    page = await unary(sdk, "html-200")
    assert (page.status, page.content_type, page.error) == (200, "text/html", None)
    assert page.payloads == [bridge.mock_gateway.bodies.HTML_PAGE.decode()]
    assert (await stream(sdk, "html-200")).payloads == []


async def test_endless(sdk: AsyncOpenAI) -> None:
    check_chunks(await stream(sdk, "endless", limit=5))
    with pytest.raises(openai.APITimeoutError):
        await sdk.chat.completions.create(model="endless", messages=MESSAGES, timeout=0.5)


async def test_json_on_stream(sdk: AsyncOpenAI) -> None:
    """A JSON reply to a stream request: a valid ChatCompletion, which the SDK's stream would not yield."""
    seen = await stream(sdk, "json-on-stream")
    assert seen.content_type.startswith("application/json")
    check_completion(seen)
    sdk_stream = await sdk.chat.completions.create(model="json-on-stream", messages=MESSAGES, stream=True)
    assert [chunk async for chunk in sdk_stream] == []


# ------------------------------------------------------------------------------ embeddings, model lists

TEXTS: Final = ["Shapes under the oracle", "two"]
# Models the mock embeds (any model outside its catalogue too), with a `dimensions` each accepts.
EMBEDDING_MODELS: Final = {
    "text-embedding-mock": 4,
    "text-embedding-3-small": 256,
    "text-embedding-3-large": 1024,
    "governed/text-embedding-3-small": 256,
    "embed-shuffled": None,
    "an-uncatalogued-model": 3,
}
# Refusals: the request's model and dimensions, and the status and code of the Prisme error body.
EMBEDDING_REFUSALS: Final = {
    "text-embedding-3-small": (100, 400, "INVALID_DIMENSIONS"),
    "governed/text-embedding-3-small": (4, 403, "INVALID_DIMENSIONS"),
    "governed-throttled": (None, 429, "MODEL_NOT_ALLOWED"),
    "error-<status>": (None, 403, "MODEL_NOT_ALLOWED"),
    "echo": (None, 400, "invalid_request"),  # a catalogue model that is no embeddings model
}


async def embed(client: AsyncOpenAI, model: str, **body: Any) -> Seen:
    return await one_reply(client.embeddings.with_raw_response.create, model=model, **body)


def _decoded(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` with its base64 vectors decoded as the SDK decodes them (little-endian float32)."""
    data = [
        {**item, "embedding": list(struct.unpack(f"<{len(raw) // 4}f", raw))}
        for item in payload["data"]
        for raw in [base64.b64decode(item["embedding"])]
    ]
    return {**payload, "data": data}


@pytest.mark.parametrize("model", sorted(EMBEDDING_MODELS))
@pytest.mark.parametrize("texts", [TEXTS, TEXTS[0]], ids=["many", "one"])
async def test_embedding_replies(sdk: AsyncOpenAI, model: str, texts: Any) -> None:
    dimensions = {} if EMBEDDING_MODELS[model] is None else {"dimensions": EMBEDDING_MODELS[model]}
    floats = await embed(sdk, model, input=texts, encoding_format="float", **dimensions)
    assert (floats.error, floats.status) == (None, 200)
    [payload] = floats.payloads
    parsed = strict(CreateEmbeddingResponse, payload)
    assert isinstance(parsed, CreateEmbeddingResponse)
    assert sorted(item.index for item in parsed.data) == list(range(len(parsed.data)))
    assert ("embedding" in payload) == isinstance(texts, str)  # the gateway's flat copy of one vector
    encoded = await embed(sdk, model, input=texts, encoding_format="base64", **dimensions)
    [packed] = encoded.payloads
    assert all(isinstance(item["embedding"], str) for item in packed["data"])
    assert strict(CreateEmbeddingResponse, _decoded(packed)).data == parsed.data  # exact in float32


@pytest.mark.parametrize("model", sorted(EMBEDDING_REFUSALS))
async def test_embedding_refusals(sdk: AsyncOpenAI, model: str) -> None:
    dimensions, status, code = EMBEDDING_REFUSALS[model]
    request = model.replace("<status>", str(status))
    extra = {} if dimensions is None else {"dimensions": dimensions}
    seen = await embed(sdk, request, input=TEXTS, encoding_format="float", **extra)
    check_prisme_error(seen, status)
    assert seen.body()["error"] == code


async def test_an_openai_compatible_model_list(provider: MockGateway) -> None:
    async with AsyncOpenAI(base_url=provider.openai_base_url, api_key="k", max_retries=0) as client:
        listed = await client.models.with_raw_response.list()  # a page object: read its raw JSON
        payload = listed.http_response.json()
        assert (listed.status_code, payload["object"]) == (200, "list")
        models = [strict(OpenAIModel, item) for item in payload["data"]]
        assert len(models) > 200
        one = await one_reply(
            client.models.with_raw_response.retrieve, model="bedrock/anthropic.claude-3-haiku"
        )
        assert strict(OpenAIModel, one.payloads[0]) in models
        check_openai_error(await one_reply(client.models.with_raw_response.retrieve, model="nope"), 404)


# ------------------------------------------------------------------------------- the oracle can say no

_GOOD_COMPLETION: Final = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
}
_GOOD_CHUNK: Final = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
}


def _choice_with(**keys: Any) -> dict[str, Any]:
    return {**_GOOD_COMPLETION, "choices": [{**_GOOD_COMPLETION["choices"][0], **keys}]}


@dataclass(frozen=True)
class Wrong:
    """What a broken server sends for one model, and the words the oracle's refusal must contain."""

    body: Any
    refusal: str
    status: int = 200
    check: Any = check_completion
    streamed: bool = False

    def payload(self) -> bytes:
        if not self.streamed:
            return json.dumps(self.body).encode()
        return "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in [*self.body, "[DONE]"]).encode()


_USAGE: Final = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
_WRONG: Final = {
    "finish-reason-outside-the-literal": Wrong(_choice_with(finish_reason="done"), "choices.0.finish_reason"),
    "created-as-a-string": Wrong({**_GOOD_COMPLETION, "created": "1"}, "created"),
    "misspelt-key": Wrong(_choice_with(finish_reasons="stop"), "choices[].finish_reasons"),
    "usage-key-nobody-documents": Wrong({**_GOOD_COMPLETION, "usage": {**_USAGE, "left": 5}}, "usage.left"),
    "chunk-without-model": Wrong(
        [_GOOD_CHUNK, {k: v for k, v in _GOOD_CHUNK.items() if k != "model"}],
        "model\n  Field required",
        check=check_chunks,
        streamed=True,
    ),
    "error-without-message": Wrong(
        {"error": {"type": "requests", "code": "x"}},
        "error.message\n  Field required",
        status=429,
        check=lambda seen: check_openai_error(seen, 429),
    ),
    "prisme-error-without-code": Wrong(
        {"message": "slow down", "details": {}},
        "error\n  Field required",
        status=429,
        check=lambda seen: check_prisme_error(seen, 429),
    ),
}


@pytest_asyncio.fixture(loop_scope="session")
async def wrong_server() -> AsyncIterator[str]:
    async def reply(request: web.Request) -> web.Response:
        wrong = _WRONG[(await request.json())["model"]]
        content_type = "text/event-stream" if wrong.streamed else "application/json"
        return web.Response(status=wrong.status, body=wrong.payload(), content_type=content_type)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", reply)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


@pytest.mark.parametrize("model", sorted(_WRONG))
async def test_the_oracle_rejects_wrong_shapes(wrong_server: str, model: str) -> None:
    wrong = _WRONG[model]
    async with AsyncOpenAI(base_url=wrong_server, api_key="k", max_retries=0) as client:
        seen = await (stream if wrong.streamed else unary)(client, model)
    with pytest.raises((AssertionError, pydantic.ValidationError), match=re.escape(wrong.refusal)):
        wrong.check(seen)
