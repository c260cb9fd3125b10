"""The access line's own CPU inside a live bridge, by the thread's CPU clock, checkouts interleaved.

    .venv/bin/python bench/line_probe.py --baseline /work/wt/s33-base     # this checkout against another

Why: bench/pair.py reads the line as the difference of two bridges' CPU per call, whose spread on this
box (about +-20 us per call) is wider than the row it reads. This measures the line's own code where it
runs: a bridge with default settings (the line on at INFO) in front of the mock gateway, driven by
bench/loadgen.py (unary, `--concurrency`, `--seconds`), with bench/line_probe_hook on its PYTHONPATH,
which sums `time.thread_time_ns` around `AccessLog._write` (on the call's path) and `LineHandler.flush`
(the handler's batch: lines made and written). Per checkout and round: write µs per call (minus the
probe's own cost, an empty wrapped call timed at the same place), flush µs per line, their total.
What it leaves out: what the line does to the rest of the process (caches, collections); what it
overstates: the code right after each clock read runs a little colder (the clock is a system call).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import workload

ROOT = Path(__file__).resolve().parent.parent
HOOK = ROOT / "bench" / "line_probe_hook"


def probe(tree: Path, seconds: float, concurrency: int) -> dict[str, float]:
    """One bridge of `tree` probed under load: µs per call of `_write`, per line of the flushes."""
    python = str(tree / ".venv/bin/python")
    mock_port, port = workload.free_port(), workload.free_port()
    sums = Path(tempfile.mkdtemp(prefix="line-probe-")) / "sums.json"
    env = {**os.environ, "PYTHONPATH": str(HOOK), "LINE_PROBE": str(sums)}
    mock = subprocess.Popen(
        [python, "-m", "bridge.cli", "mock-gateway", "--log-level", "WARNING",
         "--listen", f"127.0.0.1:{mock_port}"],
        cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    bridge = subprocess.Popen(
        [python, "-m", "bridge.cli", "serve", "--listen", f"127.0.0.1:{port}",
         "--upstream-url", f"http://127.0.0.1:{mock_port}/v1"],
        cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(3.0)  # both up (loadgen's warm-up then waits for the first calls)
        subprocess.run(
            [sys.executable, str(ROOT / "bench/loadgen.py"), "--mode", "grpc-unary", "--target",
             f"127.0.0.1:{port}", "-c", str(concurrency), "-z", str(seconds), "--warmup", "2"],
            check=True, capture_output=True, cwd=ROOT,
        )  # fmt: skip
        time.sleep(0.5)
        got: dict[str, list[int]] = json.loads(sums.read_text())
    finally:
        for process in (bridge, mock):
            process.terminate()
            process.wait()
    (write, calls), (flush, _), (empty, empties) = got["write"], got["flush"], got["empty"]
    return {
        "write_us": (write - empty * calls / empties) / calls / 1e3,
        "flush_us_per_line": flush / calls / 1e3,
        "probe_us": empty / empties / 1e3,
        "calls": calls,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout (its own .venv)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--output", type=Path, help="a JSON file of every round")
    args = parser.parse_args()
    trees = {"this": ROOT, "baseline": args.baseline.resolve()}
    rounds: list[dict[str, Any]] = []
    for number in range(args.rounds):
        for name, tree in trees.items():
            result = probe(tree, args.seconds, args.concurrency) | {"checkout": name, "round": number + 1}
            rounds.append(result)
            total = result["write_us"] + result["flush_us_per_line"]
            print(
                f"round {number + 1} {name:8s} write {result['write_us']:6.2f}  flush per line "
                f"{result['flush_us_per_line']:6.2f}  total {total:6.2f} µs  "
                f"(probe {result['probe_us']:.2f}, {result['calls']} calls)",
                flush=True,
            )
    for name in trees:
        totals = [r["write_us"] + r["flush_us_per_line"] for r in rounds if r["checkout"] == name]
        print(f"{name}: total µs per call, median {statistics.median(totals):.2f} (rounds {totals})")
    if args.output:
        args.output.write_text(json.dumps({"rounds": rounds}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
