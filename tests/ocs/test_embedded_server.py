"""``ocs serve`` with its embedded Redis, as an operator runs it: a real server process, killed
and restarted, beside a second one, and with its Redis killed under it.

Each test starts ``python -m ocs serve`` on a temporary data directory (ports 0, JSON log lines
on stderr, read by a thread) and watches the redis-server processes of that directory in /proc:

- the binary and the engine form are logged; SIGKILL of the server leaves no redis-server of
  its directory behind, and a restart after an orphan (a redis-server left on the directory,
  with its pid file) runs exactly one;
- a second server on the same data directory refuses with one line and exit status 1, and the
  first serves on;
- a killed embedded Redis is restarted with backoff while attempts fail, with one log line per
  state change and per loop, and afterwards /health, the API and a CCR work again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from balance.embedded import choose_redis_server
from ocs.cli.client import ApiClient
from protocol.aio import DiameterClient
from tests.balance.conftest import PROCESS_DEADLINE_SECONDS, redis_servers_of, start_orphan, wait_until_gone
from tests.ocs.conftest import CLIENT, ROOT
from tests.ocs.test_api import alice
from tests.ocs.test_credit_control import call_to, ccr, code, seconds

Line = dict[str, object]


@dataclass
class ServerProcess:
    """One ``python -m ocs serve`` and the log lines it has written so far."""

    process: subprocess.Popen[str]
    data_directory: Path
    lines: list[Line] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    token: str = ""  # an admin token, made offline in the server's database before it started

    @classmethod
    def start(cls, data_directory: Path, **environment: str) -> ServerProcess:
        settings = {
            "PYTHONPATH": str(ROOT),
            "OCS_REDIS_URL": "",
            "OCS_SERVER_WORKERS": "1",  # one process (tests/ocs/test_workers.py runs several)
            "OCS_REDIS_DATA_DIRECTORY": str(data_directory / "redis"),
            "OCS_DIAMETER_PORT": "0",
            "OCS_DIAMETER_ORIGIN_HOST": "ocs.test",
            "OCS_DIAMETER_ORIGIN_REALM": "test",
            "OCS_HTTP_PORT": "0",
            "OCS_SPOOL_PATH": str(data_directory / "spool.sqlite3"),
            "OCS_SPOOL_INTERVAL_SECONDS": "0.05",
            "OCS_QUOTA_SUPERVISION_INTERVAL_SECONDS": "0.05",
            "OCS_TARIFFS_PATH": str(ROOT / "config" / "tariffs.toml"),
        }
        made = subprocess.run(
            [sys.executable, "-m", "ocs", "token", "create", "--role", "admin", "--name", "tests"],
            cwd=ROOT,
            env={**os.environ, **settings, **environment},
            capture_output=True,
            text=True,
            check=True,
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "ocs", "serve"],
            cwd=ROOT,
            env={**os.environ, **settings, **environment},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        server = cls(process, data_directory / "redis", token=made.stdout.strip())
        threading.Thread(target=server._read, daemon=True).start()
        return server

    def _read(self) -> None:
        assert self.process.stderr is not None
        for text in self.process.stderr:
            self.raw.append(text)
            with contextlib.suppress(json.JSONDecodeError):  # a traceback's lines, kept in raw
                self.lines.append(json.loads(text))

    def events(self, name: str, **fields: object) -> list[Line]:
        return [line for line in list(self.lines) if line["event"] == name and fields.items() <= line.items()]

    def wait_for(self, name: str, **fields: object) -> Line:
        """The first line of this event (with these fields), once written; fails if the server
        exits first or the deadline passes."""
        deadline = time.monotonic() + PROCESS_DEADLINE_SECONDS
        while not (found := self.events(name, **fields)):
            assert self.process.poll() is None, f"the server exited while waiting for {name}:\n{''.join(self.raw)}"
            assert time.monotonic() < deadline, f"no {name} {fields} logged:\n{''.join(self.raw)}"
            time.sleep(0.02)
        return found[0]

    def port(self, event: str) -> int:
        port = self.wait_for(event)["port"]
        assert isinstance(port, int)
        return port

    def redis_pid(self, number: int = 0) -> int:
        """The pid of the embedded Redis the server started first (``number`` 0) or restarted."""
        started = self.wait_for("embedded_redis") if number == 0 else self.events("embedded_redis_up")[number - 1]
        pid = started["pid"]
        assert isinstance(pid, int)
        return pid

    def stop(self) -> int:
        """SIGTERM, as an operator stops it; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=PROCESS_DEADLINE_SECONDS)


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """The servers a test starts; any still running at its end are killed."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def test_sigkilled_server_leaves_no_redis_server_behind(tmp_path: Path, servers: list[ServerProcess]) -> None:
    server = ServerProcess.start(tmp_path)
    servers.append(server)
    redis_pid = server.redis_pid()
    server.wait_for("listening")
    assert redis_servers_of(server.data_directory) == [redis_pid]
    # The operator is told which binary runs and which form of the engine it allows.
    chosen = choose_redis_server()
    started = server.wait_for("embedded_redis")
    assert (started["binary"], started["version"]) == (str(chosen.path), chosen.version_text)
    functions = chosen.version >= (7,)  # FUNCTION and FCALL came with Redis 7.0
    assert server.wait_for("money_engine")["form"] == ("function library" if functions else "EVAL scripts")

    server.process.kill()
    server.process.wait()
    assert wait_until_gone(redis_pid, server.data_directory), "the embedded redis-server outlived its server"
    assert redis_servers_of(server.data_directory) == []


def test_restart_over_an_orphan_runs_exactly_one_redis_server(tmp_path: Path, servers: list[ServerProcess]) -> None:
    orphan = start_orphan(tmp_path / "redis")
    try:
        server = ServerProcess.start(tmp_path)
        servers.append(server)
        server.wait_for("listening")
        assert redis_servers_of(server.data_directory) == [server.redis_pid()]
        assert server.wait_for("embedded_redis_orphan_stopped")["pid"] == orphan
        assert server.stop() == 0
        assert redis_servers_of(server.data_directory) == []
    finally:
        if orphan in redis_servers_of(tmp_path / "redis"):  # only when the test failed
            os.kill(orphan, signal.SIGKILL)


async def test_second_server_on_the_same_data_directory_refuses_to_start(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    first = ServerProcess.start(tmp_path)
    servers.append(first)
    first.wait_for("listening")
    second = ServerProcess.start(tmp_path)
    servers.append(second)
    assert second.process.wait(timeout=PROCESS_DEADLINE_SECONDS) == 1
    refusals = second.events("startup_failed")
    assert len(refusals) == 1 and "\n" not in str(refusals[0]["reason"])
    assert f"in use by process {first.process.pid} " in str(refusals[0]["reason"])
    assert not any("Traceback" in text for text in second.raw)
    assert second.events("listening") == []

    assert redis_servers_of(first.data_directory) == [first.redis_pid()]
    async with ApiClient(f"http://127.0.0.1:{first.port('http_listening')}", token=first.token) as api:
        assert (await api.request("GET", "/health")).status == 200
    assert first.stop() == 0


def failing_redis_server(directory: Path) -> tuple[Path, Path, Path]:
    """A redis-server on PATH that runs the chosen binary, except while ``flag`` exists: then
    each start fails at once and is counted in ``attempts``. (``--version`` always answers, so
    it is the binary chosen: the same version, and earlier on PATH.)"""
    real = choose_redis_server().path
    bin_directory, flag, attempts = directory / "bin", directory / "fail-starts", directory / "attempts"
    bin_directory.mkdir()
    wrapper = bin_directory / "redis-server"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{flag}" ] && [ "$1" != "--version" ]; then echo failed >> "{attempts}"; exit 1; fi\n'
        f'exec "{real}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return bin_directory, flag, attempts


def wait_until(condition: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PROCESS_DEADLINE_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"never: {condition}"
        time.sleep(0.02)


async def test_killed_embedded_redis_is_restarted_and_the_server_serves_again(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    bin_directory, flag, attempts = failing_redis_server(tmp_path)
    server = ServerProcess.start(tmp_path, PATH=f"{bin_directory}{os.pathsep}{os.environ.get('PATH', '')}")
    servers.append(server)
    diameter_port, http_port = server.port("listening"), server.port("http_listening")
    async with ApiClient(f"http://127.0.0.1:{http_port}", token=server.token) as api:
        assert (await api.create_subscriber(alice())).status == 201

        # Redis dies, and its first restarts fail: the outage lasts at least two attempts.
        flag.touch()
        first_redis = server.redis_pid()
        os.kill(first_redis, signal.SIGKILL)
        wait_until("two failed restarts", lambda: attempts.exists() and len(attempts.read_text().split()) >= 2)
        server.wait_for("redis_unavailable", loop="spool_writer")
        server.wait_for("redis_unavailable", loop="session_supervision")
        assert (await api.request("GET", "/health")).status == 503

        flag.unlink()
        server.wait_for("embedded_redis_up")
        assert redis_servers_of(server.data_directory) == [server.redis_pid(1)] != [first_redis]
        assert (await api.request("GET", "/health")).status == 200
        assert (await api.balance("alice")).status == 200
        client = await DiameterClient.connect("127.0.0.1", diameter_port, CLIENT)
        answer = await client.request(
            ccr("after-restart", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), call_to("4917612345678"))
        )
        assert code(answer) == 2001
        await client.close()
    server.wait_for("redis_available", loop="spool_writer")
    server.wait_for("redis_available", loop="session_supervision")

    # One line per state change, however many attempts and loop passes failed.
    for event in ("embedded_redis_down", "embedded_redis_restarting", "embedded_redis_restart_failing"):
        assert len(server.events(event)) == 1, event
    assert len(server.events("embedded_redis_up")) == 1
    for loop in ("spool_writer", "session_supervision"):
        assert len(server.events("redis_unavailable", loop=loop)) == 1
        assert len(server.events("redis_available", loop=loop)) == 1
    assert [line for line in server.lines if "exception" in line or line["level"] == "error"] == []
    assert server.stop() == 0
    assert redis_servers_of(server.data_directory) == []
