"""``PUT /subscribers/{id}/status`` for an account that belongs to a customer: through the lifecycle.

Theory of operation: the older status route sets an engine account's own status
(``Provisioning.set_status``). An account that is a customer's line, or a company node's pool, also
has an own status in the business database (``ocs.customers.lifecycle``): the engine's status of a
line is its *effective* status there, the worst of its own, its nodes' and its customer's. Setting
the engine alone left the line's own status unchanged, so a later customer-level resume
recomputed the effective status from the old own status and undid the change. Here such an account
is routed to the lifecycle instead: a line's own status (``set_line_status``), a node's own status
(``set_node_status``), recorded with who and why like a change through ``/lines`` or
``/customers``, and the lifecycle reaches the engine through the same provisioning service. An
account no customer holds (an engine-only subscriber) keeps the engine-only path.

The answer keeps the route's shape: the previous and new engine status, every account whose
effective status changed and the sessions told, gathered from the provisioning calls the lifecycle
made (``EngineLines(keep_changes=True)``, one per request). A transition the lifecycle's table
refuses is 409 naming ``status`` and changes nothing, as on the customer routes. The reason is
optional here; the lifecycle needs one, so an empty reason is recorded as ``DEFAULT_REASON``, and
its category is read from the reason's first word (``ocs.customers.line_status.reason_category``,
as for a change the engine reports).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from balance.types import AccountStatus
from ocs.api.customers import PROBLEM_ERRORS
from ocs.api.orders import EngineLines
from ocs.api.provisioning import Provisioning, StatusChange
from ocs.customers import records
from ocs.customers.lifecycle import Lifecycle, StatusRequest, TargetStatus
from ocs.customers.line_status import reason_category
from ocs.customers.service import CustomerRefusal

DEFAULT_REASON = "set through /subscribers"  # the lifecycle records a reason with every change


async def set_subscriber_status(
    database: AsyncEngine,
    provisioning: Provisioning,
    account_id: str,
    status: AccountStatus,
    *,
    actor: str,
    reason: str,
) -> StatusChange:
    """The account's status: its own in the lifecycle when a customer holds it, else the engine's."""
    line = await records.get_line(database, account_id)
    node = await records.get_node(database, account_id) if line is None else None
    if line is None and (node is None or node.account_id != account_id):
        return await provisioning.set_status(account_id, status, actor=actor, reason=reason)
    previous = (await provisioning.view(account_id)).account.status
    engine = EngineLines(provisioning, keep_changes=True)
    lifecycle = Lifecycle(database, engine)
    request = StatusRequest(
        status=TargetStatus(status.value),
        reason=reason or DEFAULT_REASON,
        reason_category=reason_category(status, reason),
    )
    try:
        if line is not None:
            await lifecycle.set_line_status(line.line_id, request, actor)
        elif node is not None:
            await lifecycle.set_node_status(node.customer_id, node.node_id, request, actor)
    except CustomerRefusal as refusal:
        raise PROBLEM_ERRORS[refusal.problem](refusal.message) from None
    events = [event for change in engine.changes for event in change.changed]
    # The account itself first, then those under it (``StatusChange.changed``); the lifecycle
    # sets the lines before a node's pool.
    changed = tuple(sorted(events, key=lambda event: event.account_id != account_id))
    return StatusChange(
        previous,
        await provisioning.view(account_id),
        sum(change.notified_sessions for change in engine.changes),
        changed,
        sum(change.released_sessions for change in engine.changes),
    )
