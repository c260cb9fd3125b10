"""The mock gateway's HTTP application: routes, the chat handler around the scripts, running it."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

import bridge.mock_gateway.catalogue as catalogue
import bridge.mock_gateway.embeddings as embeddings
from bridge.mock_gateway.bodies import (
    dumps,
    json_response,
    openai_error,
    openai_invalid_value,
    prisme_error,
    retry_headers,
)
from bridge.mock_gateway.call import STATE, Call, ScriptStoppedError, State, role_problem, validate_body
from bridge.mock_gateway.records import Json, RequestLog
from bridge.mock_gateway.scripts import run_script

__all__ = [
    "GATEWAY_PREFIX",
    "OPENAI_PREFIX",
    "MockGateway",
    "create_app",
    "serve_forever",
    "start_mock_gateway",
]

logger = logging.getLogger("bridge.mock_gateway")

GATEWAY_PREFIX: Final = "/v2/workspaces/slug:llm-gateway/webhooks/v1"
OPENAI_PREFIX: Final = "/openai/v1"  # the models of an OpenAI-compatible server: {object: "list", data}


def _authorized(request: web.Request, key: str) -> bool:
    return (
        request.headers.get("Authorization") == f"Bearer {key}"
        or request.headers.get("x-prismeai-api-key") == key
    )


async def _read_json(request: web.Request) -> tuple[Any, bool]:
    """The parsed body and whether it was valid JSON."""
    raw = await request.read()
    try:
        return json.loads(raw), True
    except ValueError:
        return None, False


async def _answer(request: web.Request, state: State, body: Any, valid_json: bool) -> web.StreamResponse:
    if state.api_key is not None and not _authorized(request, state.api_key):
        return json_response(401, {"error": "invalid_token", "message": "Missing or invalid API key"})
    if not valid_json:
        return prisme_error(400, "Request body is not valid JSON")
    problem = validate_body(body)
    if problem is not None:
        return prisme_error(400, problem)
    bad_role = role_problem(body)
    if bad_role is not None:
        return openai_invalid_value(*bad_role)
    call = Call.parse(request, state, body)
    call.model = state.take_override() or call.model
    return await run_script(call)


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body, valid_json = await _read_json(request)
    record = state.log.start(request, body)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("mock request #%d %s model=%s", record["id"], request.path, record["model"])
    try:
        response = await _answer(request, state, body, valid_json)
    except ScriptStoppedError as stop:
        state.log.finish(record, stop.outcome)
        # aiohttp's finish_response() ignores the failed write of a reply nobody reads.
        return stop.response or web.Response(status=499)
    except asyncio.CancelledError:
        gone = request.transport is None or request.transport.is_closing()
        state.log.finish(record, "client_disconnected" if gone else "error")
        raise
    except Exception:
        state.log.finish(record, "error")
        raise
    state.log.finish(record, "completed" if response.status < 400 else "error")
    return response


# ------------------------------------------------------------------ catalogue and embeddings routes


def scripted_status(name: str) -> int | None:
    """N for a name `error-N` with N in 400..599 (a scripted refusal), else None."""
    suffix = name.removeprefix("error-")
    if suffix == name or not suffix.isdigit() or not 400 <= int(suffix) <= 599:
        return None
    return int(suffix)


async def _recorded(
    request: web.Request, body: Any, answer: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE]
    record = state.log.start(request, body)
    scripted = scripted_status(state.take_override() or "")
    try:
        if scripted is not None:
            response: web.StreamResponse = prisme_error(scripted, headers=retry_headers(scripted))
        else:
            response = await answer()
    except BaseException:
        state.log.finish(record, "error")
        raise
    state.log.finish(record, "completed" if response.status < 400 else "error")
    return response


def _catalogue_refusal(request: web.Request, state: State) -> web.Response | None:
    """The catalogue's auth (with require_api_key): the key as x-prismeai-api-key, or as Bearer unless it
    is an org key (iak_*), which carries no user identity there."""
    key = state.api_key
    if key is None or request.headers.get("x-prismeai-api-key") == key:
        return None
    if request.headers.get("Authorization") == f"Bearer {key}" and not key.startswith("iak_"):
        return None
    message = "Missing or invalid API key"
    if request.headers.get("Authorization") == f"Bearer {key}":
        message = "Org API keys (iak_*) are not accepted as Bearer here: send them as x-prismeai-api-key"
    return json_response(401, {"error": "invalid_token", "message": message})


async def _list_models(request: web.Request) -> web.StreamResponse:
    async def answer() -> web.StreamResponse:
        refused = _catalogue_refusal(request, request.app[STATE])
        status = scripted_status(request.query.get("search", ""))
        if refused is not None or status is not None:
            return refused or prisme_error(status or 500, details={"status": status})
        return json_response(*catalogue.catalogue_page(request.query))

    return await _recorded(request, None, answer)


async def _get_model(request: web.Request) -> web.StreamResponse:
    async def answer() -> web.StreamResponse:
        model_id = request.match_info["model_id"]
        refused = _catalogue_refusal(request, request.app[STATE])
        status = scripted_status(model_id)
        if refused is not None or status is not None:
            return refused or prisme_error(status or 500, details={"model_id": model_id})
        doc = catalogue.by_id(model_id)
        if doc is None:
            return prisme_error(404, f"Model '{model_id}' not found")
        return json_response(200, doc)

    return await _recorded(request, None, answer)


async def _openai_list_models(request: web.Request) -> web.StreamResponse:
    async def answer() -> web.StreamResponse:
        data = [catalogue.openai_model(doc) for doc in catalogue.CATALOGUE]
        return json_response(200, {"object": "list", "data": data})

    return await _recorded(request, None, answer)


async def _openai_get_model(request: web.Request) -> web.StreamResponse:
    async def answer() -> web.StreamResponse:
        doc = catalogue.by_id(request.match_info["model_id"])
        return json_response(200, catalogue.openai_model(doc)) if doc else openai_error(404)

    return await _recorded(request, None, answer)


async def _embeddings(request: web.Request) -> web.StreamResponse:
    body, valid_json = await _read_json(request)

    async def answer() -> web.StreamResponse:
        state = request.app[STATE]
        if state.api_key is not None and not _authorized(request, state.api_key):
            return json_response(401, {"error": "invalid_token", "message": "Missing or invalid API key"})
        problem = embeddings.problem(body) if valid_json else "Request body is not valid JSON"
        if problem is not None:
            return prisme_error(400, problem)
        status = scripted_status(body["model"])
        if status is not None:
            return prisme_error(status, details={"model": body["model"], "status": status})
        refusal = embeddings.refusal(body)
        if refusal is not None:
            return json_response(*refusal, retry_headers(refusal[0]))
        return json_response(200, embeddings.embed(body))

    return await _recorded(request, body, answer)


async def _healthz(request: web.Request) -> web.StreamResponse:
    return json_response(200, {"status": "ok"})


async def _list_requests(request: web.Request) -> web.StreamResponse:
    return json_response_list(request.app[STATE].log.snapshot())


def json_response_list(items: list[Json]) -> web.Response:
    return web.Response(body=dumps(items).encode(), content_type="application/json")


async def _get_request(request: web.Request) -> web.StreamResponse:
    raw_id = request.match_info["id"]
    record = request.app[STATE].log.get(int(raw_id)) if raw_id.isdigit() else None
    if record is None:
        return prisme_error(404, f"No recorded request {raw_id}")
    return json_response(200, record)


async def _clear_requests(request: web.Request) -> web.StreamResponse:
    request.app[STATE].log.clear()
    return web.Response(status=204)


async def _add_correlation_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    if "x-litellm-call-id" in response.headers:
        return  # a LiteLLM-style reply (model "litellm*") names itself with LiteLLM's ids only
    response.headers["x-correlation-id"] = request.headers.get("x-correlation-id") or str(uuid.uuid4())
    request_id = request.headers.get("x-request-id")
    if request_id is not None:
        response.headers["x-request-id"] = request_id


async def _on_shutdown(app: web.Application) -> None:
    app[STATE].closing = True  # scripts that sleep or tick stop within POLL_S


def create_app(*, require_api_key: str | None = None) -> web.Application:
    """The mock gateway as an aiohttp application (see the module docstring for its behaviours)."""
    # Request bodies as large as the bridge accepts in a gRPC message (prompts with images): aiohttp's default
    # of 1 MiB would answer a 3 MB prompt with 413.
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = State(api_key=require_api_key, log=RequestLog())
    app.on_response_prepare.append(_add_correlation_headers)
    app.on_shutdown.append(_on_shutdown)
    for prefix in ("/v1", GATEWAY_PREFIX):
        app.router.add_post(f"{prefix}/chat/completions", _chat_completions)
        app.router.add_get(f"{prefix}/models", _list_models)
        app.router.add_get(f"{prefix}/models/{{model_id:.+}}", _get_model)
        app.router.add_post(f"{prefix}/embeddings", _embeddings)
    app.router.add_get(f"{OPENAI_PREFIX}/models", _openai_list_models)
    app.router.add_get(f"{OPENAI_PREFIX}/models/{{model_id:.+}}", _openai_get_model)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/_mock/requests", _list_requests)
    app.router.add_delete("/_mock/requests", _clear_requests)
    app.router.add_get("/_mock/requests/{id}", _get_request)
    return app


# ------------------------------------------------------------------------------------------ running


class MockGateway:
    """A running mock gateway; ``await close()`` stops it."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, scheme: str = "http") -> None:
        self._runner = runner
        self._state = runner.app[STATE]
        self.host = host
        self.port = port
        self.scheme = scheme

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-SDK-style base URL (``.../webhooks/v1``)."""
        return self.url + GATEWAY_PREFIX

    @property
    def openai_base_url(self) -> str:
        """A base URL whose ``/models`` answers in OpenAI's ``{object: "list", data}`` shape."""
        return self.url + OPENAI_PREFIX

    def requests(self) -> list[Json]:
        """The recorded chat requests, oldest first (same records as ``GET /_mock/requests``)."""
        return self._state.log.snapshot()

    async def wait_for_request(self, predicate: Callable[[Json], bool]) -> Json:
        """The first recorded request for which `predicate` holds, as soon as there is one (it is checked
        whenever a request starts or ends; no polling). Bound the wait with `asyncio.timeout`."""
        return await self._state.log.wait_for(predicate)

    def script(self, model: str | None, count: int | None = None) -> None:
        """This instance answers the next `count` requests (None: every one, until `script(None)`) as it
        would answer a chat request for `model` (``error-503``, ``reset-before-content``, ``slow-60000``,
        ...), whatever model they name; catalogue and embeddings requests get the scripted error of an
        ``error-<status>`` name. Two instances, one scripted, are two upstreams of which one fails."""
        self._state.override, self._state.override_left = model, count

    def clear_requests(self) -> None:
        self._state.log.clear()

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> MockGateway:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_mock_gateway(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    require_api_key: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = 1.0,
) -> MockGateway:
    """Start the mock gateway on ``host:port`` (port 0 picks a free port) with no access log; over HTTPS
    with `ssl_context` (a server context: its certificate, and its client CA for mTLS). `close` gives
    requests still running `shutdown_timeout` seconds before aiohttp cancels them (scripts that wait end
    themselves on close, at once)."""
    runner = web.AppRunner(
        create_app(require_api_key=require_api_key), access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port: int = runner.addresses[0][1]
    return MockGateway(runner, host, bound_port, "http" if ssl_context is None else "https")


async def serve_forever(
    host: str,
    port: int,
    *,
    require_api_key: str | None = None,
    until: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Run the mock gateway until `until()` completes, or until cancelled (``prisme-bridge mock-gateway``)."""
    gateway = await start_mock_gateway(host, port, require_api_key=require_api_key)
    logger.info("mock gateway listening on %s", gateway.url)
    try:
        await (until() if until is not None else asyncio.Event().wait())
    finally:
        await gateway.close()
