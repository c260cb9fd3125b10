"""`prisme-bridge serve --workers N`: N bridge processes on one port, forked before gRPC starts, supervised.

One grpc.aio process uses one core. The parent reserves the listen (and health) port, then forks N
workers, each a whole bridge (`bridge.app.serve`) that binds the same port with SO_REUSEPORT, so the
kernel spreads new connections across them (grpc's examples/python/multiprocessing does the same). The
parent never creates a gRPC object: gRPC is not fork-safe once started.

Signals: the workers run in their own process group, so a terminal's Ctrl-C reaches only the parent; the
parent forwards each SIGTERM or SIGINT it gets to every worker as SIGTERM. Each worker then drains as a
single process does (--drain-delay, a second signal cuts it short, then --shutdown-grace); the parent exits
once all have, 0 if every one exited 0.

Supervision: a worker that dies while serving is logged and replaced. More than `MAX_DEATHS` deaths within
`DEATH_WINDOW_S` seconds is a crash loop: the parent stops the others and exits 1, so Kubernetes restarts
the pod with its back-off instead of the parent forking forever. A worker that cannot start (a port or a
TLS file it cannot use) fails the whole start with its one-line reason. On Linux a worker whose parent
dies gets SIGTERM (PR_SET_PDEATHSIG) rather than serving on as an orphan.

Metrics (`--metrics-listen`) aggregate across workers with prometheus-client's multiprocess mode:
`_before_fork` (the one place that runs in the parent before any worker exists, and before any worker
imports prometheus-client) exports a fresh PROMETHEUS_MULTIPROC_DIR; each worker records into its own files
there and serves the aggregate of all of them (bridge.rpc.metrics.exposed) on the shared metrics port,
which the parent reserves like the gRPC port; whichever worker answers a scrape, it is the pod's total. A
reaped worker's live gauges are dropped (`mark_process_dead`); the directory goes with the parent. What
each worker decides alone stays per worker: the model-label cap and --max-concurrent-rpcs.

Load reports (`--orca`) are the pod's too: the parent maps a `LoadBoard` (bridge.rpc.load) in shared
memory before the fork, each worker counts its calls and CPU time in its own row and reports the sum of
all rows; a reaped worker's calls in flight are cleared from it, its replacement continues its counters.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Final

from bridge.address import split_host_port
from bridge.rpc.load import LoadBoard
from bridge.settings import ServeSettings

__all__ = ["DEATH_WINDOW_S", "MAX_DEATHS", "run_workers"]

log = logging.getLogger(__name__)

MAX_DEATHS: Final = 5
DEATH_WINDOW_S: Final = 60.0
_READY: Final = b"ready\n"
_PR_SET_PDEATHSIG: Final = 1
_MULTIPROC_DIR: Final = "PROMETHEUS_MULTIPROC_DIR"


def run_workers(settings: ServeSettings) -> int:
    """Runs `settings.lifecycle.workers` bridge processes until SIGTERM/SIGINT; the exit code. Raises
    OSError (one line) if the ports cannot be reserved or a worker cannot start."""
    with _reserved_ports(settings) as shared, _before_fork(shared):
        return _Supervisor(shared).run()


# ---------------------------------------------------------------------------------------------- ports


@contextlib.contextmanager
def _reserved_ports(settings: ServeSettings) -> Iterator[ServeSettings]:
    """`settings` with the listen (and health) ports the workers share, each held by a bound (not
    listening) SO_REUSEPORT socket meanwhile, so port 0 becomes one port for all."""
    sockets: list[socket.socket] = []
    try:
        server = settings.server.model_copy(update={"listen": _reserve(settings.server.listen, sockets)})
        health = settings.lifecycle.health_listen
        lifecycle = settings.lifecycle.model_copy(
            update={"health_listen": _reserve(health, sockets) if health else None}
        )
        scrape = settings.metrics.listen
        metrics = settings.metrics.model_copy(
            update={"listen": _reserve(scrape, sockets) if scrape else None}
        )
        yield settings.model_copy(update={"server": server, "lifecycle": lifecycle, "metrics": metrics})
    finally:
        for sock in sockets:
            sock.close()


def _reserve(address: str, sockets: list[socket.socket]) -> str:
    host, port = split_host_port(address)
    bare = host.strip("[]")
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    try:
        # First without SO_REUSEPORT, so a port anyone else holds is refused as with one process.
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
            port = probe.getsockname()[1]
        held = socket.socket(family, kind, proto)
        sockets.append(held)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((sockaddr[0], port, *sockaddr[2:]))
    except OSError as exc:
        raise OSError(f"cannot listen on {address}: address in use or not available") from exc
    return f"{host}:{port}"


@contextlib.contextmanager
def _before_fork(settings: ServeSettings) -> Iterator[None]:
    """What the workers share, set up in the parent before any of them exists: with metrics on, the
    directory of prometheus-client's multiprocess mode (removed when the parent is done)."""
    if settings.metrics.listen is None:
        yield
        return
    with _metrics_directory(settings.lifecycle.workers) as directory:
        previous = os.environ.get(_MULTIPROC_DIR)
        os.environ[_MULTIPROC_DIR] = directory
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(_MULTIPROC_DIR, None)
            else:
                os.environ[_MULTIPROC_DIR] = previous


@contextlib.contextmanager
def _metrics_directory(workers: int) -> Iterator[str]:
    """A fresh directory for the workers' metrics files, in the temporary directory (TMPDIR, else /tmp,
    ...), removed afterwards. Raises OSError in one line naming TMPDIR if none is writable (a read-only
    root filesystem without a volume there)."""
    try:
        holder = tempfile.TemporaryDirectory(prefix="prisme-bridge-metrics-")
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.filename:  # mkdtemp's error names the directory it tried to create
            why += f" in {os.path.dirname(exc.filename)}"
        raise OSError(
            f"--workers {workers} with --metrics-listen keeps the workers' metrics in a temporary directory: "
            f"{why[:1].lower()}{why[1:]}; set TMPDIR to a writable directory (in Kubernetes: an emptyDir "
            "volume, as deploy/kubernetes/base mounts at /tmp)"
        ) from exc
    with holder as directory:
        yield directory


def _forget_dead(pid: int) -> None:
    """Drops a reaped worker's live gauges (calls in flight) from the aggregate."""
    if os.environ.get(_MULTIPROC_DIR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


# ------------------------------------------------------------------------------------------- workers


@dataclass
class _Worker:
    index: int
    pid: int
    ready_fd: int  # the parent's end of the pipe the worker reports on


class _Supervisor:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.count = settings.lifecycle.workers
        self.workers: dict[int, _Worker] = {}
        self.stopping = False
        self.failed = False
        self.deaths: deque[float] = deque()
        # Mapped before any fork, so every worker shares it (no gRPC in it: bridge.rpc.load).
        self.load = LoadBoard(self.count, shared=True) if settings.orca.enabled else None

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._start_all()
            return self._supervise()
        except OSError:  # a worker could not start
            self._stop_all()
            self._reap_all()
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start_all(self) -> None:
        for index in range(1, self.count + 1):
            self._fork(index)
        for worker in list(self.workers.values()):
            problem = self._wait_ready(worker)
            if problem is not None and not self.stopping:
                raise OSError(problem)
        if not self.stopping:
            log.info("%d workers serving on %s", self.count, self.settings.server.listen)

    def _supervise(self) -> int:
        """Replaces workers that die until stopped; then 0 if every worker stopped cleanly."""
        clean = True
        while self.workers:
            pid, status = os.wait()
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            _forget_dead(pid)
            if self.load is not None:
                self.load.forget(worker.index - 1)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                clean = clean and code == 0
                continue
            log.error("worker %d (pid %d) %s; starting a new one", worker.index, pid, _ended(code))
            if self._crash_loop():
                log.error("%d workers died within %.0f s: stopping", MAX_DEATHS + 1, DEATH_WINDOW_S)
                self.failed = True
                self._stop_all()
                continue
            problem = self._wait_ready(self._fork(worker.index))
            if problem is not None and not self.stopping:
                log.error("worker %d could not start: %s", worker.index, problem)
        return 0 if clean and not self.failed else 1

    def _crash_loop(self) -> bool:
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - DEATH_WINDOW_S:
            self.deaths.popleft()
        return len(self.deaths) > MAX_DEATHS

    def _fork(self, index: int) -> _Worker:
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the parent's code
            code = 1
            try:
                os.close(read_fd)
                code = _worker_main(self.settings, index, write_fd, self.load)
            finally:
                os._exit(code)
        os.close(write_fd)
        worker = self.workers[pid] = _Worker(index, pid, read_fd)
        if self.stopping:  # a signal arrived while forking
            _kill(pid)
        return worker

    def _wait_ready(self, worker: _Worker) -> str | None:
        """None once the worker serves; else why it did not (it exited)."""
        with os.fdopen(worker.ready_fd, "rb") as pipe:
            report = pipe.readline()
        if report == _READY:
            log.info("worker %d of %d serving (pid %d)", worker.index, self.count, worker.pid)
            return None
        text = report.decode(errors="replace").strip()
        return text or f"worker {worker.index} exited before serving"

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.workers))
        self._stop_all()  # again on a second signal: it cuts the workers' drain delay short

    def _stop_all(self) -> None:
        self.stopping = True
        for pid in list(self.workers):
            _kill(pid)

    def _reap_all(self) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.workers.pop(pid, None)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def _ended(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


# -------------------------------------------------------------------------------- inside a worker


def _worker_main(settings: ServeSettings, index: int, ready_fd: int, load: LoadBoard | None) -> int:
    """The forked worker: serves until its signal; the exit code. Reports on `ready_fd` once serving,
    or why it could not start. `load`: the pod's load board (its row is `index - 1`)."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the parent only, which forwards it once
        _die_with_parent()
        # Imported after the fork, in each worker: the parent holds no gRPC state, and libraries that fix
        # process-wide modes at import (prometheus-client's multiprocess mode) see what _before_fork set.
        from bridge import eventloop
        from bridge.app import load_meter, serve

        def ready() -> None:
            os.write(ready_fd, _READY)

        with contextlib.suppress(KeyboardInterrupt):
            # The upstream's reachability is checked (and logged) once per pod, by the first worker.
            meter = None if load is None else load_meter(settings, load, index - 1)
            served = serve(settings, reuse_port=True, on_ready=ready, check_upstream=index == 1, load=meter)
            eventloop.run(served, settings.lifecycle.event_loop)
        code = 0
    except OSError as exc:
        with contextlib.suppress(OSError):  # the parent stopped reading once the worker served
            os.write(ready_fd, f"{exc}\n".encode())
    except BaseException:
        log.exception("worker %d failed", index)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _die_with_parent() -> None:
    """SIGTERM when the parent dies (Linux), so no worker serves on as an orphan."""
    if sys.platform != "linux":
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl
        os.kill(os.getpid(), signal.SIGTERM)
