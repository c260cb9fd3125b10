"""bench/line_probe.py's hook, on a bridge's PYTHONPATH with LINE_PROBE=<file>: the thread's CPU time of
the access line, `AccessLog._write` (on the call's path) and `LineHandler.flush` (the handler's batch: the
lines made and written), summed with their counts into <file> every 20 flushes. The probe's own cost is
measured by an empty function wrapped the same way and called where `_write` is."""

import json
import os
import time

_OUT = os.environ.get("LINE_PROBE")

if _OUT:
    try:
        from bridge.rpc import access as _module
    except ImportError:  # a checkout before session 33: the access log in bridge.rpc.interceptors
        from bridge.rpc import interceptors as _module  # type: ignore[no-redef]
    from bridge import logs as _logs

    _clock = time.thread_time_ns
    _sums = {"write": [0, 0], "flush": [0, 0], "empty": [0, 0]}

    def _timed(function, key):
        def timed(*args):
            start = _clock()
            result = function(*args)
            total = _sums[key]
            total[0] += _clock() - start
            total[1] += 1
            return result

        return timed

    _empty = _timed(lambda: None, "empty")
    _write = _timed(_module.AccessLog._write, "write")

    def _probed_write(self, call):
        _empty()
        return _write(self, call)

    _flush = _timed(_logs.LineHandler.flush, "flush")
    _flushes = [0]

    def _probed_flush(self):
        _flush(self)
        _flushes[0] += 1
        if _flushes[0] % 20 == 0:
            with open(_OUT, "w") as out:
                json.dump(_sums, out)

    _module.AccessLog._write = _probed_write
    _logs.LineHandler.flush = _probed_flush
