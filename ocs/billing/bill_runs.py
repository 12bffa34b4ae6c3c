"""The bill run as the server offers it: on request (``POST /billRuns``, ``ocs bill run``), every
day at the configured hour (the ``bill_run`` duty), the pending cuts at startup, and the
one-ledger audit (``GET /reports/ledger``).

Theory of operation: one ``BillRuns`` per server process, built at startup. The catalog is loaded
at the first bill run, not at startup: a server started with tariff files of its own (tests, a
lab) whose plans the catalog's offers do not name still serves charging and the customer API,
and a catalog that cannot be used is reported where it is used, by the run that needs it
(``CustomerRefusal`` CONFLICT on the field ``billing.catalog``: 409 over the API, the duty's log
line) and tried again at the next run once the file is fixed. Runs in one process take turns (a
lock): a run and a request for the same day do not draft the same pages side by side, though a
concurrent run in another process is safe as well (``ocs.billing.bill_run``: one invoice per
period, records billed once).

The duty (``daily``) wakes once a minute; from ``run_hour`` (UTC) on, it runs the bill
run for today once: ``run_due`` remembers the last day it completed, so a second call for the
same day does nothing, and a run that failed is tried again at the next wake-up. A run is
resumable and a rerun makes nothing, so a duty that moves to another worker process (its lease,
``ocs.leases``) and runs the day again bills nothing twice. A day the server was down is caught
up by the next run (``ocs.billing.cycles.cycles_to_bill``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.errors import BalanceUnavailable
from balance.store import BalanceStore
from ocs.billing.bill_run import BillRun, BillRunReport
from ocs.billing.catalog import Catalog
from ocs.billing.catalog_load import CatalogError, load_catalog
from ocs.billing.ledger_audit import ledger_audit
from ocs.config import BillingSettings
from ocs.customers.service import CustomerRefusal, Problem
from ocs.rating.book import TariffBook

log = structlog.get_logger("ocs.billing")

DUTY_WAKE_SECONDS = 60.0  # how often the daily duty looks at the clock
CATALOG_FIELD = "billing.catalog"
# What finishing the pending cuts runs with: it prices nothing (the cuts' amounts are stored).
NO_CATALOG = Catalog(
    source="(none)", currency="", products={}, offers={}, tax_rates={}, usage_tax_category="", discounts=()
)


class BillRuns:
    def __init__(
        self,
        engine: AsyncEngine,
        store: BalanceStore,
        book: TariffBook,
        catalog_path: str | Path,
        *,
        run_hour: int,
        page_size: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= run_hour <= 23:
            raise ValueError(f"run_hour must be 0 to 23 (UTC), not {run_hour}")
        self.engine = engine
        self.store = store
        self.book = book
        self.catalog_path = Path(catalog_path)
        self.run_hour = run_hour
        self.page_size = page_size
        self.clock = clock
        self.last_daily_run: date | None = None  # the day ``run_due`` last completed
        self._catalog: Catalog | None = None
        self._turn = asyncio.Lock()

    @classmethod
    def configured(
        cls, engine: AsyncEngine | None, store: BalanceStore | None, book: TariffBook | None, settings: BillingSettings
    ) -> BillRuns:
        """The server's, from its ``[billing]`` settings (the services it needs are built first)."""
        assert engine is not None and store is not None and book is not None
        return cls(engine, store, book, settings.catalog, run_hour=settings.run_hour, page_size=settings.page_size)

    def catalog(self) -> Catalog:
        """The catalog, loaded at its first use (module docstring)."""
        if self._catalog is None:
            try:
                self._catalog = load_catalog(self.catalog_path, self.book)
            except CatalogError as error:
                raise CustomerRefusal(Problem.CONFLICT, CATALOG_FIELD, f"cannot be used: {error}") from None
        return self._catalog

    def _bill_run(self) -> BillRun:
        return BillRun(self.engine, self.store, self.catalog(), chunk_size=self.page_size, clock=self.clock)

    async def run(self, day: date) -> BillRunReport:
        """Bill every account whose cycle closed by ``day`` (``ocs.billing.bill_run``)."""
        bill_run = self._bill_run()
        async with self._turn:
            return await bill_run.run(day)

    async def finish_pending_cuts(self) -> int:
        """The startup pass: apply the cuts a run committed but did not apply (a crash). Needs no
        catalog, so it runs whatever the catalog's state."""
        async with self._turn:
            return await BillRun(self.engine, self.store, NO_CATALOG, clock=self.clock).finish_pending_cuts()

    async def ledger(self) -> list[str]:
        """The one-ledger audit's problems (empty: the ledger ties out)."""
        return await ledger_audit(self.engine)

    async def run_due(self, now: datetime) -> BillRunReport | None:
        """Today's run if ``now`` is past the run hour and it has not completed today, else None."""
        today = now.astimezone(UTC).date()
        if now.astimezone(UTC).hour < self.run_hour or self.last_daily_run == today:
            return None
        report = await self.run(today)
        self.last_daily_run = today
        return report

    async def startup_pass(self) -> None:
        """``finish_pending_cuts`` at the server's startup; Redis away leaves them to the next run."""
        try:
            applied = await self.finish_pending_cuts()
        except BalanceUnavailable as error:
            log.warning("pending_cuts_not_finished", reason=str(error))
            return
        if applied:
            log.info("pending_cuts_finished", count=applied)

    async def daily(self) -> None:
        """The ``bill_run`` duty: ``run_due`` at every wake-up, for ever (module docstring)."""
        while True:
            await asyncio.sleep(DUTY_WAKE_SECONDS)  # first after a minute: startup is busy enough
            try:
                report = await self.run_due(datetime.fromtimestamp(self.clock(), UTC))
            except Exception as error:  # a bad catalog, Redis or the database away: tried again
                log.error("bill_run_failed", reason=str(error))
            else:
                if report is not None:
                    log.info(
                        "bill_run_done",
                        day=report.day.isoformat(),
                        accounts=report.accounts,
                        invoices=report.invoices,
                        cuts=report.cuts,
                        problems=len(report.problems),
                    )
