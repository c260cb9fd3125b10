"""A built Deployment's pod, started here the way a container runtime would start it, without a cluster.

The container's filesystem: a new root (a chroot) that shows this machine's files read-only, where only
the pod's emptyDir volumes are writable (tmpfs) and its Secret volumes are bind-mounted files, read-only.
Its process: the image's ENTRYPOINT + the container's args, with exactly the environment the image and the
manifest give (ConfigMaps resolved), in the image's WORKDIR, as the pod's runAsUser/runAsGroup with no
supplementary groups and no_new_privs. Its network: a namespace of its own (a pod's ports cannot collide
with anything else on the machine), where the mock gateway stands in for the upstream.

Three layers, each a process:

  test (pytest)        builds the plan (tests/manifests.py), runs `drive` in a new network namespace
  drive                loopback up, the mock gateway, then `enter` for a write probe and for the pod; checks
                       what a kubelet checks (the gRPC health probes) and what a caller does; prints a report
  enter                in a new mount namespace: builds the root, mounts the volumes, makes the rest
                       read-only, chroots, drops to the pod's user, execs the container's command

Namespaces need privileges: as root, `unshare -n` / `unshare -m` ("root" mode); otherwise an unprivileged
user namespace, `unshare -r` ("userns" mode: the same filesystem and network, but the pod runs as the
namespace's root instead of its runAsUser: the strongest fallback, and said so). Neither: `mode()` raises
SandboxUnavailableError, and the test fails saying why; scripts/check runs `python -m tests.pod_sandbox probe`
first, so CI says which mode it has before any test runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any, Final, NoReturn

ROOT: Final = Path(__file__).parents[1]
MODES: Final = {"root": ["unshare", "-n"], "userns": ["unshare", "-r", "-n"]}

Plan = dict[str, Any]


class SandboxUnavailableError(RuntimeError):
    """This machine cannot make the namespaces a pod needs."""


def mode() -> str:
    """ "root" or "userns" (the fallback), whichever this machine allows; raises SandboxUnavailableError."""
    tried = []
    for name, prefix in MODES.items():
        if name == "root" and os.geteuid() != 0:
            tried.append("root: not running as root")
            continue
        command = [*prefix[:-1], "-m", "-n", "true"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise SandboxUnavailableError("unshare (util-linux) is not installed") from None
        if result.returncode == 0:
            return name
        tried.append(f"{name}: `{' '.join(command)}` failed: {result.stderr.strip()}")
    raise SandboxUnavailableError("no mount and network namespaces here (" + "; ".join(tried) + ")")


def run_drive(plan: Plan, sandbox: str, workdir: Path, within: float) -> dict[str, Any]:
    """Runs the pod of `plan` in `sandbox` mode; the driver's report (see `drive`)."""
    # What stands for the image's own Python installation: this interpreter, its venv and this checkout
    # (the editable install of the bridge).
    reachable = {os.path.realpath(sys.executable), sys.base_prefix, sys.prefix, str(ROOT)}
    plan = {**plan, "mode": sandbox, "root": str(workdir / "root"), "reachable": sorted(reachable)}
    if sandbox != "root":
        plan["uid"] = plan["gid"] = None  # only the namespace's root exists in an unprivileged one
    (workdir / "root").mkdir()
    plan_file = workdir / "plan.json"
    plan_file.write_text(json.dumps(plan))
    command = [*MODES[sandbox], sys.executable, "-m", "tests.pod_sandbox", "drive", str(plan_file)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=within, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise AssertionError(f"the pod driver failed ({result.returncode}):\n{result.stderr}")
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


# ------------------------------------------------------------------------------- enter: the container


def enter(plan: Plan, argv: list[str] | None = None, as_root: bool = False) -> NoReturn:
    """In a new mount namespace: the pod's root, volumes and user, then exec `argv` (default: the
    container's command) with the container's environment."""
    root = Path(plan["root"])
    _mount("--make-rprivate", "/")
    _mount("-t", "tmpfs", "-o", "mode=0755,size=4m", "tmpfs", str(root))
    owned = {root}  # directories on a tmpfs of ours, where mount points may be made
    # The top-level directory holding `root` first: its copy then holds an empty `root`, not a growing one.
    for entry in sorted(os.listdir("/"), key=lambda name: not root.is_relative_to("/" + name)):
        _mirror(Path("/", entry), root / entry)
    mounts = plan["mounts"]
    for path in [plan["workdir"], *(mount["path"] for mount in mounts)]:
        _make_dirs(root, path, owned)
    for path in plan["reachable"]:
        _make_reachable(root, path, owned)
    # Read-only: every mount of the new root but /proc (as in a container); then the volumes on top.
    assert plan["read_only_root"], "only pods with readOnlyRootFilesystem are run here"
    proc = root / "proc"
    for mountpoint in _mount_points_under(root):
        if not mountpoint.is_relative_to(proc):
            _mount("-o", "remount,bind,ro", str(mountpoint))
    for mount in mounts:
        target = str(_inside(root, mount["path"]))
        if mount["kind"] == "emptyDir":
            _mount("-t", "tmpfs", "-o", f"mode=1777,size={mount['size']}", "tmpfs", target)
        else:
            _mount("--bind", mount["source"], target)
            _mount("-o", "remount,bind,ro", target)
    for path in _under_volumes(plan["reachable"], mounts):
        _show_read_only(root, path)
    os.chroot(root)
    os.chdir(plan["workdir"])
    if plan["uid"] is not None and not as_root:
        os.setgroups([])
        os.setgid(plan["gid"])
        os.setuid(plan["uid"])
    _no_new_privileges()
    command = argv or plan["argv"]
    os.execvpe(command[0], command, plan["env"])


def _under_volumes(paths: list[str], mounts: list[dict[str, Any]]) -> list[str]:
    """The paths of `paths` that a volume hides (a checkout under /tmp, where the base mounts an emptyDir),
    outermost only."""
    volumes = [PurePosixPath(mount["path"]) for mount in mounts]
    hidden = [path for path in sorted(paths) if any(PurePosixPath(path).is_relative_to(v) for v in volumes)]
    return [
        path
        for path in hidden
        if not any(path != o and PurePosixPath(path).is_relative_to(o) for o in hidden)
    ]


def _show_read_only(root: Path, path: str) -> None:
    """What stands for the image (this checkout, its venv) stays visible, read-only, when a volume is
    mounted over a directory holding it: the image's own files are never under a pod's volume."""
    target = _inside(root, path)
    if Path(path).is_dir():
        target.mkdir(parents=True, exist_ok=True)
        if not os.stat(path).st_mode & 0o001:
            _show_entries_read_only(Path(path), target)
            return
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    _mount("--rbind", path, str(target))
    _mount("-o", "remount,bind,ro", str(target))


def _show_entries_read_only(source: Path, target: Path) -> None:
    """A directory others may not enter (a checkout in `mktemp -d`, 0700) under a volume: its entries,
    read-only, on a tmpfs any user may enter, as `_make_reachable` does outside the volumes."""
    _mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", str(target))
    for entry in os.listdir(source):
        _mirror(source / entry, target / entry)
        if not (source / entry).is_symlink():
            _mount("-o", "remount,bind,ro", str(target / entry))
    _mount("-o", "remount,ro", str(target))


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OSError(f"mount {' '.join(args)}: {result.stderr.strip()}")


def _inside(root: Path, path: str) -> Path:
    return root.joinpath(*PurePosixPath(path).parts[1:])


def _mirror(source: Path, target: Path) -> None:
    """`target` shows `source` (and everything mounted under it)."""
    if source.is_symlink():
        target.symlink_to(os.readlink(source))
    elif source.is_dir():
        target.mkdir()
        _mount("--rbind", str(source), str(target))
    else:
        target.touch()
        _mount("--bind", str(source), str(target))


def _make_dirs(root: Path, path: str, owned: set[Path]) -> None:
    """Makes the mount point `path` exist in the new root, never writing to this machine's files: a
    directory of the machine's that lacks it is first replaced by a tmpfs mirroring its entries."""
    current = root
    for part in PurePosixPath(path).parts[1:]:
        following = current / part
        if not os.path.lexists(following):
            if current not in owned:
                _shadow(root, current)
                owned.add(current)
            following.mkdir()
            owned.add(following)
        current = following


def _make_reachable(root: Path, path: str, owned: set[Path]) -> None:
    """Lets any user reach `path` in the new root, as everyone reaches the interpreter in the image: a
    directory on the way that others may not enter (root's home, 0700, where pyenv installs Python) is
    replaced by a tmpfs mirroring its entries (which keep their own permissions)."""
    current = root
    for part in PurePosixPath(path).parts[1:]:
        current = current / part
        if current not in owned and not os.stat(current).st_mode & 0o001:
            _shadow(root, current)
            owned.add(current)


def _shadow(root: Path, directory: Path) -> None:
    staging = root / ".staging"
    staging.mkdir()
    _mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", str(staging))
    original = Path("/", directory.relative_to(root))
    for entry in os.listdir(original):
        _mirror(original / entry, staging / entry)
    _mount("--move", str(staging), str(directory))
    staging.rmdir()


def _mount_points_under(root: Path) -> list[Path]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # the 5th field, with space, tab, newline and backslash escaped as octal
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if Path(point).is_relative_to(root):
            points.append(Path(point))
    return points


def _no_new_privileges() -> None:
    pr_set_no_new_privs = 38
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


# --------------------------------------------------------------------------- drive: the pod, observed

# Run in the pod's root as its root user: the directories anything could write to.
_WRITE_PROBE: Final = """
import json, os, sys, tempfile
found = []
for directory in sys.argv[1:]:
    try:
        fd, name = tempfile.mkstemp(dir=directory)
    except OSError:
        continue
    os.close(fd)
    os.unlink(name)
    found.append(directory)
print(json.dumps(found))
"""


def _candidates(plan: Plan) -> list[str]:
    """Where a process might write: the root and every top-level directory, the temporary directories
    Python tries, HOME, the working directory, this interpreter's installation, the volumes."""
    paths = {"/", "/tmp", "/var/tmp", "/usr/tmp", "/dev/shm", "/run", "/var/run", plan["workdir"]}
    paths |= {f"/{name}" for name in os.listdir("/") if Path("/", name).is_dir() and name != "proc"}
    paths |= {plan["env"].get("HOME", "/"), sys.prefix, str(Path(json.__file__).parent)}
    paths |= {mount["path"] for mount in plan["mounts"]}
    return sorted(paths)


async def drive(plan_file: Path) -> dict[str, Any]:
    """Inside the pod's network namespace: the write probe, then the pod itself, observed as a kubelet
    and a caller would. The report: mode, writable (directories), and either the pod's exit before it
    served (exit_code, log) or ready, liveness, reply, chunks, metrics_calls, draining, exit_code, log."""
    plan: Plan = json.loads(await asyncio.to_thread(plan_file.read_text))
    _loopback_up()
    from bridge.mock_gateway import start_mock_gateway

    mock = await start_mock_gateway("127.0.0.1", 0, require_api_key=plan.get("api_key"))
    try:
        # The upstream is outside the pod: the mock stands in for it (the only variable changed).
        plan["env"]["BRIDGE_UPSTREAM_URL"] = mock.base_url
        await asyncio.to_thread(plan_file.write_text, json.dumps(plan))
        report: dict[str, Any] = {"mode": plan["mode"], "upstream_url": mock.base_url}
        probe = [sys.executable, "-c", _WRITE_PROBE, *_candidates(plan)]
        out, err, code = await _enter_and_wait(plan_file, probe)
        assert code == 0, f"write probe failed ({code}): {err}"
        report["writable"] = json.loads(out)
        async with _pod(plan_file) as pod:
            report |= await _observe(plan, pod)
        report["log"] = pod.log
        report["upstream_requests"] = len(mock.requests())
        return report
    finally:
        await mock.close()


async def _enter_and_wait(plan_file: Path, argv: list[str]) -> tuple[str, str, int]:
    process = await asyncio.create_subprocess_exec(
        *_enter_command(plan_file, argv, as_root=True),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return out.decode(), err.decode(), process.returncode


def _enter_command(plan_file: Path, argv: list[str] | None = None, *, as_root: bool = False) -> list[str]:
    extra = ["--as-root"] if as_root else []
    tail = ["--", *argv] if argv else []
    return [
        "unshare",
        "-m",
        sys.executable,
        "-m",
        "tests.pod_sandbox",
        "enter",
        str(plan_file),
        *extra,
        *tail,
    ]


class _Pod:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.log.append(line.decode(errors="replace").rstrip("\n"))

    async def exited(self, within: float) -> int | None:
        try:
            code = await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            return None
        await self._reader
        return code


@contextlib.asynccontextmanager
async def _pod(plan_file: Path) -> AsyncIterator[_Pod]:
    process = await asyncio.create_subprocess_exec(
        *_enter_command(plan_file),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    pod = _Pod(process)
    try:
        yield pod
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        with contextlib.suppress(Exception):
            await pod._reader


async def _observe(plan: Plan, pod: _Pod) -> dict[str, Any]:
    from grpc_health.v1 import health_pb2

    ports, probes = plan["ports"], plan["probes"]
    report: dict[str, Any] = {}
    # startupProbe: every periodSeconds, up to failureThreshold times (the kubelet then kills the pod)
    startup = probes["startup"]
    ready = False
    for _ in range(startup["failure_threshold"]):
        if pod.process.returncode is not None:
            break
        ready = await _health(ports["health"], startup["service"]) == health_pb2.HealthCheckResponse.SERVING
        if ready:
            break
        await asyncio.sleep(startup["period"])
    if not ready:
        report["exit_code"] = await pod.exited(within=plan["termination_grace"])
        return report
    report["uid"], report["gid"] = _ids(pod.process.pid)
    report["ready"] = (
        await _health(ports["health"], probes["readiness"]) == health_pb2.HealthCheckResponse.SERVING
    )
    report["liveness"] = (
        await _health(ports["health"], probes["liveness"]) == health_pb2.HealthCheckResponse.SERVING
    )
    report |= await _call(plan)
    if "metrics" in ports:
        report["metrics_calls"] = await _scraped_calls(ports["metrics"])
    # SIGTERM as the kubelet sends it: readiness goes NOT_SERVING while the pod drains; a second signal
    # cuts the drain delay short (the test need not wait it out), then the process must exit 0.
    pod.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + plan["termination_grace"]
    report["draining"] = False
    while time.monotonic() < deadline and pod.process.returncode is None:
        status = await _health(ports["health"], probes["readiness"])
        if status == health_pb2.HealthCheckResponse.NOT_SERVING:
            report["draining"] = True
            break
        await asyncio.sleep(0.1)
    pod.process.send_signal(signal.SIGTERM)
    report["exit_code"] = await pod.exited(within=max(deadline - time.monotonic(), 0.1))
    return report


def _ids(pid: int) -> tuple[int, int]:
    """The (effective uid, gid) process `pid` runs as."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(status["Uid"].split()[1]), int(status["Gid"].split()[1])


async def _health(port: int, service: str) -> int | None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None
    return int(response.status)


async def _call(plan: Plan) -> dict[str, Any]:
    import grpc

    from bridge.gen.prisme.llmgateway.v1 import chat_completion_service_pb2_grpc as pb_grpc
    from tests.helpers import chat_request

    address = f"127.0.0.1:{plan['ports']['grpc']}"
    tls = plan.get("tls")
    metadata = tuple((name, value) for name, value in plan.get("metadata", []))
    request = chat_request(text="from the pod")
    async with await _channel(address, tls) as channel:
        stub = pb_grpc.ChatCompletionServiceStub(channel)
        reply = await stub.CreateChatCompletion(request, metadata=metadata, timeout=10)
        chunks = [chunk async for chunk in stub.StreamChatCompletion(request, metadata=metadata, timeout=10)]
    found = {"reply": reply.choices[0].message.content, "chunks": len(chunks)}
    if tls and "stranger_cert" in tls:  # a certificate of the CA whose identity is not allowed
        async with await _channel(address, tls, "stranger_") as channel:
            try:
                await pb_grpc.ChatCompletionServiceStub(channel).CreateChatCompletion(request, timeout=10)
                found["stranger"] = "OK"
            except grpc.aio.AioRpcError as error:
                found["stranger"] = error.code().name
    return found


async def _channel(address: str, tls: dict[str, str] | None, prefix: str = "") -> Any:
    """A channel to the pod's gRPC port: plaintext, or TLS with the client certificate `prefix` names."""
    import grpc

    if not tls:
        return grpc.aio.insecure_channel(address)
    ca, key, cert = [
        await asyncio.to_thread(Path(tls[name]).read_bytes)
        for name in ("ca", f"{prefix}key", f"{prefix}cert")
    ]
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.aio.secure_channel(address, credentials)


async def _scraped_calls(port: int) -> float:
    import httpx

    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        page = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    pattern = r'^grpc_server_handled_total\{[^}]*grpc_method="CreateChatCompletion"[^}]*\} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, page, re.M))


def _loopback_up() -> None:
    """`ip link set lo up`, without iproute2: a new network namespace starts with loopback down."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


# ------------------------------------------------------------------------------------ the command line


def main(argv: list[str]) -> int:
    if argv[:1] == ["probe"]:  # scripts/check: which mode this machine gives the pod-start test
        try:
            name = mode()
        except SandboxUnavailableError as exc:
            print(f"pod sandbox: UNAVAILABLE: {exc}", file=sys.stderr)
            return 1
        detail = {
            "root": "root: unshare -m -n, the pod as its runAsUser",
            "userns": "FALLBACK userns: unshare -r -m -n (no root here); the pod runs as the namespace's "
            "root, not its runAsUser; read-only root and volumes as in root mode",
        }[name]
        print(f"pod sandbox: {detail}")
        return 0
    if argv[:1] == ["enter"]:
        rest = argv[2:]
        as_root = "--as-root" in rest
        command = rest[rest.index("--") + 1 :] if "--" in rest else None
        enter(json.loads(Path(argv[1]).read_text()), command, as_root=as_root)
    if argv[:1] == ["drive"]:
        report = asyncio.run(drive(Path(argv[1])))
        print(json.dumps(report))
        return 0
    print(
        "usage: python -m tests.pod_sandbox probe | drive PLAN | enter PLAN [--as-root] [-- ARGV]",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
