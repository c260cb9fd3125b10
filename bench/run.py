"""Benchmark of the bridge against in-run baselines; one command, everything started here, on 127.0.0.1.

    .venv/bin/python bench/run.py            # full run (~8 min): issue 12's goals; results/<time>.json
    .venv/bin/python bench/run.py --quick    # smoke run (~1.5 min)

Processes (each its own interpreter / event loop; nothing is pinned):
  mock gateway     `python -m bridge.cli mock-gateway` (aiohttp.web), shared by every upstream-calling target
  echo             bench/echo_server.py: grpc.aio replaying the bridge's reply bytes -> baseline A, the floor
  mock (direct)    the mock over HTTP, bench/loadgen.py (aiohttp)   -> baseline B, the upstream ceiling
  bridge           `python -m bridge.cli serve --log-level WARNING`: the default transport and event loop
  bridge-observed  the production config: the same with metrics and JSON access logs on (--metrics-listen,
                   --log-level INFO; one JSON access line per call to the process's log file); tracing off
  bridge-T[-L]     the bridge with --upstream-transport T (one of TRANSPORTS) [and --event-loop L]
  ref-aiohttp      bench/aiohttp_proxy.py: REFERENCE ONLY, grpc.aio + aiohttp.ClientSession directly
  ref-bare         the same without returning reply headers as initial metadata (what that batch costs)
  bridge-bare      the bridge with --reply-metadata false (the same saving in the bridge)
  bridge-default   the bridge with default settings (the access line on at INFO): issue 22's goal target
  minimal          bench/minimal_bridge.py: REFERENCE ONLY, issue 22's minimal bridge (same stack only)
  bridge-orca-off  the bridge with --orca false (no ORCA load report trailer: what it costs, by difference)
Load generators (separate processes): ghz for unary gRPC, bench/streamgen (Go, grpc-go) for streaming
gRPC (ghz cannot time the first message), bench/loadgen.py (aiohttp) for the mock directly; with
--generator python, bench/loadgen.py (grpc.aio) for gRPC too. Every target gets the same generator per
scenario, so ratios compare like with like. Unary calls send bench.workload.PROMPT (20 words); streams
send LONG_PROMPT (64 chunks per stream).

Scenarios are run scenario by scenario, each target in turn (all servers stay up, idle when not
measured), so a burst of outside load spreads over targets instead of hitting one. Each measurement
is a warm-up (not counted) then the measured window. CPU use of every process is sampled from /proc;
"other" is CPU used by processes outside the benchmark (other work on the box), a noise indicator.
Then, each on a bridge of its own started for it: the capacity of `--workers 2` (the highest unary RPS
whose p99 stays within 20 ms, over a sweep of concurrencies, several connections so both workers serve),
and the memory each idle open stream holds (RSS with --idle-streams streams open, minus before).
The goals table (issue 12) compares the goal target (bridge-observed) with the floor of the same run;
issue 22's table compares bridge-default (and bridge-default@base) with the floor and the minimal bridge,
adding the paced scenario (--paced-concurrency: the mock's paced-100 model, one token per read).
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
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
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
    transport: str | None = None  # --upstream-transport, when the target names one
    loop: str | None = None  # --event-loop, when the target names one
    observed: bool = False  # metrics and JSON access logs on
    options: tuple[str, ...] = ()  # more serve flags
    baseline: bool = False  # run from the --baseline checkout (its own interpreter and bridge/)
    default_settings: bool = False  # no --log-level: INFO, one access line per call (issue 22's target)


# Upstream transports and event loops a `bridge-T[-L]` target may name (bridge.http.transports.base
# .TransportName, bridge.settings); the bench itself does not import them so it can run against older
# commits. Before issue 21, `aiohttp` named the httpx API over aiohttp and `aiohttp-direct` today's `aiohttp`
# (still accepted, with a warning, for one release).
TRANSPORTS = ("aiohttp", "httpx", "aiohttp-direct")
LOOPS = ("asyncio", "uvloop")
NO_REPLY_METADATA = ("--reply-metadata", "false")
STREAMING = ("stream", "paced")  # server-streaming scenarios (rates in chunks/s)
NO_ORCA = ("--orca", "false")
FIXED = {
    t.key: t
    for t in (
        Target("echo", "echo server (baseline A)", "grpc"),
        Target("mock", "mock direct, HTTP (baseline B)", "http"),
        Target("bridge", "bridge (defaults)", "grpc"),
        Target("bridge-observed", "bridge, metrics + access logs", "grpc", observed=True),
        Target("bridge-bare", "bridge, --reply-metadata false", "grpc", options=NO_REPLY_METADATA),
        Target("bridge-orca-off", "bridge, --orca false", "grpc", options=NO_ORCA),
        Target("ref-aiohttp", "ref: grpc.aio+aiohttp direct", "grpc"),
        Target("ref-bare", "ref: the same, no reply metadata", "grpc"),
        Target("minimal", "minimal bridge (reference)", "grpc"),
        Target("bridge-default", "bridge, default settings", "grpc", default_settings=True),
    )
}
DEFAULT_TARGETS = ["echo", "mock", "bridge", "bridge-observed"]
REFERENCES = ("ref-aiohttp", "ref-bare")  # bench/aiohttp_proxy.py
GOAL_TARGET = "bridge-observed"
GOAL_UNARY_C, GOAL_STREAM_C = 32, 16  # the goals' concurrencies
WORKERS_TARGET = "workers2"  # bridge-observed with --workers 2 (the capacity point)


# A bridge target's key with this suffix runs the same bridge from the --baseline checkout: a commit to
# compare with, measured in the same rounds as the current one (before/after, interleaved).
BASELINE_SUFFIX = "@base"
BASELINE: Path | None = None  # set from --baseline


def target_of(key: str) -> Target:
    """The target a key names: a fixed one, or `bridge-TRANSPORT[-LOOP]`, either with `@base`."""
    if key.endswith(BASELINE_SUFFIX):
        inner = target_of(key.removesuffix(BASELINE_SUFFIX))
        if inner.kind != "grpc" or not inner.key.startswith("bridge"):
            raise argparse.ArgumentTypeError(f"{key!r}: only bridge targets run from the --baseline checkout")
        return replace(inner, key=key, label=f"{inner.label} @base", baseline=True)
    if key in FIXED:
        return FIXED[key]
    if key == WORKERS_TARGET:
        return Target(key, "bridge-observed, --workers 2", "grpc", observed=True)
    rest = key.removeprefix("bridge-")
    loop = next((name for name in LOOPS if rest.endswith(f"-{name}")), None)
    transport = rest.removesuffix(f"-{loop}") if loop else rest
    if not key.startswith("bridge-") or transport not in TRANSPORTS:
        raise argparse.ArgumentTypeError(
            f"unknown target {key!r}: {', '.join(FIXED)} or bridge-TRANSPORT[-LOOP] "
            f"(TRANSPORT: {', '.join(TRANSPORTS)}; LOOP: {', '.join(LOOPS)})"
        )
    label = f"bridge, {transport}" + (f", {loop}" if loop else "")
    return Target(key, label, "grpc", transport=transport, loop=loop)


def checkout_of(target: Target) -> Path:
    """The checkout a target's bridge runs from."""
    if not target.baseline:
        return ROOT
    assert BASELINE is not None  # parse_args refuses @base targets without --baseline
    return BASELINE


def minimal_cmd(address: str, upstream: str) -> list[str]:
    """The minimal bridge (bench/minimal_bridge.py) listening on `address`, in front of `upstream`."""
    return [PY, str(BENCH / "minimal_bridge.py"), "--listen", address, "--upstream-url", upstream]


def bridge_cmd(target: Target, address: str, upstream: str, *, workers: int = 1) -> list[str]:
    python = str(BASELINE / ".venv/bin/python") if target.baseline and BASELINE else PY
    cmd = [python, "-m", "bridge.cli", "serve", "--listen", address, "--upstream-url", upstream]
    if target.transport:
        cmd += ["--upstream-transport", target.transport]
    if target.loop:
        cmd += ["--event-loop", target.loop]
    if target.observed:
        cmd += ["--log-level", "INFO", "--metrics-listen", f"127.0.0.1:{workload.free_port()}"]
    elif not target.default_settings:
        cmd += ["--log-level", "WARNING"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    return cmd + list(target.options)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    address: str
    log: Path
    tree: bool = False  # count the process's children too (--workers N)

    def pids(self) -> list[int]:
        return _descendants(self.popen.pid) if self.tree else [self.popen.pid]

    def cpu_seconds(self) -> float:
        """utime + stime of the process (and, with `tree`, of its live children, plus those it reaped)."""
        total = 0.0
        for pid in self.pids():
            fields = _stat(pid)
            if fields:
                total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
                if self.tree and pid == self.popen.pid:
                    total += (int(fields[13]) + int(fields[14])) / TICKS  # cutime, cstime
        return total

    def run_seconds(self) -> float:
        """Time on a CPU of the process's live threads (and, with `tree`, its children's), from the
        scheduler's own accounting (/proc/PID/task/*/schedstat, nanoseconds): exact, where utime and stime
        are clock ticks charged to whoever runs when the tick lands, which on a crowded box moves CPU from
        one process to another. Threads that ended are not counted (a server's threads live on)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError):
                        total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9

    def rss_kb(self) -> int:
        """Resident memory of the process (and, with `tree`, of its children), KiB."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


@dataclass
class Bench:
    args: argparse.Namespace
    logdir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    waited: float = 0.0  # seconds spent waiting for a quiet machine

    def start(
        self,
        name: str,
        cmd: list[str],
        address: str,
        *,
        tree: bool = False,
        cwd: Path = ROOT,
        env: dict[str, str] | None = None,  # None: this process's environment
    ) -> Proc:
        log = self.logdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = Proc(name, popen, address, log, tree)
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        _stop([self.procs.pop(name)])

    def stop_all(self) -> None:
        _stop(list(self.procs.values()))
        self.procs.clear()


def _stop(procs: list[Proc]) -> None:
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.popen.pid, signal.SIGKILL)  # its own session: the workers too
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
    request, long_request = workload.request_proto(), workload.request_proto(workload.LONG_PROMPT)
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited; see {proc.log}:\n{proc.log.read_text()[-2000:]}")
        try:
            with grpc.insecure_channel(proc.address) as channel:
                stub = pb_grpc.ChatCompletionServiceStub(channel)
                reply = stub.CreateChatCompletion(request, timeout=2)
                chunks = list(stub.StreamChatCompletion(long_request, timeout=2))
            break
        except grpc.RpcError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} not ready: {exc}") from exc
            time.sleep(0.2)
    text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
    if reply.choices[0].message.content != workload.PROMPT or text != workload.LONG_PROMPT:
        raise RuntimeError(f"{proc.name} answered something else than the echo of the prompt")
    expected = workload.chunks_of(workload.LONG_PROMPT)
    if len(chunks) != expected:
        raise RuntimeError(f"{proc.name} streamed {len(chunks)} chunks, expected {expected}")


def start_mock(bench: Bench) -> Proc:
    """The mock gateway every upstream-calling target shares (process `mock`), once it serves."""
    mock_port = workload.free_port()
    listen = f"127.0.0.1:{mock_port}"
    cmd = [PY, "-m", "bridge.cli", "mock-gateway", "--log-level", "WARNING", "--listen", listen]
    mock = bench.start("mock", cmd, f"http://127.0.0.1:{mock_port}/v1")
    _wait_http(f"http://127.0.0.1:{mock_port}/healthz", mock)
    return mock


def start_targets(bench: Bench, keys: list[str]) -> None:
    mock = start_mock(bench)
    for key in keys:
        if key == "mock":
            continue
        address = f"127.0.0.1:{workload.free_port()}"
        if key == "echo":
            cmd = [PY, str(BENCH / "echo_server.py"), "--listen", address, "--sample-from", mock.address]
        elif key == "minimal":
            cmd = minimal_cmd(address, mock.address)
        elif key in REFERENCES:
            cmd = [PY, str(BENCH / "aiohttp_proxy.py"), "--listen", address, "--upstream-url", mock.address]
            if key == "ref-bare":
                cmd.append("--no-metadata")
        else:
            cmd = bridge_cmd(target_of(key), address, mock.address)
        bench.start(key, cmd, address, cwd=checkout_of(target_of(key)))
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


def build_inputs() -> tuple[Path, Path, Path]:
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
    stream_request_bin = BUILD / "request-64-chunks.bin"
    stream_request_bin.write_bytes(workload.request_proto(workload.LONG_PROMPT).SerializeToString())
    paced = workload.request_proto(workload.PACED_PROMPT, workload.PACED_MODEL)
    (BUILD / "request-paced.bin").write_bytes(paced.SerializeToString())
    return protoset, request_bin, stream_request_bin


@dataclass
class Generators:
    ghz: str | None
    streamgen: str | None
    protoset: Path
    request_bin: Path  # the unary request (PROMPT)
    stream_request_bin: Path  # the stream request (LONG_PROMPT)

    @property
    def paced_request_bin(self) -> Path:  # the paced scenario's stream request (written by build_inputs)
        return BUILD / "request-paced.bin"


def _ghz_cmd(gen: Generators, address: str, c: int, seconds: float, connections: int = 1) -> list[str]:
    return [
        str(gen.ghz), "--insecure", "--protoset", str(gen.protoset),
        "--call", f"{workload.SERVICE}.CreateChatCompletion", "-d", json.dumps(workload.request_json()),
        "-c", str(c), "-z", f"{seconds}s", "--duration-stop", "wait", "--connections", str(connections),
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
    gen: Generators,
    target: Target,
    address: str,
    rpc: str,
    c: int,
    seconds: float,
    warmup: float,
    connections: int = 1,
) -> tuple[list[list[str]], list[str], str]:
    """(warm-up commands, measured command, output format) for one measurement."""
    stream = rpc in STREAMING
    if rpc == "paced" and not gen.streamgen:
        raise RuntimeError("the paced scenario needs bench/streamgen (Go)")
    if target.kind == "http":
        mode = "http-stream" if stream else "http-unary"
        return [], _loadgen_cmd(mode, address, c, seconds, warmup), "json"
    if not stream and gen.ghz:
        warm = [_ghz_cmd(gen, address, c, warmup, connections)] if warmup > 0 else []
        return warm, _ghz_cmd(gen, address, c, seconds, connections), "ghz"
    if gen.streamgen and (stream or not gen.ghz):
        method = workload.STREAM_METHOD if stream else workload.UNARY_METHOD
        data = {"paced": gen.paced_request_bin, "stream": gen.stream_request_bin}.get(rpc, gen.request_bin)
        cmd = [gen.streamgen, "-addr", address, "-method", method, f"-stream={str(stream).lower()}",
               "-data", str(data), "-c", str(c), "-z", f"{seconds}s", "-warmup", f"{warmup}s",
               "-connections", str(connections)]  # fmt: skip
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


def measure(
    bench: Bench, gen: Generators, target: Target, rpc: str, c: int, connections: int = 1
) -> dict[str, Any]:
    args = bench.args
    address = bench.procs["mock"].address if target.kind == "http" else bench.procs[target.key].address
    warm_cmds, cmd, fmt = generator_cmds(
        gen, target, address, rpc, c, args.duration, args.warmup, connections
    )
    for warm in warm_cmds:
        subprocess.run(warm, cwd=ROOT, capture_output=True, check=True)
    metrics_url = _metrics_url(bench, target)
    overhead0 = _overhead_reported(metrics_url, rpc)
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
    overhead1 = _overhead_reported(metrics_url, rpc)
    if overhead0 is not None and overhead1 is not None and overhead1[1] > overhead0[1]:
        # The bridge's own figure over this run: prisme_bridge_overhead_seconds' mean, in ms.
        result["overhead_reported_ms"] = 1000 * (overhead1[0] - overhead0[0]) / (overhead1[1] - overhead0[1])
    return {"target": target.key, "rpc": rpc, "c": c, **result}


_OVERHEAD_METHODS = {"unary": "CreateChatCompletion", "stream": "StreamChatCompletion"}


def _metrics_url(bench: Bench, target: Target) -> str | None:
    """The /metrics URL of an observed bridge target (its --metrics-listen), else None."""
    proc = bench.procs.get(target.key)
    if not target.observed or proc is None:
        return None
    args = [str(arg) for arg in proc.popen.args]  # type: ignore[union-attr]
    return f"http://{args[args.index('--metrics-listen') + 1]}/metrics"


def _overhead_reported(url: str | None, rpc: str) -> tuple[float, float] | None:
    """(sum, count) of the bridge's prisme_bridge_overhead_seconds for `rpc`'s method, scraped now."""
    method = _OVERHEAD_METHODS.get(rpc)
    if url is None or method is None:
        return None
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    found = {}
    for line in text.splitlines():
        for kind in ("sum", "count"):
            if (
                line.startswith(f"prisme_bridge_overhead_seconds_{kind}{{")
                and f'grpc_method="{method}"' in line
            ):
                found[kind] = float(line.rsplit(" ", 1)[1])
    return (found["sum"], found["count"]) if len(found) == 2 else (0.0, 0.0)


# ------------------------------------------------------------------------------- capacity and idle memory

CAPACITY_P99_MS = 20.0  # the capacity point: the highest unary RPS whose p99 stays within this


def measure_capacity(bench: Bench, gen: Generators) -> list[dict[str, Any]]:
    """Unary points on a bridge-observed with --workers 2 over a sweep of concurrencies; several
    connections, so the kernel's SO_REUSEPORT hashing gives both workers some."""
    args = bench.args
    target = target_of(WORKERS_TARGET)
    address = f"127.0.0.1:{workload.free_port()}"
    proc = bench.start(
        target.key, bridge_cmd(target, address, bench.procs["mock"].address, workers=2), address, tree=True
    )
    _check_grpc(proc)
    results = []
    try:
        for c in args.capacity_concurrency:
            result = measure(bench, gen, target, "unary", c, connections=min(c, 16))
            results.append(result)
            _progress(result)
    finally:
        bench.stop(target.key)
    return results


IDLE_OPEN_TIMEOUT_S = 120.0


def measure_idle(bench: Bench, key: str, streams: int) -> dict[str, Any]:
    """RSS per idle open stream: a fresh bridge, warmed by the readiness check's calls, then `streams`
    streams held open (bench/idle_streams.py) while the upstream is silent; (RSS open - RSS before) / n."""
    target = target_of(key)
    name = f"idle-{key}"
    address = f"127.0.0.1:{workload.free_port()}"
    upstream = bench.procs["mock"].address
    cmd = minimal_cmd(address, upstream) if key == "minimal" else bridge_cmd(target, address, upstream)
    proc = bench.start(name, cmd, address, cwd=checkout_of(target))
    try:
        _check_grpc(proc)
        time.sleep(1.0)
        before = proc.rss_kb()
        holder = subprocess.Popen(
            [PY, str(BENCH / "idle_streams.py"), "--target", address, "-n", str(streams)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert holder.stdout is not None
        assert holder.stdin is not None
        ready, _, _ = select.select([holder.stdout], [], [], IDLE_OPEN_TIMEOUT_S)
        line = holder.stdout.readline().strip() if ready else "(no answer within the timeout)"
        if line != f"open {streams}":
            holder.kill()
            raise RuntimeError(f"idle streams did not open: {line!r} {holder.communicate()[1][-2000:]}")
        time.sleep(2.0)  # settled: nothing moves on an idle stream
        opened = proc.rss_kb()
        holder.stdin.close()
        holder.wait(timeout=60)
    finally:
        bench.stop(name)
    result = {
        "target": key,
        "rpc": "idle",
        "c": streams,
        "rss_kb_before": before,
        "rss_kb_open": opened,
        "kb_per_stream": round((opened - before) / streams, 2),
    }
    print(f"  idle   n={streams} {key:<15} {result['kb_per_stream']:.1f} KiB per stream", file=sys.stderr)
    return result


# ------------------------------------------------------------------------------------------ reporting


def median_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per (target, rpc, c): the run whose rate (RPS, or chunks/s for streams) is the median
    of that point's runs (the lower middle one for an even count), whole, so its latencies and CPU
    belong to the same run; runs that failed count as rate 0. Points keep their first run's order."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["target"], run["rpc"], run["c"]), []).append(run)
    chosen: list[dict[str, Any]] = []
    for group in groups.values():
        ordered = sorted(group, key=_rate)
        median = dict(ordered[(len(ordered) - 1) // 2])
        if len(group) > 1:
            median["repeats"] = [_rate(run) for run in group]
        chosen.append(median)
    return chosen


def _rate(result: dict[str, Any]) -> float:
    """A point's throughput: RPS, or chunks/s for streams (0 for a point that failed)."""
    key = "chunks_per_s" if result["rpc"] in STREAMING else "rps"
    return float(result.get(key) or 0.0)


def _find(results: list[dict[str, Any]], target: str, rpc: str, c: int) -> dict[str, Any] | None:
    return next((r for r in results if r["target"] == target and r["rpc"] == rpc and r["c"] == c), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def _server_cpu_per(r: dict[str, Any] | None) -> float | None:
    """Server CPU seconds per call (unary) or per chunk (stream)."""
    if r is None:
        return None
    rate = _rate(r)
    return None if not rate else r["cpu_cores"]["target"] / rate


def compute_ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each target's throughput against the floor (echo), the mock and the bridge without observability;
    added latency at c=1."""
    ratios: dict[str, Any] = {}
    cs = sorted({r["c"] for r in results if r["rpc"] in ("unary", "stream")})
    targets = list(dict.fromkeys(r["target"] for r in results if r["rpc"] in ("unary", "stream")))

    def metric(target: str, rpc: str, c: int, key: str) -> float | None:
        r = _find(results, target, rpc, c)
        return None if r is None else r[key]

    pairs = [(f"{t}_vs_echo", t, "echo") for t in targets if t not in ("echo", "mock")]
    pairs += [(f"{t}_vs_mock_direct", t, "mock") for t in targets if t != "mock"]
    pairs.append(("bridge_observed_vs_bridge", "bridge-observed", "bridge"))
    for rpc, key in (("unary", "rps"), ("stream", "chunks_per_s")):
        for c in cs:
            for name, a, b in pairs:
                value = _ratio(metric(a, rpc, c, key), metric(b, rpc, c, key))
                if value is not None:
                    ratios.setdefault(f"{rpc}_{key}", {}).setdefault(name, {})[str(c)] = round(value, 3)
    for base in ("mock", "echo"):
        base1 = _find(results, base, "unary", 1)
        added: dict[str, Any] = {}
        for target in targets:
            r = _find(results, target, "unary", 1)
            if base1 and r and target not in (base, "mock"):
                added[target] = {
                    p: round(r["latency_ms"][p] - base1["latency_ms"][p], 3) for p in ("p50", "p90", "p99")
                }
        if added:
            ratios[f"unary_c1_added_latency_ms_vs_{'mock_direct' if base == 'mock' else 'echo'}"] = added
    ratios["overhead_cross_check"] = _overhead_cross_check(results)
    return ratios


# Slack of the cross-check's upper bound: two means of a noisy box subtracted (ms, and a share).
_CROSS_CHECK_SLACK_MS = 0.2
_CROSS_CHECK_SLACK = 1.1
# At c=1 nothing queues, so the bridge's figure is most of the external one; below this share it misses
# time the bridge spends (measured here: 0.6).
_CROSS_CHECK_MIN_SHARE_C1 = 0.25


def _overhead_cross_check(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The bridge's own overhead figure (mean over the run) beside the external one: the bridge's mean
    latency minus the mock's called directly, same rpc and concurrency. The external figure also holds
    what the bridge cannot see (the gRPC client and the C-core transport before the interceptor chain,
    the second loopback hop, and at c > 1 the queueing of a bridge slower than the mock), so the
    reported one must not exceed it (`holds`: within the slack); at c=1, where nothing queues, it must
    also be at least `_CROSS_CHECK_MIN_SHARE_C1` of it. A `holds: false` is printed as a MISMATCH."""
    checks: dict[str, Any] = {}
    for r in results:
        if "overhead_reported_ms" not in r or r["rpc"] != "unary":
            continue
        direct = _find(results, "mock", "unary", r["c"])
        external = None if direct is None else r["latency_ms"]["mean"] - direct["latency_ms"]["mean"]
        reported = r["overhead_reported_ms"]
        check: dict[str, Any] = {
            "reported_mean_ms": round(reported, 3),
            "external_added_mean_ms": None if external is None else round(external, 3),
            "share": None,
            "holds": None,
        }
        if external is not None and external > 0:
            floor = _CROSS_CHECK_MIN_SHARE_C1 * external if r["c"] == 1 else 0.0
            ceiling = external * _CROSS_CHECK_SLACK + _CROSS_CHECK_SLACK_MS
            check["share"] = round(reported / external, 3)
            check["holds"] = floor <= reported <= ceiling
        checks[f"{r['target']}_c{r['c']}"] = check
    return checks


@dataclass(frozen=True)
class Goal:
    key: str
    text: str
    goal: float
    higher_is_better: bool
    unit: str = "x"


GOALS = (
    Goal("unary_rps_vs_floor", "unary RPS / floor, c={unary_c}", 0.70, True),
    Goal("stream_chunks_vs_floor", "stream chunks/s / floor, 64-chunk streams, c={stream_c}", 0.70, True),
    Goal("added_p50_ms", "added p50 at c=1 over the floor", 0.35, False, " ms"),
    Goal("cpu_per_call_vs_floor", "server CPU per unary call / floor's, c={unary_c}", 1.5, False),
    Goal("cpu_per_chunk_vs_floor", "server CPU per streamed chunk / floor's, c={stream_c}", 1.3, False),
    Goal("idle_kb_per_stream", "RSS per idle open stream, {idle_n} streams open", 30.0, False, " KiB"),
    Goal("workers2_rps_at_p99", "unary RPS at p99 <= 20 ms, --workers 2", 3000.0, True, " RPS"),
    Goal("observed_vs_off_unary", "metrics + access log on / off, unary RPS, c={unary_c}", 0.90, True),
    Goal(
        "observed_vs_off_stream", "metrics + access log on / off, stream chunks/s, c={stream_c}", 0.90, True
    ),
)


def compute_goals(results: list[dict[str, Any]], settings: dict[str, Any], target: str) -> dict[str, Any]:
    """Issue 12's goals for `target`, each against the floor (echo) of the same run; None if not measured."""
    unary_c, stream_c = settings["goal_unary_c"], settings["goal_stream_c"]

    def find(t: str, rpc: str, c: int) -> dict[str, Any] | None:
        return _find(results, t, rpc, c)

    unary, floor_unary = find(target, "unary", unary_c), find("echo", "unary", unary_c)
    stream, floor_stream = find(target, "stream", stream_c), find("echo", "stream", stream_c)
    one, floor_one = find(target, "unary", 1), find("echo", "unary", 1)
    idle = next(
        (r for r in results if r["rpc"] == "idle" and r["target"] == target and "error" not in r), None
    )
    capacity = [
        r for r in results
        if r["target"] == WORKERS_TARGET and r["latency_ms"]["p99"] <= CAPACITY_P99_MS and not r["errors"]
    ]  # fmt: skip
    values: dict[str, float | None] = {
        "unary_rps_vs_floor": _ratio(unary and unary["rps"], floor_unary and floor_unary["rps"]),
        "stream_chunks_vs_floor": _ratio(
            stream and stream["chunks_per_s"], floor_stream and floor_stream["chunks_per_s"]
        ),
        "added_p50_ms": one["latency_ms"]["p50"] - floor_one["latency_ms"]["p50"]
        if one and floor_one
        else None,
        "cpu_per_call_vs_floor": _ratio(_server_cpu_per(unary), _server_cpu_per(floor_unary)),
        "cpu_per_chunk_vs_floor": _ratio(_server_cpu_per(stream), _server_cpu_per(floor_stream)),
        "idle_kb_per_stream": idle["kb_per_stream"] if idle else None,
        "workers2_rps_at_p99": max((r["rps"] for r in capacity), default=None),
        "observed_vs_off_unary": _ratio(
            (find("bridge-observed", "unary", unary_c) or {}).get("rps"),
            (find("bridge", "unary", unary_c) or {}).get("rps"),
        ),
        "observed_vs_off_stream": _ratio(
            (find("bridge-observed", "stream", stream_c) or {}).get("chunks_per_s"),
            (find("bridge", "stream", stream_c) or {}).get("chunks_per_s"),
        ),
    }
    out: dict[str, Any] = {"target": target}
    for goal in GOALS:
        value = values[goal.key]
        met = None if value is None else (value >= goal.goal if goal.higher_is_better else value <= goal.goal)
        out[goal.key] = {"value": None if value is None else round(value, 3), "goal": goal.goal, "met": met}
    return out


# Issue 22's goals: each row against the floor (echo) and the minimal bridge (bench/minimal_bridge.py) of
# the same run; for every target named here that was measured (the @base one is the before of a
# before/after run). The access line's cost is the target's CPU per call minus that of the same bridge at
# --log-level WARNING (the `bridge` target, or `bridge@base`).
LEAN_TARGETS = ("bridge-default", "bridge-default@base")
PACED_C = 400


@dataclass(frozen=True)
class LeanGoal:
    key: str
    text: str
    goal: float
    against: str  # "floor" | "minimal" | "" (an absolute value)
    higher_is_better: bool = False
    unit: str = ""  # unit of the measured values ("µs", "/s", "KiB")


LEAN_GOALS = (
    LeanGoal("cpu_call", "server CPU per unary call, c={unary_c}", 3.1, "floor", unit="µs"),
    LeanGoal("cpu_chunk", "server CPU per streamed chunk, c={stream_c}", 1.45, "floor", unit="µs"),
    LeanGoal("unary_rps", "unary RPS, c={unary_c}", 0.29, "floor", True, "/s"),
    LeanGoal("stream_chunks", "stream chunks/s, 64-chunk streams, c={stream_c}", 0.72, "floor", True, "/s"),
    LeanGoal("access_line", "the access line's own cost (CPU per call vs WARNING)", 10.0, "", unit="µs"),
    LeanGoal("idle_kb", "RSS per idle open stream", 35.0, "", unit="KiB"),
    LeanGoal(
        "paced_chunk", "server CPU per chunk, one token per read, c={paced_c}", 1.25, "minimal", unit="µs"
    ),
)


def compute_lean_goals(results: list[dict[str, Any]], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 22's goals for each LEAN_TARGETS target measured; per row the target's, the floor's and the
    minimal bridge's values and the ratios."""
    unary_c, stream_c = settings["goal_unary_c"], settings["goal_stream_c"]
    paced_c = (settings.get("paced_concurrency") or [PACED_C])[0]

    def cpu_us(target: str, rpc: str, c: int) -> float | None:
        per = _server_cpu_per(_find(results, target, rpc, c))
        return None if per is None else per * 1e6

    def rate(target: str, rpc: str, c: int) -> float | None:
        r = _find(results, target, rpc, c)
        return None if r is None else _rate(r) or None

    def idle(target: str) -> float | None:
        found = [r for r in results if r["rpc"] == "idle" and r["target"] == target and "error" not in r]
        return found[0]["kb_per_stream"] if found else None

    out = []
    for target in LEAN_TARGETS:
        if not any(r["target"] == target for r in results):
            continue
        quiet = "bridge@base" if target.endswith(BASELINE_SUFFIX) else "bridge"
        mine, quiet_cpu = cpu_us(target, "unary", unary_c), cpu_us(quiet, "unary", unary_c)
        rows: dict[str, tuple[float | None, ...]] = {
            "cpu_call": (mine, cpu_us("echo", "unary", unary_c), cpu_us("minimal", "unary", unary_c)),
            "cpu_chunk": tuple(cpu_us(t, "stream", stream_c) for t in (target, "echo", "minimal")),
            "unary_rps": tuple(rate(t, "unary", unary_c) for t in (target, "echo", "minimal")),
            "stream_chunks": tuple(rate(t, "stream", stream_c) for t in (target, "echo", "minimal")),
            "access_line": (None if mine is None or quiet_cpu is None else mine - quiet_cpu, None, None),
            "idle_kb": (idle(target), None, idle("minimal")),
            "paced_chunk": (cpu_us(target, "paced", paced_c), None, cpu_us("minimal", "paced", paced_c)),
        }
        entry: dict[str, Any] = {"target": target}
        for goal in LEAN_GOALS:
            value, floor, minimal = rows[goal.key]
            vs_floor, vs_minimal = _ratio(value, floor), _ratio(value, minimal)
            judged = {"floor": vs_floor, "minimal": vs_minimal, "": value}[goal.against]
            met = (
                None
                if judged is None
                else (judged >= goal.goal if goal.higher_is_better else judged <= goal.goal)
            )
            entry[goal.key] = {
                "value": value, "floor": floor, "minimal": minimal,
                "vs_floor": vs_floor, "vs_minimal": vs_minimal, "goal": goal.goal, "met": met,
            }  # fmt: skip
        out.append(entry)
    return out


def render_lean_goals(entries: list[dict[str, Any]], s: dict[str, Any]) -> list[str]:
    names = {
        "unary_c": s["goal_unary_c"],
        "stream_c": s["goal_stream_c"],
        "paced_c": (s.get("paced_concurrency") or [PACED_C])[0],
    }
    lines: list[str] = []
    for entry in entries:
        lines += [
            "",
            f"Goals (issue 22), {_label(entry['target'])}: against the floor and the minimal bridge",
            "",
        ]
        lines.append(
            f"| {'metric':<58} | {'measured':>10} | {'floor':>9} | {'minimal':>9} | {'x floor':>7} "
            f"| {'x minimal':>9} | {'goal':>16} | met |"
        )
        lines.append(f"|{'-' * 60}|{'-' * 12}|{'-' * 11}|{'-' * 11}|{'-' * 9}|{'-' * 11}|{'-' * 18}|-----|")
        for goal in LEAN_GOALS:
            row = entry[goal.key]
            digits = 1 if goal.unit in ("µs", "KiB") else 0

            def shown(value: float | None, digits: int = digits, unit: str = goal.unit) -> str:
                return "-" if value is None else f"{value:,.{digits}f} {unit}"

            sign = ">=" if goal.higher_is_better else "<="
            wanted = f"{sign} {goal.goal:g}" + (f"x {goal.against}" if goal.against else f" {goal.unit}")
            met = "-" if row["met"] is None else ("yes" if row["met"] else "no")
            lines.append(
                f"| {goal.text.format(**names):<58} | {shown(row['value']):>10} | {shown(row['floor']):>9} "
                f"| {shown(row['minimal']):>9} | {_fmt(row['vs_floor'], 2):>7} "
                f"| {_fmt(row['vs_minimal'], 2):>9} "
                f"| {wanted:>16} | {met:>3} |"
            )
    return lines


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cpu_per(r: dict[str, Any], rate: str) -> str:
    """CPU of the server process per call (or chunk), µs: the mock's for the mock, else the target's."""
    cores = r["cpu_cores"]["mock" if r["target"] == "mock" else "target"]
    return "-" if not r[rate] else f"{cores / r[rate] * 1e6:,.0f} µs"


def _cpu_cell(r: dict[str, Any]) -> str:
    cpu = r["cpu_cores"]
    return f"{cpu['target']:>4.2f}/{cpu['mock']:.2f}/{cpu['generator']:.2f}/{cpu['other']:.2f}{'':>4}"


def _label(key: str) -> str:
    return target_of(key).label


def _unary_rows(results: list[dict[str, Any]], rows: list[tuple[str, int]]) -> list[str]:
    head = (
        f"| {'target':<31} | {'c':>3} | {'RPS':>7} | {'p50 ms':>7} | {'p90 ms':>7} | {'p99 ms':>7} "
        f"| {'vs echo':>7} | {'srv CPU/call':>12} | {'CPU srv/mock/gen/other':>23} |"
    )
    lines = [head, "|" + "|".join("-" * (len(part)) for part in head.split("|")[1:-1]) + "|"]
    for key, c in rows:
        r = _find(results, key, "unary", c)
        if r is None:
            continue
        echo = _find(results, "echo", "unary", c)
        lat = r["latency_ms"]
        vs = _ratio(r["rps"], echo["rps"] if echo else None)
        lines.append(
            f"| {_label(key):<31} | {c:>3} | {_fmt(r['rps']):>7} | {lat['p50']:>7.2f} "
            f"| {lat['p90']:>7.2f} | {lat['p99']:>7.2f} | {_fmt(vs, 2):>7} | {_cpu_per(r, 'rps'):>12} "
            f"| {_cpu_cell(r)} |"
        )
    return lines


def render(results: list[dict[str, Any]], ratios: dict[str, Any], meta: dict[str, Any]) -> str:
    lines: list[str] = []
    s = meta["settings"]
    v, m = meta["versions"], meta["machine"]
    lines.append(
        f"{m['nproc']} cores ({m['cpu_model']}), Python {v['python']}, grpcio {v['grpcio']}, "
        + ", ".join(f"{name} {v[name]}" for name in ("httpx", "aiohttp", "uvloop", "orjson")
                    if v.get(name, "-") != "-")
        + f"; {s['duration_s']:g} s per point after {s['warmup_s']:g} s warm-up"
        + (f"; each point the median of {s['repeat']} interleaved runs" if s.get("repeat", 1) > 1 else "")
    )  # fmt: skip
    lines.append("")
    lines.append("Unary CreateChatCompletion (20-word echo)")
    lines += _unary_rows(results, [(key, c) for c in s["unary_concurrency"] for key in s["targets"]])
    lines.append("")
    chunks = s.get("stream_chunks", workload.STREAM_CHUNKS)
    lines.append(f"Streaming StreamChatCompletion ({chunks} chunks per stream)")
    head = (
        f"| {'target':<31} | {'c':>3} | {'streams/s':>9} | {'chunks/s':>8} | {'TTFC p50':>8} "
        f"| {'TTFC p99':>8} | {'total p50':>9} | {'total p99':>9} | {'vs echo':>7} | {'srv CPU/chunk':>13} "
        f"| {'CPU srv/mock/gen/other':>23} |"
    )
    lines += [head, "|" + "|".join("-" * (len(part)) for part in head.split("|")[1:-1]) + "|"]
    scenarios = [("stream", c) for c in s["stream_concurrency"]]
    scenarios += [("paced", c) for c in s.get("paced_concurrency", [])]
    for rpc, c in scenarios:
        if rpc == "paced" and (rpc, c) == scenarios[len(s["stream_concurrency"])]:
            lines.append(f"| paced: {workload.PACED_MODEL}, one token per read, 20 chunks 100 ms apart |")
        echo = _find(results, "echo", rpc, c)
        for key in s["targets"]:
            r = _find(results, key, rpc, c)
            if r is None:
                continue
            vs = _ratio(r["chunks_per_s"], echo["chunks_per_s"] if echo else None)
            first, total = r["first_ms"], r["latency_ms"]
            lines.append(
                f"| {_label(key):<31} | {c:>3} | {_fmt(r['rps']):>9} | {_fmt(r['chunks_per_s']):>8} "
                f"| {first['p50']:>8.2f} | {first['p99']:>8.2f} | {total['p50']:>9.2f} "
                f"| {total['p99']:>9.2f} | {_fmt(vs, 2):>7} | {_cpu_per(r, 'chunks_per_s'):>13} "
                f"| {_cpu_cell(r)} |"
            )
    capacity = [(WORKERS_TARGET, c) for c in s.get("capacity_concurrency", [])]
    if any(_find(results, key, "unary", c) for key, c in capacity):
        lines.append("")
        lines.append(
            f"Capacity: unary, --workers 2, min(c, 16) connections (p99 goal {CAPACITY_P99_MS:g} ms)"
        )
        lines += _unary_rows(results, capacity)
    idle = [r for r in results if r["rpc"] == "idle" and "error" not in r]
    if idle:
        lines.append("")
        lines.append("Idle streams: RSS of a fresh bridge with N streams open and the upstream silent")
        for r in idle:
            lines.append(
                f"  {_label(r['target']):<31} n={r['c']}: {r['rss_kb_before']:,} -> "
                f"{r['rss_kb_open']:,} KiB, {r['kb_per_stream']:.1f} KiB per stream"
            )
    lines.append("")
    lines.append(
        "CPU srv/mock/gen/other: cores used by the measured server, the mock gateway, the load generator and "
        "processes outside the benchmark; srv CPU/call: server cores / throughput."
    )
    lines.append("")
    lines.append("Ratios (RPS for unary, chunks/s for streaming; by concurrency)")
    for group, pairs in ratios.items():
        if "added_latency" in group or group == "overhead_cross_check":
            continue
        for name, by_c in pairs.items():
            values = ", ".join(f"c={c}: {v:.2f}" for c, v in by_c.items())
            lines.append(f"  {group:<20} {name:<40} {values}")
    for base in ("echo", "mock_direct"):
        added = ratios.get(f"unary_c1_added_latency_ms_vs_{base}")
        if added:
            lines.append("")
            lines.append(f"Added latency at c=1, unary, vs {_BASES[base]} (ms)")
            for target, values in added.items():
                shown = "  ".join(f"{p} {values[p]:+.2f}" for p in ("p50", "p90", "p99"))
                lines.append(f"  {_label(target):<31} {shown}")
    checks = ratios.get("overhead_cross_check")
    if checks:
        lines.append("")
        lines.append(
            "Overhead, unary: the bridge's prisme_bridge_overhead_seconds vs bridge - mock direct (mean ms;"
            " holds: reported <= external, and >= a quarter of it at c=1)"
        )
        for key, check in checks.items():
            reported, external = check["reported_mean_ms"], check["external_added_mean_ms"]
            share, holds = check.get("share"), check.get("holds")
            verdict = {True: "holds", False: "MISMATCH", None: "not checked"}[holds]
            shown = "" if share is None else f"  share {share:.2f}"
            lines.append(f"  {key:<31} reported {reported}  external {external}{shown}  {verdict}")
    goals = meta.get("goals")
    if goals:
        lines.append("")
        lines += render_goals(goals, s)
    lean = meta.get("lean_goals")
    if lean:
        lines += render_lean_goals(lean, s)
    flag = s["noise_flag_cores"]
    noisy = [r for r in results if "cpu_cores" in r and r["cpu_cores"]["other"] > flag]
    if noisy:
        lines.append("")
        lines.append(
            f"Noise: {len(noisy)} of {len(results)} points had > {flag} cores "
            "busy outside the benchmark: "
            + ", ".join(f"{r['target']}/{r['rpc']}/c={r['c']} ({r['cpu_cores']['other']:.2f})" for r in noisy)
        )
    return "\n".join(lines)


_BASES = {"echo": "the floor (echo)", "mock_direct": "the mock called directly over HTTP"}


def render_goals(goals: dict[str, Any], s: dict[str, Any]) -> list[str]:
    names = {"unary_c": s["goal_unary_c"], "stream_c": s["goal_stream_c"], "idle_n": s.get("idle_streams")}
    lines = [f"Goals (issue 12), {_label(goals['target'])} against the floor of this run", ""]
    lines.append(f"| {'metric':<62} | {'measured':>12} | {'goal':>12} | met |")
    lines.append(f"|{'-' * 64}|{'-' * 14}|{'-' * 14}|-----|")
    for goal in GOALS:
        entry = goals.get(goal.key)
        if entry is None:
            continue
        sign = ">=" if goal.higher_is_better else "<="
        value = entry["value"]
        digits = 0 if goal.unit == " RPS" else 1 if goal.unit == " KiB" else 2
        shown = "-" if value is None else f"{value:,.{digits}f}{goal.unit}"
        met = "-" if entry["met"] is None else ("yes" if entry["met"] else "no")
        wanted = f"{sign} {goal.goal:,.{digits}f}{goal.unit}"
        lines.append(f"| {goal.text.format(**names):<62} | {shown:>12} | {wanted:>12} | {met:>3} |")
    return lines


def _progress(result: dict[str, Any]) -> None:
    extra = f" {result['chunks_per_s']:,.0f} chunks/s" if result["rpc"] in STREAMING else ""
    print(
        f"  {result['rpc']:<6} c={result['c']:<3} {result['target']:<15} {result['rps']:>8,.0f}/s{extra}  "
        f"p50 {result['latency_ms']['p50']:.2f} ms  p99 {result['latency_ms']['p99']:.2f} ms  "
        f"errors {result['errors']}  cpu {result['cpu_cores']}",
        file=sys.stderr,
    )


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
    baseline = None
    if BASELINE is not None:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BASELINE, capture_output=True, text=True)
        baseline = {"dir": str(BASELINE), "git_commit": commit.stdout.strip()}
    return {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git,
        "baseline": baseline,
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
                for n in (
                    "grpcio",
                    "protobuf",
                    "httpx",
                    "httpcore",
                    "aiohttp",
                    "uvloop",
                    "orjson",
                )
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
            "paced_concurrency": args.paced_concurrency,
            "paced_request": workload.request_json(workload.PACED_PROMPT, workload.PACED_MODEL),
            "repeat": args.repeat,
            "targets": args.targets,
            "quiet_threshold_cores": args.quiet_threshold,
            "quiet_wait_s": args.quiet_wait,
            "quiet_budget_s": args.quiet_budget,
            "noise_flag_cores": args.noise_flag,
            "request": workload.request_json(),
            "stream_request": workload.request_json(workload.LONG_PROMPT),
            "stream_chunks": workload.chunks_of(workload.LONG_PROMPT),
            "goal_target": args.goal_target,
            "goal_unary_c": GOAL_UNARY_C,
            "goal_stream_c": GOAL_STREAM_C,
            "capacity_concurrency": args.capacity_concurrency,
            "idle_streams": args.idle_streams,
        },
    }


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 s points, no capacity sweep, 200 idle streams"
    )
    parser.add_argument("--duration", type=float, help="measured seconds per point (default 10, quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per point (default 2, quick 1)")
    parser.add_argument("--concurrency", type=int, nargs="+", help="unary concurrencies (default 1 32)")
    parser.add_argument("--stream-concurrency", type=int, nargs="+", help="stream concurrencies (default 16)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each point N times, the targets interleaved (A B A B ...); the run with the median "
        "rate is reported (all runs are kept in the result file). Use 3 or 5 for ratios between targets "
        "closer than the box's noise",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        type=lambda key: target_of(key).key,
        default=DEFAULT_TARGETS,
        help=f"default: {' '.join(DEFAULT_TARGETS)}; also bridge-bare, bridge-orca-off, ref-aiohttp, "
        f"ref-bare and bridge-TRANSPORT[-LOOP] (TRANSPORT: {', '.join(TRANSPORTS)}; "
        f"LOOP: {', '.join(LOOPS)})",
    )
    parser.add_argument(
        "--paced-concurrency",
        type=int,
        nargs="*",
        help="streams in flight of the paced scenario (issue 22: the mock's paced-100 model, one token per "
        "read, 20 chunks 100 ms apart; not for echo and mock); default 400, quick 100; none: skip",
    )
    parser.add_argument("--only", choices=["unary", "stream", "paced"], help="run one RPC kind only")
    parser.add_argument(
        "--capacity-concurrency",
        type=int,
        nargs="*",
        help="concurrencies of the --workers 2 capacity sweep (default 4 8 16 32, quick none; none: skip)",
    )
    parser.add_argument(
        "--idle-streams",
        type=int,
        help="streams held open for the idle-memory point (default 1000, quick 200; 0: skip)",
    )
    parser.add_argument(
        "--idle-targets", nargs="+", type=lambda key: target_of(key).key, help="default: the goal target"
    )
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
        "--baseline",
        type=Path,
        metavar="DIR",
        help="another checkout (a worktree of the commit to compare with, bootstrapped: its .venv) that "
        f"targets ending in {BASELINE_SUFFIX} run their bridge from, e.g. --targets echo bridge "
        f"bridge{BASELINE_SUFFIX}: before and after measured in the same rounds",
    )
    parser.add_argument(
        "--render", type=Path, metavar="RESULT_JSON", help="only print the table of a result file"
    )
    parser.add_argument(
        "--output", type=Path, help="result file (default bench/results/<UTC time>[-quick].json)"
    )
    args = parser.parse_args(argv)
    global BASELINE
    BASELINE = args.baseline
    baseline_targets = [key for key in args.targets if key.endswith(BASELINE_SUFFIX)]
    if baseline_targets and (BASELINE is None or not (BASELINE / ".venv/bin/python").exists()):
        parser.error(f"{baseline_targets[0]} needs --baseline DIR, a checkout with its own .venv")
    quick = args.quick
    args.duration = args.duration or (2.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    args.concurrency = args.concurrency or [1, 32]
    args.stream_concurrency = args.stream_concurrency or [16]
    if args.paced_concurrency is None:
        args.paced_concurrency = [100] if quick else [400]
    if args.capacity_concurrency is None:
        args.capacity_concurrency = [] if quick else [4, 8, 16, 32]
    if args.idle_streams is None:
        args.idle_streams = 200 if quick else 1000
    goal = GOAL_TARGET if GOAL_TARGET in args.targets else args.targets[-1]
    args.goal_target = goal
    args.idle_targets = args.idle_targets or [goal]
    if "minimal" in args.targets and "minimal" not in args.idle_targets:
        args.idle_targets.append("minimal")  # the reference of issue 22's idle-memory row
    args.quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0.0 if quick else 30.0)
    if args.only:
        args.concurrency = args.concurrency if args.only == "unary" else []
        args.stream_concurrency = args.stream_concurrency if args.only == "stream" else []
        args.paced_concurrency = args.paced_concurrency if args.only == "paced" else []
    if args.only:
        args.capacity_concurrency, args.idle_streams = [], 0
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
        ratios = saved["ratios"]
        if "overhead_cross_check" in ratios:  # judged as this version judges it
            ratios["overhead_cross_check"] = _overhead_cross_check(saved["results"])
        print(render(saved["results"], ratios, saved["meta"]))
        return 0
    protoset, request_bin, stream_request_bin = build_inputs()
    gen = Generators(
        ghz=None if args.generator == "python" else find_ghz(),
        streamgen=None if args.generator == "python" else build_streamgen(),
        protoset=protoset,
        request_bin=request_bin,
        stream_request_bin=stream_request_bin,
    )
    meta = metadata(args, gen)
    logdir = Path(tempfile.mkdtemp(prefix="prisme-bench-"))
    bench = Bench(args, logdir)
    results: list[dict[str, Any]] = []
    points = [("unary", c) for c in args.concurrency] + [("stream", c) for c in args.stream_concurrency]
    points += [("paced", c) for c in args.paced_concurrency]
    started = time.monotonic()
    with running(bench):
        start_targets(bench, args.targets)
        # Each server imported bridge/ at startup: what they run is what was on disk until now.
        meta["bridge_source_digest_loaded"] = bridge_source_digest()
        total = len(points) * len(args.targets) * args.repeat
        print(f"targets up (logs in {logdir}); {total} points", file=sys.stderr)
        runs: list[dict[str, Any]] = []
        for rpc, c in points:
            for _ in range(args.repeat):  # rounds: a drift of the box's speed spreads over every target
                for key in args.targets:
                    if rpc == "paced" and key in ("echo", "mock"):
                        continue  # canned replies / no gRPC: the paced scenario is about bridges
                    result = measure(bench, gen, target_of(key), rpc, c)
                    runs.append(result)
                    _progress(result)
        results = median_runs(runs)
        for key in [k for k in args.targets if k not in ("echo", "mock", *REFERENCES)]:
            bench.stop(key)  # idle from now on; the servers of the next points are started fresh
        if args.capacity_concurrency:
            results += measure_capacity(bench, gen)
        for key in args.idle_targets if args.idle_streams > 0 else []:
            try:
                results.append(measure_idle(bench, key, args.idle_streams))
            except RuntimeError as exc:  # recorded, and the run's other results still written
                print(f"  idle   {key}: {exc}", file=sys.stderr)
                results.append({"target": key, "rpc": "idle", "c": args.idle_streams, "error": str(exc)})
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
    meta["goals"] = compute_goals(results, meta["settings"], args.goal_target)
    meta["lean_goals"] = compute_lean_goals(results, meta["settings"])
    table = render(results, ratios, meta)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    saved = {"meta": meta, "results": results, "ratios": ratios, "table": table}
    if args.repeat > 1:
        saved["runs"] = runs  # every run of every point; `results` holds the median ones
    output.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"\nwrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
