"""What the scoring tests share: the business database (SQLite and a private PostgreSQL) and the
rows scores are made of, written as the wings write them (customers, lines, invoices, allocations,
usage records, dunning steps, disputes, tickets), and a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.db.billing import disputes, invoices, payment_allocations, payments
from ocs.db.customers import billing_accounts, customers, lines, parties
from ocs.db.dunning import dunning_steps
from ocs.db.interactions import trouble_tickets
from ocs.db.usage import usage_records
from ocs.loyalty.scoring_load import load_scoring_rules
from tests.ocs.postgres_support import business_database

RULES = load_scoring_rules(Path(__file__).resolve().parents[2] / "config" / "scoring.toml")
CLEARED = (
    "customer_scores",
    "usage_records",
    "dunning_steps",
    "disputes",
    "payment_allocations",
    "payments",
    "invoice_lines",
    "invoices",
    "number_series",
    "trouble_ticket_history",
    "trouble_tickets",
    "status_changes",
    "lifecycle_steps",
    "line_identities",
    "lines",
    "billing_accounts",
    "customer_nodes",
    "customers",
    "parties",
)
DAY = date(2026, 5, 10)  # the scoring day: the window is February, March and April 2026
UNIT = 1_000_000


class Clock:
    def __init__(self, moment: datetime = datetime(2026, 5, 10, 9, 0, tzinfo=UTC)) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now

    def move_to(self, moment: datetime) -> None:
        self.now = moment.timestamp()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, CLEARED) as made:
        yield made


def naive(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour)


def epoch(day: date, hour: int = 12) -> int:
    return int(datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp())


async def add_customer(
    engine: AsyncEngine, customer_id: str, since: date, *, kind: str = "individual", segment: str | None = None
) -> str:
    """A customer with a billing account ``BA-<customer_id>``; answers the billing account's id."""
    async with engine.begin() as connection:
        party = {"party_id": f"P-{customer_id}", "kind": kind, "contact_media": [], "created_at": naive(since)}
        if kind == "individual":
            party |= {"given_name": "Ana", "family_name": "Lima"}
        else:
            party |= {"organization_name": "Acme"}
        await connection.execute(insert(parties).values(party))
        await connection.execute(
            insert(customers).values(
                customer_id=customer_id,
                party_id=f"P-{customer_id}",
                kind=kind,
                status="active",
                segment=segment,
                created_at=naive(since),
            )
        )
        await connection.execute(
            insert(billing_accounts).values(
                billing_account_id=f"BA-{customer_id}",
                customer_id=customer_id,
                currency="EUR",
                bill_cycle_day=1,
                payment_method="bank_transfer",
                paid_by_parent=False,
                created_at=naive(since),
            )
        )
    return f"BA-{customer_id}"


async def add_line(
    engine: AsyncEngine, customer_id: str, line_id: str, *, payment_type: str = "prepaid", status: str = "active"
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            insert(lines).values(
                line_id=line_id,
                customer_id=customer_id,
                name=line_id,
                network="mobile",
                payment_type=payment_type,
                plan=f"mobile_{payment_type}",
                credit_limit_micros=0,
                cap_micros=0,
                status=status,
                own_status=status,
                created_at=naive(date(2024, 1, 1)),
            )
        )


async def add_invoice(
    engine: AsyncEngine,
    customer_id: str,
    number: int,
    period_start: date,
    total_units: int,
    *,
    due: date,
    remaining_units: int | None = None,
) -> str:
    invoice_id = f"INV-{customer_id}-{number}"
    remaining = total_units if remaining_units is None else remaining_units
    async with engine.begin() as connection:
        await connection.execute(
            insert(invoices).values(
                invoice_id=invoice_id,
                legal_entity="main",
                sequence=number,
                number=f"main-{customer_id}-{number}",
                customer_id=customer_id,
                billing_account_id=f"BA-{customer_id}",
                period_start=period_start,
                period_end=period_start,
                issued_at=naive(period_start),
                due_date=due,
                currency="EUR",
                subtotal_micros=total_units * UNIT,
                discount_micros=0,
                tax_micros=0,
                total_micros=total_units * UNIT,
                remaining_micros=remaining * UNIT,
                state="sent" if remaining else "settled",
                catalog_version="2026-01",
            )
        )
    return invoice_id


async def add_allocation(engine: AsyncEngine, customer_id: str, invoice_id: str, units: int, on: date) -> None:
    """A payment of ``units`` allocated to the invoice on the day ``on``."""
    payment_id = f"PAY-{invoice_id}"
    async with engine.begin() as connection:
        await connection.execute(
            insert(payments).values(
                payment_id=payment_id,
                billing_account_id=f"BA-{customer_id}",
                reference=payment_id,
                amount_micros=units * UNIT,
                unallocated_micros=0,
                method="bank_transfer",
                source="api",
                received_at=naive(on),
                recorded_by="test",
                recorded_at=naive(on),
            )
        )
        await connection.execute(
            insert(payment_allocations).values(
                payment_id=payment_id, invoice_id=invoice_id, amount_micros=units * UNIT, allocated_at=naive(on)
            )
        )


async def add_usage(
    engine: AsyncEngine, line_id: str, on: date, unit: str, units: int, micros: int, payment_type: str = "prepaid"
) -> None:
    async with engine.begin() as connection:
        count = len((await connection.execute(usage_records.select())).all())
        await connection.execute(
            insert(usage_records).values(
                record_id=f"s{count}|1|1",
                account_id=line_id,
                session_id=f"s{count}",
                request_number=1,
                rating_group=1,
                service={"seconds": "voice", "events": "sms", "octets": "data"}[unit],
                unit=unit,
                units=units,
                micros=micros,
                payment_type=payment_type,
                at_seconds=epoch(on),
            )
        )


async def add_dunning_step(engine: AsyncEngine, customer_id: str, position: int, on: date, action: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            insert(dunning_steps).values(
                billing_account_id=f"BA-{customer_id}",
                customer_id=customer_id,
                episode_due_date=date(2026, 3, 1),
                ladder="default",
                position=position,
                action=action,
                target_kind="customer",
                target_id=customer_id,
                run_date=on,
                days_past_due=3,
                overdue_micros=UNIT,
                created_at=naive(on),
            )
        )


async def add_dispute(engine: AsyncEngine, customer_id: str, invoice_id: str, state: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            insert(disputes).values(
                dispute_id=f"D-{invoice_id}-{state}",
                invoice_id=invoice_id,
                billing_account_id=f"BA-{customer_id}",
                amount_micros=UNIT,
                state=state,
                reason="wrong",
                opened_by="care",
                opened_at=naive(date(2026, 4, 1)),
            )
        )


async def add_ticket(engine: AsyncEngine, customer_id: str, ticket_id: str, opened: date) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            insert(trouble_tickets).values(
                ticket_id=ticket_id,
                customer_id=customer_id,
                name="no signal",
                description="no signal at home",
                ticket_type="network",
                severity="minor",
                status="acknowledged",
                created_by="care",
                created_at=naive(opened),
                updated_at=naive(opened),
            )
        )
