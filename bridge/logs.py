"""Process logging: one line per record, as text for people or as JSON for log pipelines.

A record may carry structured facts in `fields` (a dict given with `extra={"fields": ...}`, as the access
log does): the text format appends them as ` key=value`, the JSON format makes them keys of the object.
Exception texts are redacted (bridge.redaction) in both formats, since they may quote upstream text.

httpx writes a line per upstream request at INFO, a second line per call next to the access line, and
httpcore narrates every socket event at DEBUG: both are held at WARNING whatever `--log-level` says.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Final, Literal, TextIO

from bridge.redaction import redact

__all__ = ["JsonFormatter", "LogFormat", "TextFormatter", "setup_logging"]

LogFormat = Literal["json", "text"]
_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

_QUIET_LOGGERS: Final = ("httpx", "httpcore")
# One encoder for every line: json.dumps with options builds a new one per call.
_ENCODE: Final = json.JSONEncoder(ensure_ascii=False, default=str, separators=(", ", ": ")).encode
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _fields(record: logging.LogRecord) -> Mapping[str, object]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER: message key=value ...` (strings quoted with repr, so spaces stay readable)."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = _fields(record)
        if not fields:
            return line
        pairs = " ".join(
            f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
            for key, value in fields.items()
        )
        return f"{line} {pairs}"

    def formatException(self, ei: _ExcInfo) -> str:
        return redact(super().formatException(ei))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ms), level, logger, message, the record's fields, and
    `exception` (its traceback, redacted) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            entry.setdefault(key, value)  # the fixed keys win: a field cannot forge the level
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return _ENCODE(entry)


def setup_logging(level: str, log_format: LogFormat, stream: TextIO | None = None) -> None:
    """Logs of this process at `level` and above, in `log_format`, to `stream` (default stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
