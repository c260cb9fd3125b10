"""bridge.logs: the text and JSON formats, record fields, redacted exceptions, quiet HTTP loggers."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator, Mapping

import pytest

from bridge.logs import JsonFormatter, LineHandler, TextFormatter, setup_logging


def _record(message: str = "CreateChatCompletion OK", **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("bridge.access", logging.INFO, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_text_appends_fields_as_key_value() -> None:
    record = _record(fields={"code": "OK", "ms": 1.5, "model": "gpt 4o", "chunks": 3})
    line = TextFormatter().format(record)
    assert line.endswith("bridge.access: CreateChatCompletion OK code='OK' ms=1.5 model='gpt 4o' chunks=3")


def test_json_is_one_object_per_record_with_the_fields_as_keys() -> None:
    record = _record(fields={"code": "OK", "ms": 1.5, "upstream_status": 200, "level": "forged"})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "INFO"  # a field cannot replace a fixed key
    assert entry["logger"] == "bridge.access"
    assert entry["message"] == "CreateChatCompletion OK"
    assert (entry["code"], entry["ms"], entry["upstream_status"]) == ("OK", 1.5, 200)
    assert entry["time"].endswith("+00:00")


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_exception_texts_are_redacted(formatter: logging.Formatter) -> None:
    try:
        raise RuntimeError("upstream said: Authorization: Bearer sk-live-abcdef123456")
    except RuntimeError:
        record = logging.LogRecord("bridge", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = formatter.format(record)
    assert "sk-live-abcdef123456" not in text
    assert "RuntimeError" in text


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("restore_logging")
def test_setup_logging_holds_httpx_at_warning_even_at_debug() -> None:
    stream = io.StringIO()
    setup_logging("DEBUG", "json", stream)
    logging.getLogger("httpx").info('HTTP Request: POST http://gw/v1/chat/completions "HTTP/1.1 200 OK"')
    logging.getLogger("httpcore.http11").debug("send_request_headers.started")
    logging.getLogger("bridge.test").debug("kept")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry["message"] for entry in lines] == ["kept"]


def test_text_escapes_what_is_unprintable_in_a_message() -> None:
    args = ("\x1b[31mRED r\udce9q",)
    record = logging.LogRecord("bridge.http.retry", logging.DEBUG, "f", 1, "attempt failed (%s)", args, None)
    line = TextFormatter().format(record)
    assert line.endswith(r"bridge.http.retry: attempt failed (\x1b[31mRED r\xe9q)")


def test_json_stays_valid_json_whatever_a_record_holds() -> None:
    record = _record(message="id r\udce9q \x1b[0m", fields={"correlation_id": "x\ud800y", "big": 2**70})
    line = JsonFormatter().format(record)
    line.encode()  # writable to a UTF-8 stream: no lone surrogate
    assert "\x1b" not in line
    entry = json.loads(line)
    assert entry["message"] == "id r\udce9q \x1b[0m"
    assert entry["big"] == 2**70


def test_text_escapes_unprintable_characters_in_exception_texts_and_keeps_line_breaks() -> None:
    try:
        raise ValueError("invalid header value b'a\x1bb' r\udce9q")
    except ValueError:
        record = logging.LogRecord("bridge.x", logging.ERROR, "f", 1, "failed", (), sys.exc_info())
    text = TextFormatter().format(record)
    assert "\x1b" not in text
    assert r"invalid header value b'a\x1bb' r\xe9q" in text
    assert "\nTraceback (most recent call last):\n" in text


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_a_line_made_without_a_record_is_the_records_line(formatter: TextFormatter | JsonFormatter) -> None:
    fields = {"code": "OK", "ms": 1.5, "model": "gpt 4o", "correlation_id": "r\\xe9q", "big": 2**70}
    for message in ("CreateChatCompletion OK", "id r\udce9q \x1b[0m"):
        record = _record(message=message, fields=fields)
        made = formatter.line(record.created, "INFO", "bridge.access", message, fields)
        assert made == formatter.format(record)


_HEAD_CASES = (
    ({"service": "pkg.S", "method": "M", "code": "OK"}, {"ms": 1.5, "model": "gpt 4o", "caller": "a b"}),
    ({"service": "pkg.S", "method": "M", "code": "OK"}, {}),  # nothing after the head
    ({}, {"ms": 1.5}),  # a head of the fixed keys alone
    ({"code": "OK"}, {"code": "forged", "ms": 1.5}),  # a field naming a key of the head
    ({"code": "OK"}, {"level": "forged", "ms": 1.5}),  # ... or a fixed key
    ({"code": "OK"}, {"big": 2**70, "id": "r\udce9q"}),  # what orjson refuses, after the head
    ({"big": 2**70}, {"ms": 1.5}),  # ... in the head
)


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
@pytest.mark.parametrize(("head_fields", "fields"), _HEAD_CASES)
@pytest.mark.parametrize("message", ["CreateChatCompletion OK", "id r\udce9q \x1b[0m"])
def test_a_line_after_a_head_made_once_is_the_whole_line(
    formatter: TextFormatter | JsonFormatter,
    head_fields: dict[str, object],
    fields: dict[str, object],
    message: str,
) -> None:
    head = formatter.head("WARNING", "bridge.access", message, head_fields)
    for created in (1796657568.042, 1796657569.5):  # one head, lines of several seconds
        whole = formatter.line(created, "WARNING", "bridge.access", message, {**head_fields, **fields})
        assert formatter.line_after(created, head, fields) == whole


def test_line_handler_keeps_lines_and_records_in_order() -> None:
    out = io.StringIO()
    handler = LineHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))

    async def main() -> None:
        handler.write_line("one")
        handler.write_line(lambda: "two")
        await asyncio.sleep(0)
        assert out.getvalue() == ""  # waiting for the others of the next FLUSH_S
        handler.emit(_record(message="three"))  # a record writes the waiting lines first
        handler.write_line("four")
        await asyncio.sleep(LineHandler.FLUSH_S * 2)  # past the timer set with "four"

    asyncio.run(main())
    assert out.getvalue() == "one\ntwo\nthree\nfour\n"
    handler.write_line("five")  # no event loop: written at once
    assert out.getvalue().endswith("four\nfive\n")


class _Writes(io.StringIO):
    """A stream that counts its writes."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_line_handler_writes_the_lines_of_a_span_at_once_and_makes_them_then() -> None:
    out = _Writes()
    handler = LineHandler(out)
    made: list[int] = []

    def line(number: int) -> str:
        made.append(number)
        return f"line {number}"

    async def main() -> None:
        for number in range(3):
            handler.write_line(lambda number=number: line(number))  # type: ignore[misc]
            await asyncio.sleep(0)  # each line in its own loop iteration, as calls end
        assert (made, out.writes) == ([], 0)  # made when written, not on the call's path
        await asyncio.sleep(LineHandler.FLUSH_S * 2)

    asyncio.run(main())
    assert (made, out.writes, out.getvalue()) == ([0, 1, 2], 1, "line 0\nline 1\nline 2\n")


def test_line_handler_writes_at_once_when_many_lines_wait() -> None:
    out = _Writes()
    handler = LineHandler(out)

    async def main() -> None:
        for number in range(LineHandler.MAX_WAITING):
            handler.write_line(f"{number}")
        assert out.getvalue().count("\n") == LineHandler.MAX_WAITING  # no wait for the timer
        handler.write_line("last")
        assert out.writes == 1

    asyncio.run(main())


def test_lines_left_waiting_by_a_closed_loop_are_written_by_logging_shutdown_or_the_next_loop() -> None:
    out = io.StringIO()
    handler = LineHandler(out)

    async def one(text: str) -> None:
        handler.write_line(text)

    asyncio.run(one("first"))  # the loop closed before its timer was due
    assert out.getvalue() == ""
    asyncio.run(one("second"))  # another loop: its own timer (the first one's never fires)
    assert out.getvalue() == ""
    handler.flush()  # what logging.shutdown does at the end of the process
    assert out.getvalue() == "first\nsecond\n"

    async def waits() -> None:
        handler.write_line("third")
        await asyncio.sleep(LineHandler.FLUSH_S * 2)

    asyncio.run(waits())
    assert out.getvalue().endswith("second\nthird\n")


def test_a_line_that_cannot_be_made_is_told_and_the_others_written() -> None:
    out = io.StringIO()
    handler = LineHandler(out)
    handler.write_line("before")  # no event loop: written at once
    handler.write_line(lambda: str(1 / 0))
    handler.write_line("after")
    assert out.getvalue() == "before\n(a log line could not be made: ZeroDivisionError)\nafter\n"


def test_a_batch_with_a_line_that_cannot_be_made_keeps_every_other_line_once() -> None:
    """On an event loop the lines of one batch are made in one pass; a failure mid-batch does not lose or
    repeat the lines around it."""
    out = io.StringIO()
    handler = LineHandler(out)

    async def batch() -> None:
        handler.write_line(lambda: "first")
        handler.write_line("second")
        handler.write_line(lambda: str(1 / 0))
        handler.write_line(lambda: "fourth")
        assert out.getvalue() == ""  # waiting together
        handler.flush()

    asyncio.run(batch())
    made = "first\nsecond\n(a log line could not be made: ZeroDivisionError)\nfourth\n"
    assert out.getvalue() == made


def test_a_line_that_cannot_be_made_is_told_in_the_handlers_format() -> None:
    """In JSON format the stand-in is a JSON object too: a log pipeline parses every line."""
    out = io.StringIO()
    handler = LineHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.write_line(lambda: str(1 / 0))
    entry = json.loads(out.getvalue())
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "bridge.logs"
    assert entry["message"] == "a log line could not be made: ZeroDivisionError"


@pytest.mark.usefixtures("restore_logging")
def test_the_access_line_is_made_after_the_call_from_its_facts_as_it_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bridge.rpc.access import AccessLog
    from bridge.rpc.call import RpcCall

    out = io.StringIO()
    setup_logging("INFO", "json", out)
    made: list[str] = []
    after = JsonFormatter.after

    def counted(self: JsonFormatter, *args: object) -> str | None:
        made.append("line")
        return after(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(JsonFormatter, "after", counted)
    call = RpcCall("/prisme.llmgateway.v1.ChatCompletionService/CreateChatCompletion", False, "echo")
    call.started -= 1.0  # it lasted a second

    async def main() -> None:
        AccessLog().call_ended(call, None)
        assert made == []  # not on the call's path
        call.started -= 60.0  # what happens to the call object later does not change its line
        await asyncio.sleep(LineHandler.FLUSH_S * 2)

    asyncio.run(main())
    entry = json.loads(out.getvalue())
    assert made == ["line"]
    assert (entry["message"], entry["code"], entry["model"]) == ("CreateChatCompletion OK", "OK", "echo")
    assert 1000 <= entry["ms"] < 60000


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_access_lines_head_is_made_once_per_method_and_code(
    log_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import grpc

    from bridge.rpc.access import AccessLog, access_fields
    from bridge.rpc.call import RpcCall

    out = io.StringIO()
    setup_logging("INFO", log_format, out)  # type: ignore[arg-type]
    formatter = logging.getLogger().handlers[0].formatter
    assert isinstance(formatter, TextFormatter | JsonFormatter)
    heads: list[str] = []
    head = type(formatter).head

    def counted(self: TextFormatter | JsonFormatter, *args: object) -> object:
        heads.append(str(args[2]))
        return head(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(type(formatter), "head", counted)
    method = "/prisme.llmgateway.v1.ChatCompletionService/CreateChatCompletion"
    calls = [RpcCall(method, False, model) for model in ("echo", "gpt 4o", "echo", "echo")]
    calls[2].code = grpc.StatusCode.UNAVAILABLE
    calls[3].correlation_id, calls[3].prompt_tokens = "chatcmpl-9f2c.a1_b", 20
    log = AccessLog()
    for call in calls:
        log.call_ended(call, None)  # no event loop: written at once
    assert heads == ["CreateChatCompletion OK", "CreateChatCompletion UNAVAILABLE"]
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    if log_format == "text":
        assert (
            lines[2]
            .split(" ", 2)[2]
            .startswith(
                "WARNING bridge.access: CreateChatCompletion UNAVAILABLE service='prisme.llmgateway.v1."
                "ChatCompletionService' method='CreateChatCompletion' code='UNAVAILABLE' ms="
            )
        )
        assert lines[3].endswith("correlation_id='chatcmpl-9f2c.a1_b' prompt_tokens=20")
        return
    for call, line in zip(calls, lines, strict=True):
        entry = json.loads(line)
        expected = {"level": entry["level"], "logger": "bridge.access", **access_fields(call)}
        expected["message"] = f"CreateChatCompletion {call.code.name}"
        expected["ms"] = entry["ms"]  # the duration as the call ended, not now
        assert list(entry) == ["time", "level", "logger", "message", *access_fields(call)]
        assert entry == {"time": entry["time"], **expected}


def test_the_access_lines_usage_and_trace_facts_follow_the_others_in_order() -> None:
    from bridge.rpc.access import access_fields
    from bridge.rpc.call import RpcCall

    call = RpcCall("/prisme.llmgateway.v1.ChatCompletionService/CreateChatCompletion", False, "echo")
    call.prompt_tokens, call.completion_tokens, call.cost, call.trace_id = 3, 0, 0.0, "4bf92f3577b34da6"
    fields = access_fields(call, 12.34)
    assert list(fields)[-4:] == ["prompt_tokens", "completion_tokens", "cost", "trace_id"]
    assert [fields[key] for key in list(fields)[-4:]] == [3, 0, 0.0, "4bf92f3577b34da6"]
    call.prompt_tokens = call.completion_tokens = call.cost = call.trace_id = None
    assert not {"prompt_tokens", "completion_tokens", "cost", "trace_id"} & set(access_fields(call, 1.0))


@pytest.mark.usefixtures("restore_logging")
def test_the_access_log_looks_for_its_handler_once_per_batch_and_again_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import grpc

    from bridge.rpc import access
    from bridge.rpc.call import RpcCall

    out = io.StringIO()
    setup_logging("INFO", "json", out)
    walks: list[int] = []
    walk = access._line_writer

    def counted(logger: logging.Logger, level: int) -> object:
        walks.append(level)
        return walk(logger, level)

    monkeypatch.setattr(access, "_line_writer", counted)
    log = access.AccessLog()
    method = "/prisme.llmgateway.v1.ChatCompletionService/CreateChatCompletion"
    added: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            added.append(record)

    async def calls() -> None:
        for _ in range(3):  # one batch: the tree walked for its first line only
            log.call_ended(RpcCall(method, False, "echo"), None)
        assert walks == [logging.INFO]
        failed = RpcCall(method, False, "echo")
        failed.code = grpc.StatusCode.UNAVAILABLE  # another level: walked for it
        log.call_ended(failed, None)
        assert walks == [logging.INFO, logging.WARNING]
        log.call_ended(RpcCall(method, False, "echo"), None)
        log.call_ended(failed, None)
        assert len(walks) == 2  # both levels known to go there for the rest of the batch
        assert out.getvalue() == ""  # every line still waiting
        logging.getLogger().handlers[0].flush()  # the batch written: the next line walks again
        assert len(out.getvalue().splitlines()) == 6
        logging.getLogger().addHandler(Capture())  # and finds a handler of another kind: a record
        log.call_ended(RpcCall(method, False, "echo"), None)
        assert len(walks) == 3
        assert [record.getMessage() for record in added] == ["CreateChatCompletion OK"]

    asyncio.run(calls())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 7  # every line written, the record's too
    assert [entry["code"] for entry in lines] == ["OK"] * 3 + ["UNAVAILABLE", "OK", "UNAVAILABLE", "OK"]


def test_every_fact_the_access_line_may_carry_is_named_in_tail_fields() -> None:
    """The access log checks the head's keys against `TAIL_FIELDS` once per head instead of per line: a
    fact added to the line must be named there (a call with every fact set gives every name)."""
    import grpc

    from bridge.rpc.access import TAIL_FIELDS, _head_fields, _tail_fields
    from bridge.rpc.call import RpcCall

    call = RpcCall("/prisme.llmgateway.v1.ChatCompletionService/StreamChatCompletion", True, "echo")
    call.code = grpc.StatusCode.UNAVAILABLE  # a reason and a cause
    call.upstream, call.upstream_status, call.upstream_attempts = "a.example:443", 503, 2
    call.upstream_waiting, call.correlation_id, call.messages_sent = 0.001, "req-1", 3
    call.prompt_tokens, call.completion_tokens, call.cost, call.trace_id = 3, 4, 0.5, "4bf92f3577b34da6"
    assert set(_tail_fields(call, 12.0)) == TAIL_FIELDS
    assert TAIL_FIELDS.isdisjoint(_head_fields(call))


@pytest.mark.parametrize(("elapsed_ms", "overhead_s", "ms", "overhead_ms"), [
    (12.345678, 0.00123456, 12.3, 1.23),
    (0.04, 0.0, 0.0, 0.0),
    (999.96, 0.0123449, 1000.0, 12.34),
    (86_400_000.06, 1.000004, 86_400_000.1, 1000.0),
])  # fmt: skip
def test_the_access_lines_durations_are_rounded_to_a_tenth_and_a_hundredth_of_a_ms(
    elapsed_ms: float, overhead_s: float, ms: float, overhead_ms: float
) -> None:
    from bridge.rpc.access import access_fields
    from bridge.rpc.call import RpcCall

    call = RpcCall("/prisme.llmgateway.v1.ChatCompletionService/CreateChatCompletion", False, "echo")
    call.upstream_waiting, call.overhead = 0.0, overhead_s
    fields = access_fields(call, elapsed_ms)
    assert (fields["ms"], fields["overhead_ms"]) == (ms, overhead_ms)
    assert json.dumps(fields["ms"]) == repr(ms)  # written short: "12.3", not "12.300000000000001"


@pytest.mark.usefixtures("restore_logging")
def test_an_access_line_that_cannot_be_made_costs_its_own_line_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The calls of one batch are made into lines together; one that fails is told by an ERROR line in its
    place, the others are written as they are, in order."""
    from bridge.rpc.access import AccessLog
    from bridge.rpc.call import RpcCall

    out = io.StringIO()
    setup_logging("INFO", "json", out)
    after = JsonFormatter.after

    def failing(self: JsonFormatter, created: float, text: str, fields: Mapping[str, object]) -> str | None:
        if fields.get("model") == "boom":
            raise ValueError("a bug")
        return after(self, created, text, fields)

    monkeypatch.setattr(JsonFormatter, "after", failing)
    method = "/prisme.llmgateway.v1.ChatCompletionService/CreateChatCompletion"

    async def calls() -> None:
        log = AccessLog()
        for model in ("first", "boom", "third"):
            log.call_ended(RpcCall(method, False, model), None)
        assert out.getvalue() == ""  # one batch, waiting
        await asyncio.sleep(LineHandler.FLUSH_S * 2)

    asyncio.run(calls())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [entry.get("model", entry["message"]) for entry in lines] == [
        "first",
        "a log line could not be made: ValueError",
        "third",
    ]


@pytest.mark.usefixtures("restore_logging")
def test_access_lines_are_written_once_a_batch_holds_the_most_it_may() -> None:
    from bridge.rpc.access import AccessLog
    from bridge.rpc.call import RpcCall

    out = io.StringIO()
    setup_logging("INFO", "json", out)
    method = "/prisme.llmgateway.v1.ChatCompletionService/CreateChatCompletion"

    async def calls() -> None:
        log = AccessLog()
        for _ in range(LineHandler.MAX_WAITING - 1):
            log.call_ended(RpcCall(method, False, "echo"), None)
        assert out.getvalue() == ""
        log.call_ended(RpcCall(method, False, "echo"), None)
        assert len(out.getvalue().splitlines()) == LineHandler.MAX_WAITING  # without waiting for the timer

    asyncio.run(calls())
