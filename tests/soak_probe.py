"""`prisme-bridge` for the soak tests (`python -m tests.soak_probe serve ...`): the real command line, and
on SIGUSR1 the number of asyncio tasks of its event loop printed to stderr (`soak-probe asyncio_tasks=N`),
which /proc cannot show (it counts threads)."""

from __future__ import annotations

import asyncio
import signal
import sys

from bridge.cli import main


class _ProbedLoops(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        loop.add_signal_handler(signal.SIGUSR1, _report)
        return loop


def _report() -> None:
    print(f"soak-probe asyncio_tasks={len(asyncio.all_tasks())}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.set_event_loop_policy(_ProbedLoops())
    raise SystemExit(main(sys.argv[1:]))
