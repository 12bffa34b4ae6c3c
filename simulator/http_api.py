"""The simulator's view of the OCS provisioning API (``ocs/api/server.py``), over HTTP with aiohttp.

Theory of operation: the simulator is a client of the OCS like any operator tool, so it creates
subscribers, reads balances, prices usage and asks for the audit through the documented HTTP
endpoints, never through the server's modules (DESIGN.md: simulator/ imports protocol/ only).
Answers are JSON; this module turns the few fields the simulator needs into typed values and
raises ``ApiRefused`` (with the status and the server's error text) for anything but success.
Money arrives as ``<name>_micros`` integers, so no decimal parsing is needed on the way in; on
the way out money is sent as decimal strings, as the API requires.

The server may be restarting (a crash, a deployment): a request the connection dropped, or that
found no one listening, or that got 503 (Redis not answering), is sent again after a pause that
doubles up to ``RETRY_PAUSE_LIMIT_SECONDS``, for at most ``retry_limit_seconds`` in all; then
``ApiUnreachable`` says so in one line. Every call is safe to repeat: reads, pricing, top-ups
(idempotent by id), and creates (customers, nodes, lines, accounts), where a repeat that finds
the thing already there (409) means the first attempt was applied before its answer was lost.
Adding a bucket is not idempotent on the server, so ``add_allowance`` looks before each attempt.

Every call carries the API token given (``Authorization: Bearer``, RFC 6750 section 2.1): the
simulator provisions, tops up and audits, so it needs an admin token (``ocs token create --role
admin``). A refusal for want of one (401, 403) is an ``ApiRefused`` like any other, never retried.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from types import TracebackType

import aiohttp

REQUEST_TIMEOUT_SECONDS = 30.0  # the audit scans every account; generous for large populations
RETRY_LIMIT_SECONDS = 30.0  # how long a call keeps trying while the server is away
RETRY_FIRST_PAUSE_SECONDS = 0.1
RETRY_PAUSE_LIMIT_SECONDS = 2.0
SERVICE_UNAVAILABLE = 503  # ocs/api/server.py: Redis does not answer; the same request may pass later
LIST_PAGE_ROWS = 500  # rows asked per page of a list (bills, payments)
CONFLICT = 409  # ocs/api/server.py, ocs/api/customers.py: the account, customer, node or line exists
# The server went away mid-call: the request may or may not have been applied.
_AWAY = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


class ApiUnreachable(RuntimeError):
    """The API did not answer a call within the retry limit (the server is down or restarting)."""

    def __init__(self, url: str, method: str, path: str, seconds: float, cause: str) -> None:
        super().__init__(f"the OCS API at {url} did not answer {method} {path} for {seconds:.0f} s (last: {cause})")


class ApiRefused(RuntimeError):
    """The API answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: object) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class BalanceSnapshot:
    """The counters of one account at one moment (GET /subscribers/{id}/balance)."""

    account_id: str
    available_micros: int
    committed_micros: int
    status: str
    unbilled_micros: int
    held_micros: int
    reservations: int
    billed_micros: int = 0  # postpaid: what the bill run's cuts took off ``unbilled``


@dataclass(frozen=True, slots=True)
class RateQuote:
    """What ``units`` of a service cost at one moment (POST /rate): the engine's own arithmetic,
    and the tariff it used (``price_micros`` per ``per_units`` charged units), which
    ``simulator.ledger`` needs to price usage split across a tariff change."""

    cost_micros: int
    charged_units: int
    price_micros: int
    per_units: int
    service: str = ""  # the tariff's service the units were rated as (scopes allowances; loyalty rules)


@dataclass(frozen=True, slots=True)
class AuditFinding:
    account_id: str
    rule: str
    detail: str


@dataclass(frozen=True, slots=True)
class AuditVerdict:
    ok: bool
    accounts: int
    spool_records: int
    findings: tuple[AuditFinding, ...] = field(default=())


def _mapping(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return {str(key): item for key, item in value.items()}


def _integer(values: dict[str, object], name: str) -> int:
    value = values.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    return value


class OcsApi:
    """An aiohttp session on the API's base URL; use as ``async with OcsApi(url) as api``."""

    def __init__(
        self, base_url: str, *, token: str | None = None, retry_limit_seconds: float = RETRY_LIMIT_SECONDS
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_limit_seconds = retry_limit_seconds
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OcsApi:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        self._session = aiohttp.ClientSession(timeout=timeout, headers=self.headers)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: object = None, *, create: bool = False) -> dict[str, object]:
        """One API call, sent again while the server is away (see the module's docstring)."""
        deadline = time.monotonic() + self.retry_limit_seconds
        pause = RETRY_FIRST_PAUSE_SECONDS
        attempt = 0
        while True:
            try:
                return await self._call_once(method, path, body)
            except ApiRefused as refused:
                if attempt and refused.status == CONFLICT and create:
                    return {}  # created by an earlier attempt whose answer was lost
                if refused.status != SERVICE_UNAVAILABLE:
                    raise
                cause = str(refused)
            except _AWAY as error:
                cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            if time.monotonic() + pause > deadline:
                raise ApiUnreachable(self.base_url, method, path, self.retry_limit_seconds, cause)
            await asyncio.sleep(pause)
            pause = min(2 * pause, RETRY_PAUSE_LIMIT_SECONDS)
            attempt += 1

    async def _call_once(self, method: str, path: str, body: object) -> dict[str, object]:
        if self._session is None:
            raise RuntimeError("OcsApi is used outside 'async with'")
        async with self._session.request(method, self.base_url + path, json=body) as response:
            payload: object = await response.json(content_type=None)
            if response.status >= 300:
                raise ApiRefused(method, path, response.status, payload)
            return _mapping(payload, f"{method} {path}")

    async def create_subscriber(self, body: dict[str, object]) -> None:
        await self._call("POST", "/subscribers", body, create=True)

    async def create_customer(self, body: dict[str, object]) -> None:
        """POST /customers (ocs/api/customers.py): an individual or a company with its root pool."""
        await self._call("POST", "/customers", body, create=True)

    async def customer(self, customer_id: str) -> dict[str, object]:
        return await self._call("GET", f"/customers/{customer_id}")

    async def tree(self, customer_id: str) -> dict[str, object]:
        """GET /customers/{id}/tree: the customer, its nodes and their lines."""
        return await self._call("GET", f"/customers/{customer_id}/tree")

    async def add_node(self, customer_id: str, body: dict[str, object]) -> None:
        await self._call("POST", f"/customers/{customer_id}/nodes", body, create=True)

    async def add_line(self, customer_id: str, body: dict[str, object]) -> None:
        """Activate a line: its engine account and identities (a resumable step on the server)."""
        await self._call("POST", f"/customers/{customer_id}/lines", body, create=True)

    async def add_allowance(self, account_id: str, body: dict[str, object]) -> None:
        """POST /subscribers/{id}/buckets once: a bucket add is not idempotent, so each attempt
        first looks whether an earlier one (its answer lost) made a bucket of that kind."""
        deadline = time.monotonic() + self.retry_limit_seconds
        while True:
            view = await self._call("GET", f"/subscribers/{account_id}/balance")
            buckets = view.get("buckets")
            if isinstance(buckets, list) and any(
                isinstance(bucket, dict) and bucket.get("kind") == body.get("kind") for bucket in buckets
            ):
                return
            try:
                await self._call_once("POST", f"/subscribers/{account_id}/buckets", body)
                return
            except _AWAY as error:
                if time.monotonic() > deadline:
                    raise ApiUnreachable(
                        self.base_url, "POST", "buckets", self.retry_limit_seconds, str(error)
                    ) from None
                await asyncio.sleep(RETRY_FIRST_PAUSE_SECONDS)

    async def set_status(self, account_id: str, status: str, reason: str) -> dict[str, object]:
        """PUT /subscribers/{id}/status: the account and every account under it change, and
        their live sessions are told (RAR for suspended or active, ASR for barred or terminated)."""
        return await self._call("PUT", f"/subscribers/{account_id}/status", {"status": status, "reason": reason})

    async def set_lifecycle_status(self, path: str, status: str, reason: str, category: str) -> dict[str, object]:
        """PUT {path}/status (ocs/api/lifecycle.py): a customer (``/customers/{id}``), a company
        node (``/customers/{id}/nodes/{node}``) or a line (``/lines/{id}``) and every line under
        it change; the OCS tells their live sessions. Answers the changed entity."""
        body = {"status": status, "reason": reason, "reason_category": category}
        return await self._call("PUT", f"{path}/status", body)

    async def top_up(self, account_id: str, top_up_id: str, amount: str) -> None:
        """Credit the main balance (idempotent by ``top_up_id``); the OCS then re-authorises
        the account's sessions in final-unit state (RAR)."""
        await self._call("POST", f"/subscribers/{account_id}/topups", {"id": top_up_id, "amount": amount})

    async def balance(self, account_id: str) -> BalanceSnapshot:
        values = await self._call("GET", f"/subscribers/{account_id}/balance")
        counters = _mapping(values.get("counters"), "counters")
        return BalanceSnapshot(
            account_id=account_id,
            available_micros=_integer(values, "available_micros"),
            committed_micros=_integer(counters, "committed_micros"),
            status=str(values.get("status")),
            unbilled_micros=_integer(counters, "unbilled_micros"),
            held_micros=_integer(counters, "held_micros"),
            reservations=_integer(values, "reservations"),
            billed_micros=_integer(counters, "billed_micros") if "billed_micros" in counters else 0,
        )

    async def price(
        self, plan: str, context: str, rating_group: int | None, called: str | None, at_seconds: int, units: int
    ) -> int:
        """What ``units`` cost at ``at_seconds`` (POST /rate), in micros; balances are not touched."""
        return (await self.quote(plan, context, rating_group, called, at_seconds, units)).cost_micros

    async def quote(
        self, plan: str, context: str, rating_group: int | None, called: str | None, at_seconds: int, units: int
    ) -> RateQuote:
        """The rating of ``units`` at ``at_seconds`` (POST /rate); balances are not touched."""
        body: dict[str, object] = {"plan": plan, "context": context, "at": at_seconds, "units": units}
        if rating_group is not None:
            body["rating_group"] = rating_group
        if called is not None:
            body["called"] = called
        values = await self._call("POST", "/rate", body)
        tariff = values.get("tariff")
        if not isinstance(tariff, dict):
            raise ValueError(f"tariff: expected an object, got {tariff!r}")
        return RateQuote(
            _integer(values, "cost_micros"),
            _integer(values, "charged_units"),
            _integer(tariff, "price_micros"),
            _integer(tariff, "per_units"),
            str(values.get("service", "")),
        )

    async def audit(self, *, sessions_ended: bool) -> AuditVerdict:
        query = "?sessions_ended=true" if sessions_ended else ""
        values = await self._call("GET", "/audit" + query)
        raw_findings = values.get("findings")
        findings: list[AuditFinding] = []
        for item in raw_findings if isinstance(raw_findings, list) else []:
            finding = _mapping(item, "finding")
            findings.append(
                AuditFinding(str(finding.get("account")), str(finding.get("rule")), str(finding.get("detail")))
            )
        return AuditVerdict(
            ok=values.get("ok") is True,
            accounts=_integer(values, "accounts"),
            spool_records=_integer(values, "spool_records"),
            findings=tuple(findings),
        )

    # --- the billing cycle (ocs/api/billing.py, the bill run and dunning doors) -------------------
    async def bill_run(self, day: str) -> dict[str, object]:
        """POST /billRuns: the bill run for ``day`` (YYYY-MM-DD), answered with its counts; a
        rerun for the same day makes nothing new, so a retried call is safe."""
        return await self._call("POST", "/billRuns", {"date": day})

    async def dunning_run(self, day: str) -> dict[str, object]:
        """POST /dunningRuns: the dunning run for ``day``; each step is applied once, so a retry is safe."""
        return await self._call("POST", "/dunningRuns", {"date": day})

    async def bills(self, billing_account_id: str | None = None) -> list[dict[str, object]]:
        """GET /customerBills (TMF678), every page, without their lines."""
        found: list[dict[str, object]] = []
        account = f"&billing_account={billing_account_id}" if billing_account_id else ""
        while True:
            page = await self._call("GET", f"/customerBills?limit={LIST_PAGE_ROWS}&offset={len(found)}{account}")
            bills = page.get("bills")
            rows = [_mapping(bill, "bill") for bill in bills] if isinstance(bills, list) else []
            found += rows
            if len(rows) < LIST_PAGE_ROWS:
                return found

    async def bill(self, bill_id: str) -> dict[str, object]:
        return await self._call("GET", f"/customerBills/{bill_id}")

    async def pay(
        self, billing_account_id: str, reference: str, amount_micros: int, received_at: str
    ) -> dict[str, object]:
        """POST /payments, idempotent by ``reference``: a retry answers the first payment."""
        body = {
            "billing_account_id": billing_account_id,
            "reference": reference,
            "amount_micros": amount_micros,
            "received_at": received_at,
        }
        return await self._call("POST", "/payments", body)

    async def payments(self, billing_account_id: str) -> list[dict[str, object]]:
        found: list[dict[str, object]] = []
        while True:
            path = f"/payments?billing_account={billing_account_id}&limit={LIST_PAGE_ROWS}&offset={len(found)}"
            listed = (await self._call("GET", path)).get("payments")
            rows = [_mapping(item, "payment") for item in listed] if isinstance(listed, list) else []
            found += rows
            if len(rows) < LIST_PAGE_ROWS:
                return found

    async def open_dispute(self, bill_id: str, dispute_id: str, amount_micros: int, reason: str) -> dict[str, object]:
        """POST /customerBills/{id}/disputes, idempotent by ``dispute_id``."""
        body = {"dispute_id": dispute_id, "amount_micros": amount_micros, "reason": reason}
        return await self._call("POST", f"/customerBills/{bill_id}/disputes", body)

    async def resolve_dispute(self, dispute_id: str, state: str, resolution: str) -> dict[str, object]:
        """PATCH /disputes/{id}: ``credited`` (a credit note of the whole amount) or ``rejected``;
        a 409 on a retry means the first attempt resolved it."""
        body = {"state": state, "resolution": resolution}
        return await self._call("PATCH", f"/disputes/{dispute_id}", body, create=True)

    async def promise_to_pay(
        self, billing_account_id: str, promise_id: str, amount_micros: int, promised_date: str
    ) -> dict[str, object]:
        """POST /billingAccounts/{id}/promisesToPay, idempotent by ``promise_id``."""
        body = {"promise_id": promise_id, "amount_micros": amount_micros, "promised_date": promised_date}
        return await self._call("POST", f"/billingAccounts/{billing_account_id}/promisesToPay", body)

    async def dunning_history(self, billing_account_id: str) -> list[dict[str, object]]:
        """GET /billingAccounts/{id}/dunning: the steps applied and lifted, oldest first."""
        steps = (await self._call("GET", f"/billingAccounts/{billing_account_id}/dunning")).get("steps")
        return [_mapping(step, "step") for step in steps] if isinstance(steps, list) else []

    # --- loyalty (ocs/api/loyalty.py) ---------------------------------------------------------------
    async def set_segment(self, customer_id: str, segment: str | None) -> None:
        """PUT /loyalty/members/{id}/segment: the customer's segment, as scoring or an operator sets it."""
        await self._call("PUT", f"/loyalty/members/{customer_id}/segment", {"segment": segment})

    async def loyalty_applications(self) -> list[dict[str, object]]:
        """Every rule application (GET /loyalty/applications), oldest first, page by page."""
        found: list[dict[str, object]] = []
        while True:
            page = await self._call("GET", f"/loyalty/applications?limit={LIST_PAGE_ROWS}&offset={len(found)}")
            rows = page.get("applications")
            items = [_mapping(item, "application") for item in rows] if isinstance(rows, list) else []
            found += items
            if len(items) < LIST_PAGE_ROWS:
                return found

    async def loyalty_ledger(self) -> list[str]:
        """The loyalty ledger's problems (GET /loyalty/reports/ledger): empty when whole."""
        problems = (await self._call("GET", "/loyalty/reports/ledger")).get("problems")
        return [str(item) for item in problems] if isinstance(problems, list) else ["no problems list in the answer"]

    async def ledger_problems(self) -> list[str]:
        """GET /reports/ledger: the one-ledger audit's problems (none: the ledger is whole)."""
        problems = (await self._call("GET", "/reports/ledger")).get("problems")
        if not isinstance(problems, list):
            raise ValueError(f"GET /reports/ledger: problems: expected a list, got {problems!r}")
        return [str(problem) for problem in problems]
