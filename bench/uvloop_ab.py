"""Experiment, not part of run.py: the bridge on the asyncio event loop vs on uvloop, A/B, alternating.

uvloop is not a dependency. Install it outside the project venv and put it on PYTHONPATH:

    .venv/bin/pip install --target /tmp/uvloop-exp uvloop
    PYTHONPATH=/tmp/uvloop-exp .venv/bin/python bench/uvloop_ab.py [--rounds 3] [--seconds 6]

Two bridges (aiohttp transport, log level WARNING) run side by side in front of one mock gateway; one is
`prisme-bridge serve` as shipped, the other the same CLI after `uvloop.install()`. bench/streamgen drives
each in turn at c=16 (unary, then stream), for several rounds; prints rates and server CPU per unit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run as bench_run  # noqa: E402
from bench import workload  # noqa: E402

_UVLOOP_MAIN = "import sys, uvloop; uvloop.install(); from bridge.cli import main; sys.exit(main())"


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / bench_run.TICKS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("-c", type=int, default=16)
    args = parser.parse_args()
    import uvloop  # noqa: F401 - fail early when it is not on PYTHONPATH

    _, request_bin = bench_run.build_inputs()
    streamgen = bench_run.build_streamgen()
    if streamgen is None:
        raise SystemExit("needs Go to build bench/streamgen")
    py = sys.executable
    mock_port = workload.free_port()
    upstream = f"http://127.0.0.1:{mock_port}/v1"
    procs = [subprocess.Popen([py, "-m", "bridge.cli", "mock-gateway", "--listen", f"127.0.0.1:{mock_port}",
                               "--log-level", "WARNING"], cwd=ROOT)]  # fmt: skip
    ports: dict[str, int] = {}
    servers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        time.sleep(1.5)
        for loop in ("asyncio", "uvloop"):
            ports[loop] = workload.free_port()
            serve = [
                "serve",
                "--listen",
                f"127.0.0.1:{ports[loop]}",
                "--upstream-url",
                upstream,
                "--log-level",
                "WARNING",
            ]
            cmd = [py, "-m", "bridge.cli", *serve] if loop == "asyncio" else [py, "-c", _UVLOOP_MAIN, *serve]
            servers[loop] = subprocess.Popen(cmd, cwd=ROOT, env=os.environ.copy())
            procs.append(servers[loop])
        time.sleep(3)
        rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for round_ in range(args.rounds):
            for rpc in ("unary", "stream"):
                for loop in ("asyncio", "uvloop"):
                    method = workload.STREAM_METHOD if rpc == "stream" else workload.UNARY_METHOD
                    cpu0, t0 = _cpu(servers[loop].pid), time.monotonic()
                    done = subprocess.run(
                        [streamgen, "-addr", f"127.0.0.1:{ports[loop]}",
                         f"-stream={str(rpc == 'stream').lower()}", "-method", method,
                         "-data", str(request_bin), "-c", str(args.c), "-z", f"{args.seconds}s",
                         "-warmup", "1s"],
                        capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    cores = (_cpu(servers[loop].pid) - cpu0) / (time.monotonic() - t0)
                    result = json.loads(done.stdout)
                    rate = result["chunks_per_s"] if rpc == "stream" else result["rps"]
                    rows.setdefault((rpc, loop), []).append((rate, cores / rate * 1e6))
                    print(
                        f"round {round_} {rpc:<6} {loop:<7} {rate:8,.0f}/s  server {cores:.2f} cores",
                        flush=True,
                    )
        print()
        for rpc in ("unary", "stream"):
            unit = "chunk" if rpc == "stream" else "call"
            base = sorted(r for r, _ in rows[(rpc, "asyncio")])[len(rows[(rpc, "asyncio")]) // 2]
            for loop in ("asyncio", "uvloop"):
                rates = sorted(r for r, _ in rows[(rpc, loop)])
                cpus = sorted(c for _, c in rows[(rpc, loop)])
                median = rates[len(rates) // 2]
                print(f"{rpc:<6} {loop:<7} median {median:8,.0f}/s ({median / base:.2f}x)  "
                      f"server CPU/{unit} median {cpus[len(cpus) // 2]:,.0f} µs")  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
