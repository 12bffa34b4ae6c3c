"""The dunning wing's tables: the steps the daily run applied, promises to pay, and exemptions (the
queries are in ``ocs.billing.dunning_records``).

Theory of operation: a ``dunning_steps`` row is written before its effect (a letter is written in
the same transaction, so it is finished at once; a restrict, bar or terminate goes through the
customer lifecycle afterwards and the row is marked finished then: the restart pass finishes rows
left unfinished). ``(billing_account_id, episode_due_date, position)`` is unique: an episode is
the run of overdue days that started at one oldest due date, so a step of the ladder is applied
once per episode, whoever races. A lift is a row too (``action`` ``lift``, position 0, one per
lifted step: ``lifts_step_id``), so the history reads as what happened, in order.

``customers.segment`` (added by the same migration) is a free string that the loyalty scores or
an operator set; the dunning file lists the segments never dunned. Money is integer micros; times
are naive UTC; days are ``Date``.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, DateTime, ForeignKey, Integer, String, Table, Text, UniqueConstraint

from ocs.db.customers import ID_LENGTH
from ocs.db.schema import metadata

dunning_steps = Table(
    "dunning_steps",
    metadata,
    Column("step_id", Integer, primary_key=True, autoincrement=True),
    Column(
        "billing_account_id",
        String(ID_LENGTH),
        ForeignKey("billing_accounts.billing_account_id"),
        nullable=False,
        index=True,
    ),
    Column("customer_id", String(ID_LENGTH), nullable=False),
    Column("episode_due_date", Date, nullable=False),  # the oldest unpaid due date when it began
    Column("ladder", String(32), nullable=False),
    Column("position", Integer, nullable=False),  # the ladder step's; 0: a lift
    Column("action", String(16), nullable=False),  # letter | restrict | bar | terminate | lift
    Column("target_kind", String(16), nullable=False),  # customer | node: whose status it changes
    Column("target_id", String(ID_LENGTH), nullable=False),
    Column("run_date", Date, nullable=False),  # the dunning run's day D (a lift: the payment's)
    Column("days_past_due", Integer, nullable=False),
    Column("overdue_micros", BigInteger, nullable=False),
    Column("invoice_id", String(ID_LENGTH), nullable=True),  # the oldest overdue invoice
    Column("template", String(64), nullable=True),
    Column("lifts_step_id", Integer, nullable=True),  # a lift: the restrict or bar it lifted
    Column("outcome", Text, nullable=True),  # applied | unchanged | refused: why; NULL until finished
    Column("created_at", DateTime, nullable=False),
    Column("finished_at", DateTime, nullable=True, index=True),
    UniqueConstraint("billing_account_id", "episode_due_date", "position", name="uq_dunning_steps_episode_position"),
)

promises_to_pay = Table(
    "promises_to_pay",
    metadata,
    Column("promise_id", String(ID_LENGTH), primary_key=True),
    Column(
        "billing_account_id",
        String(ID_LENGTH),
        ForeignKey("billing_accounts.billing_account_id"),
        nullable=False,
        index=True,
    ),
    Column("amount_micros", BigInteger, nullable=False),
    Column("promised_date", Date, nullable=False),  # the ladder pauses until this day, included
    Column("reason", Text, nullable=False),
    Column("author", String(256), nullable=False),
    Column("created_at", DateTime, nullable=False),
)

dunning_exemptions = Table(
    "dunning_exemptions",
    metadata,
    Column("customer_id", String(ID_LENGTH), ForeignKey("customers.customer_id"), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("author", String(256), nullable=False),
    Column("created_at", DateTime, nullable=False),
)

DUNNING_TABLES = (dunning_steps, promises_to_pay, dunning_exemptions)
