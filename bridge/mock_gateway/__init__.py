"""A scripted, real-HTTP mock of the Prisme.ai LLM gateway (aiohttp.web), speaking JSON and SSE.

Used by the integration tests (started on ``127.0.0.1`` port 0), by ``prisme-bridge mock-gateway`` /
``prisme-bridge dev`` and by the benchmarks, so the hot path does no sleeping unless a model scripts it.

Routes
------
=====================================================================  ====================================
``POST /v1/chat/completions``                                          chat completions (JSON or SSE)
``POST /v2/workspaces/slug:llm-gateway/webhooks/v1/chat/completions``  same handler (the gateway's path)
``GET /v1/models`` (and under the same ``/v2/...`` prefix)             the 250-model catalogue, paged and
                                                                       filtered: ``{items,total,page,limit}``
``GET /v1/models/{model_id}`` (ids with ``/`` and ``:``; same prefix)  one catalogue document
``POST /v1/embeddings`` (and under the same ``/v2/...`` prefix)        embeddings (OpenAI's list)
``GET /openai/v1/models``, ``GET /openai/v1/models/{model_id}``        the catalogue as an OpenAI-compatible
                                                                       server lists it (``openai_base_url``)
``GET /healthz``                                                       200 ``{"status": "ok"}``
``GET /_mock/requests``, ``GET /_mock/requests/{id}``                  recorded requests (last 1000)
``DELETE /_mock/requests``                                             clear the record (204)
=====================================================================  ====================================

Every response carries ``x-correlation-id`` (the request's, else a new uuid) and echoes ``x-request-id``,
except the LiteLLM-style replies of the ``litellm*`` models, which carry LiteLLM's ids instead.
With ``create_app(require_api_key=KEY)`` a chat or embeddings request needs ``Authorization: Bearer KEY``
or ``x-prismeai-api-key: KEY``, else 401 ``{"error":"invalid_token","message":...}``; the catalogue
(``/models``) takes the key as ``x-prismeai-api-key``, and as Bearer only if it is not an org key
``iak_*`` (the gateway's catalogue wants a user identity as Bearer); the other routes stay open. A chat
body that is not JSON, lacks a string ``model``, has no non-empty ``messages`` list or has an ``n``
outside 1..16 gets 400 ``invalid_request``; a message whose ``role`` is missing or not one OpenAI
knows (system, assistant, user, function, tool, developer) gets OpenAI's own 400 (``invalid_value``,
``param`` ``messages[i].role``).

A record is ``{"id", "method", "path", "raw_path" (as sent: percent-encoding and query kept), "query",
"headers" (lower-cased names, values as sent, credentials included), "body" (None for a GET), "stream",
"model", "started_at", "ended_at", "outcome"}`` where ``started_at``/``ended_at`` are
``time.time()`` seconds and ``outcome`` is ``in_progress``, ``completed`` (any 2xx script ran to its end),
``error`` (an HTTP status >= 400, or the server shut down mid-request) or ``client_disconnected`` (the
client closed the connection; noticed within ~20 ms, also while a script sleeps).

Chat completions (``POST /chat/completions``): behaviours chosen by the request's ``model``
-------------------------------------------------------------------------------------------
The reply *text* is the last user message's text (a string, or the ``text`` parts of a list joined with
``"\\n"``), or ``"ok"`` when there is none. Token counts are whitespace word counts; ``n`` choices are
honoured in every unary reply and in echo-family streams. A stream's content pieces are the text's words,
each keeping its following whitespace, so they concatenate back to the text exactly. Usage carries
``cost``, ``duration_ms`` and ``carbon``; the usage chunk (``"choices": []``) is sent only when
``stream_options.include_usage`` is true, and then every other chunk has ``"usage": null``.

=========================  ==========================================================================
model                      behaviour
=========================  ==========================================================================
anything else (``echo``,   echo. Unary: ``chat.completion`` with the text. Stream: role chunk
``gpt-4o``, ...)           (``{"role":"assistant","content":""}``), one chunk per word, an empty delta
                           with ``finish_reason:"stop"``, the usage chunk if asked, ``data: [DONE]``.
``echo-crlf``              echo, SSE lines end with CRLF.
``echo-cr``                echo, SSE lines end with CR only.
``echo-bytewise``          echo, the stream body is written one byte per write (drain after each).
``echo-comments``          echo, with a UTF-8 BOM first, ``: ping`` comment lines before every event, a
                           ``: OPENROUTER PROCESSING`` comment block, ``event: message`` on odd events
                           and ``id: mock-1`` on the second event.
``echo-nospace``           echo, data lines written as ``data:{...}`` (no space after the colon).
``echo-multiline``         echo, each JSON payload pretty-printed over several ``data:`` lines.
``usage-empty-choice``     echo; asked for usage, the usage chunk has ``"choices": [{"index": 0, "delta":
                           {}}]`` and no other chunk has ``usage`` (LiteLLM 1.108's shape).
``usage-on-finish``        echo; asked for usage, it rides on the finish chunk (no usage chunk).
``usage-every-chunk``      echo; asked for usage, every chunk carries the usage so far, then the usage
                           chunk (vLLM's ``continuous_usage_stats``).
``usage-ignored``          echo; never sends usage, even when asked (no ``"usage": null`` either).
``tools``                  assistant message with ``content: null`` and one tool call ``call_mock_1``
                           (function = the request's first tool, else ``get_weather``; arguments
                           ``{"city": "Paris", "unit": "celsius"}``), ``finish_reason:"tool_calls"``.
                           Stream: role chunk (``content: null``), a first fragment with index, id, type,
                           name and ``arguments: ""``, three fragments carrying only index and argument
                           pieces, the finish chunk, usage if asked, ``[DONE]``.
``tools-custom``           as ``tools``, with one custom tool call ``call_mock_custom_1`` (``type: "custom"``;
                           ``custom.name``: the request's first tool's custom name, else ``apply_patch``;
                           ``custom.input``: a four-line patch with a non-ASCII character). Stream: the
                           first fragment has ``input: ""``, three fragments carry index and input pieces.
``reasoning``              echo whose deltas first carry ``reasoning_content`` pieces; the unary
                           message has ``reasoning_content``; ``reasoning_tokens`` is counted.
``azure``                  echo; the stream starts with Azure's ``{"id":"","object":"","created":0,
                           "model":"","choices":[],"prompt_filter_results":[...]}`` chunk and later chunks
                           carry ``content_filter_results: {}`` in choices and ``"obfuscation":"abc"``;
                           the unary reply has top-level ``prompt_filter_results``.
``error-<status>``         (400..599) that status with a Prisme body ``{"error","message","details"}``:
                           400 ``invalid_request``, 401 ``invalid_token``, 403 ``MODEL_NOT_ALLOWED``,
                           404 ``not_found``, 429 ``rate_limit_exceeded``, 500 ``internal_error``,
                           503 ``service_unavailable``, others ``mock_error``. 429 and 503 add
                           ``Retry-After: 7``. Stream requests get the same JSON error, not SSE.
``openai-error-<status>``  same statuses and Retry-After, OpenAI body ``{"error":{"message","type",
                           "param","code"}}`` (400: ``invalid_request_error`` / ``messages`` /
                           ``invalid_value``).
``slow-<ms>``              waits that many ms before the response headers, then echo (stream or not).
``paced-<ms>``             stream: echo, every event (the role chunk, each word, the finish chunk) followed
                           by that many ms of silence, so a reader gets one token per read (how LLM
                           streams arrive; bench/run.py's paced scenario). Unary: echo.
``endless``                stream: role chunk, then a ``"tick "`` content chunk every 50 ms until the
                           client disconnects. Unary: never answers.
``stream-error``           role chunk, two content chunks (``"Partial "``, ``"answer"``), then
                           ``data: {"error":{"message":"upstream provider failed","type":"server_error",
                           "code":"provider_error"}}``, then ``[DONE]``.
``stream-error-event``     the same, the error event sent as ``event: error``.
``stream-error-vllm``      the same, vLLM shape ``{"error":{"object":"error","message":...,
                           "type":"BadRequestError","param":null,"code":400}}`` (integer code).
``stream-error-content``   the same two chunks, then the error as *content* (``"\\n\\n[upstream provider
                           failed]"``, Prisme's documented mid-stream error), then ``[DONE]``.
                           Unary requests for any ``stream-error*`` model get a 500 ``internal_error``.
``truncated``              stream: role chunk, two content chunks, half a ``data:`` line, then the TCP
                           connection is closed mid-body (the chunked body never terminates). Unary:
                           ``Content-Length`` of the full reply, half of it sent, connection closed.
``truncated-eof``          stream: as ``truncated`` but the HTTP body ends cleanly after the half line.
``reset``                  stream: role chunk and one chunk per word (no finish), then at once, in the
                           same breath, the TCP connection is reset (RST). Unary: ``Content-Length`` of
                           the full reply, half of it sent, then RST.
``reset-before-content``   stream: the role chunk, then the TCP connection is reset (RST) before any
                           content. Unary: reset once the request is read, before a byte of the reply.
``late-content-<ms>``      stream: the headers and the role chunk at once, then that many ms of
                           silence, then the echo's content, finish and usage chunks (a model slow to
                           its first token). Unary: as ``slow-<ms>``.
``stall-<ms>``              stream: role chunk, two content chunks (``"Partial "``, ``"answer"``), then
                           that many ms of silence, then the finish chunk and ``[DONE]``. Unary: the
                           reply's headers and the first half of its body, the silence, the rest.
``bad-json``               stream: role chunk, two content chunks, then an event whose data is not JSON
                           (cut inside an object), the finish chunk, ``[DONE]``. Unary: 200
                           ``application/json`` whose body is JSON cut short.
``bad-utf8``               stream: role chunk, two content chunks, a content chunk ``"caf\\xe9 "`` (a
                           Latin-1 byte, invalid UTF-8), the finish chunk, ``[DONE]``. Unary: the echo
                           reply with those bytes at the head of its content.
``html-200``               200 ``text/html`` (a sign-in page), for unary and stream requests alike.
``no-done``                echo stream (finish_reason and usage as usual) whose body ends, with
                           ``Connection: close``, without ``[DONE]``. Unary: echo.
``no-finish``              role and content chunks, then the body ends: no finish_reason, no usage, no
                           ``[DONE]``. Unary: echo.
``json-on-stream``         a stream request gets 200 ``application/json`` with a ``chat.completion``.
``litellm``                echo as a LiteLLM proxy answers it: ``x-litellm-call-id``, ``request-id``,
                           ``llm_provider-x-request-id`` and ``x-litellm-model-id`` headers, no
                           ``x-correlation-id``.
``litellm-error-429``      429 with LiteLLM's body (``"message": "litellm.RateLimitError: ..."``, ``"code":
                           "429"``), its ids, and the provider's Retry-After as
                           ``llm_provider-retry-after: 5``.
``litellm-stream-error``   stream: role chunk, ``"Partial "``, ``"answer"``, then LiteLLM's mid-stream
                           ``{"error": {"message": "litellm.APIConnectionError: ...", "type": null, "param":
                           null, "code": "500"}}`` and the body ends (no ``[DONE]``, as LiteLLM 1.108 does).
                           Unary: that document with status 500.
=========================  ==========================================================================

``flaky-<N>-<status>``     the first N requests for this exact model name (unary or stream, counted since
                           the mock started) get that status (400..599) with a Prisme error body and no
                           ``Retry-After`` (``flaky-<N>-<status>-after-<s>``: with ``Retry-After: <s>``);
                           later ones are answered as echo.
``flaky-<N>-reset``        the first N requests: the connection is reset (RST) once the request is read,
                           before a byte of the reply (outcome ``error``); later ones echo.

``MockGateway.script(model, count)`` makes one instance answer its next ``count`` requests (all, until
``script(None)``) as it answers ``model``, whatever model they name (catalogue and embeddings requests:
the scripted error of an ``error-<status>`` name): two instances, one scripted, are two upstreams of which
one fails.

A prefixed name whose suffix is not a number (or, for errors, not within 400..599), such as ``slow-x`` or
``error-99``, is plain echo.

The model catalogue (``GET /models``)
-------------------------------------
250 documents in the gateway's shape (``model_id``, ``type``, ``display {name, brand, hidden}``,
``capabilities {vision, audio, text, image}``, ``limits``, ``failover``, ``region``, ``pricing``, ``tags``,
``enabled``, and ``metrics``, ``provider_config``, ``org_slugs``, which the contract keeps in ``extra``):
the chat models above (``echo``, ``tools``, ``reasoning``, ``azure``, ``endless``, ``slow-1000``,
``error-429``), the embeddings models below, ``bedrock/anthropic.claude-3-haiku`` and
``eu.anthropic.claude-sonnet-4-20250514-v1:0``, then generated ones (``openai/completion-000``,
``meta/completion-003:0``, ``google/embeddings-004``, ...) whose types, brands, tags, flags and
capabilities vary so that every filter selects a proper subset.

=========================  ==========================================================================
query                      behaviour
=========================  ==========================================================================
``limit``, ``page``        page size (default and cap 100) and zero-based page; ``{items, total, page,
                           limit}`` with ``total`` the number of matching models
``type``                   ``completion``, ``embeddings`` or ``image_generation`` (another value: 400)
``enabled``                ``true`` / ``false`` (another value: 400)
``model_ids``, ``tags``    comma-separated; a model matches one of the ids / any of the tags
``visible_only=true``      leaves out ``display.hidden`` models
``brand``                  exact ``display.brand``
``search``                 case-insensitive, in ``model_id``, ``display.name``, ``display.brand``;
                           ``search=error-<status>`` answers that scripted error instead (as chat's
                           ``error-<status>``: 403 ``MODEL_NOT_ALLOWED``, 429 with ``Retry-After: 7``)
``capability``             ``vision``, ``audio``, ``text`` or ``image`` (another value: 400)
=========================  ==========================================================================

``GET /models/{model_id}`` answers the document (the id may hold ``/`` and ``:``, matched as sent), 404
``not_found`` for another id, and the scripted error for ``error-<status>``. Under ``/openai/v1`` the same
models are listed as OpenAI's ``{"object": "list", "data": [{"id", "object": "model", "created",
"owned_by", "max_model_len" (completion models, as vLLM adds it)}]}``, all at once (no paging, no
filters), and ``/openai/v1/models/{id}`` answers one such object or OpenAI's 404 ``model_not_found``.

Embeddings (``POST /embeddings``)
---------------------------------
``input`` is a non-empty string or an array of 1 to 2048 non-empty strings; ``dimensions`` a positive
integer; ``encoding_format`` ``float`` (default) or ``base64``; anything else is 400 ``invalid_request``.
The answer is OpenAI's list, one item per input in order (``{"object": "embedding", "index", "embedding"}``),
``usage`` with word counts, and the gateway's flat ``embedding`` copy of ``data[0]`` when ``input`` was one
string. The vector of a text has ``dimensions`` numbers (else the model's default, else 8): the first is
the text's length in characters, the others ``k/128 - 1`` for the bytes ``k`` of SHA-256 chained over the
text, all exact in float32, so a ``base64`` answer (little-endian float32) decodes to the same numbers.

====================================  ================================================================
model                                 behaviour
====================================  ================================================================
anything not in the catalogue         8 dimensions by default, any ``dimensions`` accepted
``text-embedding-3-small``            1536 by default; ``dimensions`` one of 256, 512, 1024, 1536, else
                                      400 ``{"error": "INVALID_DIMENSIONS", "message", "details"}``
``text-embedding-3-large``            3072 by default; 256, 1024 or 3072, else 400 INVALID_DIMENSIONS
``text-embedding-mock``               8 by default; 4 or 8, else 400 INVALID_DIMENSIONS
``governed/text-embedding-3-small``   1536; 256 or 1536, else **403** INVALID_DIMENSIONS, as the
                                      gateway's governance overlays forward their refusals
``governed-throttled``                429 ``MODEL_NOT_ALLOWED`` with ``Retry-After: 7``: a governance
                                      rule refusing for now, with a rate limit's status
``embed-shuffled``                    8 dimensions, ``data`` in reverse order (each item keeps its index)
``error-<status>``                    that scripted error (403 ``MODEL_NOT_ALLOWED``, 401
                                      ``invalid_token``, 429 ``rate_limit_exceeded`` + ``Retry-After: 7``)
another catalogue model               400 ``invalid_request`` (not an embeddings model)
====================================  ================================================================
"""

from typing import Final

from bridge.mock_gateway.app import GATEWAY_PREFIX, MockGateway, create_app, serve_forever, start_mock_gateway

__all__ = [
    "GATEWAY_PREFIX",
    "MockGateway",
    "create_app",
    "scripted_models",
    "serve_forever",
    "start_mock_gateway",
]


_SCRIPTED: Final = "Chat completions (``POST /chat/completions``)"


def scripted_models() -> str:
    """This docstring from its scripted sections on (chat completions, the model catalogue, embeddings),
    headings included: what each model name or query makes the mock do (`prisme-bridge mock-gateway
    --list-models`)."""
    doc = __doc__ or ""
    return doc[doc.index(_SCRIPTED) :].strip()
