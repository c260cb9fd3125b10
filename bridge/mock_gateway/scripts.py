"""The mock's behaviours, each a script registered under the model names that select it."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

import bridge.mock_gateway.bodies as bodies
from bridge.mock_gateway.call import Call, ScriptStoppedError, sleep_watching
from bridge.mock_gateway.sse import PLAIN, STYLES, SseStream, abort_connection, frame, reset_connection

TICK_S: Final = 0.05


Script = Callable[[Call], Awaitable[web.StreamResponse]]
# Model name -> its script. Other names run a prefixed script (error-N, openai-error-N, slow-N) or echo.
SCRIPTS: dict[str, Script] = {}


def script(*models: str) -> Callable[[Script], Script]:
    """Registers the decorated script as the behaviour of `models`."""

    def register(function: Script) -> Script:
        for model in models:
            SCRIPTS[model] = function
        return function

    return register


@script("echo", *STYLES)
async def _echo(call: Call) -> web.StreamResponse:
    if not call.stream:
        return bodies.json_response(200, bodies.echo_completion(call))
    sse = await SseStream.open(call, STYLES.get(call.model, PLAIN))
    return await sse.send_all(bodies.echo_chunks(call))


@script(*(f"usage-{shape}" for shape in bodies.USAGE_SHAPES))
async def _usage_shaped(call: Call) -> web.StreamResponse:
    if not call.stream:
        return await _echo(call)
    chunks = bodies.usage_shaped_chunks(call, call.model.removeprefix("usage-"))
    return await (await SseStream.open(call)).send_all(chunks)


@script("tools", "tools-custom")
async def _tools(call: Call) -> web.StreamResponse:
    custom = call.model == "tools-custom"
    if not call.stream:
        return bodies.json_response(200, bodies.tool_completion(call, custom=custom))
    return await (await SseStream.open(call)).send_all(bodies.tool_chunks(call, custom=custom))


@script("reasoning")
async def _reasoning(call: Call) -> web.StreamResponse:
    if not call.stream:
        return bodies.json_response(200, bodies.reasoning_completion(call))
    return await (await SseStream.open(call)).send_all(bodies.reasoning_chunks(call))


@script("azure")
async def _azure(call: Call) -> web.StreamResponse:
    if not call.stream:
        filters = bodies.AZURE_FIRST["prompt_filter_results"]
        return bodies.json_response(200, {**bodies.echo_completion(call), "prompt_filter_results": filters})
    return await (await SseStream.open(call)).send_all(bodies.azure_chunks(bodies.echo_chunks(call)))


@script("json-on-stream")
async def _json_on_stream(call: Call) -> web.StreamResponse:
    return bodies.json_response(200, bodies.echo_completion(call))


@script("endless")
async def _endless(call: Call) -> web.StreamResponse:
    if not call.stream:
        await sleep_watching(call, None, None)
    sse = await SseStream.open(call)
    await sse.send(bodies.delta_chunk(call, {"role": "assistant", "content": ""}))
    tick = frame(PLAIN, 1, bodies.dumps(bodies.delta_chunk(call, {"content": "tick "})))
    while True:
        await sleep_watching(call, TICK_S, sse.response)
        await sse.write(tick)


async def _partial_start(call: Call, headers: dict[str, str] | None = None) -> SseStream:
    sse = await SseStream.open(call, headers=headers)
    await sse.send(bodies.delta_chunk(call, {"role": "assistant", "content": ""}))
    for piece in bodies.PARTIAL:
        await sse.send(bodies.delta_chunk(call, {"content": piece}))
    return sse


@script("stream-error", "stream-error-event", "stream-error-vllm", "stream-error-content")
async def _stream_error(call: Call) -> web.StreamResponse:
    if not call.stream:
        return bodies.prisme_error(500, bodies.UPSTREAM_FAILED, {"model": call.model})
    sse = await _partial_start(call)
    if call.model == "stream-error-content":
        await sse.send(bodies.delta_chunk(call, {"content": f"\n\n[{bodies.UPSTREAM_FAILED}]"}))
    else:
        event, payload = bodies.STREAM_ERRORS[call.model]
        await sse.send(payload, event)
    await sse.send("[DONE]")
    return sse.response


@script("truncated", "truncated-eof")
async def _truncated(call: Call) -> web.StreamResponse:
    if not call.stream:
        return await _truncated_unary(call)
    sse = await _partial_start(call)
    line = frame(PLAIN, 3, bodies.dumps(bodies.delta_chunk(call, {"content": " and more"})))
    await sse.write(line[: len(line) // 2])
    if call.model == "truncated":
        abort_connection(call)
    return sse.response


async def _truncated_unary(call: Call, *, reset: bool = False) -> web.StreamResponse:
    body = bodies.dumps(bodies.echo_completion(call)).encode()
    return await _json_in_halves(call, body, cut=reset_connection if reset else abort_connection)


async def _json_in_halves(
    call: Call, body: bytes, *, cut: Callable[[Call], None] | None = None, pause_s: float = 0.0
) -> web.StreamResponse:
    """A JSON reply with the Content-Length of `body`: its first half, then the connection is `cut`, or,
    after `pause_s` of silence, the second half."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    try:
        await response.prepare(call.request)
        await response.write(body[: len(body) // 2])
        if cut is not None:
            cut(call)
            return response
        await sleep_watching(call, pause_s, response)
        await response.write(body[len(body) // 2 :])
    except ConnectionError as exc:
        raise ScriptStoppedError("client_disconnected", response) from exc
    return response


async def _stall(call: Call, pause_s: float) -> web.StreamResponse:
    if not call.stream:
        body = bodies.dumps(bodies.echo_completion(call)).encode()
        return await _json_in_halves(call, body, pause_s=pause_s)
    sse = await _partial_start(call)
    await sleep_watching(call, pause_s, sse.response)
    await sse.send(bodies.delta_chunk(call, {}, "stop"))
    await sse.send("[DONE]")
    return sse.response


@script("bad-json", "bad-utf8")
async def _garbled(call: Call) -> web.StreamResponse:
    if not call.stream:
        return web.Response(status=200, body=bodies.garbled_completion(call), content_type="application/json")
    sse = await _partial_start(call)
    await sse.write(bodies.garbled_event(call))
    await sse.send(bodies.delta_chunk(call, {}, "stop"))
    await sse.send("[DONE]")
    return sse.response


@script("html-200")
async def _html(call: Call) -> web.StreamResponse:
    return web.Response(status=200, body=bodies.HTML_PAGE, content_type="text/html")


@script("reset")
async def _reset(call: Call) -> web.StreamResponse:
    if not call.stream:
        return await _truncated_unary(call, reset=True)
    sse = await SseStream.open(call)
    for chunk in bodies.echo_chunks(call, finish=False):
        await sse.send(chunk)
    reset_connection(call)  # in the same breath as the last chunk
    return sse.response


@script("reset-before-content")
async def _reset_before_content(call: Call) -> web.StreamResponse:
    if call.stream:
        sse = await SseStream.open(call)
        await sse.send(bodies.delta_chunk(call, {"role": "assistant", "content": ""}))
    reset_connection(call)  # a stream: after its role chunk; unary: before a byte of the reply
    raise ScriptStoppedError("error")


@script("no-done", "no-finish")
async def _no_done(call: Call) -> web.StreamResponse:
    if not call.stream:
        return await _echo(call)
    sse = await SseStream.open(call, close=True)
    return await sse.send_all(bodies.echo_chunks(call, finish=call.model == "no-done"), done=False)


@script("litellm")
async def _litellm(call: Call) -> web.StreamResponse:
    headers = bodies.litellm_headers(call)
    if not call.stream:
        return bodies.json_response(200, bodies.echo_completion(call), headers)
    return await (await SseStream.open(call, headers=headers)).send_all(bodies.echo_chunks(call))


@script("litellm-error-429")
async def _litellm_rate_limited(call: Call) -> web.StreamResponse:
    headers = {**bodies.litellm_headers(call), "llm_provider-retry-after": "5"}
    return bodies.json_response(
        429, bodies.litellm_error("RateLimitError", "Rate limit reached", "429"), headers
    )


@script("litellm-stream-error")
async def _litellm_stream_error(call: Call) -> web.StreamResponse:
    error = bodies.litellm_error("APIConnectionError", "Connection error.", "500")
    if not call.stream:
        return bodies.json_response(500, error, bodies.litellm_headers(call))
    sse = await _partial_start(call, bodies.litellm_headers(call))
    await sse.send(error)  # LiteLLM 1.108 ends the body after it, without [DONE]
    return sse.response


# flaky-<N>-<status or "reset">[-after-<seconds>]
_FLAKY: Final = re.compile(r"flaky-(\d+)-(reset|[45]\d\d)(?:-after-(\d+))?")


def _flaky_failure(call: Call) -> web.StreamResponse | None:
    """The failure of a ``flaky-*`` model's request while its first N last; None once they are over."""
    match = _FLAKY.fullmatch(call.model)
    if match is None:
        return None
    call.state.seen[call.model] += 1
    if call.state.seen[call.model] > int(match.group(1)):
        return None
    if match.group(2) == "reset":
        reset_connection(call)  # the request was read; not a byte of the reply is sent
        raise ScriptStoppedError("error")
    after = match.group(3)
    status = int(match.group(2))
    headers = {"Retry-After": after} if after is not None else {}
    return bodies.prisme_error(status, details={"model": call.model, "status": status}, headers=headers)


def _suffix_int(model: str, prefix: str) -> int | None:
    suffix = model.removeprefix(prefix)
    if suffix == model or not suffix.isdigit():
        return None
    return int(suffix)


async def _paced(call: Call, pause_s: float) -> web.StreamResponse:
    sse = await SseStream.open(call)
    for payload in bodies.echo_chunks(call):
        await sse.send(payload)
        await sleep_watching(call, pause_s, sse.response)
    await sse.send("[DONE]")
    return sse.response


async def run_script(call: Call) -> web.StreamResponse:
    """Answers `call` with the script its model selects."""
    model = call.model
    status = _suffix_int(model, "openai-error-")
    if status is not None and 400 <= status <= 599:
        return bodies.openai_error(status)
    status = _suffix_int(model, "error-")
    if status is not None and 400 <= status <= 599:
        return bodies.scripted_error(call, status)
    failure = _flaky_failure(call)
    if failure is not None:
        return failure
    stall_ms = _suffix_int(model, "stall-")
    if stall_ms is not None:
        return await _stall(call, stall_ms / 1000)
    pace_ms = _suffix_int(model, "paced-")
    if pace_ms is not None and call.stream:
        return await _paced(call, pace_ms / 1000)
    late_ms = _suffix_int(model, "late-content-")
    if late_ms is not None:
        return await _late_content(call, late_ms / 1000)
    delay_ms = _suffix_int(model, "slow-")
    if delay_ms is not None:
        await sleep_watching(call, delay_ms / 1000, None)
    return await SCRIPTS.get(model, _echo)(call)


async def _late_content(call: Call, pause_s: float) -> web.StreamResponse:
    """A model slow to its first token: the stream's headers and role chunk at once, the silence, then the
    rest of the echo; a unary reply after the silence (nothing to send before it)."""
    if not call.stream:
        await sleep_watching(call, pause_s, None)
        return await _echo(call)
    sse = await SseStream.open(call)
    opening, *rest = bodies.echo_chunks(call)
    await sse.send(opening)
    await sleep_watching(call, pause_s, sse.response)
    return await sse.send_all(rest)
