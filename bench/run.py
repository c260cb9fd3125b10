"""Benchmark of the bridge against in-run baselines; one command, everything started here, on 127.0.0.1.

    .venv/bin/python bench/run.py            # full run (~6 min): table, then bench/results/<time>.json
    .venv/bin/python bench/run.py --quick    # smoke run (~1 min)

Processes (each its own interpreter / event loop; nothing is pinned):
  mock gateway     `python -m bridge.cli mock-gateway` (aiohttp.web), shared by every upstream-calling target
  echo             bench/echo_server.py: grpc.aio, canned replies   -> baseline A, the grpc.aio ceiling
  mock (direct)    the mock over HTTP, bench/loadgen.py (aiohttp)   -> baseline B, the upstream ceiling
  bridge-aiohttp   `python -m bridge.cli serve --upstream-transport aiohttp --log-level WARNING` (the default)
  bridge-httpx     the same with --upstream-transport httpx (httpx's own httpcore transport)
  bridge-observed  bridge-aiohttp with metrics and access logs on: --metrics-listen, --log-level INFO (JSON
                   access line per call, written to the process's log file); tracing off in both
  ref-aiohttp      bench/aiohttp_proxy.py: REFERENCE ONLY, grpc.aio + aiohttp.ClientSession directly
Load generators (separate processes): ghz for unary gRPC, bench/streamgen (Go, grpc-go) for streaming
gRPC (ghz cannot time the first message), bench/loadgen.py (aiohttp) for the mock directly; with
--generator python, bench/loadgen.py (grpc.aio) for gRPC too. Every target gets the same generator per
scenario, so ratios compare like with like.

Scenarios are run scenario by scenario, each target in turn (all servers stay up, idle when not
measured), so a burst of outside load spreads over targets instead of hitting one. Each measurement
is a warm-up (not counted) then the measured window. CPU use of every process is sampled from /proc;
"other" is CPU used by processes outside the benchmark (other work on the box), a noise indicator.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BUILD = BENCH / ".build"
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT))

from bench import workload  # noqa: E402

PY = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")
PROTO_DIR = ROOT / "proto"
SERVICE_PROTO = "prisme/llmgateway/v1/chat_completion_service.proto"


# ------------------------------------------------------------------------------------------ targets


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    kind: str  # "grpc" | "http"


TARGETS = {
    t.key: t
    for t in (
        Target("echo", "echo server (baseline A)", "grpc"),
        Target("mock", "mock direct, HTTP (baseline B)", "http"),
        Target("bridge-aiohttp", "bridge, transport aiohttp", "grpc"),
        Target("bridge-httpx", "bridge, transport httpx", "grpc"),
        Target("bridge-observed", "bridge, metrics + access logs", "grpc"),
        Target("ref-aiohttp", "ref: grpc.aio+aiohttp direct", "grpc"),
    )
}


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    address: str
    log: Path

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


@dataclass
class Bench:
    args: argparse.Namespace
    logdir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    waited: float = 0.0  # seconds spent waiting for a quiet machine

    def start(self, name: str, cmd: list[str], address: str) -> Proc:
        log = self.logdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = Proc(name, popen, address, log)
        self.procs[name] = proc
        return proc

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()


def _wait_http(url: str, proc: Proc, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited; see {proc.log}:\n{proc.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} not ready at {url}")
        time.sleep(0.1)


def _check_grpc(proc: Proc, timeout: float = 30.0) -> None:
    """Waits until `proc` answers, and checks it answers the benchmark request correctly."""
    import grpc

    from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc

    deadline = time.monotonic() + timeout
    request = workload.request_proto()
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited; see {proc.log}:\n{proc.log.read_text()[-2000:]}")
        try:
            with grpc.insecure_channel(proc.address) as channel:
                stub = pb_grpc.ChatCompletionServiceStub(channel)
                reply = stub.CreateChatCompletion(request, timeout=2)
                chunks = list(stub.StreamChatCompletion(request, timeout=2))
            break
        except grpc.RpcError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} not ready: {exc}") from exc
            time.sleep(0.2)
    text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
    if reply.choices[0].message.content != workload.PROMPT or text != workload.PROMPT:
        raise RuntimeError(f"{proc.name} answered something else than the echo of the prompt")
    if len(chunks) != workload.STREAM_CHUNKS:
        raise RuntimeError(f"{proc.name} streamed {len(chunks)} chunks, expected {workload.STREAM_CHUNKS}")


def start_targets(bench: Bench, keys: list[str]) -> None:
    mock_port = workload.free_port()
    mock = bench.start(
        "mock",
        [
            PY,
            "-m",
            "bridge.cli",
            "mock-gateway",
            "--listen",
            f"127.0.0.1:{mock_port}",
            "--log-level",
            "WARNING",
        ],
        f"http://127.0.0.1:{mock_port}/v1",
    )
    _wait_http(f"http://127.0.0.1:{mock_port}/healthz", mock)
    for key in keys:
        if key == "mock":
            continue
        address = f"127.0.0.1:{workload.free_port()}"
        if key == "echo":
            cmd = [PY, str(BENCH / "echo_server.py"), "--listen", address, "--sample-from", mock.address]
        elif key == "bridge-observed":
            cmd = [
                PY, "-m", "bridge.cli", "serve", "--listen", address, "--upstream-url", mock.address,
                "--upstream-transport", "aiohttp", "--log-level", "INFO",
                "--metrics-listen", f"127.0.0.1:{workload.free_port()}",
            ]  # fmt: skip
        elif key.startswith("bridge-"):
            cmd = [
                PY, "-m", "bridge.cli", "serve", "--listen", address, "--upstream-url", mock.address,
                "--upstream-transport", key.removeprefix("bridge-"), "--log-level", "WARNING",
            ]  # fmt: skip
        elif key == "ref-aiohttp":
            cmd = [PY, str(BENCH / "aiohttp_proxy.py"), "--listen", address, "--upstream-url", mock.address]
        else:
            raise AssertionError(key)
        bench.start(key, cmd, address)
    for key in keys:
        if key != "mock":
            _check_grpc(bench.procs[key])


# ---------------------------------------------------------------------------------------- generators


def find_ghz() -> str | None:
    for candidate in (shutil.which("ghz"), Path.home() / "go/bin/ghz", Path("/root/go/bin/ghz")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def build_streamgen() -> str | None:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        return None
    out = BUILD / "streamgen"
    sources = list((BENCH / "streamgen").glob("*"))
    if out.exists() and all(s.stat().st_mtime <= out.stat().st_mtime for s in sources):
        return str(out)
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    build = subprocess.run(
        [go, "build", "-o", str(out), "."], cwd=BENCH / "streamgen", env=env, capture_output=True, text=True
    )
    if build.returncode != 0:
        print(f"streamgen did not build, using the Python generator:\n{build.stderr}", file=sys.stderr)
        return None
    return str(out)


def build_inputs() -> tuple[Path, Path]:
    """The protoset for ghz (its parser predates proto3 `optional`) and the serialized request."""
    BUILD.mkdir(exist_ok=True)
    protoset = BUILD / "service.protoset"
    subprocess.run(
        [PY, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", "--include_imports",
         f"--descriptor_set_out={protoset}", str(PROTO_DIR / SERVICE_PROTO)],
        check=True,
    )  # fmt: skip
    request_bin = BUILD / "request.bin"
    request_bin.write_bytes(workload.request_proto().SerializeToString())
    return protoset, request_bin


@dataclass
class Generators:
    ghz: str | None
    streamgen: str | None
    protoset: Path
    request_bin: Path


def _ghz_cmd(gen: Generators, address: str, c: int, seconds: float) -> list[str]:
    return [
        str(gen.ghz), "--insecure", "--protoset", str(gen.protoset),
        "--call", f"{workload.SERVICE}.CreateChatCompletion", "-d", json.dumps(workload.request_json()),
        "-c", str(c), "-z", f"{seconds}s", "--duration-stop", "wait", "--connections", "1",
        "-t", "20s", "-O", "json", address,
    ]  # fmt: skip


def _parse_ghz(raw: dict[str, Any]) -> dict[str, Any]:
    dist = {int(d["percentage"]): d["latency"] / 1e6 for d in raw.get("latencyDistribution") or []}
    codes = raw.get("statusCodeDistribution") or {}
    ok = codes.get("OK", 0)
    seconds = raw["total"] / 1e9
    return {
        "generator": "ghz",
        "count": ok,
        "errors": raw["count"] - ok,
        "error_samples": raw.get("errorDistribution") or {},
        "duration_s": seconds,
        "rps": ok / seconds,
        "latency_ms": {
            "p50": dist.get(50, 0.0), "p90": dist.get(90, 0.0), "p99": dist.get(99, 0.0),
            "mean": raw["average"] / 1e6, "max": raw["slowest"] / 1e6,
        },
    }  # fmt: skip


def generator_cmds(
    gen: Generators, target: Target, address: str, rpc: str, c: int, seconds: float, warmup: float
) -> tuple[list[list[str]], list[str], str]:
    """(warm-up commands, measured command, output format) for one measurement."""
    stream = rpc == "stream"
    if target.kind == "http":
        mode = "http-stream" if stream else "http-unary"
        return [], _loadgen_cmd(mode, address, c, seconds, warmup), "json"
    if not stream and gen.ghz:
        warm = [_ghz_cmd(gen, address, c, warmup)] if warmup > 0 else []
        return warm, _ghz_cmd(gen, address, c, seconds), "ghz"
    if gen.streamgen and (stream or not gen.ghz):
        method = workload.STREAM_METHOD if stream else workload.UNARY_METHOD
        cmd = [gen.streamgen, "-addr", address, "-method", method, f"-stream={str(stream).lower()}",
               "-data", str(gen.request_bin), "-c", str(c), "-z", f"{seconds}s",
               "-warmup", f"{warmup}s"]  # fmt: skip
        return [], cmd, "json"
    mode = "grpc-stream" if stream else "grpc-unary"
    return [], _loadgen_cmd(mode, address, c, seconds, warmup), "json"


def _loadgen_cmd(mode: str, address: str, c: int, seconds: float, warmup: float) -> list[str]:
    return [PY, str(BENCH / "loadgen.py"), "--mode", mode, "--target", address,
            "-c", str(c), "-z", str(seconds), "--warmup", str(warmup)]  # fmt: skip


# ------------------------------------------------------------------------------------------ measuring


def _system_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time (already in user)
    return (total - idle) / TICKS, total / TICKS


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def outside_load(bench: Bench, seconds: float = 1.0) -> float:
    """Cores used by processes outside the benchmark over `seconds` (ours are idle meanwhile)."""
    ours0 = sum(p.cpu_seconds() for p in bench.procs.values())
    busy0, _ = _system_busy()
    time.sleep(seconds)
    ours = sum(p.cpu_seconds() for p in bench.procs.values()) - ours0
    busy = _system_busy()[0] - busy0
    return max(0.0, (busy - ours) / seconds)


def wait_quiet(bench: Bench) -> float:
    """Waits (up to --quiet-wait s per point, --quiet-budget s per run) for outside load under
    --quiet-threshold cores; returns the last reading."""
    args = bench.args
    started = time.monotonic()
    deadline = started + min(args.quiet_wait, max(0.0, args.quiet_budget - bench.waited))
    try:
        while True:
            load = outside_load(bench)
            if load <= args.quiet_threshold or time.monotonic() >= deadline:
                return load
            print(f"    (waiting: {load:.2f} cores busy outside the benchmark)", file=sys.stderr)
    finally:
        bench.waited += time.monotonic() - started


def measure(bench: Bench, gen: Generators, target: Target, rpc: str, c: int) -> dict[str, Any]:
    args = bench.args
    address = bench.procs["mock"].address if target.kind == "http" else bench.procs[target.key].address
    warm_cmds, cmd, fmt = generator_cmds(gen, target, address, rpc, c, args.duration, args.warmup)
    for warm in warm_cmds:
        subprocess.run(warm, cwd=ROOT, capture_output=True, check=True)
    before = outside_load(bench, 0.5) if args.quiet_wait <= 0 else wait_quiet(bench)
    procs = list(bench.procs.values())
    cpu0 = {p.name: p.cpu_seconds() for p in procs}
    busy0, _ = _system_busy()
    children0 = _children_cpu()
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    busy = _system_busy()[0] - busy0
    generator_cpu = _children_cpu() - children0
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    raw = json.loads(done.stdout)
    result = _parse_ghz(raw) if fmt == "ghz" else raw
    cpu = {name: (p.cpu_seconds() - cpu0[name]) / wall for name, p in ((p.name, p) for p in procs)}
    server = cpu.get(target.key, 0.0) if target.kind == "grpc" else 0.0
    ours = sum(cpu.values()) + generator_cpu / wall
    result["cpu_cores"] = {
        "target": round(server, 3),
        "mock": round(cpu["mock"], 3),
        "generator": round(generator_cpu / wall, 3),
        "other": round(max(0.0, busy / wall - ours), 3),
        "other_before": round(before, 3),
    }
    return {"target": target.key, "rpc": rpc, "c": c, **result}


# ------------------------------------------------------------------------------------------ reporting


def _find(results: list[dict[str, Any]], target: str, rpc: str, c: int) -> dict[str, Any] | None:
    return next((r for r in results if r["target"] == target and r["rpc"] == rpc and r["c"] == c), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def compute_ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    cs = sorted({r["c"] for r in results})

    def metric(target: str, rpc: str, c: int, key: str) -> float | None:
        r = _find(results, target, rpc, c)
        return None if r is None else r[key]

    for rpc, key in (("unary", "rps"), ("stream", "chunks_per_s")):
        for c in cs:
            pairs = {
                "bridge_aiohttp_vs_echo": ("bridge-aiohttp", "echo"),
                "bridge_httpx_vs_echo": ("bridge-httpx", "echo"),
                "bridge_httpx_vs_bridge_aiohttp": ("bridge-httpx", "bridge-aiohttp"),
                "bridge_observed_vs_bridge_aiohttp": ("bridge-observed", "bridge-aiohttp"),
                "ref_aiohttp_vs_bridge_aiohttp": ("ref-aiohttp", "bridge-aiohttp"),
                "bridge_aiohttp_vs_mock_direct": ("bridge-aiohttp", "mock"),
                "echo_vs_mock_direct": ("echo", "mock"),
            }
            for name, (a, b) in pairs.items():
                value = _ratio(metric(a, rpc, c, key), metric(b, rpc, c, key))
                if value is not None:
                    ratios.setdefault(f"{rpc}_{key}", {}).setdefault(name, {})[str(c)] = round(value, 3)
    added: dict[str, Any] = {}
    mock1 = _find(results, "mock", "unary", 1)
    if mock1:
        for target in ("echo", "bridge-aiohttp", "bridge-httpx", "bridge-observed", "ref-aiohttp"):
            r = _find(results, target, "unary", 1)
            if r:
                added[target] = {
                    p: round(r["latency_ms"][p] - mock1["latency_ms"][p], 3) for p in ("p50", "p90", "p99")
                }
    if added:
        ratios["unary_c1_added_latency_ms_vs_mock_direct"] = added
    return ratios


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cpu_per(r: dict[str, Any], rate: str) -> str:
    """CPU of the server process per call (or chunk), µs: the mock's for the mock, else the target's."""
    cores = r["cpu_cores"]["mock" if r["target"] == "mock" else "target"]
    return "-" if not r[rate] else f"{cores / r[rate] * 1e6:,.0f} µs"


def _cpu_cell(r: dict[str, Any]) -> str:
    cpu = r["cpu_cores"]
    return f"{cpu['target']:>4.2f}/{cpu['mock']:.2f}/{cpu['generator']:.2f}/{cpu['other']:.2f}{'':>4}"


def render(results: list[dict[str, Any]], ratios: dict[str, Any], meta: dict[str, Any]) -> str:
    lines: list[str] = []
    s = meta["settings"]
    v, m = meta["versions"], meta["machine"]
    lines.append(
        f"{m['nproc']} cores ({m['cpu_model']}), Python {v['python']}, grpcio {v['grpcio']}, "
        f"httpx {v['httpx']}, aiohttp {v['aiohttp']}; "
        f"{s['duration_s']:g} s per point after {s['warmup_s']:g} s warm-up"
    )
    lines.append("")
    lines.append("Unary CreateChatCompletion (20-word echo)")
    head = (
        f"| {'target':<31} | {'c':>3} | {'RPS':>7} | {'p50 ms':>7} | {'p90 ms':>7} | {'p99 ms':>7} "
        f"| {'vs echo':>7} | {'srv CPU/call':>12} | {'CPU srv/mock/gen/other':>23} |"
    )
    lines += [head, "|" + "|".join("-" * (len(part)) for part in head.split("|")[1:-1]) + "|"]
    for c in s["unary_concurrency"]:
        echo = _find(results, "echo", "unary", c)
        for key in s["targets"]:
            r = _find(results, key, "unary", c)
            if r is None:
                continue
            lat = r["latency_ms"]
            vs = _ratio(r["rps"], echo["rps"] if echo else None)
            lines.append(
                f"| {TARGETS[key].label:<31} | {c:>3} | {_fmt(r['rps']):>7} | {lat['p50']:>7.2f} "
                f"| {lat['p90']:>7.2f} | {lat['p99']:>7.2f} | {_fmt(vs, 2):>7} | {_cpu_per(r, 'rps'):>12} "
                f"| {_cpu_cell(r)} |"
            )
    lines.append("")
    lines.append(f"Streaming StreamChatCompletion ({workload.STREAM_CHUNKS} chunks per stream)")
    head = (
        f"| {'target':<31} | {'c':>3} | {'streams/s':>9} | {'chunks/s':>8} | {'TTFC p50':>8} "
        f"| {'TTFC p99':>8} | {'total p50':>9} | {'total p99':>9} | {'vs echo':>7} | {'srv CPU/chunk':>13} "
        f"| {'CPU srv/mock/gen/other':>23} |"
    )
    lines += [head, "|" + "|".join("-" * (len(part)) for part in head.split("|")[1:-1]) + "|"]
    for c in s["stream_concurrency"]:
        echo = _find(results, "echo", "stream", c)
        for key in s["targets"]:
            r = _find(results, key, "stream", c)
            if r is None:
                continue
            vs = _ratio(r["chunks_per_s"], echo["chunks_per_s"] if echo else None)
            first, total = r["first_ms"], r["latency_ms"]
            lines.append(
                f"| {TARGETS[key].label:<31} | {c:>3} | {_fmt(r['rps']):>9} | {_fmt(r['chunks_per_s']):>8} "
                f"| {first['p50']:>8.2f} | {first['p99']:>8.2f} | {total['p50']:>9.2f} "
                f"| {total['p99']:>9.2f} | {_fmt(vs, 2):>7} | {_cpu_per(r, 'chunks_per_s'):>13} "
                f"| {_cpu_cell(r)} |"
            )
    lines.append("")
    lines.append(
        "CPU srv/mock/gen/other: cores used by the measured server, the mock gateway, the load generator and "
        "processes outside the benchmark; srv CPU/call: server cores / throughput."
    )
    lines.append("")
    lines.append("Ratios (RPS for unary, chunks/s for streaming; by concurrency)")
    for group, pairs in ratios.items():
        if group.endswith("added_latency_ms_vs_mock_direct"):
            continue
        for name, by_c in pairs.items():
            values = ", ".join(f"c={c}: {v:.2f}" for c, v in by_c.items())
            lines.append(f"  {group:<20} {name:<32} {values}")
    added = ratios.get("unary_c1_added_latency_ms_vs_mock_direct")
    if added:
        lines.append("")
        lines.append("Added latency at c=1, unary, vs the mock called directly over HTTP (ms)")
        for target, values in added.items():
            shown = "  ".join(f"{p} {values[p]:+.2f}" for p in ("p50", "p90", "p99"))
            lines.append(f"  {TARGETS[target].label:<31} {shown}")
    flag = s["noise_flag_cores"]
    noisy = [r for r in results if r["cpu_cores"]["other"] > flag]
    if noisy:
        lines.append("")
        lines.append(
            f"Noise: {len(noisy)} of {len(results)} points had > {flag} cores "
            "busy outside the benchmark: "
            + ", ".join(f"{r['target']}/{r['rpc']}/c={r['c']} ({r['cpu_cores']['other']:.2f})" for r in noisy)
        )
    return "\n".join(lines)


def bridge_source_digest() -> str:
    """Digest of bridge/**/*.py, to notice sources edited while the benchmark ran (shared checkout)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "bridge").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def metadata(args: argparse.Namespace, gen: Generators) -> dict[str, Any]:
    cpu_model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    git = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "bridge"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split("\n")
    go_version = (
        subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
        if shutil.which("go")
        else "-"
    )
    return {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git,
        "bridge_uncommitted_changes": [line for line in dirty if line],
        "bridge_source_digest_start": bridge_source_digest(),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu_model": cpu_model,
            "kernel": platform.release(),
            "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        },
        "versions": {
            "python": platform.python_version(),
            **{
                n: _version(n)
                for n in ("grpcio", "protobuf", "httpx", "httpcore", "aiohttp", "httpx-aiohttp")
            },
            "go": go_version,
        },
        "generators": {
            "unary_grpc": "ghz"
            if gen.ghz and args.generator != "python"
            else ("streamgen" if gen.streamgen else "loadgen.py grpc.aio"),
            "stream_grpc": "streamgen" if gen.streamgen else "loadgen.py grpc.aio",
            "http": "loadgen.py aiohttp",
            "ghz_path": gen.ghz,
        },
        "settings": {
            "quick": args.quick,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "unary_concurrency": args.concurrency,
            "stream_concurrency": args.stream_concurrency,
            "targets": args.targets,
            "quiet_threshold_cores": args.quiet_threshold,
            "quiet_wait_s": args.quiet_wait,
            "quiet_budget_s": args.quiet_budget,
            "noise_flag_cores": args.noise_flag,
            "request": workload.request_json(),
            "stream_chunks": workload.STREAM_CHUNKS,
        },
    }


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: short points, c=1,16 unary, c=16 stream"
    )
    parser.add_argument("--duration", type=float, help="measured seconds per point (default 10, quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per point (default 2, quick 1)")
    parser.add_argument("--concurrency", type=int, nargs="+", help="unary concurrencies (default 1 16 64)")
    parser.add_argument(
        "--stream-concurrency", type=int, nargs="+", help="stream concurrencies (default 16 64)"
    )
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--only", choices=["unary", "stream"], help="run one RPC kind only")
    parser.add_argument(
        "--generator",
        choices=["auto", "python"],
        default="auto",
        help="auto: ghz (unary) + Go streamgen (streams); python: bench/loadgen.py for gRPC too",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.25,
        help="before each point, wait until processes outside the benchmark use <= this many cores",
    )
    parser.add_argument(
        "--quiet-wait", type=float, help="max seconds to wait for quiet (default 30, quick 0)"
    )
    parser.add_argument(
        "--quiet-budget", type=float, default=120.0, help="max seconds of such waiting per run"
    )
    parser.add_argument(
        "--noise-flag", type=float, default=0.25, help="flag points with more outside load (cores)"
    )
    parser.add_argument(
        "--render", type=Path, metavar="RESULT_JSON", help="only print the table of a result file"
    )
    parser.add_argument(
        "--output", type=Path, help="result file (default bench/results/<UTC time>[-quick].json)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (2.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    args.concurrency = args.concurrency or ([1, 16] if quick else [1, 16, 64])
    args.stream_concurrency = args.stream_concurrency or ([16] if quick else [16, 64])
    args.quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0.0 if quick else 30.0)
    if args.only == "unary":
        args.stream_concurrency = []
    elif args.only == "stream":
        args.concurrency = []
    return args


@contextlib.contextmanager
def running(bench: Bench) -> Iterator[None]:
    try:
        yield
    finally:
        bench.stop_all()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        print(render(saved["results"], saved["ratios"], saved["meta"]))
        return 0
    protoset, request_bin = build_inputs()
    gen = Generators(
        ghz=None if args.generator == "python" else find_ghz(),
        streamgen=None if args.generator == "python" else build_streamgen(),
        protoset=protoset,
        request_bin=request_bin,
    )
    meta = metadata(args, gen)
    logdir = Path(tempfile.mkdtemp(prefix="prisme-bench-"))
    bench = Bench(args, logdir)
    results: list[dict[str, Any]] = []
    points = [("unary", c) for c in args.concurrency] + [("stream", c) for c in args.stream_concurrency]
    started = time.monotonic()
    with running(bench):
        start_targets(bench, args.targets)
        # Each server imported bridge/ at startup: what they run is what was on disk until now.
        meta["bridge_source_digest_loaded"] = bridge_source_digest()
        print(f"targets up (logs in {logdir}); {len(points) * len(args.targets)} points", file=sys.stderr)
        for rpc, c in points:
            for key in args.targets:
                result = measure(bench, gen, TARGETS[key], rpc, c)
                results.append(result)
                extra = f" {result['chunks_per_s']:,.0f} chunks/s" if rpc == "stream" else ""
                print(
                    f"  {rpc:<6} c={c:<3} {key:<15} {result['rps']:>8,.0f}/s{extra}  "
                    f"p50 {result['latency_ms']['p50']:.2f} ms  p99 {result['latency_ms']['p99']:.2f} ms  "
                    f"errors {result['errors']}  cpu {result['cpu_cores']}",
                    file=sys.stderr,
                )
    meta["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["quiet_waited_s"] = round(bench.waited, 1)
    meta["bridge_source_digest_end"] = bridge_source_digest()  # informational: later edits do not matter
    if meta["bridge_source_digest_loaded"] != meta["bridge_source_digest_start"]:
        print(
            "WARNING: bridge/ sources changed while the servers started; they may run different versions",
            file=sys.stderr,
        )
    ratios = compute_ratios(results)
    table = render(results, ratios, meta)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    output.write_text(
        json.dumps({"meta": meta, "results": results, "ratios": ratios, "table": table}, indent=2) + "\n"
    )
    print(f"\nwrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
