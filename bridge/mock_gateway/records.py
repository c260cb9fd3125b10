"""The mock gateway's record of the requests it received (chat, models, embeddings), which tests read and
can await."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

__all__ = ["RECORD_LIMIT", "Json", "RequestLog"]

Json = dict[str, Any]
RECORD_LIMIT: Final = 1000


class RequestLog:
    """The last ``RECORD_LIMIT`` requests to the gateway's routes, oldest first."""

    def __init__(self, limit: int = RECORD_LIMIT) -> None:
        self._records: deque[Json] = deque(maxlen=limit)
        self._ids = itertools.count(1)
        self._waiters: list[tuple[Callable[[Json], bool], asyncio.Future[Json]]] = []

    def start(self, request: web.Request, body: Any) -> Json:
        fields = body if isinstance(body, dict) else {}
        record: Json = {
            "id": next(self._ids),
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,  # as sent: percent-encoding and query string kept
            "query": dict(request.query),
            "headers": {name.lower(): value for name, value in request.headers.items()},
            "body": body,
            "stream": fields.get("stream") is True,
            "model": fields.get("model"),
            "started_at": time.time(),
            "ended_at": None,
            "outcome": "in_progress",
        }
        self._records.append(record)
        self._changed(record)
        return record

    def finish(self, record: Json, outcome: str) -> None:
        record["ended_at"] = time.time()
        record["outcome"] = outcome
        self._changed(record)

    async def wait_for(self, predicate: Callable[[Json], bool]) -> Json:
        """The first record (a copy) for which `predicate` holds, now or once a record starts or ends.
        Bound it with `asyncio.timeout`."""
        for record in self._records:
            if predicate(record):
                return dict(record)
        waiter = asyncio.get_running_loop().create_future()
        entry = (predicate, waiter)
        self._waiters.append(entry)
        try:
            found: Json = await waiter
            return found
        finally:
            self._waiters.remove(entry)

    def _changed(self, record: Json) -> None:
        for predicate, waiter in self._waiters:
            if not waiter.done() and predicate(record):
                waiter.set_result(dict(record))

    def snapshot(self) -> list[Json]:
        return [dict(record) for record in self._records]

    def get(self, request_id: int) -> Json | None:
        return next((dict(r) for r in self._records if r["id"] == request_id), None)

    def clear(self) -> None:
        self._records.clear()
