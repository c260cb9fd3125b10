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

import json
import logging
import sys
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Final, Literal, TextIO

import orjson

from bridge.redaction import printable, redact

__all__ = ["JsonFormatter", "LogFormat", "TextFormatter", "setup_logging"]

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


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER: message key=value ...` (strings quoted with repr, so spaces stay readable)."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = printable(super().formatMessage(record))
        fields = _fields(record)
        if not fields:
            return line
        pairs = " ".join(
            f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
            for key, value in fields.items()
        )
        return f"{line} {pairs}"

    def formatException(self, ei: _ExcInfo) -> str:
        # Exception texts may quote upstream bytes (a library's "invalid header value b'...'"): escaped line
        # by line, the traceback's own line breaks kept.
        return "\n".join(printable(line) for line in redact(super().formatException(ei)).split("\n"))


class JsonFormatter(logging.Formatter):
    """One compact JSON object per line: time (UTC, ms), level, logger, message, the record's fields, and
    `exception` (its traceback, redacted) when there is one. Encoded with orjson: the access log writes a
    line per call, on the event loop (docs/PERFORMANCE.md)."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1  # the whole second whose text is `self._second_text`
        self._second_text = ""

    def _time(self, created: float) -> str:
        """`created` as ISO 8601 in UTC with milliseconds, "2026-11-30T23:59:01.042+00:00"."""
        second = int(created)
        if second != self._second:  # formatted once per second, not per line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        millis = min(int((created - second) * 1000), 999)
        return f"{self._second_text}.{millis:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            entry.setdefault(key, value)  # the fixed keys win: a field cannot forge the level
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
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
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
