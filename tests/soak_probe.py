"""`prisme-bridge` for the soak tests (`python -m tests.soak_probe serve ...`): the real command line, and
on SIGUSR1 the number of asyncio tasks of its event loop printed to stderr (`soak-probe asyncio_tasks=N`),
which /proc cannot show (it counts threads). Every event loop the command makes (uvloop or asyncio, as
`--event-loop` says) gets the handler: bridge.eventloop's loop factory is wrapped."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

from bridge import eventloop
from bridge.cli import main

_make_factory = eventloop._factory


def _probed_factory(name: eventloop.EventLoopName) -> Callable[[], asyncio.AbstractEventLoop]:
    make = _make_factory(name) or asyncio.new_event_loop

    def new_event_loop() -> asyncio.AbstractEventLoop:
        loop = make()
        loop.add_signal_handler(signal.SIGUSR1, _report)
        return loop

    return new_event_loop


def _report() -> None:
    print(f"soak-probe asyncio_tasks={len(asyncio.all_tasks())}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    eventloop._factory = _probed_factory
    raise SystemExit(main(sys.argv[1:]))
