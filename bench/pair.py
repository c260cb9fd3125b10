"""Two bridges measured at the same time: the CPU per call of A minus B, paired window by window.

    .venv/bin/python bench/pair.py --a bridge-default --b bridge          # the access line's own cost
    .venv/bin/python bench/pair.py --a bridge --b bridge                  # A/A: must read 0 +- its spread
    .venv/bin/python bench/pair.py --a bridge-default --b bridge-default@base --baseline DIR   # a change

Why: bench/run.py measures its targets one after the other, and on this shared 2-core box the CPU per
call of one target drifts by +-20 % between points seconds to minutes apart; the difference of two such
points cannot show a 10 us cost. Here both bridges run side by side in front of one mock gateway (bench/
run.py's processes), started together, and are driven in the same windows, so whatever the box does
meanwhile hits both alike. Load (`--generator`): by default one grpc.aio client in this process whose
workers call A then B in turn (half of them B then A), so both bridges serve exactly the same number of
calls at the same pace in every window (with a load generator each, a bridge that got less of the CPU
served fewer calls and paid its fixed per-second costs over fewer of them: -350..+750 us per window in an
A/A pair); or `separate`, each bridge its own Go load generator (bench/run.py's), the start order swapped
every window. Per window: each process's CPU time (the scheduler's nanosecond accounting of its
threads, /proc/PID/task/*/schedstat, not utime/stime: those are 10 ms ticks charged to whoever runs when a
tick lands) divided by the calls it served (every call started in the window, the last ones finished),
and the difference A - B. Many short windows, over `--sets` pairs of processes started afresh, give the
median of the paired differences, a 95 % bootstrap interval of that median and the quartiles. An A/A
pair (the same target twice) shows the method's own bias and spread: run it before trusting an A/B.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run, workload


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )  # fmt: skip
    target = lambda key: run.target_of(key).key  # noqa: E731
    parser.add_argument(
        "--a", type=target, default="bridge-default", help="bridge target A, or minimal (%(default)s)"
    )
    parser.add_argument(
        "--b", type=target, default="bridge", help="bridge target B, or minimal (%(default)s)"
    )
    parser.add_argument(
        "--rpc",
        choices=["unary", "stream", "paced"],
        default="unary",
        help="per call (unary), per chunk of 64-chunk streams (stream), or per chunk of paced streams "
        "(bench/run.py's paced scenario: one token per read, 100 ms apart; use a --window of 10 s or more)",
    )
    parser.add_argument(
        "--generator",
        choices=["lockstep", "separate"],
        default="lockstep",
        help="lockstep (default): one client whose workers call A then B in turn, so both serve the same "
        "calls at the same pace; separate: each bridge its own Go/ghz load generator (bench/run.py's)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="separate: calls in flight per bridge; lockstep: workers (default 16)",
    )
    parser.add_argument("--windows", type=int, default=15, help="paired windows per set (default 15)")
    parser.add_argument(
        "--sets",
        type=int,
        default=2,
        help="times both bridges are started afresh, each set measured over --windows (default 2): two "
        "processes of the same code can differ by a few %% for their lifetime (memory layout, hash seed), "
        "a bias that new processes spread",
    )
    parser.add_argument("--window", type=float, default=2.0, help="seconds per window (default 2)")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="both driven, not counted, per set (default 3 s)"
    )
    parser.add_argument(
        "--hash-seed",
        choices=["random", "per-set"],
        default="random",
        help="random (default): each bridge its own PYTHONHASHSEED; per-set: both bridges of set N run "
        "with PYTHONHASHSEED=N (the same dict and set layouts on both sides, a new one per set)",
    )
    parser.add_argument("--baseline", type=Path, metavar="DIR", help="the checkout @base targets run from")
    parser.add_argument("--output", type=Path, help="default bench/results/<UTC time>-pair.json")
    args = parser.parse_args(argv)
    run.BASELINE = args.baseline
    for key in (args.a, args.b):
        if not (key.startswith("bridge") or key == "minimal"):
            parser.error(f"{key}: bridge targets and minimal only")
        baseline_ok = args.baseline is not None and (args.baseline / ".venv").exists()
        if key.endswith(run.BASELINE_SUFFIX) and not baseline_ok:
            parser.error(f"{key} needs --baseline DIR, a checkout with its own .venv")
    return args


@dataclasses.dataclass
class Side:
    name: str  # "a" or "b": the process's name in the Bench
    target: run.Target


def start(bench: run.Bench, sides: list[Side], hash_seed: int | None) -> None:
    mock = run.start_mock(bench)
    env = None if hash_seed is None else {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    for side in sides:
        address = f"127.0.0.1:{workload.free_port()}"
        if side.target.key == "minimal":
            cmd = run.minimal_cmd(address, mock.address)
        else:
            cmd = run.bridge_cmd(side.target, address, mock.address)
        bench.start(side.name, cmd, address, cwd=run.checkout_of(side.target), env=env)
    for side in sides:
        run._check_grpc(bench.procs[side.name])


def window(
    bench: run.Bench, gen: run.Generators, sides: list[Side], args: argparse.Namespace, seconds: float
) -> dict[str, Any]:
    """Both bridges driven at once for `seconds`: per side its calls (chunks) and CPU µs per call (chunk)."""
    cmds = {}
    for side in sides:
        address = bench.procs[side.name].address
        _, cmd, fmt = run.generator_cmds(gen, side.target, address, args.rpc, args.concurrency, seconds, 0.0)
        cmds[side.name] = (cmd, fmt)
    procs = list(bench.procs.values())
    cpu0 = {p.name: p.run_seconds() for p in procs}
    busy0, children0, t0 = run._system_busy()[0], run._children_cpu(), time.monotonic()
    running = {
        name: subprocess.Popen(cmd, cwd=run.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (cmd, _) in cmds.items()
    }
    outputs = {name: popen.communicate() for name, popen in running.items()}
    wall = time.monotonic() - t0
    cpu = {p.name: p.run_seconds() - cpu0[p.name] for p in procs}
    ours = sum(cpu.values()) + run._children_cpu() - children0
    result: dict[str, Any] = {
        "order": list(cmds),
        "wall_s": round(wall, 3),
        "other_cores": round(max(0.0, (run._system_busy()[0] - busy0 - ours) / wall), 3),
    }
    for name, (stdout, stderr) in outputs.items():
        if running[name].returncode != 0:
            raise RuntimeError(f"load generator of {name} failed:\n{stderr[-3000:]}")
        raw = json.loads(stdout)
        parsed = run._parse_ghz(raw) if cmds[name][1] == "ghz" else raw
        units = parsed["count"] + parsed["errors"]  # every call it made, finished
        if args.rpc != "unary":
            units = parsed.get("chunks") or 0
        result[name] = {
            "calls": parsed["count"],
            "errors": parsed["errors"],
            "units": units,
            "cpu_s": round(cpu[name], 4),
            "us_per_unit": cpu[name] / units * 1e6 if units else None,
        }
    return result


async def lockstep_windows(
    bench: run.Bench,
    sides: list[Side],
    args: argparse.Namespace,
    report: Callable[[int, dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """`--generator lockstep`: one grpc.aio client in this process (bench/loadgen.py's), each of its
    `--concurrency` workers calling A then B, again and again, so both bridges serve the same calls at the
    same pace (their counts equal, whatever the box does): half the workers start with B."""
    import grpc

    from bench import loadgen

    async with contextlib.AsyncExitStack() as stack:
        calls = {}
        for side in sides:
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(bench.procs[side.name].address)
            )
            paced = args.rpc == "paced"
            calls[side.name] = loadgen.grpc_call(channel, stream=args.rpc != "unary", paced=paced)
        first, second = calls["a"], calls["b"]

        async def a_then_b() -> loadgen.Sample:
            one = await first()
            two = await second()
            return one[0] + two[0], 0.0, one[2] + two[2]

        async def b_then_a() -> loadgen.Sample:
            two = await second()
            one = await first()
            return one[0] + two[0], 0.0, one[2] + two[2]

        async def drive(seconds: float) -> tuple[list[loadgen.Sample], int]:
            half = args.concurrency // 2
            runs = await asyncio.gather(
                loadgen.drive(a_then_b, args.concurrency - half, seconds),
                loadgen.drive(b_then_a, half, seconds),
            )
            return [s for samples, _, _ in runs for s in samples], sum(sum(e.values()) for _, e, _ in runs)

        if args.warmup > 0:
            await drive(args.warmup)
        windows = []
        procs = list(bench.procs.values())
        for i in range(args.windows):
            cpu0 = {p.name: p.run_seconds() for p in procs}
            busy0, t0 = run._system_busy()[0], time.monotonic()
            self0 = time.process_time()
            samples, errors = await drive(args.window)
            wall = time.monotonic() - t0
            cpu = {p.name: p.run_seconds() - cpu0[p.name] for p in procs}
            ours = sum(cpu.values()) + time.process_time() - self0
            w: dict[str, Any] = {
                "order": "lockstep",
                "wall_s": round(wall, 3),
                "other_cores": round(max(0.0, (run._system_busy()[0] - busy0 - ours) / wall), 3),
            }
            units = len(samples) if args.rpc == "unary" else sum(s[2] for s in samples) // 2
            for side in sides:
                w[side.name] = {
                    "calls": len(samples),
                    "errors": errors,
                    "units": units,
                    "cpu_s": round(cpu[side.name], 4),
                    "us_per_unit": cpu[side.name] / units * 1e6 if units else None,
                }
            windows.append(w)
            report(i, w)
        return windows


def summary(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of the paired differences A - B (µs per unit), its 95 % bootstrap interval, the quartiles."""
    diffs = [w["a"]["us_per_unit"] - w["b"]["us_per_unit"] for w in windows]
    rng = random.Random(22)  # a fixed seed: the same file gives the same interval
    medians = sorted(statistics.median(rng.choices(diffs, k=len(diffs))) for _ in range(2000))
    quartiles = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else [diffs[0]] * 3
    a = statistics.median(w["a"]["us_per_unit"] for w in windows)
    b = statistics.median(w["b"]["us_per_unit"] for w in windows)
    ratios = [w["a"]["us_per_unit"] / w["b"]["us_per_unit"] for w in windows]
    ratio_medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return {
        "diff_us_median": statistics.median(diffs),
        "diff_us_ci95": [medians[49], medians[1949]],
        "diff_us_quartiles": [quartiles[0], quartiles[2]],
        "diff_us_min_max": [min(diffs), max(diffs)],
        "a_us_median": a,
        "b_us_median": b,
        "ratio_median": statistics.median(ratios),
        "ratio_ci95": [ratio_medians[49], ratio_medians[1949]],
        "other_cores_max": max(w["other_cores"] for w in windows),
    }


def measure_set(
    bench: run.Bench, gen: run.Generators, sides: list[Side], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """`--windows` paired windows on the two bridges now running."""
    if args.generator == "lockstep":
        import uvloop  # the client's own CPU kept low (a dependency of the bridge)

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(lockstep_windows(bench, sides, args, _report))
    if args.warmup > 0:
        window(bench, gen, sides, args, args.warmup)
    windows = []
    for i in range(args.windows):
        order = sides if i % 2 == 0 else sides[::-1]  # who starts first swapped every window
        windows.append(window(bench, gen, order, args, args.window))
        _report(i, windows[-1])
    return windows


def _report(i: int, w: dict[str, Any]) -> None:
    print(
        f"  window {i + 1:>3}: a {w['a']['us_per_unit']:8.1f}  b {w['b']['us_per_unit']:8.1f}  "
        f"a-b {w['a']['us_per_unit'] - w['b']['us_per_unit']:+7.1f} µs  "
        f"({w['a']['calls']}+{w['b']['calls']} calls, other {w['other_cores']:.2f} cores)",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    protoset, request_bin, stream_request_bin = run.build_inputs()
    gen = run.Generators(run.find_ghz(), run.build_streamgen(), protoset, request_bin, stream_request_bin)
    sides = [Side("a", run.target_of(args.a)), Side("b", run.target_of(args.b))]
    logdir = Path(tempfile.mkdtemp(prefix="prisme-pair-"))
    bench = run.Bench(args, logdir)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    windows = []
    for number in range(args.sets):
        ordered = sides if number % 2 == 0 else sides[::-1]  # which of the two starts first, swapped
        with run.running(bench):
            start(bench, ordered, number + 1 if args.hash_seed == "per-set" else None)
            print(f"set {number + 1}: {args.a} (a) and {args.b} (b) up, logs in {logdir}", file=sys.stderr)
            windows += measure_set(bench, gen, sides, args)
    result = summary(windows)
    unit = "call" if args.rpc == "unary" else "chunk"
    low, high = result["diff_us_ci95"]
    print(
        f"{args.a} - {args.b}: {result['diff_us_median']:+.1f} µs CPU per {unit} (median of {len(windows)} "
        f"paired windows; 95 % CI of the median {low:+.1f} .. {high:+.1f}; quartiles "
        f"{result['diff_us_quartiles'][0]:+.1f} .. {result['diff_us_quartiles'][1]:+.1f}); "
        f"a {result['a_us_median']:.1f}, b {result['b_us_median']:.1f} µs, "
        f"ratio {result['ratio_median']:.3f} (95 % CI {result['ratio_ci95'][0]:.3f} .. "
        f"{result['ratio_ci95'][1]:.3f}); "
        f"outside load up to {result['other_cores_max']:.2f} cores"
    )
    meta = run.metadata(argparse.Namespace(
        quick=False, duration=args.window, warmup=args.warmup, concurrency=[args.concurrency],
        stream_concurrency=[], paced_concurrency=[], repeat=args.windows, targets=[args.a, args.b],
        quiet_threshold=None, quiet_wait=None, quiet_budget=None, noise_flag=None, goal_target=args.a,
        capacity_concurrency=[], idle_streams=0, generator="auto",
    ), gen)  # fmt: skip
    meta.update(started=started, pair=vars(args) | {"baseline": str(args.baseline), "output": None})
    output = args.output or run.RESULTS / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-pair.json"
    saved = {"meta": meta, "summary": result, "windows": windows}
    output.write_text(json.dumps(saved, indent=2, default=str) + "\n")
    print(f"wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
