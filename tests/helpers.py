"""Helpers shared by the test suites: requests, reading rich statuses, streams, tools on PATH."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import struct_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from bridge.errors import BridgeError, UpstreamHTTPError
from bridge.gen.prisme.llmgateway.v1 import chat_completion_pb2 as pb
from bridge.http.transports.base import TRANSPORT_NAMES
from bridge.upstream.errors import error_from_http_response, error_from_stream_event

TRANSPORTS = TRANSPORT_NAMES  # every --upstream-transport


def every_transport(transports: tuple[str, ...] = TRANSPORTS) -> Any:
    """A module's `upstream_transport` fixture that runs its tests once per upstream transport (of
    `transports`): `upstream_transport = every_transport()` (tests/conftest.py's start_bridge reads it)."""

    @pytest.fixture(params=transports)
    def upstream_transport(request: pytest.FixtureRequest) -> str:
        name: str = request.param
        return name

    return upstream_transport


def chat_request(
    model: str = "echo", text: str = "Hello there, bridge", **fields: Any
) -> pb.CreateChatCompletionRequest:
    """A one-user-message request."""
    message = pb.ChatMessage(role="user", content=struct_pb2.Value(string_value=text))
    return pb.CreateChatCompletionRequest(model=model, messages=[message], **fields)


async def collect(call: Any) -> list[pb.StreamChatCompletionResponse]:
    """Every message of a streaming call."""
    return [chunk async for chunk in call]


_DETAIL_TYPES = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
)


def status_details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """The google.rpc details of a failed call, by type name (decoded from grpc-status-details-bin)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no grpc-status-details-bin"
    assert status.code == error.code().value[0]
    assert status.message == error.details()
    found: dict[str, Message] = {}
    for detail in status.details:
        for kind in _DETAIL_TYPES:
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                assert kind.DESCRIPTOR.name not in found, f"two {kind.DESCRIPTOR.name}"
                found[kind.DESCRIPTOR.name] = message
    return found


def upstream_reason(error: grpc.aio.AioRpcError) -> tuple[str, str | None]:
    """(ErrorInfo.reason, its upstreamCode) of a failed call, whose ErrorInfo is in the bridge's domain."""
    info = status_details(error)["ErrorInfo"]
    assert info.domain == "grpc-bridge.prisme.ai"
    return info.reason, info.metadata.get("upstreamCode")


async def call_failing(
    stub: Any, rpc: str, request: pb.CreateChatCompletionRequest, **kwargs: Any
) -> tuple[grpc.aio.AioRpcError, list[pb.StreamChatCompletionResponse]]:
    """Runs `rpc` ("unary" or "stream"), expecting it to fail; returns (error, chunks received first)."""
    received: list[pb.StreamChatCompletionResponse] = []
    try:
        if rpc == "unary":
            await stub.CreateChatCompletion(request, **kwargs)
        else:
            async for chunk in stub.StreamChatCompletion(request, **kwargs):
                received.append(chunk)
    except grpc.aio.AioRpcError as error:
        return error, received
    pytest.fail(f"{rpc} call of {request.model!r} succeeded")


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a unary call (any service) ends with; fails the test if the call succeeds."""
    try:
        reply = await call
    except grpc.aio.AioRpcError as error:
        return error
    pytest.fail(f"the call succeeded: {type(reply).__name__}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def find_grpcurl() -> str:
    """The grpcurl binary: scripts/bootstrap's pinned one first, then PATH's; the CI installs it, so its
    absence is a failure, not a skip."""
    pinned = Path(__file__).parents[1] / ".tools" / "bin" / "grpcurl"
    found = str(pinned) if pinned.is_file() else shutil.which("grpcurl")
    if found:
        return found
    candidates = [Path("/root/go/bin/grpcurl")]
    go = shutil.which("go")
    if go:
        gopath = subprocess.run(
            [go, "env", "GOPATH"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if gopath:
            candidates.append(Path(gopath) / "bin" / "grpcurl")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(
        "grpcurl not in .tools/bin, on PATH, in /root/go/bin or $(go env GOPATH)/bin: run scripts/bootstrap"
    )


def find_tool(name: str) -> str:
    """A tool scripts/bootstrap installs in .tools/bin (else on PATH); its absence fails the test."""
    tools = Path(__file__).parents[1] / ".tools" / "bin"
    found = shutil.which(name, path=os.pathsep.join([str(tools), os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail(f"{name} not found in .tools/bin or on PATH: run scripts/bootstrap")
    return found


async def grpcurl(*args: str, stdin: bytes | None = None, limit: float = 15) -> tuple[int, str, str]:
    """Runs grpcurl without blocking the event loop the bridge is serving on: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        find_grpcurl(),
        *args,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# Waits for an event are bounded only against a hang: generous, never a guess at how soon it comes. A test
# that rules out a slow outcome waits for the event that tells the two apart (`ended`: the upstream request's
# record shows how it ended, "completed" had the bridge waited for the reply), not for a duration.
GUARD_S = 30.0


def ended(record: dict[str, Any]) -> bool:
    """A mock gateway record whose request has ended, whichever way."""
    return record["outcome"] != "in_progress"


async def wait_request(mock: Any, predicate: Any, within: float = 2.0) -> dict[str, Any]:
    """The first request the mock gateway recorded that satisfies `predicate` (awaited, not polled)."""
    async with asyncio.timeout(within):
        record: dict[str, Any] = await mock.wait_for_request(predicate)
        return record


async def wait_all_ended(mock: Any, within: float = 5.0) -> list[dict[str, Any]]:
    """Every request the mock gateway recorded, once each has ended."""
    async with asyncio.timeout(within):
        for record in mock.requests():
            await mock.wait_for_request(
                lambda r, request_id=record["id"]: r["id"] == request_id and r["outcome"] != "in_progress"
            )
    records: list[dict[str, Any]] = mock.requests()
    return records


# -------------------------------------------------------------------------- the CLI as a subprocess


def cli_env(**bridge_vars: str) -> dict[str, str]:
    """This process's environment without BRIDGE_* variables, plus `bridge_vars`, unbuffered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(bridge_vars)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class CliProcess:
    """`python -m bridge.cli ARGS` as a subprocess, its stderr (the logs) read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log: list[str] = []

    async def wait_log(self, pattern: str, within: float = 20) -> re.Match[str]:
        """The first match of `pattern` in a line of the logs, waiting for it to be written."""
        assert self.process.stderr is not None
        for line in self.log:
            if match := re.search(pattern, line):
                return match
        async with asyncio.timeout(within):
            while raw := await self.process.stderr.readline():
                self.log.append(raw.decode())
                if match := re.search(pattern, self.log[-1]):
                    return match
        pytest.fail(f"exited ({await self.process.wait()}) before logging {pattern!r}:\n{''.join(self.log)}")

    async def stop(self, sig: signal.Signals, within: float) -> int:
        """Sends `sig` and returns the exit code; fails, showing the logs, if it takes over `within` s."""
        self.process.send_signal(sig)
        return await self.wait_exit(within)

    async def wait_exit(self, within: float) -> int:
        """The exit code; fails, showing the logs, if the process is still running after `within` s."""
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            self.process.kill()
            _, err = await self.process.communicate()
            pytest.fail(f"still running after {within} s:\n{''.join(self.log)}{err.decode()}")

    async def logs(self) -> str:
        """Everything logged, once the process has exited."""
        assert self.process.stderr is not None
        return "".join(self.log) + (await self.process.stderr.read()).decode()


@asynccontextmanager
async def run_cli(*args: str, env: dict[str, str], module: str = "bridge.cli") -> AsyncIterator[CliProcess]:
    """Runs `prisme-bridge ARGS` (`python -m MODULE ARGS`); killed on the way out if it is still running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield CliProcess(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.communicate()


@contextlib.contextmanager
def dev_process(log: Path) -> Iterator[tuple[str, str]]:
    """`prisme-bridge dev` on ports 0 as a subprocess, for sync tests and fixtures: (the bridge's address,
    the mock gateway's URL); its logs go to `log`. Stopped with SIGINT on the way out."""
    argv = [
        sys.executable,
        "-m",
        "bridge.cli",
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--mock-listen",
        "127.0.0.1:0",
    ]
    with log.open("w") as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=cli_env())
        try:
            assert process.stdout is not None
            banner = ""
            while "Ctrl-C stops both." not in banner:
                line = process.stdout.readline()
                assert line, f"dev exited before printing its banner:\n{banner}"
                banner += line
            address = re.search(r"^bridge: +(\S+)", banner, re.M)
            mock = re.search(r"^mock gateway: +(https?://[^/\s]+)", banner, re.M)
            assert address, banner
            assert mock, banner
            yield address.group(1), mock.group(1)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


# ------------------------------------------------------- rich statuses of BridgeError objects (unit tests)


class _FakeCall:
    """What rpc_status.from_call reads from a finished call, taken from a grpc.Status."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> Any:
        return self._status.trailing_metadata


def rich_status(error: BridgeError) -> status_pb2.Status:
    """The google.rpc.Status a client decodes from `error.to_status()`."""
    # from_call also checks that the trailer agrees with grpc-status and grpc-message.
    rich = rpc_status.from_call(_FakeCall(error.to_status()))  # type: ignore[arg-type]
    assert rich is not None
    return rich


def error_details(error: BridgeError) -> dict[type[Message], Message]:
    """The details a client unpacks from `error`'s status, by type."""
    found: dict[type[Message], Message] = {}
    for packed in rich_status(error).details:
        for kind in _DETAIL_TYPES:
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                found[kind] = message
    assert len(found) == len(rich_status(error).details), "unexpected detail type"
    return found


def error_info(error: BridgeError) -> error_details_pb2.ErrorInfo:
    info = error_details(error)[error_details_pb2.ErrorInfo]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    return info


def error_violations(error: BridgeError) -> list[tuple[str, str]]:
    bad = error_details(error).get(error_details_pb2.BadRequest)
    if bad is None:
        return []
    assert isinstance(bad, error_details_pb2.BadRequest)
    return [(v.field, v.description) for v in bad.field_violations]


def retry_seconds(error: BridgeError) -> float | None:
    retry = error_details(error).get(error_details_pb2.RetryInfo)
    if retry is None:
        return None
    assert isinstance(retry, error_details_pb2.RetryInfo)
    return float(retry.retry_delay.ToNanoseconds()) / 1e9


def everything_sent(error: BridgeError) -> str:
    """All text a client could see: message and every detail, as sent."""
    status = error.to_status()
    trailer = b"".join(value for _, value in status.trailing_metadata if isinstance(value, bytes))
    return status.details + trailer.decode("utf-8", "replace") + str(error_details(error))


# The upstream host of errors built by unit tests; they read it back from ErrorInfo metadata `upstreamHost`.
HOST = "gateway.example.com"


def http_error(status: int, body: Any = b"", headers: dict[str, str] | None = None) -> UpstreamHTTPError:
    """The bridge error for an upstream reply of `status` with `body` (JSON if not bytes)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return error_from_http_response(status, headers or {}, raw, host=HOST)


def stream_error(data: Any, event: str = "message", correlation_id: str | None = "corr-1") -> Any:
    """The bridge error for an SSE event carrying `data` (JSON if not a str), or None."""
    text = data if isinstance(data, str) else json.dumps(data)
    return error_from_stream_event(text, event=event, host=HOST, correlation_id=correlation_id)


# ------------------------------------------------------------------ certificates made by the tests (TLS)


class CertificateAuthority:
    """A private CA made for one test; `issue` writes certificates it signs (cryptography: test-only)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.pem = self._certificate(name, self._key, ca=True)

    def issue(
        self,
        name: str,
        *,
        client: bool = False,
        names: tuple[str, ...] = ("localhost", "127.0.0.1"),
        uris: tuple[str, ...] = (),
        valid: tuple[datetime.timedelta, datetime.timedelta] | None = None,
        self_signed: bool = False,
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a server valid for `names` (host names or IP addresses), or for a
        client; `uris`: URI SANs (SPIFFE IDs). `valid`: (not before, not after) from now (default: 5 minutes
        ago, a day from now); `self_signed`: signed with its own key instead of the CA's."""
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        cert = self._certificate(
            name, key, client=client, names=names, uris=uris, valid=valid, self_signed=self_signed
        )
        return cert, key_pem

    def write(self, directory: Path, name: str, **issue: Any) -> tuple[Path, Path]:
        """`issue`, written to DIRECTORY/NAME.crt and NAME.key."""
        cert, key = self.issue(name, **issue)
        (directory / f"{name}.crt").write_bytes(cert)
        (directory / f"{name}.key").write_bytes(key)
        return directory / f"{name}.crt", directory / f"{name}.key"

    def write_pem(self, path: Path) -> Path:
        path.write_bytes(self.pem)
        return path

    def _certificate(
        self,
        subject: str,
        key: Any,
        *,
        ca: bool = False,
        client: bool = False,
        names: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
        valid: tuple[datetime.timedelta, datetime.timedelta] | None = None,
        self_signed: bool = False,
    ) -> bytes:
        now = datetime.datetime.now(datetime.UTC)
        not_before, not_after = valid or (-datetime.timedelta(minutes=5), datetime.timedelta(days=1))
        issuer = subject if self_signed else self.name
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + not_before)
            .not_valid_after(now + not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            sans = [
                *(x509.UniformResourceIdentifier(uri) for uri in uris),
                *(_subject_alternative_name(name) for name in names),
            ]
            if sans:  # a certificate with no SAN has no extension at all (an empty one is invalid)
                builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        signer = key if ca or self_signed else self._key
        return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _subject_alternative_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


class SecretVolume:
    """A directory updated the way the kubelet updates a mounted Secret: each version written to a new
    `..<timestamp>` directory, then the `..data` symlink swapped atomically; the files themselves are
    symlinks through `..data`, so every file changes at once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._versions = 0

    def path(self, name: str) -> Path:
        return self.directory / name

    def write(self, files: dict[str, bytes]) -> None:
        self._versions += 1
        version = self.directory / f"..v{self._versions}"
        version.mkdir()
        for name, content in files.items():
            (version / name).write_bytes(content)
        swap = self.directory / "..data_tmp"
        swap.symlink_to(version.name)
        os.replace(swap, self.directory / "..data")
        for name in files:
            link = self.directory / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")


def tls_secret_volume(
    directory: Path, server_ca: CertificateAuthority, client_ca: CertificateAuthority, server: str = "server"
) -> tuple[SecretVolume, dict[str, Path]]:
    """A Secret volume as cert-manager fills one (`tls.crt` and `tls.key` issued by `server_ca` for
    `server`, `ca.crt` the client CA), and the bridge settings that point at it (mTLS)."""
    volume = SecretVolume(directory)
    cert, key = server_ca.issue(server)
    volume.write({"tls.crt": cert, "tls.key": key, "ca.crt": client_ca.pem})
    files = {"tls_cert": "tls.crt", "tls_key": "tls.key", "tls_client_ca": "ca.crt"}
    return volume, {setting: volume.path(name) for setting, name in files.items()}


def tls_channel(
    address: str, ca: CertificateAuthority, client: tuple[bytes, bytes] | None = None
) -> grpc.aio.Channel:
    """A TLS channel of its own (no shared connection) trusting `ca`, presenting `client` (cert, key)."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.pem,
        private_key=client[1] if client else None,
        certificate_chain=client[0] if client else None,
    )
    return grpc.aio.secure_channel(address, credentials, options=[("grpc.use_local_subchannel_pool", 1)])


def connections_served_by(pid: int, port: int) -> int:
    """Established TCP connections to local `port` whose socket process `pid` holds (Linux /proc): which
    of several processes sharing a port (SO_REUSEPORT) the kernel gave each connection to."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            established = fields[3] == "01"
            count += local_port == port and established and fields[9] in inodes
    return count
