"""The access line's own cost inside one bridge: the same process measured with its line on and off.

    .venv/bin/python bench/toggle.py                       # bridge-default, unary (~4 min)
    .venv/bin/python bench/toggle.py --a-a                 # the method's own bias: both halves "on"

Why: bench/pair.py compares two processes, and two processes of the same code differ by a few % for
their lifetime (memory layout, hash seed, where their threads land): its A/A pairs read 0 within about
+-20 us per call on this box, more than the 10 us the access-line row asks to show. Here one bridge
(`--target`, default settings: INFO) serves every window, and the line is switched between windows by a
signal (bench/toggle_hook, on the bridge's PYTHONPATH: SIGUSR1 sets the `bridge.access` logger to
WARNING, where a call's line ends at its level check as with `--log-level WARNING`; SIGUSR2 unsets it
again). Windows come in pairs, "on" then "off" or "off" then "on" (alternating, so a steady drift of the
box cancels); after each switch `--settle` seconds are not counted (the lines of the last 50 ms are
written by the handler's batch, which belongs to the window before).

Load: this process's grpc.aio client (bench/loadgen.py's call) starting `--rate` calls per second, each
in its own task, however long they take (an open loop, below the bridge's capacity: both halves of a
pair serve the same calls per second, so the bridge's fixed costs per second are spread alike, and the
box is not oversubscribed). CPU per call from the scheduler's ns accounting of the bridge's threads
(bench/run.py's Proc.run_seconds) over the calls that ended in the window. Per pair the difference on -
off; over `--sets` fresh processes (each its own layout) the median of all pairs, its 95 % bootstrap
interval and the quartiles (bench/pair.py's summary). `--a-a` sends SIGUSR2 for both halves (the line on
in both): the same sequence of windows and signals, which must read 0 within its interval.

Each set's log is checked afterwards: the access lines written must match the calls that ended with the
line on (a switch that did not take would measure nothing); a window whose calls fell short of the rate
is reported (the bridge saturated: lower `--rate`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen, pair, run, workload

HOOK = Path(__file__).resolve().parent / "toggle_hook"
OFF, ON = signal.SIGUSR1, signal.SIGUSR2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )  # fmt: skip
    parser.add_argument("--target", type=lambda key: run.target_of(key).key, default="bridge-default")
    parser.add_argument("--rpc", choices=["unary", "stream"], default="unary", help="per call or per chunk")
    parser.add_argument(
        "--rate", type=float, default=400.0, help="calls started per second, steadily (default 400)"
    )
    parser.add_argument("--pairs", type=int, default=20, help="on/off pairs of windows per set (default 20)")
    parser.add_argument("--sets", type=int, default=3, help="bridge processes started afresh (default 3)")
    parser.add_argument("--window", type=float, default=1.5, help="seconds per window (default 1.5)")
    parser.add_argument("--settle", type=float, default=0.3, help="driven, not counted, after a switch")
    parser.add_argument("--warmup", type=float, default=3.0, help="driven, not counted, per set")
    parser.add_argument("--a-a", action="store_true", help="both halves on: the method's own bias")
    parser.add_argument("--baseline", type=Path, metavar="DIR", help="the checkout @base targets run from")
    parser.add_argument("--output", type=Path, help="default bench/results/<UTC time>-toggle.json")
    args = parser.parse_args(argv)
    run.BASELINE = args.baseline
    return args


def start(bench: run.Bench, target: run.Target) -> run.Proc:
    mock = run.start_mock(bench)
    address = f"127.0.0.1:{workload.free_port()}"
    path = os.pathsep.join(filter(None, [str(HOOK), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "PRISME_BENCH_TOGGLE": "1"}
    cmd = run.bridge_cmd(target, address, mock.address)
    bench.start("a", cmd, address, cwd=run.checkout_of(target), env=env)
    run._check_grpc(bench.procs["a"])
    return bench.procs["a"]


async def measure_set(bridge: run.Proc, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    """`--pairs` pairs of windows on the running bridge, under a steady `--rate`; and the calls that
    ended while its line was on."""
    import grpc

    async with grpc.aio.insecure_channel(bridge.address) as channel:
        load = Paced(loadgen.grpc_call(channel, stream=args.rpc == "stream"), args.rate)
        pacer = asyncio.create_task(load.run())
        await asyncio.sleep(args.warmup)  # the line on (the bridge's default)
        lines_due = load.ended()

        async def half(state: signal.Signals) -> dict[str, Any]:
            nonlocal lines_due
            os.kill(bridge.popen.pid, ON if args.a_a else state)
            before = load.ended()
            await asyncio.sleep(args.settle)
            calls0, chunks0, errors0, ended0 = load.calls, load.chunks, load.errors, load.ended()
            cpu0, busy0, t0, self0 = (
                bridge.run_seconds(),
                run._system_busy()[0],
                time.monotonic(),
                time.process_time(),
            )
            await asyncio.sleep(args.window)
            wall, cpu = time.monotonic() - t0, bridge.run_seconds() - cpu0
            ours = cpu + time.process_time() - self0
            calls, errors = load.calls - calls0, load.errors - errors0
            units = calls + errors if args.rpc == "unary" else load.chunks - chunks0
            if state is ON or args.a_a:
                lines_due += load.ended() - before
            return {
                "calls": calls, "errors": errors, "units": units, "cpu_s": round(cpu, 4),
                "us_per_unit": cpu / units * 1e6 if units else None,
                "rate": round((load.ended() - ended0) / wall, 1),
                "other_cores": round(max(0.0, (run._system_busy()[0] - busy0 - ours) / wall), 3),
            }  # fmt: skip

        windows = []
        for i in range(args.pairs):
            order = (ON, OFF) if i % 2 == 0 else (OFF, ON)
            halves = {state: await half(state) for state in order}
            w = {
                "order": "on-off" if order[0] is ON else "off-on",
                "other_cores": max(halves[ON]["other_cores"], halves[OFF]["other_cores"]),
                "a": halves[ON], "b": halves[OFF],
            }  # fmt: skip
            windows.append(w)
            pair._report(i, w)
        os.kill(bridge.popen.pid, ON)
        before = load.ended()
        await load.stop(pacer)
        return windows, lines_due + load.ended() - before


class Paced:
    """Calls started at a steady `rate` per second, each in its own task, however long they take (an
    open loop: both halves of a pair serve the same calls per second, so the bridge's fixed costs per
    second are spread alike)."""

    def __init__(self, call: loadgen.CallFn, rate: float) -> None:
        self._call, self._period = call, 1.0 / rate
        self.calls = self.errors = self.chunks = 0
        self._stopping = False

    def ended(self) -> int:
        return self.calls + self.errors

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        due = loop.time()
        while not self._stopping:
            task = asyncio.create_task(self._one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += self._period
            await asyncio.sleep(max(0.0, due - loop.time()))
        await asyncio.gather(*tasks)

    async def stop(self, pacer: asyncio.Task[None]) -> None:
        self._stopping = True
        await pacer

    async def _one(self) -> None:
        try:
            _, _, chunks = await self._call()
        except Exception:
            self.errors += 1
        else:
            self.calls += 1
            self.chunks += chunks


def _line(args: argparse.Namespace, result: dict[str, Any], pairs: int) -> str:
    unit = "call" if args.rpc == "unary" else "chunk"
    low, high = result["diff_us_ci95"]
    what = "on - on (A/A)" if args.a_a else "on - off"
    q1, q3 = result["diff_us_quartiles"]
    return (
        f"{args.target} access line {what}: {result['diff_us_median']:+.1f} µs CPU per {unit} (median of "
        f"{pairs} pairs; 95 % CI of the median {low:+.1f} .. {high:+.1f}; quartiles {q1:+.1f} .. {q3:+.1f}); "
        f"on {result['a_us_median']:.1f}, off {result['b_us_median']:.1f} µs, ratio "
        f"{result['ratio_median']:.4f}; outside load up to {result['other_cores_max']:.2f} cores"
    )


def lines_written(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if '"bridge.access"' in line)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    target = run.target_of(args.target)
    if not target.default_settings:
        raise SystemExit(f"{args.target}: the access line must be on (a target with default settings)")
    logdir = Path(tempfile.mkdtemp(prefix="prisme-toggle-"))
    bench = run.Bench(args, logdir)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    windows, checks = [], []
    for number in range(args.sets):
        with run.running(bench):
            bridge = start(bench, target)
            print(
                f"set {number + 1}: {args.target} up (pid {bridge.popen.pid}), log {bridge.log}",
                file=sys.stderr,
            )
            import uvloop  # the client's own CPU kept low (a dependency of the bridge)

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                got, due = runner.run(measure_set(bridge, args))
            windows += got
            log = bridge.log
        written = lines_written(log)  # the bridge stopped: every waiting line written
        checks.append({"set": number + 1, "lines_written": written, "calls_with_line_on": due})
    result = pair.summary(windows)
    print(_line(args, result, len(windows)))
    for check in checks:
        print(f"  set {check['set']}: {check['lines_written']} access lines written for "
              f"{check['calls_with_line_on']} calls ended with the line on", file=sys.stderr)  # fmt: skip
    short = [w for w in windows for half in (w["a"], w["b"]) if half["rate"] < 0.95 * args.rate]
    if short:
        print(
            f"  {len(short)} windows below 95 % of --rate {args.rate:g}: saturated, lower it", file=sys.stderr
        )
    output = args.output or run.RESULTS / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-toggle.json"
    meta = {"started": started, "toggle": vars(args) | {"baseline": str(args.baseline), "output": None}}
    meta["commit"] = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=run.checkout_of(target), capture_output=True, text=True
    ).stdout.strip()
    saved = {"meta": meta, "summary": result, "checks": checks, "windows": windows}
    output.write_text(json.dumps(saved, indent=2, default=str) + "\n")
    print(f"wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
