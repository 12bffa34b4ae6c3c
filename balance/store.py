"""The money engine on Redis: each operation of RULES.md as one atomic script call.

Theory of operation: a method checks its input (business refusals come back as ``Outcome``
values), finds the account's hierarchy (``ar:<account>``, cached: it never changes once
provisioned), builds every key from ``balance.keys`` and the flat ARGV of the script header, runs
the script through a ``ScriptCaller``, and turns the reply into the types of ``balance.types``.
After a charge that opened a session or wrote usage records (a replay of one included: the
call that applied may not have sent them) the hierarchy is marked in the supervisor's and the
spool writer's work lists (balance/work_lists.py, sharded so that on a Redis Cluster they spread
over the masters). On a single Redis (``marks_in_charge``, set by ``connect`` without
``cluster``) the charge script marks them itself: their keys follow the script's own, and the
marks apply with the charge or not at all, for no command of their own (two fewer round trips'
worth of packing, parsing and awaiting per CCR). On a Redis Cluster those lists live outside the
hierarchy's slot, so the marks are separate commands, sent once the script has applied: their
failure cannot undo the charge, so it is not raised but kept as state, ``marks_lost``, and a
mark lost that way or in a crash is found again by ``rescan_work`` (the server runs it at
startup and, while ``marks_lost`` is set, from its session supervision).
Only infrastructure failures raise (``BalanceUnavailable``, ``BalanceScriptError``).

Deadlines (RULES.md "Deadlines"): a charge or refund is sent with a deadline, the store's clock
plus its reply timeout, which the script compares with Redis's clock and past which it writes
nothing. A call that fails once it may have been sent (a connection lost or dropped for silence:
Redis may still run what it received, seconds later) is settled before it is reported: the
store waits until the deadline has passed, so that no copy of it can apply any more, and sends
it once more, which answers the stored result if a copy applied in time (a replay) and
"expired" if none did. Only then does it raise ``BalanceUnavailable`` (3004 at the server),
which therefore means nothing was applied. If Redis is still silent at that look, the call raises
all the same: the one case left open is a copy that ran before its deadline while its reply was
lost, which the client's retransmission (same Session-Id and CC-Request-Number) then replays.
The two clocks are compared directly: Redis's clock ahead of ours refuses calls early (3004,
nothing applied); behind ours by more than ``DEADLINE_MARGIN_SECONDS`` lets a copy apply after
we reported failure. The embedded Redis shares the host's clock; an external one needs NTP.
Top-ups, adjustments, provisioning and updates carry no deadline: their callers (the API and
the CLI) wait for the true outcome, and a client that gives up retries with the same top-up or
adjustment id. Session expiry and outbox acknowledgements have no caller waiting at all.

Two callers: ``caller`` (the pipelined client: on a single Redis, or on a Redis Cluster one
pipelined connection per master, balance/pipeline_cluster.py) carries all the work whose
number grows with the traffic: charges, their marks, the hierarchy lookup of an account not yet
cached, and the spool writer's reads and trims of the outboxes (a few calls per usage record
drained). ``admin`` (redis-py, which routes a cluster's commands itself) carries the rest:
provisioning, queries, session supervision.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from balance import keys, work_lists
from balance.callers import PipelinedCaller, RedisPyCaller, Reply, ScriptCaller
from balance.deadline import within
from balance.errors import BalanceScriptError, BalanceUnavailable, BalanceUnreached
from balance.pipeline import DEFAULT_REPLY_TIMEOUT_SECONDS, PipelinedRedis
from balance.pipeline_cluster import ClusterPipelinedRedis, startup_nodes_of
from balance.script_io import (
    bucket_arguments,
    charge_result,
    item_arguments,
    json_session_id,
    reply_strings,
    reply_text,
    roots_of,
    usage_record,
)
from balance.scripts import LIBRARY, LIBRARY_PREFIX, SCRIPTS, Operation, Script, is_library_name
from balance.types import (
    MAX_HIERARCHY_LEVELS,
    Account,
    AccountStatus,
    BalanceView,
    Bucket,
    BucketKind,
    ChargeRequest,
    ChargeResult,
    OperationResult,
    Outcome,
    UsageRecord,
    worst_status,
)
from balance.validation import invalid_account, invalid_bucket, invalid_charge
from balance.views import read_balance

Hierarchy = tuple[str, str]  # (root, parent id or "")
Ancestors = tuple[str, ...]  # an account's ancestors' ids, parent first, root last


# How far Redis's clock may lag the server's before a call reported failed could still apply
# (module docstring): NTP keeps hosts of one site within milliseconds of each other.
DEADLINE_MARGIN_SECONDS = 0.25
# The longest the settling look at a failed call waits for Redis (module docstring): with the
# default reply timeout, a failed charge is answered within 6.25 s, before the client's Tx timer
# (RFC 4006 section 13, default 10 s) fires.
SETTLE_TIMEOUT_SECONDS = 1.0
_EXPIRED = "expired"  # what charge.lua and refund.lua answer past their deadline


class BalanceStore:
    def __init__(
        self,
        caller: ScriptCaller,
        *,
        admin: ScriptCaller | None = None,
        reply_timeout_seconds: float = DEFAULT_REPLY_TIMEOUT_SECONDS,
        tombstone_seconds: int = keys.DEFAULT_TOMBSTONE_SECONDS,
        clock: Callable[[], float] = time.time,
        marks_in_charge: bool = False,
    ) -> None:
        self.caller = caller  # the hot path: charge
        self.admin = admin or caller  # everything else
        # How long a charge or refund is waited for: the callers' own bound on a silent Redis
        # (balance.pipeline, RedisPyCaller) should be this too; it sets the scripts' deadline.
        self.reply_timeout_seconds = reply_timeout_seconds
        self.tombstone_seconds = tombstone_seconds
        self._tombstone_text = str(tombstone_seconds)
        self.clock = clock  # wall clock, epoch seconds: deadlines are compared with Redis's TIME
        self._hierarchies: dict[str, Hierarchy] = {}
        self._ancestors: dict[str, Ancestors] = {}
        # Per account, what every charge needs besides the session key: built once (an account
        # never changes hierarchy) instead of four key functions per call.
        self._charge_parts: dict[str, _ChargeParts] = {}
        # A charge applied but its work-list marks did not reach Redis: ``rescan_work`` is due
        # (the server's session supervision runs it once Redis answers again).
        self.marks_lost = False
        # On a single Redis the charge script marks the work lists itself, in the same atomic
        # call (no marks to lose); on a Redis Cluster, or a caller not known to be a single Redis,
        # the marks are commands of their own after it (module docstring). ``connect`` sets it.
        self.marks_in_charge = marks_in_charge

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        cluster: bool = False,
        pipelined: bool = False,
        functions: bool = True,
        reply_timeout_seconds: float = DEFAULT_REPLY_TIMEOUT_SECONDS,
        tombstone_seconds: int = keys.DEFAULT_TOMBSTONE_SECONDS,
    ) -> BalanceStore:
        """``pipelined`` puts charges on the pipelined client (``balance.pipeline``; with ``cluster``,
        ``balance.pipeline_cluster``, whose URL may list several nodes, comma-separated);
        ``functions=False`` runs the EVAL scripts even where Redis has functions (balance/scripts.py)."""
        timeout = reply_timeout_seconds
        admin_url = url.split(",", 1)[0]  # redis-py takes one node and finds the others itself
        admin = RedisPyCaller.from_url(admin_url, cluster=cluster, functions=functions, reply_timeout_seconds=timeout)
        options = {
            "reply_timeout_seconds": timeout,
            "tombstone_seconds": tombstone_seconds,
            "marks_in_charge": not cluster,
        }
        if not pipelined:
            return cls(admin, **options)  # type: ignore[arg-type]
        client: PipelinedRedis | ClusterPipelinedRedis
        if cluster:
            client = ClusterPipelinedRedis(startup_nodes_of(url), reply_timeout_seconds=timeout)
        else:
            client = _pipelined_client(url, timeout)
        caller = PipelinedCaller(client, functions=functions)
        return cls(caller, admin=admin, **options)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.caller.close()
        if self.admin is not self.caller:
            await self.admin.close()

    async def prune_libraries(self) -> list[str]:
        """Delete the function libraries of other versions of this engine (``ocs_<sha>``, not this
        one's), so that releases do not pile up in Redis, its append-only file and its replicas.
        Safe while a server of another version still runs: its next call finds its library gone
        and loads it again (balance/scripts.py). Returns the names deleted; none on a Redis
        without functions."""
        try:
            listed = await self.admin.execute("FUNCTION", "LIST", "LIBRARYNAME", f"{LIBRARY_PREFIX}*")
        except BalanceScriptError:
            return []  # a Redis without FUNCTION
        found = {text for text in reply_strings(listed) if is_library_name(text) and text != LIBRARY.name}
        deleted = []
        for name in sorted(found):
            try:
                await self.admin.execute("FUNCTION", "DELETE", name)
            except BalanceScriptError:
                continue  # deleted meanwhile (on a cluster: from some masters)
            deleted.append(name)
        return deleted

    async def flush_all(self) -> None:
        """Tests only: forget everything."""
        await self.admin.execute("FLUSHALL")
        self._hierarchies.clear()
        self._ancestors.clear()
        self._charge_parts.clear()

    # -- hierarchy ---------------------------------------------------------------------------

    async def hierarchy(self, account_id: str) -> Hierarchy | None:
        known = self._hierarchies.get(account_id)
        if known is not None:
            return known
        if not keys.is_valid_account_id(account_id):
            return None
        value = await self.caller.execute("GET", keys.account_root_key(account_id))
        if not isinstance(value, str):
            return None
        root, _, parent = value.partition(" ")
        self._hierarchies[account_id] = (root, parent)
        return root, parent

    async def root_of(self, account_id: str) -> str:
        found = await self.hierarchy(account_id)
        return found[0] if found is not None else account_id

    async def ancestors(self, account_id: str) -> Ancestors | None:
        """The account's ancestors, parent first, root last (empty for a root); None if unknown.
        Walked up the ``ar:`` lookups (each cached: an account never moves), checked as the scripts
        load them (lib.lua load_ancestors)."""
        known = self._ancestors.get(account_id)
        if known is not None:
            return known
        chain: list[str] = []
        found = await self.hierarchy(account_id)
        while found is not None and found[1] and len(chain) < MAX_HIERARCHY_LEVELS:
            chain.append(found[1])
            found = await self.hierarchy(found[1])
        if found is None:
            return None
        self._ancestors[account_id] = tuple(chain)
        return self._ancestors[account_id]

    async def _chain(self, account_id: str) -> tuple[str, Ancestors] | None:
        """(root, ancestors) of a known account, None for an unknown one."""
        found = await self.hierarchy(account_id)
        chain = await self.ancestors(account_id) if found is not None else None
        return (found[0], chain) if found is not None and chain is not None else None

    @staticmethod
    def _account_keys(root: str, account_id: str, ancestors: Ancestors) -> tuple[str, str, list[str]]:
        """The account's key, its parent's (its own again for a root) and the keys of the ancestors
        above the parent: the order every script's KEYS takes them in."""
        parent = ancestors[0] if ancestors else account_id
        return (
            keys.account_key(root, account_id),
            keys.account_key(root, parent),
            [keys.account_key(root, ancestor) for ancestor in ancestors[1:]],
        )

    # -- provisioning ----------------------------------------------------------------------

    async def provision(self, account: Account) -> OperationResult:
        problem = invalid_account(account)
        if problem is not None:
            return OperationResult(Outcome.INVALID, reason=problem)
        root, ancestors = account.account_id, Ancestors()
        if account.parent_id:
            # An unknown parent: the script refuses it (after the id's own check, as before).
            root, above = await self._chain(account.parent_id) or (account.parent_id, ())
            ancestors = (account.parent_id, *above)
        claim = f"{root} {account.parent_id}"
        lookup = keys.account_root_key(account.account_id)
        claimed = await self.admin.execute("SET", lookup, claim, "NX")
        if claimed is None and await self.admin.execute("GET", lookup) != claim:
            return OperationResult(Outcome.ALREADY_EXISTS)
        if len(ancestors) >= MAX_HIERARCHY_LEVELS:
            if claimed is not None:
                await self.admin.execute("DEL", lookup)
            return OperationResult(
                Outcome.INVALID,
                reason=f"parent_id: {account.parent_id} is at level {len(ancestors)} of a hierarchy of at most "
                f"{MAX_HIERARCHY_LEVELS} levels (root included): it can have no children",
            )
        account_key, parent_key, _ = self._account_keys(root, account.account_id, ancestors)
        children_key = keys.children_key(root, account.parent_id or account.account_id)
        arguments = [
            account.account_id,
            account.currency,
            account.payment_type.value,
            account.status.value,
            str(account.credit_limit_micros),
            " ".join(ancestors),
            str(account.child_cap_micros),
            str(len(account.buckets)),
        ]
        for bucket in account.buckets:
            arguments += bucket_arguments(bucket)
        outcome = Outcome(
            reply_text(
                await self.admin.run(SCRIPTS[Operation.PROVISION], [account_key, parent_key, children_key], arguments)
            )
        )
        if outcome is Outcome.INVALID:
            if claimed is not None:
                await self.admin.execute("DEL", lookup)
            return OperationResult(
                outcome, reason=f"parent_id: {account.parent_id} does not exist or has another currency"
            )
        return OperationResult(outcome)

    async def update(
        self,
        account_id: str,
        *,
        status: AccountStatus | None = None,
        credit_limit_micros: int | None = None,
        child_cap_micros: int | None = None,
    ) -> OperationResult:
        found = await self.hierarchy(account_id)
        if found is None:
            return OperationResult(Outcome.UNKNOWN_ACCOUNT)
        for value in (credit_limit_micros, child_cap_micros):
            if value is not None and not 0 <= value <= _MAX_AMOUNT:
                return OperationResult(Outcome.INVALID)
        arguments = [
            status.value if status is not None else "",
            str(credit_limit_micros) if credit_limit_micros is not None else "",
            str(child_cap_micros) if child_cap_micros is not None else "",
        ]
        account_key = keys.account_key(found[0], account_id)
        reply = reply_text(await self.admin.run(SCRIPTS[Operation.UPDATE], [account_key], arguments))
        return OperationResult(Outcome(reply))

    async def top_up(
        self,
        account_id: str,
        top_up_id: str,
        amount_micros: int,
        *,
        kind: BucketKind = BucketKind.MAIN,
        valid_until: int = 0,
    ) -> OperationResult:
        if kind not in (BucketKind.MAIN, BucketKind.BONUS) or not 0 < amount_micros <= _MAX_AMOUNT:
            return OperationResult(Outcome.INVALID)
        return await self._credit(
            account_id, "top_up", top_up_id, amount_micros, Bucket(0, kind, 0, (), 0, valid_until)
        )

    async def adjust(self, account_id: str, adjustment_id: str, amount_micros: int) -> OperationResult:
        if not -_MAX_AMOUNT <= amount_micros <= _MAX_AMOUNT:
            return OperationResult(Outcome.INVALID)
        return await self._credit(account_id, "adjust", adjustment_id, amount_micros, Bucket(0, BucketKind.MAIN, 0))

    async def add_bucket(self, account_id: str, bucket: Bucket, operation_id: str = "") -> OperationResult:
        """A new bucket; with ``operation_id`` at most once per id (credit.lua's idempotency key)."""
        if invalid_bucket(replace(bucket, bucket_id=max(bucket.bucket_id, 1))):
            return OperationResult(Outcome.INVALID)
        return await self._credit(account_id, "add_bucket", operation_id, bucket.amount, bucket)

    async def _credit(
        self, account_id: str, operation: str, operation_id: str, amount: int, bucket: Bucket
    ) -> OperationResult:
        found = await self.hierarchy(account_id)
        if found is None:
            return OperationResult(Outcome.UNKNOWN_ACCOUNT)
        root = found[0]
        arguments = [
            account_id,
            operation,
            operation_id,
            str(amount),
            bucket.kind.value,
            ",".join(bucket.services),
            str(bucket.valid_from),
            str(bucket.valid_until),
            str(bucket.priority),
        ]
        script_keys = [keys.account_key(root, account_id), keys.idempotency_key(root)]
        words = reply_text(await self.admin.run(SCRIPTS[Operation.CREDIT], script_keys, arguments)).split(" ")
        applied = int(words[3]) if len(words) > 3 else None
        return OperationResult(
            Outcome(words[0]), replayed=words[1] == "1", bucket_id=int(words[2]), applied_micros=applied
        )

    # -- charging --------------------------------------------------------------------------

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        account_id = request.account_id
        parts = self._charge_parts.get(account_id)
        if parts is None:
            found = await self._chain(account_id)
            if found is None:
                return ChargeResult(Outcome.UNKNOWN_ACCOUNT)
            root, ancestors = found
            account_key, parent_key, above = self._account_keys(root, account_id, ancestors)
            parts = (
                root,
                " ".join(ancestors),
                [account_key, parent_key, keys.expiry_key(root), keys.outbox_key(root), *above],
                (keys.session_roots_key(root), keys.outbox_roots_key(root)),
            )
            self._charge_parts[account_id] = parts
        if invalid_charge(request):
            return ChargeResult(Outcome.INVALID)
        root, ancestor_ids, account_keys, work_list_keys = parts
        session_key = keys.session_key(root, request.session_id)
        arguments = [
            account_id,
            request.session_id,
            str(request.request_number),
            str(request.now_seconds),
            str(request.now_seconds + request.validity_seconds),
            "1" if request.terminate else "0",
            "1" if request.event else "0",
            self._tombstone_text,
            ancestor_ids,
            json_session_id(request.session_id),
            self._deadline_text(),
        ]
        for item in request.items:
            arguments += item_arguments(item)
        if self.marks_in_charge:  # the script marks the work lists itself (module docstring)
            script_keys = [session_key, *account_keys, *work_list_keys]
            return charge_result(
                await self._run_in_time(self.caller, SCRIPTS[Operation.CHARGE], script_keys, arguments)
            )
        script_keys = [session_key, *account_keys]
        words = await self._run_in_time(self.caller, SCRIPTS[Operation.CHARGE], script_keys, arguments)
        if words[1] == "ok":
            # A replay too: its stored reply tells what the call that applied opened and wrote,
            # and that call's marks may never have been sent (its reply was lost, so the settling
            # look or the client's retransmission is the first to see it applied). ZADD LT and
            # SADD change nothing when repeated.
            await self._mark(root, words[3] == "1", words[4] != "0", request.now_seconds + request.validity_seconds)
        return charge_result(words)

    async def _mark(self, root: str, opened: bool, recorded: bool, expiry_seconds: int) -> None:
        """Put the hierarchy on the supervisor's list (a session opened) and the spool writer's
        (usage records written). Best effort: the charge has applied, so its outcome stands
        whatever happens here; a mark Redis did not take sets ``marks_lost`` (module docstring)."""
        try:
            await work_lists.mark(self.caller, root, opened, recorded, expiry_seconds)
        except BalanceUnavailable:
            self.marks_lost = True

    async def refund(
        self,
        account_id: str,
        session_id: str,
        request_number: int,
        amount_micros: int,
        now_seconds: int,
        day: str = "",
        day_limit_micros: int = 0,
    ) -> ChargeResult:
        found = await self._chain(account_id)
        if found is None:
            return ChargeResult(Outcome.UNKNOWN_ACCOUNT)
        if not 0 < amount_micros <= _MAX_AMOUNT or request_number < 0:
            return ChargeResult(Outcome.INVALID)
        root, ancestors = found
        account_key, parent_key, above = self._account_keys(root, account_id, ancestors)
        arguments = [
            account_id,
            session_id,
            str(request_number),
            str(amount_micros),
            str(now_seconds),
            self._tombstone_text,
            " ".join(ancestors),
            self._deadline_text(),
            day,
            str(day_limit_micros),
        ]
        script_keys = [
            keys.session_key(root, session_id),
            account_key,
            parent_key,
            keys.refund_day_key(root, account_id),
            *above,
        ]
        return charge_result(await self._run_in_time(self.admin, SCRIPTS[Operation.REFUND], script_keys, arguments))

    # -- deadlines (module docstring) ----------------------------------------------------------

    def _deadline_text(self) -> str:
        """The deadline of a call made now: epoch milliseconds, as the scripts read it."""
        return str(int((self.clock() + self.reply_timeout_seconds) * 1000))

    async def _run_in_time(
        self, caller: ScriptCaller, script: Script, script_keys: list[str], arguments: list[str]
    ) -> list[str]:
        """The words of the reply of a charge or refund whose deadline is in ``arguments``;
        ``BalanceUnavailable`` if it did not apply (it may still have, if Redis cannot be asked)."""
        try:
            reply = await caller.run(script, script_keys, arguments)
        except BalanceUnreached:
            raise  # never sent: nothing to settle
        except BalanceUnavailable as failure:
            reply = await self._settle(caller, script, script_keys, arguments, failure)
        words = reply_text(reply).split(" ")
        if words[1] == _EXPIRED:
            raise BalanceUnavailable(f"{script.operation}: Redis ran it after its deadline; nothing was applied")
        return words

    async def _settle(
        self,
        caller: ScriptCaller,
        script: Script,
        script_keys: list[str],
        arguments: list[str],
        failure: BalanceUnavailable,
    ) -> Reply:
        """The reply of the same call sent again once its deadline has passed: the stored result
        if a copy applied, "expired" if none did; ``failure`` if Redis does not answer that."""
        deadline = int(arguments[_DEADLINE_ARGUMENT[script.operation]]) / 1000
        await asyncio.sleep(max(0.0, deadline + DEADLINE_MARGIN_SECONDS - self.clock()))
        try:
            look = caller.run(script, script_keys, arguments)
            return await within(min(self.reply_timeout_seconds, SETTLE_TIMEOUT_SECONDS), look)
        except (BalanceUnavailable, TimeoutError):
            raise BalanceUnavailable(f"{failure}; past its deadline, nothing more can apply") from None

    async def effective_status(self, account_id: str, now_seconds: int) -> AccountStatus | None:
        """The worst of the account's own status and its ancestors' (RULES.md "Effective status"),
        as charge.lua checks it; None for an unknown account. One read per level."""
        statuses: list[AccountStatus] = []
        for node in (account_id, *(await self.ancestors(account_id) or ())):
            view = await self.balance(node, now_seconds)
            if view is None:
                return None
            statuses.append(view.account.status)
        return worst_status(statuses)

    async def descendants(self, account_id: str) -> list[str]:
        """Every account below ``account_id`` in its hierarchy, level by level (children first),
        each level sorted; empty for a line or an unknown account. One SMEMBERS per node that
        has children, all under the root's hash tag (RULES.md "descendants")."""
        root = await self.root_of(account_id)
        found: list[str] = []
        level = [account_id]
        while level:
            below: list[str] = []
            for node in level:
                below += reply_strings(await self.admin.execute("SMEMBERS", keys.children_key(root, node)))
            level = sorted(below)
            found += level
        return found

    async def release(self, account_id: str) -> list[str]:
        """Close every open session of the account at once, returning all it holds, as session
        supervision does for an expired one (RULES.md "release"; expire.lua run with the end of
        time as its ``now``); returns the ids closed, sorted. Usage already committed stays."""
        root = await self.root_of(account_id)
        members = await self.admin.execute("ZRANGE", keys.expiry_key(root), "0", "-1")
        closed: list[str] = []
        for member in members if isinstance(members, list) else []:
            owner, _, session_id = str(member).partition("|")
            if owner == account_id and await self._close_session(root, account_id, session_id, _END_OF_TIME):
                closed.append(session_id)
        return sorted(closed)

    async def _close_session(self, root_id: str, account_id: str, session_id: str, now_text: str) -> bool:
        """expire.lua on one session: closed if its expiry is at or before ``now_text``."""
        root, ancestors = await self._chain(account_id) or (root_id, ())
        account_key, parent_key, above = self._account_keys(root, account_id, ancestors)
        script_keys = [keys.session_key(root, session_id), account_key, parent_key, keys.expiry_key(root), *above]
        arguments = [account_id, session_id, now_text, self._tombstone_text, " ".join(ancestors)]
        return await self.admin.run(SCRIPTS[Operation.EXPIRE], script_keys, arguments) == 1

    # -- session supervision -------------------------------------------------------------------

    async def expire(self, root_id: str, now_seconds: int) -> list[str]:
        """Close the hierarchy's sessions whose expiry has passed; returns their ids, sorted."""
        members = await self.admin.execute("ZRANGEBYSCORE", keys.expiry_key(root_id), "-inf", str(now_seconds))
        closed: list[str] = []
        for member in members if isinstance(members, list) else []:
            account_id, _, session_id = str(member).partition("|")
            if await self._close_session(root_id, account_id, session_id, str(now_seconds)):
                closed.append(session_id)
        return sorted(closed)

    async def rescan_work(self) -> tuple[int, int]:
        """Put back on the work lists every hierarchy with live sessions or undelivered usage
        records: a crash between a charge and its marks (separate commands) would otherwise
        leave its sessions unsupervised and its records in the outbox. The server calls this
        once at startup, and again whenever ``marks_lost`` is set; returns (hierarchies with
        sessions, hierarchies with records). Clears ``marks_lost`` unless the scan fails; a mark
        lost while it runs sets it again."""
        self.marks_lost = False
        try:
            await work_lists.move_legacy_lists(self.admin)
            watched = delivered = 0
            for root in roots_of(await self.admin.scan_keys("{*}:x"), ":x"):
                watched += await work_lists.watch_earliest_session(self.admin, root)
            for root in roots_of(await self.admin.scan_keys("{*}:o"), ":o"):
                delivered += await work_lists.list_if_records_wait(self.caller, root)
        except BaseException:
            self.marks_lost = True
            raise
        return watched, delivered

    async def expire_due(self, now_seconds: int) -> list[tuple[str, str]]:
        """The supervisor's pass: every hierarchy due for a look; returns (root, session) closed."""
        closed: list[tuple[str, str]] = []
        for root in await work_lists.roots_due(self.admin, now_seconds):
            closed += [(root, session_id) for session_id in await self.expire(root, now_seconds)]
            # Remove, then look again: a session opened meanwhile re-adds the root itself, and one
            # opened between our look and the removal is caught by the second look.
            await work_lists.unwatch(self.admin, root)
            await work_lists.watch_earliest_session(self.admin, root)
        return closed

    # -- queries ---------------------------------------------------------------------------

    async def balance(self, account_id: str, now_seconds: int) -> BalanceView | None:
        found = await self._chain(account_id)
        if found is None:
            return None
        return await read_balance(self.admin, found[0], account_id, found[1], now_seconds)

    async def outbox_roots(self) -> list[str]:
        return await work_lists.roots_with_records(self.caller)

    async def read_outbox(self, root: str, limit: int = 1_000) -> list[UsageRecord]:
        """The oldest ``limit`` records of the hierarchy's outbox (left in place until acknowledged)."""
        entries = await self.caller.execute("LRANGE", keys.outbox_key(root), "0", str(limit - 1))
        return [usage_record(str(entry)) for entry in entries] if isinstance(entries, list) else []

    async def acknowledge_outbox(self, root: str, records: Sequence[UsageRecord]) -> int:
        """Drop ``records`` (read from the head of the outbox) once they are stored elsewhere.

        Idempotent (ack.lua trims only through the last of these records), so a retry, or another
        writer that read the same head, never removes a record that was not stored."""
        if not records:
            return 0
        arguments = [str(len(records)), records[-1].record_id]
        removed = await self.caller.run(SCRIPTS[Operation.ACK], [keys.outbox_key(root)], arguments)
        return removed if isinstance(removed, int) else 0

    async def prune_outbox_root(self, root: str) -> None:
        """Take a hierarchy with an empty outbox off the spool writer's work list; a record that
        arrives meanwhile puts it back (the second look closes the race)."""
        await work_lists.unlist_outbox(self.caller, root)

    async def usage_records(self) -> list[UsageRecord]:
        """Every record still in any outbox (tests and audits), by hierarchy then commit order."""
        records: list[UsageRecord] = []
        for root in await self.outbox_roots():
            records += await self.read_outbox(root, limit=1_000_000)
        return records


_MAX_AMOUNT = 10**15
# A ``now`` later than any session's expiry (2^53 - 1: Lua's doubles hold it exactly).
_END_OF_TIME = str(2**53 - 1)
# Where the deadline sits in each script's ARGV, counted from 0 (their headers: 11 and 8).
_DEADLINE_ARGUMENT = {Operation.CHARGE: 10, Operation.REFUND: 7}
# (root, the ancestors' ids as charge.lua's ARGV[9], KEYS[2] on: account, parent, expiry zset,
# outbox, the ancestors above the parent)
_ChargeParts = tuple[str, str, list[str], tuple[str, str]]  # root, ancestors, keys, work lists


def _pipelined_client(url: str, reply_timeout_seconds: float) -> PipelinedRedis:
    if url.startswith("unix://"):
        return PipelinedRedis(unix_socket_path=url.removeprefix("unix://"), reply_timeout_seconds=reply_timeout_seconds)
    address = url.removeprefix("redis://").split("/", 1)[0]
    host, _, port = address.rpartition(":")
    return PipelinedRedis(host=host or "127.0.0.1", port=int(port or 6379), reply_timeout_seconds=reply_timeout_seconds)
