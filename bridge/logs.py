r"""Process logging: one line per record, as text for people or as JSON for log pipelines.

A record may carry structured facts in `fields` (a dict given with `extra={"fields": ...}`, as the access
log does): the text format appends them as ` key=value`, the JSON format makes them keys of the object.
Exception texts are redacted (bridge.redaction) in both formats, since they may quote upstream text. Text
that reaches a record from outside (an upstream's message, a caller's model) is cleaned where it is quoted;
the text format also escapes whatever unprintable character is left in a message (`\x1b`: no terminal
escape sequence reaches an operator's screen), and the JSON format always writes valid JSON (control
characters escaped, a lone surrogate as a `\udcXX` escape).

httpx writes a line per upstream request at INFO, a second line per call next to the access line, and
httpcore narrates every socket event at DEBUG: both are held at WARNING whatever `--log-level` says.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Final, Literal, NamedTuple, TextIO

import orjson

from bridge.redaction import printable, redact

__all__ = ["JsonFormatter", "LineHandler", "LineHead", "LogFormat", "TextFormatter", "setup_logging"]

LogFormat = Literal["json", "text"]
_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

_QUIET_LOGGERS: Final = ("httpx", "httpcore")
# What orjson refuses (an integer beyond 64 bits, a lone surrogate) goes through the standard library's
# encoder; ASCII-only, so a lone surrogate becomes an escape instead of failing the stream's write.
_ENCODE: Final = json.JSONEncoder(ensure_ascii=True, default=str, separators=(",", ":")).encode
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _fields(record: logging.LogRecord) -> Mapping[str, object]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


class _SecondCache:
    """A timestamp's whole-second text, formatted once per second rather than per line."""

    def __init__(self, pattern: str, convert: Callable[[float], time.struct_time]) -> None:
        self._pattern, self._convert = pattern, convert
        self.second, self.second_text = -1, ""  # the last second formatted (plain attributes: read per line)

    def text(self, created: float) -> tuple[str, int]:
        """(the second's text, the milliseconds) of `created`."""
        second = int(created)
        if second != self.second:
            self.second_text = time.strftime(self._pattern, self._convert(second))
            self.second = second
        # created - second is exact and below 1, so the milliseconds are at most 999.
        return self.second_text, int((created - second) * 1000)


class LineHead(NamedTuple):
    """The part of a line that follows its time, made once for lines that share it (the access log's
    level, logger, message and first fields, the same for every call of one method ending with one code):
    a formatter's `head`, given back to its `line_after` with the fields that change."""

    text: str | None  # as the formatter writes it after the time (None: not made ahead, see `line_after`)
    keys: frozenset[str]  # the keys it holds: a field naming one of them is not appended to it
    level: str
    logger: str
    message: str
    fields: Mapping[str, object]


class _HeadLines:
    """`line_after` for the formatters below: what `line` makes, from a head made once."""

    def line(
        self, created: float, level: str, logger: str, message: str, fields: Mapping[str, object]
    ) -> str:
        raise NotImplementedError

    def line_after(self, created: float, head: LineHead, fields: Mapping[str, object]) -> str:
        """`line(created, head.level, head.logger, head.message, head.fields | fields)`, the head's text
        used as it is (only the time and `fields` formatted now) when `fields` names none of its keys."""
        if head.text is not None and head.keys.isdisjoint(fields):
            made = self.after(created, head.text, fields)
            if made is not None:
                return made
        return self.line(created, head.level, head.logger, head.message, {**head.fields, **fields})

    def after(self, created: float, text: str, fields: Mapping[str, object]) -> str | None:
        """The line of a head's `text` (not None) and `fields` that name none of the head's keys (the
        caller's to know: `line_after` checks it per line, the access log once per head); None when the
        fields need the whole line made by `line`."""
        raise NotImplementedError


class TextFormatter(_HeadLines, logging.Formatter):
    """`TIME LEVEL LOGGER: message key=value ...` (strings quoted with repr, so spaces stay readable)."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)
        self._seconds = _SecondCache(self.default_time_format, self.converter)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _with_fields(printable(super().formatMessage(record)), _fields(record))

    def line(
        self, created: float, level: str, logger: str, message: str, fields: Mapping[str, object]
    ) -> str:
        """What `format` makes of a record with these attributes, no arguments and no exception."""
        second, millis = self._seconds.text(created)
        return _with_fields(printable(f"{second},{millis:03d} {level} {logger}: {message}"), fields)

    def head(self, level: str, logger: str, message: str, fields: Mapping[str, object]) -> LineHead:
        """What follows the time in `line`'s text for these (bridge.redaction.printable works character by
        character: the time needs no escape, the rest is escaped alone the same)."""
        text = _with_fields(printable(f" {level} {logger}: {message}"), fields)
        return LineHead(text, frozenset(fields), level, logger, message, fields)

    def after(self, created: float, text: str, fields: Mapping[str, object]) -> str:
        second, millis = self._seconds.text(created)
        return _with_fields(f"{second},{millis:03d}{text}", fields)

    def formatException(self, ei: _ExcInfo) -> str:
        # Exception texts may quote upstream bytes (a library's "invalid header value b'...'"): escaped line
        # by line, the traceback's own line breaks kept.
        return "\n".join(printable(line) for line in redact(super().formatException(ei)).split("\n"))


def _with_fields(line: str, fields: Mapping[str, object]) -> str:
    if not fields:
        return line
    pairs = " ".join(
        [f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}" for key, value in fields.items()]
    )
    return f"{line} {pairs}"


class JsonFormatter(_HeadLines, logging.Formatter):
    """One compact JSON object per line: time (UTC, ms), level, logger, message, the record's fields, and
    `exception` (its traceback, redacted) when there is one. Encoded with orjson: the access log writes a
    line per call, on the event loop (docs/PERFORMANCE.md)."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _SecondCache("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def _time(self, created: float) -> str:
        """`created` as ISO 8601 in UTC with milliseconds, "2026-11-30T23:59:01.042+00:00"."""
        second, millis = self._seconds.text(created)
        return f"{second}.{millis:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry = self._entry(
            record.created, record.levelname, record.name, record.getMessage(), _fields(record)
        )
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return self._encode(entry)

    def line(
        self, created: float, level: str, logger: str, message: str, fields: Mapping[str, object]
    ) -> str:
        """What `format` makes of a record with these attributes, no arguments and no exception."""
        return self._encode(self._entry(created, level, logger, message, fields))

    def head(self, level: str, logger: str, message: str, fields: Mapping[str, object]) -> LineHead:
        """The keys after `time` in `line`'s object for these, encoded once (without the braces)."""
        entry = self._entry(0.0, level, logger, message, fields)
        del entry["time"]
        try:
            text: str | None = orjson.dumps(entry, default=str).decode()[1:-1]
        except orjson.JSONEncodeError:  # `line` encodes the whole line with the standard library's encoder
            text = None
        return LineHead(text, frozenset(entry) | {"time"}, level, logger, message, fields)

    def after(self, created: float, text: str, fields: Mapping[str, object]) -> str | None:
        # `_time`'s text, its cache read here: this runs once per access line.
        seconds = self._seconds
        second = int(created)
        if second != seconds.second:
            seconds.text(created)
        millis = int((created - second) * 1000)
        if not fields:
            return f'{{"time":"{seconds.second_text}.{millis:03d}+00:00",{text}}}'
        try:
            rest = orjson.dumps(fields, default=str).decode()
        except orjson.JSONEncodeError:
            return None  # made whole by `line`
        return f'{{"time":"{seconds.second_text}.{millis:03d}+00:00",{text},{rest[1:]}'

    def _entry(
        self, created: float, level: str, logger: str, message: str, fields: Mapping[str, object]
    ) -> dict[str, object]:
        time_ = self._time(created)
        entry: dict[str, object] = {
            "time": time_,
            "level": level,
            "logger": logger,
            "message": message,
            **fields,
        }
        # The fixed keys win: a field cannot forge the level (rare: made again, the fields after them).
        fixed = entry["time"] is time_ and entry["level"] is level and entry["logger"] is logger
        if not (fixed and entry["message"] is message):
            entry = {"time": time_, "level": level, "logger": logger, "message": message}
            for key, value in fields.items():
                entry.setdefault(key, value)
        return entry

    @staticmethod
    def _encode(entry: dict[str, object]) -> str:
        try:
            return orjson.dumps(entry, default=str).decode()
        except orjson.JSONEncodeError:
            return _ENCODE(entry)


def setup_logging(level: str, log_format: LogFormat, stream: TextIO | None = None) -> None:
    """Logs of this process at `level` and above, in `log_format`, to `stream` (default stderr)."""
    # No format here shows the thread, process or multiprocessing names: not looked up per record
    # (the logging HOWTO's "Optimization" switches).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = LineHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic in typeshed only
    """The handler `setup_logging` installs: a StreamHandler that also takes lines made without a
    LogRecord (the access log's line per call: bridge.rpc.access) with `write_line`: the line, or a
    function that makes it when the lines are written (after the call's reply, off its path).

    On an event loop such lines wait up to `FLUSH_S` and are written together (one write for all the calls
    of that span instead of a write per call: a write to a file costs more than making the line). A
    record, a flush, the end of logging (`logging.shutdown`, which also runs at a worker's end) or
    `MAX_WAITING` lines write the waiting ones at once: lines keep their order and none is left behind."""

    FLUSH_S: Final = 0.05
    MAX_WAITING: Final = 256

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        # The lines waiting to be written together; a new list once they are (the access log keeps where
        # its lines go while they join one batch: a plain attribute, read per call).
        self.batch: list[str | Callable[[], str]] = []
        self._armed: asyncio.AbstractEventLoop | None = None  # the loop whose timer will write them

    def write_line(self, line: str | Callable[[], str]) -> None:
        self.batch.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop in this thread: now
            self.flush()
            return
        if len(self.batch) >= self.MAX_WAITING:
            self.flush()
        elif self._armed is not loop:  # not yet scheduled on this loop (or the last one closed first)
            self._armed = loop
            loop.call_later(self.FLUSH_S, self.flush)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            self._armed = None
            if self.batch:
                waiting, self.batch = self.batch, []
                try:  # the lines made in one pass, without a try and a method call per line
                    lines = [line if type(line) is str else line() for line in waiting]  # type: ignore[operator]
                except Exception:  # a maker failed: again one by one, its line an ERROR that says so
                    lines = [line if type(line) is str else self.made(line) for line in waiting]  # type: ignore[arg-type]
                self.stream.write(self.terminator.join(lines) + self.terminator)
            super().flush()

    def emit(self, record: logging.LogRecord) -> None:
        if self.batch:
            self.flush()
        super().emit(record)

    def made(self, make: Callable[[], str]) -> str:
        """The line `make` makes; if it fails, an ERROR line that says so, in the handler's format (a
        JSON pipeline still parses it), and the lines around it are still written."""
        try:
            return make()
        except Exception as exc:  # a bug in a line's maker must not lose the lines around it
            message = f"a log line could not be made: {type(exc).__name__}"
            formatter = self.formatter
            if isinstance(formatter, _HeadLines):  # the formatters with `line`
                return formatter.line(time.time(), "ERROR", __name__, message, {})
            return f"({message})"
