#!/usr/bin/env python3
"""A throwaway single-node Apache Kafka broker (KRaft) for tests, benchmarks and CI.

    scripts/kafka_broker.py up        # fetch (first time), format, start; prints the export line
    scripts/kafka_broker.py status    # prints the bootstrap address (exit 1 if none is running)
    scripts/kafka_broker.py down      # stop the broker and its process group, delete its dirs
    scripts/kafka_broker.py run -- CMD ...   # up, run CMD with FLOWCAUSE_KAFKA_BOOTSTRAP, down
    scripts/kafka_broker.py fetch     # only resolve and cache the jars

The broker jars (``org.apache.kafka:kafka_2.13`` and its runtime dependencies) are resolved
from Maven Central with ``mvn`` through ``scripts/kafka/pom.xml`` and cached in
``${FLOWCAUSE_CACHE:-~/.cache/flowcause}/kafka/<version>/libs``; once cached, ``up`` needs
neither Maven nor the network. The broker listens on 127.0.0.1 only, on free ports, with its
data and log in a fresh temporary directory; its pid, bootstrap address and log path are kept
in a state file (``.cache/kafka/broker.json`` in the repo by default).

Standard library only, so it runs with the system python3 or the project's venv. When aiokafka
is importable, readiness is confirmed with an aiokafka metadata request too; otherwise a raw
ApiVersions + Metadata request over a socket is the readiness check.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
DEFAULT_VERSION = "4.4.0"
DEFAULT_STATE = ROOT / ".cache" / "kafka" / "broker.json"
DEFAULT_HEAP = "-Xmx512m -Xms128m"
ENV_BOOTSTRAP = "FLOWCAUSE_KAFKA_BOOTSTRAP"
HOST = "127.0.0.1"
LOG_TAIL_LINES = 60


class BrokerError(RuntimeError):
    """A failure with a message meant for the person running the script."""


def info(msg: str) -> None:
    print(f"kafka_broker: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- configuration


def kafka_version(explicit: str | None = None) -> str:
    version = explicit or os.environ.get("FLOWCAUSE_KAFKA_VERSION") or DEFAULT_VERSION
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise BrokerError(f"bad Kafka version {version!r} (expected e.g. {DEFAULT_VERSION})")
    return version


def major(version: str) -> int:
    return int(version.split(".", 1)[0])


def cache_root() -> Path:
    base = os.environ.get("FLOWCAUSE_CACHE") or str(Path.home() / ".cache" / "flowcause")
    return Path(base).expanduser() / "kafka"


def libs_dir(version: str) -> Path:
    return cache_root() / version / "libs"


def state_path(explicit: str | None = None) -> Path:
    raw = explicit or os.environ.get("FLOWCAUSE_KAFKA_STATE")
    return Path(raw).expanduser().resolve() if raw else DEFAULT_STATE


# ----------------------------------------------------------------------------- tools


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise BrokerError(
            "Java not found: the Kafka broker needs a JDK/JRE 17+ on PATH (or JAVA_HOME); "
            "on Debian/Ubuntu: apt-get install openjdk-17-jre-headless"
        )
    return found


def java_major(java: str) -> int:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"could not run {java} -version: {exc}") from exc
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        raise BrokerError(f"could not read the Java version from:\n{out.stderr.strip()}")
    first = int(m.group(1))
    return int(m.group(2) or 0) if first == 1 else first


def check_java(java: str, version: str) -> None:
    need = 17 if major(version) >= 4 else 11
    have = java_major(java)
    if have < need:
        raise BrokerError(f"Kafka {version} needs Java {need}+, but {java} is Java {have}")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- fetch


def fetch(version: str) -> Path:
    """The cached libs/ dir of Kafka ``version``, resolving it with Maven on first use."""
    libs = libs_dir(version)
    marker = libs / ".complete"
    if marker.is_file():
        return libs
    with file_lock(libs.parent / ".lock"):
        if marker.is_file():  # another process fetched it while we waited
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise BrokerError(
                f"Kafka {version} is not cached in {libs} and Maven (mvn) is not on PATH; "
                "install Maven (apt-get install maven) or copy a Kafka libs/ dir there "
                "and create libs/.complete"
            )
        tmp = libs.parent / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(POM),
            f"-Dkafka.version={version}", *(["-Dkafka3"] if major(version) < 4 else []),
            "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
        ]
        info(f"fetching Kafka {version} with Maven into {libs} (first time only) ...")
        started = time.monotonic()
        # offline first: enough when Maven's own repository (~/.m2) already has every jar
        proc = subprocess.run([*cmd[:2], "-o", *cmd[2:]], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            # -U: retry what an earlier (offline) attempt recorded as missing
            proc = subprocess.run([*cmd[:2], "-U", *cmd[2:]], capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not any(tmp.glob(f"kafka_2.13-{version}.jar")):
            shutil.rmtree(tmp, ignore_errors=True)
            boilerplate = ("[ERROR] To see the full", "[ERROR] Re-run Maven", "[ERROR] For more info",
                           "[ERROR] [Help 1]")
            plain = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
            lines = [line for line in plain.splitlines()
                     if line.strip() not in ("", "[ERROR]") and not line.startswith(boilerplate)]
            output = "\n".join(f"    {line}" for line in lines[-20:])
            raise BrokerError(
                f"Maven could not resolve org.apache.kafka:kafka_2.13:{version} "
                f"(exit {proc.returncode}).\n{output}\n"
                "Is the version served by the Maven repository? Try another one with "
                "FLOWCAUSE_KAFKA_VERSION=..."
            )
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        marker.write_text(f"kafka_2.13 {version}\n")
        info(f"fetched {len(list(libs.glob('*.jar')))} jars in {time.monotonic() - started:.1f}s")
    return libs


# ----------------------------------------------------------------------------- ports


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as exc:
            raise BrokerError(f"port {HOST}:{port} is busy ({exc.strerror}); pick another one") from exc


# ----------------------------------------------------------------------------- wire probe


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client = b"flowcause-probe"
    msg = struct.pack(">hhih", api_key, version, corr, len(client)) + client + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    resp = _recv_exact(sock, size)
    (got,) = struct.unpack_from(">i", resp, 0)
    if got != corr:
        raise ConnectionError(f"correlation id {got} != {corr}")
    return resp[4:]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> Any:
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return s


def probe_wire(bootstrap: str, timeout: float = 5.0) -> dict[str, Any]:
    """ApiVersions then Metadata over a raw socket; returns the brokers and controller seen.

    Raises OSError/ConnectionError when the broker does not answer, and RuntimeError when it
    answers but has no registered broker or controller yet.
    """
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        r = _Reader(_request(sock, 18, 0, 1, b""))  # ApiVersions v0
        error = r.take(">h")
        if error:
            raise RuntimeError(f"ApiVersions error code {error}")
        apis = {}
        for _ in range(r.take(">i")):
            key, lo, hi = r.take(">hhh")
            apis[key] = (lo, hi)
        lo, hi = apis.get(3, (0, -1))
        version = max(lo, 4)
        if version > min(hi, 8):  # v9+ is the flexible encoding, not spoken here
            raise RuntimeError(f"broker speaks Metadata v{lo}-v{hi}, probe needs one of v4-v8")
        body = struct.pack(">i?", 0, False)  # no topics, no auto-creation
        if version >= 8:
            body += struct.pack(">??", False, False)
        r = _Reader(_request(sock, 3, version, 2, body))
        r.take(">i")  # throttle_time_ms
        brokers = []
        for _ in range(r.take(">i")):
            node = r.take(">i")
            bhost = r.string()
            bport = r.take(">i")
            r.string()  # rack
            brokers.append({"node_id": node, "host": bhost, "port": bport})
        cluster_id = r.string()
        controller = r.take(">i")
    if not brokers or controller < 0:
        raise RuntimeError(f"no broker registered yet (brokers={brokers}, controller={controller})")
    return {"brokers": brokers, "cluster_id": cluster_id, "controller_id": controller,
            "api_versions": len(apis), "metadata_version": version}


def probe_aiokafka(bootstrap: str, timeout: float = 10.0) -> dict[str, Any] | None:
    """A metadata round trip with aiokafka's admin client; None if aiokafka is not importable."""
    try:
        import asyncio

        from aiokafka.admin import AIOKafkaAdminClient
    except ImportError:
        return None

    async def go() -> dict[str, Any]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
        await admin.start()
        try:
            return await asyncio.wait_for(admin.describe_cluster(), timeout)
        finally:
            await admin.close()

    return asyncio.run(go())


# ----------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on


def process_start_time(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def is_alive(pid: int, start_time: str | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when given, started at ``start_time``."""
    fields = _proc_stat(pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no procfs: best effort
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if start_time is not None and fields[19] != start_time:
        return False  # the pid was reused by another process
    if fields[0] not in ("Z", "X"):
        return True
    # A zombie main thread, but the JVM may still be running its other threads while it shuts
    # down: the process is gone only when every thread has exited.
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            raw = (task / "stat").read_text()
            if raw[raw.rindex(")") + 2 :].split()[0] not in ("Z", "X"):
                return True
    return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_group(pid: int, pgid: int, start_time: str | None, grace: float = 10.0) -> None:
    """SIGTERM the broker's process group, then SIGKILL it after ``grace`` seconds."""
    if not is_alive(pid, start_time):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_alive(pid, start_time):
            break
        time.sleep(0.1)
    else:
        info(f"broker pid {pid} ignored SIGTERM for {grace:.0f}s; sending SIGKILL")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)  # stragglers in the group, if any
    for _ in range(50):
        _reap(pid)
        if not is_alive(pid, start_time):
            return
        time.sleep(0.1)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the process that started it dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    all_lines = text.splitlines()
    tail = all_lines[-lines:]
    if not tail:
        return "    (log is empty)"
    shown = "\n".join(f"    {line}" for line in tail)
    first = next((i for i, line in enumerate(all_lines) if re.search(r"\b(ERROR|FATAL)\b", line)), None)
    if first is not None and first < len(all_lines) - lines:  # the cause scrolled out of the tail
        cause = "\n".join(f"    {line}" for line in all_lines[first : first + 2])
        shown = f"{cause}\n    ...\n{shown}"
    return shown


# ----------------------------------------------------------------------------- state


@dataclass
class State:
    pid: int
    pgid: int
    start_time: str | None
    bootstrap: str
    controller: str
    version: str
    workdir: str
    log: str
    started_at: float

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            info(f"ignoring unreadable state file {path}: {exc}")
            return None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    def alive(self) -> bool:
        return is_alive(self.pid, self.start_time)


# ----------------------------------------------------------------------------- broker


SERVER_PROPERTIES = """\
# written by scripts/kafka_broker.py: a single-node KRaft broker+controller for tests
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={host}:{cport}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.network.threads=2
num.io.threads=4
background.threads=4
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=268435456
log.retention.check.interval.ms=300000
"""

LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""

LOG4J1_PROPERTIES = """\
log4j.rootLogger={level}, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
"""


def random_cluster_id() -> str:
    while True:  # Kafka's Uuid: 16 random bytes, URL-safe base64 without padding, not "-..."
        text = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def java_cmd(java: str, libs: Path, workdir: Path, heap: str, level: str) -> list[str]:
    log4j2 = workdir / f"log4j2-{level}.properties"
    log4j2.write_text(LOG4J2_PROPERTIES.format(level=level))
    log4j1 = workdir / f"log4j-{level}.properties"
    log4j1.write_text(LOG4J1_PROPERTIES.format(level=level))
    return [
        java, *heap.split(),
        "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={workdir / 'logs'}",
        f"-Dlog4j2.configurationFile={log4j2}",
        f"-Dlog4j.configuration=file:{log4j1}",
        *os.environ.get("FLOWCAUSE_KAFKA_JVM_OPTS", "").split(),
        "-cp", f"{libs}/*",
    ]


def format_storage(java: list[str], config: Path, workdir: Path) -> None:
    # a short-lived tool: the C1 JIT alone starts it sooner on a small machine
    cmd = [*java[:1], "-XX:TieredStopAtLevel=1", *java[1:], "kafka.tools.StorageTool",
           "format", "--standalone", "-t", random_cluster_id(), "-c", str(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir,
                          stdin=subprocess.DEVNULL, timeout=180)
    if proc.returncode != 0:
        out = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise BrokerError(f"formatting the KRaft log dir failed (exit {proc.returncode}):\n{out}")


def wait_ready(proc: subprocess.Popen[bytes], bootstrap: str, log: Path, deadline: float) -> dict[str, Any]:
    last: Exception | None = None
    while True:
        code = proc.poll()
        if code is not None:
            raise BrokerDied(code, log)
        try:
            return probe_wire(bootstrap, timeout=2.0)
        except (OSError, RuntimeError, struct.error) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise BrokerError(
                f"the broker did not answer a metadata request at {bootstrap} in time "
                f"(last error: {last}); its log ends with:\n{log_tail(log)}"
            )
        time.sleep(0.25)


class BrokerDied(BrokerError):
    def __init__(self, code: int, log: Path) -> None:
        self.log = log
        self.text = log.read_text(errors="replace") if log.is_file() else ""
        super().__init__(
            f"the broker exited with code {code} while starting; its log ends with:\n{log_tail(log)}"
        )

    @property
    def port_clash(self) -> bool:
        return "Address already in use" in self.text


def start(
    state_file: Path,
    version: str,
    port: int | None = None,
    controller_port: int | None = None,
    timeout: float = 120.0,
    heap: str | None = None,
    tied: bool = False,
) -> State:
    """Start a broker (or return the one the state file names, if it still runs).

    ``tied``: the broker is killed if this process dies (``run``), instead of outliving it (``up``).
    """
    with file_lock(state_file.with_suffix(".lock")):
        old = State.load(state_file)
        if old and old.alive():
            info(f"a broker is already running (pid {old.pid}, Kafka {old.version}) at {old.bootstrap}")
            return old
        if old:
            info(f"cleaning up after a broker that is gone (pid {old.pid})")
            cleanup(old, state_file)
        java = find_java()
        check_java(java, version)
        if port is not None:
            check_port_free(port)
        if controller_port is not None:
            check_port_free(controller_port)
        libs = fetch(version)
        heap = heap or os.environ.get("FLOWCAUSE_KAFKA_HEAP") or DEFAULT_HEAP
        for attempt in range(3):
            try:
                st = _start_once(state_file, version, libs, java, port, controller_port, timeout, heap, tied)
            except BrokerDied as exc:
                if exc.port_clash and port is None and controller_port is None and attempt < 2:
                    info("a free port was taken before the broker bound it; retrying on new ports")
                    continue
                raise
            return st
        raise AssertionError("unreachable")


def _start_once(
    state_file: Path,
    version: str,
    libs: Path,
    java: str,
    port: int | None,
    controller_port: int | None,
    timeout: float,
    heap: str,
    tied: bool,
) -> State:
    started = time.monotonic()
    port = port or free_port()
    cport = controller_port or free_port()
    while cport == port:
        cport = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="flowcause-kafka-"))
    log = workdir / "broker.log"
    bootstrap = f"{HOST}:{port}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        (workdir / "logs").mkdir()
        config = workdir / "server.properties"
        config.write_text(SERVER_PROPERTIES.format(host=HOST, port=port, cport=cport, data=workdir / "data"))
        format_storage(java_cmd(java, libs, workdir, "-Xmx256m", "WARN"), config, workdir)
        formatted = time.monotonic()
        cmd = [*java_cmd(java, libs, workdir, heap, "INFO"), "kafka.Kafka", str(config)]
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent if tied else None)
        st = State(pid=proc.pid, pgid=proc.pid, start_time=process_start_time(proc.pid),
                   bootstrap=bootstrap, controller=f"{HOST}:{cport}", version=version,
                   workdir=str(workdir), log=str(log), started_at=time.time())
        st.save(state_file)  # saved before the wait, so `down` can stop a half-started broker
        seen = wait_ready(proc, bootstrap, log, started + timeout)
        try:
            desc = probe_aiokafka(bootstrap)
        except Exception as exc:  # any client failure is a failed start
            raise BrokerError(
                f"the broker answers raw Metadata requests but aiokafka failed against it: "
                f"{type(exc).__name__}: {exc}; the broker log ends with:\n{log_tail(log)}"
            ) from exc
        via = "raw Metadata + aiokafka describe_cluster" if desc is not None else "raw Metadata"
        now = time.monotonic()
        info(f"Kafka {version} up at {bootstrap} (pid {proc.pid}, cluster {seen['cluster_id']}, "
             f"checked by {via}) in {now - started:.1f}s (format {formatted - started:.1f}s, "
             f"start {now - formatted:.1f}s); log: {log}")
        return st
    except BaseException:
        if proc is not None:
            stop_group(proc.pid, proc.pid, None, grace=5)
        keep = state_file.parent / "last-failed-broker.log"
        with contextlib.suppress(OSError):
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, keep)
            failure = sys.exc_info()[1]
            if isinstance(failure, BrokerError):
                failure.args = (f"{failure}\nthe whole broker log is kept in {keep}",)
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            state_file.unlink()
        raise


def cleanup(st: State, state_file: Path) -> None:
    stop_group(st.pid, st.pgid, st.start_time)
    workdir = Path(st.workdir)
    if workdir.name.startswith("flowcause-kafka-"):  # never remove anything we did not create
        for _ in range(5):
            shutil.rmtree(workdir, ignore_errors=True)
            if not workdir.exists():
                break
            time.sleep(0.2)
        else:
            info(f"could not remove {workdir} entirely")
    with contextlib.suppress(FileNotFoundError):
        state_file.unlink()


def stop(state_file: Path) -> bool:
    """Stop the broker named by the state file; False if there was none."""
    with file_lock(state_file.with_suffix(".lock")):
        st = State.load(state_file)
        if st is None:
            return False
        began = time.monotonic()
        was_alive = st.alive()
        cleanup(st, state_file)
        what = "stopped" if was_alive else "cleaned up after (it had already exited)"
        info(f"{what} the broker at {st.bootstrap} (pid {st.pid}) in {time.monotonic() - began:.1f}s")
        return True


# ----------------------------------------------------------------------------- commands


def cmd_up(args: argparse.Namespace) -> int:
    st = start(state_path(args.state), kafka_version(args.version), args.port, args.controller_port,
               args.timeout)
    print(f"export {ENV_BOOTSTRAP}={st.bootstrap}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if not stop(state_path(args.state)):
        info("no broker is running (no state file)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    path = state_path(args.state)
    st = State.load(path)
    if st is None or not st.alive():
        info(f"no broker is running{' (stale state file; run down)' if st else ''}")
        return 1
    if args.json:
        print(json.dumps(asdict(st), indent=2))
    else:
        print(st.bootstrap)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    print(fetch(kafka_version(args.version)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    command: list[str] = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise BrokerError("run needs a command, e.g. run -- pytest -q")
    external = os.environ.get(ENV_BOOTSTRAP)
    if external:
        info(f"{ENV_BOOTSTRAP}={external} is set: using that broker, starting none")
        try:
            return subprocess.call(command)
        except OSError as exc:
            raise BrokerError(f"cannot run {command[0]!r}: {exc.strerror or exc}") from None
    path = state_path(args.state)
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)
        else:
            raise KeyboardInterrupt

    try:
        st = start(path, kafka_version(args.version), args.port, args.controller_port, args.timeout,
                   tied=True)
        env = {**os.environ, ENV_BOOTSTRAP: st.bootstrap}
        info(f"running with {ENV_BOOTSTRAP}={st.bootstrap}: {' '.join(command)}")
        old = signal.signal(signal.SIGTERM, forward)
        try:
            try:
                child = subprocess.Popen(command, env=env)
            except OSError as exc:  # no such command, not executable: the broker still stops
                raise BrokerError(f"cannot run {command[0]!r}: {exc.strerror or exc}") from None
            while True:
                try:
                    code = child.wait()
                except KeyboardInterrupt:  # the child got the terminal's SIGINT too
                    continue
                return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells do
        finally:
            signal.signal(signal.SIGTERM, old)
    finally:
        stop(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:8]))
    parser.add_argument("--state", help=f"state file (default {DEFAULT_STATE}; env FLOWCAUSE_KAFKA_STATE)")
    sub = parser.add_subparsers(dest="cmd", required=True)

    def broker_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--version",
                       help=f"Kafka version (env FLOWCAUSE_KAFKA_VERSION, default {DEFAULT_VERSION})")
        p.add_argument("--port", type=int, help="broker port (default: a free one)")
        p.add_argument("--controller-port", type=int, help="KRaft controller port (default: a free one)")
        p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")

    p_up = sub.add_parser("up", help="start a broker; prints `export FLOWCAUSE_KAFKA_BOOTSTRAP=...`")
    broker_opts(p_up)
    p_up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the broker and delete its dirs").set_defaults(func=cmd_down)
    p_status = sub.add_parser("status", help="print the bootstrap address (exit 1 if none)")
    p_status.add_argument("--json", action="store_true", help="print the whole state")
    p_status.set_defaults(func=cmd_status)
    p_fetch = sub.add_parser("fetch", help="resolve and cache the jars; prints the libs dir")
    p_fetch.add_argument("--version", help="Kafka version")
    p_fetch.set_defaults(func=cmd_fetch)
    p_run = sub.add_parser("run", help="up, run a command with FLOWCAUSE_KAFKA_BOOTSTRAP set, down; "
                                       "exits with the command's code")
    broker_opts(p_run)
    p_run.add_argument("command", nargs=argparse.REMAINDER)
    p_run.set_defaults(func=cmd_run)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BrokerError as exc:
        info(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        info("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
