"""bench/toggle.py's switch inside the bridge it measures: loaded through PYTHONPATH, and only when
PRISME_BENCH_TOGGLE is set (any other process that finds it on its path is left alone).

SIGUSR1 turns the access line off (the `bridge.access` logger at WARNING: its calls end at the level
check, as with `--log-level WARNING`), SIGUSR2 on again (the level unset: the process's own, INFO by
default). The bridge itself handles neither signal."""

import logging
import os
import signal

if os.environ.get("PRISME_BENCH_TOGGLE"):

    def _switch(signum: int, frame: object) -> None:
        level = logging.WARNING if signum == signal.SIGUSR1 else logging.NOTSET
        logging.getLogger("bridge.access").setLevel(level)  # clears the loggers' level caches

    signal.signal(signal.SIGUSR1, _switch)
    signal.signal(signal.SIGUSR2, _switch)
