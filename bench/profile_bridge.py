"""Where the bridge's time goes: the real bridge, in this process under a profiler, driven by the Go load.

    .venv/bin/python bench/profile_bridge.py --rpc unary  --observed
    .venv/bin/python bench/profile_bridge.py --rpc stream --transport httpx --event-loop asyncio

Needs `pyinstrument` in the venv (`.venv/bin/pip install pyinstrument`; not a project dependency) unless
--profiler cprofile. The mock gateway runs as its own process; the bridge is built with
`bridge.app.build_bridge` (what `prisme-bridge serve` runs) at log level WARNING (with `--observed`: metrics
on and INFO JSON access lines, written to /dev/null), on the event loop `--event-loop` names; the load is ghz
(unary) or bench/streamgen (stream, the 64-chunk request) for `--seconds`, after a warm-up that is not
profiled.

Only the main thread is profiled: the event loop, where all Python code of the bridge runs (gRPC's C
core threads are not shown). Time is reported as a share of the loop's *busy* time, i.e. without the
time it sat idle in epoll. Self time is grouped by package, then the top functions are listed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import os
import pstats
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run as bench_run  # noqa: E402
from bench import workload  # noqa: E402
from bridge import eventloop  # noqa: E402
from bridge.eventloop import DEFAULT_EVENT_LOOP  # noqa: E402
from bridge.http.transports.base import DEFAULT_TRANSPORT, TRANSPORT_NAMES  # noqa: E402

# (path fragment, category), first match wins
CATEGORIES: list[tuple[str, str]] = [
    ("/bridge/chat/convert.py", "bridge.chat.convert (proto<->JSON conversion)"),
    ("/bridge/jsoncodec.py", "json (stdlib + _json)"),
    ("/bridge/jsonproto.py", "bridge.chat.convert (proto<->JSON conversion)"),
    ("/bridge/http/sse.py", "bridge.http.sse (SSE decoder)"),
    ("/bridge/http/", "bridge.http (client, transport, guards)"),
    ("/bridge/rpc/", "bridge.rpc (interceptor chain, access log)"),
    ("/bridge/chat/", "bridge validation/headers/errors/service"),
    ("/bridge/upstream/", "bridge validation/headers/errors/service"),
    ("/bridge/errors.py", "bridge validation/headers/errors/service"),
    ("/json/", "json (stdlib + _json)"),
    ("_json", "json (stdlib + _json)"),
    ("/logging/", "logging"),
    ("/httpx/", "httpx"),
    ("/httpcore/", "httpcore/h11/anyio (httpx transport)"),
    ("/h11/", "httpcore/h11/anyio (httpx transport)"),
    ("/anyio/", "httpcore/h11/anyio (httpx transport)"),
    ("/sniffio/", "httpcore/h11/anyio (httpx transport)"),
    ("/aiohttp/", "aiohttp (+multidict/yarl)"),
    ("/multidict/", "aiohttp (+multidict/yarl)"),
    ("/yarl/", "aiohttp (+multidict/yarl)"),
    ("/propcache/", "aiohttp (+multidict/yarl)"),
    ("/grpc/", "grpc (aio server, cygrpc)"),
    ("cygrpc", "grpc (aio server, cygrpc)"),
    ("/google/protobuf/", "protobuf"),
    ("/contextlib.py", "contextlib (async context managers)"),
    ("/asyncio/", "asyncio event loop (minus idle)"),
    ("/uvloop/", "asyncio event loop (minus idle)"),
    ("/prometheus_client/", "prometheus-client"),
    ("/selectors.py", "asyncio event loop (minus idle)"),
    ("/socket.py", "asyncio event loop (minus idle)"),
    ("/ssl.py", "asyncio event loop (minus idle)"),
]


def category(path: str) -> str:
    for fragment, name in CATEGORIES:
        if fragment in path:
            return name
    return "other"


async def _load(args: argparse.Namespace, address: str, gen: bench_run.Generators, seconds: float) -> str:
    target = bench_run.target_of("bridge")
    _warm, cmd, _ = bench_run.generator_cmds(gen, target, address, args.rpc, args.c, seconds, 0)
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(err.decode())
    return out.decode()


IDLE = "idle (waiting in epoll)"
LOOP_C = "grpc aio Cython + asyncio C internals"
SOCKET = "socket syscalls (send/recv)"


def _own_category(function: str, path: str) -> str | None:
    """The category of a frame, or None when it belongs to its caller's (C helpers, stdlib helpers)."""
    if path in ("", "~", "<built-in>"):
        if "epoll" in function or function in ("select", "poll"):
            return IDLE
        if "Context" in function and "run" in function:
            # Self time of Context.run (how the loop runs each callback) is code that is not Python
            # frames: grpc.aio's Cython coroutines (call handling, message (de)serialisation) and the C
            # asyncio task/future machinery.
            return LOOP_C
        if "socket" in function and ("send" in function or "recv" in function):
            return SOCKET
        return None  # e.g. json's C scanner belongs to json, isinstance to whoever calls it
    found = category(path)
    return None if found == "other" else found  # stdlib helpers (email, abc, weakref...): the caller's


def report_pyinstrument(
    session: Any, top: int
) -> tuple[dict[str, float], list[tuple[str, float]], float, float]:
    by_cat: dict[str, float] = defaultdict(float)
    by_fn: dict[str, float] = defaultdict(float)

    def walk(frame: Any, parent_cat: str) -> None:
        path = frame.file_path or ""
        cat = _own_category(frame.function, path) or parent_cat
        if not frame.is_synthetic:  # synthetic "[self]" frames are in their parent's total_self_time
            self_time = frame.total_self_time
            if self_time:
                by_cat[cat] += self_time
                if cat != IDLE:
                    where = (
                        "C"
                        if path in ("", "<built-in>")
                        else f"{frame.file_path_short or path}:{frame.line_no}"
                    )
                    by_fn[f"{frame.function} ({where})"] += self_time
        for child in frame.children:
            walk(child, cat)

    walk(session.root_frame(), "other")
    idle = by_cat.pop(IDLE, 0.0)
    busy = sum(by_cat.values())
    return dict(by_cat), sorted(by_fn.items(), key=lambda kv: -kv[1])[:top], busy, idle


def report_cprofile(
    profile: cProfile.Profile, top: int
) -> tuple[dict[str, float], list[tuple[str, float]], float, float]:
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    by_cat: dict[str, float] = defaultdict(float)
    by_fn: dict[str, float] = defaultdict(float)

    def cat_of(func: tuple[str, int, str], depth: int = 0) -> str:
        path, _, fn = func
        own = _own_category(fn, path)
        if own is not None or depth > 6 or func not in stats:
            return own or "other"
        callers = stats[func][4]
        if not callers:
            return "other"
        caller = max(callers.items(), key=lambda kv: kv[1][2])[0]  # the caller it spent most time under
        return cat_of(caller, depth + 1)

    for func, (_cc, _nc, tottime, _ct, _callers) in stats.items():
        path, line, fn = func
        cat = cat_of(func)
        by_cat[cat] += tottime
        if cat != IDLE:
            name = fn if path == "~" else f"{fn} ({'/'.join(Path(path).parts[-2:])}:{line})"
            by_fn[name] += tottime
    idle = by_cat.pop(IDLE, 0.0)
    busy = sum(by_cat.values())
    return dict(by_cat), sorted(by_fn.items(), key=lambda kv: -kv[1])[:top], busy, idle


async def profile(args: argparse.Namespace) -> tuple[str, str]:
    """(summary, the profiler's own full report)."""
    protoset, request_bin, stream_request_bin = bench_run.build_inputs()
    gen = bench_run.Generators(
        bench_run.find_ghz(), bench_run.build_streamgen(), protoset, request_bin, stream_request_bin
    )
    observed = {"metrics_listen": "127.0.0.1:0", "log_level": "INFO"} if args.observed else {}
    settings = {"upstream_transport": args.transport, "log_level": "WARNING", **observed}
    saved = ""
    async with workload.bridge_on_mock(settings) as address:
        await _load(args, address, gen, args.warmup)
        if args.profiler == "pyinstrument":
            from pyinstrument import Profiler

            profiler = Profiler(interval=args.interval, async_mode="disabled")
            profiler.start()
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            thread0 = time.thread_time()
            load = await _load(args, address, gen, args.seconds)
            main_thread = time.thread_time() - thread0
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - t0
            session = profiler.stop()
            by_cat, top, busy, idle = report_pyinstrument(session, args.top)
            saved = profiler.output_text(unicode=False, color=False, show_all=False)
        else:
            # Main-thread CPU time, not wall time: other work on the box must not count.
            prof = cProfile.Profile(time.thread_time_ns, 1e-9)
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            thread0 = time.thread_time()
            prof.enable()
            load = await _load(args, address, gen, args.seconds)
            prof.disable()
            main_thread = time.thread_time() - thread0
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - t0
            by_cat, top, busy, idle = report_cprofile(prof, args.top)
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(60)
            saved = out.getvalue()

    result = json.loads(load)
    lines = [
        f"profile: {args.profiler}, rpc={args.rpc}, transport={args.transport}, loop={args.event_loop}, "
        f"{'observed, ' if args.observed else ''}c={args.c}, "
        f"{args.seconds:g} s; under the profiler: {result['rps']:,.0f} calls/s, "
        f"process CPU {cpu / wall:.2f} cores, "
        f"of which the main (event loop) thread {main_thread / max(cpu, 1e-9):.0%} "
        "(the rest: grpc C-core threads and the profiler's own cost)",
        f"loop busy {busy:.2f} s"
        + (f", idle in epoll {idle:.2f} s" if args.profiler == "pyinstrument" else " (main-thread CPU)"),
        "",
        "self time by package, % of busy loop time:",
    ]
    for name, seconds in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {100 * seconds / busy:5.1f}%  {name}")
    lines += ["", f"top {args.top} functions by self time, % of busy loop time:"]
    for name, seconds in top:
        lines.append(f"  {100 * seconds / busy:5.1f}%  {name}")
    return "\n".join(lines), saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rpc", choices=["unary", "stream", "paced"], default="unary", help="paced: one token per read"
    )
    parser.add_argument("--transport", choices=TRANSPORT_NAMES, default=DEFAULT_TRANSPORT)
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], default=DEFAULT_EVENT_LOOP)
    parser.add_argument("--observed", action="store_true", help="metrics and JSON access lines on")
    parser.add_argument(
        "--profiler",
        choices=["pyinstrument", "cprofile"],
        default="cprofile",
        help="cprofile: deterministic, main-thread CPU time (default); pyinstrument: sampling, wall time",
    )
    parser.add_argument("-c", type=int, default=16, help="calls in flight")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--interval", type=float, default=0.0005, help="pyinstrument sampling interval, s")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--save", help="also write the profiler's own full report to this file")
    args = parser.parse_args()
    if args.observed:
        from bridge.logs import setup_logging

        setup_logging("INFO", "json", open(os.devnull, "w"))  # noqa: SIM115 - for the whole run
    else:
        logging.basicConfig(level=logging.WARNING)
    summary, saved = eventloop.run(profile(args), args.event_loop)
    if args.save:
        Path(args.save).write_text(saved)
    print(summary)


if __name__ == "__main__":
    main()
