"""Run-to-run variation: the same points of several bench/run.py result files side by side.

    .venv/bin/python bench/compare.py bench/results/A.json bench/results/B.json [...]

For each point (target, RPC, concurrency) prints the headline metric of every run (RPS for unary,
chunks/s for streams), p50 latency (TTFC for streams), and the spread (max-min)/mean of the headline;
then the same for the ratios the runs computed. Outside-load (noise) per run is shown as well.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _spread(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return (max(values) - min(values)) / mean if mean else 0.0


def main(paths: list[str]) -> int:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    print("runs: " + ", ".join(f"[{i}] {r['meta']['timestamp']}" for i, r in enumerate(runs)))
    keys: list[tuple[str, str, int]] = []
    for run in runs:
        for r in run["results"]:
            key = (r["rpc"], r["target"], r["c"])
            if key not in keys:
                keys.append(key)
    print(
        f"\n| {'rpc':<6} | {'target':<15} | {'c':>3} "
        "| headline per run | spread | p50 ms per run | other CPU |"
    )
    print("|--------|-----------------|-----|------------------|--------|----------------|-----------|")
    for rpc, target, c in keys:
        points: list[dict[str, Any]] = []
        for run in runs:
            found = next(
                (r for r in run["results"] if (r["rpc"], r["target"], r["c"]) == (rpc, target, c)), None
            )
            if found:
                points.append(found)
        if len(points) < 2:
            continue
        metric = "chunks_per_s" if rpc == "stream" else "rps"
        lat = "first_ms" if rpc == "stream" else "latency_ms"
        values = [p[metric] for p in points]
        headline = " / ".join(f"{v:,.0f}" for v in values)
        p50s = " / ".join(f"{p[lat]['p50']:.2f}" for p in points)
        other = " / ".join(f"{p['cpu_cores']['other']:.2f}" for p in points)
        print(
            f"| {rpc:<6} | {target:<15} | {c:>3} | {headline} | {_spread(values):5.1%} | {p50s} | {other} |"
        )
    print("\nratios (added latency: ms at c=1 by percentile):")
    groups = runs[0]["ratios"]
    for group, pairs in groups.items():
        for name, by_c in pairs.items():
            for c in by_c:
                values = []
                for run in runs:
                    value = run["ratios"].get(group, {}).get(name, {}).get(c)
                    if value is None and isinstance(run["ratios"].get(group, {}).get(name), dict):
                        value = run["ratios"][group][name].get(c)
                    if isinstance(value, dict):
                        value = value.get("p50")
                    if value is not None:
                        values.append(value)
                if len(values) >= 2:
                    shown = " / ".join(f"{v:.2f}" for v in values)
                    where = c if not c.isdigit() else f"c={c}"
                    print(f"  {group:<22} {name:<32} {where:<5} {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
