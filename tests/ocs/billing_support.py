"""What the billing tests share: the business database (SQLite and a private PostgreSQL) with
customers and billing accounts written as rows, a clock the test moves, and hand-made drafts (the
bill run, which computes drafts from the catalog and usage, is tested on its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.billing.values import DraftLine, InvoiceDraft, LineKind
from ocs.db.customers import billing_accounts, customers, parties
from tests.ocs.postgres_support import business_database

BILLING_TABLES = (
    "delivery_outbox",
    "credit_notes",
    "disputes",
    "billing_adjustments",
    "payment_allocations",
    "refunds",
    "payments",
    "invoice_lines",
    "invoices",
    "number_series",
    "trouble_ticket_history",
    "trouble_tickets",
)
CUSTOMER_ROWS = ("billing_accounts", "customer_nodes", "customers", "parties")
CLEARED = (*BILLING_TABLES, *CUSTOMER_ROWS)
MOMENT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
UNIT = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = MOMENT.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, CLEARED) as made:
        yield made
        async with made.begin() as connection:  # the session's PostgreSQL is shared: leave no rows
            for table in CLEARED:
                await connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def add_account(engine: AsyncEngine, billing_account_id: str, currency: str = "EUR") -> str:
    """A customer (an individual) paying through ``billing_account_id``; answers the customer id."""
    customer_id = f"C-{billing_account_id}"
    now = MOMENT.replace(tzinfo=None)
    async with engine.begin() as connection:
        await connection.execute(
            insert(parties).values(
                party_id=f"P-{billing_account_id}",
                kind="individual",
                given_name="Ana",
                family_name="Lima",
                contact_media=[],
                created_at=now,
            )
        )
        await connection.execute(
            insert(customers).values(
                customer_id=customer_id,
                party_id=f"P-{billing_account_id}",
                kind="individual",
                status="active",
                created_at=now,
            )
        )
        await connection.execute(
            insert(billing_accounts).values(
                billing_account_id=billing_account_id,
                customer_id=customer_id,
                currency=currency,
                bill_cycle_day=1,
                payment_method="bank_transfer",
                paid_by_parent=False,
                created_at=now,
            )
        )
    return customer_id


def draft(
    billing_account_id: str,
    month: int,
    amount_units: int,
    *,
    legal_entity: str = "main",
    due_day: int = 20,
    tax_micros: int = 0,
) -> InvoiceDraft:
    """A one-line rental invoice of ``month`` 2026 for ``amount_units``, due the next month."""
    start = date(2026, month, 1)
    end = date(2026, month + 1, 1).replace(day=1) if month < 12 else date(2027, 1, 1)
    last = date.fromordinal(end.toordinal() - 1)
    return InvoiceDraft(
        legal_entity=legal_entity,
        billing_account_id=billing_account_id,
        period_start=start,
        period_end=last,
        due_date=end.replace(day=due_day),
        catalog_version="2026-01",
        lines=[
            DraftLine(
                kind=LineKind.RENTAL,
                description="monthly rental",
                amount_micros=amount_units * UNIT,
                tax_micros=tax_micros,
                explanation={"period": [start.isoformat(), last.isoformat()], "rate_micros": amount_units * UNIT},
            )
        ],
    )
