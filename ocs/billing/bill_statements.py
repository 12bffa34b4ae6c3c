"""The monthly statement of a prepaid billing account: what its prepaid lines used, the rentals
debited from their balance, and the top-ups, for one closed cycle.

Theory of operation: a statement is not an invoice: it is owed nothing, takes no number of the
invoice series and is not in the receivables; it is a document of its own kind (``statements``,
one per billing account and period start, written by the bill run's commit, so a rerun finds it
and writes nothing). Its content is JSON: per line, usage by service (records, unit, units,
micros: the prepaid records committed in the period, ``usage_records``), the rentals the bill run
debited for cycles that started in the period (``prepaid_rentals``), and the top-ups the API's
audit trail recorded for the line in the period (route ``/subscribers/{account_id}/topups``,
answered 2xx: the engine keeps balances, not a history of them). Money is integer micros.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time

from pydantic import JsonValue
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from balance.types import PaymentType
from ocs.billing.bill_draft import LineFacts
from ocs.billing.bill_facts import PayingAccount, chunks
from ocs.billing.cycles import Period
from ocs.db.audit import audit_trail
from ocs.db.bill_run import prepaid_rentals, statements
from ocs.db.schema import utc_naive
from ocs.db.usage import usage_records

TOP_UP_ROUTE = "/subscribers/{account_id}/topups"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time())


async def write_statements(
    connection: AsyncConnection,
    accounts: Sequence[PayingAccount],
    periods: dict[str, Period],
    paid_lines: dict[str, list[LineFacts]],
    now: datetime,
) -> int:
    """A statement for each account of ``accounts`` with prepaid lines and none yet for its
    period, in the caller's transaction; answers how many were written."""
    wanted = {
        account.billing_account_id: [
            line.line_id
            for line in paid_lines.get(account.billing_account_id, ())
            if line.payment_type is PaymentType.PREPAID
        ]
        for account in accounts
    }
    wanted = {account: line_ids for account, line_ids in wanted.items() if line_ids}
    if not wanted:
        return 0
    existing = await connection.execute(
        select(statements.c.billing_account_id, statements.c.period_start).where(
            statements.c.billing_account_id.in_(sorted(wanted))
        )
    )
    have = {(str(row[0]), row[1]) for row in existing}
    rows = []
    for account_id in sorted(wanted):
        period = periods[account_id]
        if (account_id, period.start) in have:
            continue
        content = await statement_content(connection, wanted[account_id], period)
        rows.append(
            {
                "statement_id": f"ST-{account_id}-{period.start.isoformat()}"[:64],
                "billing_account_id": account_id,
                "period_start": period.start,
                "period_end": date_before(period),
                "content": content,
                "created_at": utc_naive(now),
            }
        )
    if rows:
        await connection.execute(insert(statements), rows)
    return len(rows)


def date_before(period: Period) -> date:
    return date.fromordinal(period.end.toordinal() - 1)


async def statement_content(
    connection: AsyncConnection, line_ids: Sequence[str], period: Period
) -> dict[str, JsonValue]:
    start, end = _seconds(period.start), _seconds(period.end)
    table = usage_records.c
    lines: dict[str, dict[str, JsonValue]] = {
        line_id: {"usage": {}, "rentals": [], "top_ups": []} for line_id in line_ids
    }
    for part in chunks(list(line_ids)):
        usage = await connection.execute(
            select(
                table.account_id, table.service, table.unit, func.count(), func.sum(table.units), func.sum(table.micros)
            )
            .where(
                table.account_id.in_(part),
                table.payment_type == PaymentType.PREPAID.value,
                table.at_seconds >= start,
                table.at_seconds < end,
            )
            .group_by(table.account_id, table.service, table.unit)
            .order_by(table.account_id, table.service, table.unit)
        )
        for account_id, service, unit, count, units, micros in usage:
            entry = lines[account_id]["usage"]
            assert isinstance(entry, dict)
            entry[service] = {"records": int(count), "unit": unit, "units": int(units), "micros": int(micros)}
        rentals = await connection.execute(
            select(prepaid_rentals)
            .where(
                prepaid_rentals.c.line_id.in_(part),
                prepaid_rentals.c.period_start >= period.start,
                prepaid_rentals.c.period_start < period.end,
            )
            .order_by(prepaid_rentals.c.line_id, prepaid_rentals.c.period_start)
        )
        for row in rentals:
            listed = lines[row.line_id]["rentals"]
            assert isinstance(listed, list)
            listed.append(
                {
                    "cycle_start": row.period_start.isoformat(),
                    "products": row.product,
                    "micros": int(row.micros),
                    "outcome": row.outcome,
                }
            )
        top_ups = await connection.execute(
            select(audit_trail.c.resource_id, audit_trail.c.occurred_at, audit_trail.c.detail)
            .where(
                audit_trail.c.route == TOP_UP_ROUTE,
                audit_trail.c.resource_id.in_(part),
                audit_trail.c.status < 300,
                audit_trail.c.occurred_at >= _midnight(period.start),
                audit_trail.c.occurred_at < _midnight(period.end),
            )
            .order_by(audit_trail.c.occurred_at, audit_trail.c.record_id)
        )
        for resource_id, occurred_at, detail in top_ups:
            listed = lines[resource_id]["top_ups"]
            assert isinstance(listed, list)
            listed.append({"at": occurred_at.isoformat(), "detail": detail})
    return {"period_start": period.start.isoformat(), "period_end": period.end.isoformat(), "lines": dict(lines)}


def _seconds(day: date) -> int:
    return int(datetime.combine(day, time(), tzinfo=UTC).timestamp())
