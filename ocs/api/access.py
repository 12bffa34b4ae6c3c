"""Who may do what on the HTTP API: bearer tokens, roles, and one table of permissions.

Theory of operation: every request but ``GET /health`` carries ``Authorization: Bearer <token>``
(RFC 6750 section 2.1). ``authenticate`` looks the token up by its SHA-256 (``ocs.db.tokens``)
and answers 401 (``Unauthenticated``, with ``WWW-Authenticate: Bearer``, RFC 6750 section 3) when
it is missing, malformed, unknown, revoked or expired, naming which. ``authorize`` then checks
the route against ``PERMISSIONS``, keyed by method and route template, and answers 403
(``Forbidden``) naming the role and what it may not do:

- admin: everything;
- read-only: every read (GET, and pricing with POST /rate), the money audit and the audit trail;
- care: customer work (create, status, buckets), top-ups, adjustments up to a limit per
  adjustment (``adjust_limit_micros``: the configured one, or the token's own when lower);
  no bulk load, no audit;
- customers, company nodes and lines (``/customers``, ``/lines``): admin and care create, they
  and read-only read; self-care does not see them;
- bills, payments, disputes and the receivables report: staff read them; admin and care record
  payments, open disputes and add adjustments; credit notes, dispute resolutions, refunds and bank
  files (money given back or away, or thousands of payments) are the admin's;
- the bill run (``POST /billRuns``: every account's invoice at once) is the admin's; the one-ledger
  audit (``GET /reports/ledger``) is read as the money audit is (admin, read-only);
- dunning (``ocs.api.dunning``): staff read a billing account's history and the revenue report;
  admin and care record promises to pay; a run on demand and exemptions are the admin's;
- scores (``ocs.api.scores``): a customer's score, its history and the segment movements are read
  as customers are (staff);
- loyalty (``ocs.api.loyalty``): programmes, members, bonus history and the programme reports are
  read as customers are (staff); the loyalty ledger as the money audit; setting a segment is the
  admin's;
- applications and product orders (``/applications``, ``/productOrders``), and the status of a
  customer, a node or a line (``PUT .../status``, ``ocs.api.lifecycle``): as customers;
- self-care: its own account only (the token names it): the profile, the balance, top-ups with a
  payment reference (``payment_reference``, required: the API says 400 without it); pricing.

A route missing from the table is the admin's alone, so a new endpoint is closed until given a
rule (a test holds every route to have one). Checks that need the body (the adjustment limit,
the payment reference) are made by the handlers with ``Actor``'s helpers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.api.fields import ApiError
from ocs.db import tokens
from ocs.db.tokens import Role, Token
from ocs.rating.rate import format_money

# A load balancer's probe carries no token; the API's description is public, as its code is.
OPEN_ROUTES = frozenset({("GET", "/health"), ("GET", "/openapi.json")})
_EVERYONE = frozenset(Role)
_READERS = frozenset({Role.ADMIN, Role.READ_ONLY})
_CUSTOMER_WORK = frozenset({Role.ADMIN, Role.CARE})
_ACCOUNT_READERS = frozenset({Role.ADMIN, Role.READ_ONLY, Role.CARE, Role.SELF_CARE})
# Customers are read by staff only: a self-care token names an account, not a customer, and
# mapping one to the other on every read is left to a self-care resource of its own.
_CUSTOMER_READERS = frozenset({Role.ADMIN, Role.CARE, Role.READ_ONLY})

PERMISSIONS: dict[tuple[str, str], frozenset[Role]] = {
    ("GET", "/metrics"): _READERS,
    ("GET", "/audit"): _READERS,
    ("GET", "/audit-trail"): _READERS,
    ("GET", "/rate"): _EVERYONE,
    ("POST", "/rate"): _EVERYONE,  # a price enquiry changes nothing
    ("GET", "/subscribers/{account_id}"): _ACCOUNT_READERS,
    ("GET", "/subscribers/{account_id}/balance"): _ACCOUNT_READERS,
    ("POST", "/subscribers"): _CUSTOMER_WORK,
    ("POST", "/subscribers/load"): frozenset({Role.ADMIN}),  # thousands of accounts at once
    ("PUT", "/subscribers/{account_id}/status"): _CUSTOMER_WORK,
    ("POST", "/subscribers/{account_id}/topups"): frozenset({Role.ADMIN, Role.CARE, Role.SELF_CARE}),
    ("POST", "/subscribers/{account_id}/adjustments"): _CUSTOMER_WORK,
    ("POST", "/subscribers/{account_id}/buckets"): _CUSTOMER_WORK,
    ("GET", "/customers"): _CUSTOMER_READERS,
    ("GET", "/customers/{customer_id}"): _CUSTOMER_READERS,
    ("GET", "/customers/{customer_id}/tree"): _CUSTOMER_READERS,
    ("GET", "/lines/{line_id}"): _CUSTOMER_READERS,
    ("POST", "/customers"): _CUSTOMER_WORK,
    ("POST", "/customers/{customer_id}/nodes"): _CUSTOMER_WORK,
    ("POST", "/customers/{customer_id}/lines"): _CUSTOMER_WORK,
    ("GET", "/customers/{customer_id}/notes"): _CUSTOMER_READERS,
    ("POST", "/customers/{customer_id}/notes"): _CUSTOMER_WORK,
    ("GET", "/troubleTickets"): _CUSTOMER_READERS,
    ("GET", "/troubleTickets/{ticket_id}"): _CUSTOMER_READERS,
    ("POST", "/troubleTickets"): _CUSTOMER_WORK,
    ("PATCH", "/troubleTickets/{ticket_id}"): _CUSTOMER_WORK,
    ("GET", "/reports/customers"): _CUSTOMER_READERS,
    ("POST", "/applications"): _CUSTOMER_WORK,
    ("POST", "/productOrders"): _CUSTOMER_WORK,
    ("GET", "/productOrders/{order_id}"): _CUSTOMER_READERS,
    ("GET", "/customerBills"): _CUSTOMER_READERS,
    ("GET", "/customerBills/{bill_id}"): _CUSTOMER_READERS,
    ("GET", "/customerBills/{bill_id}/document"): _CUSTOMER_READERS,
    ("GET", "/payments"): _CUSTOMER_READERS,
    ("GET", "/disputes/{dispute_id}"): _CUSTOMER_READERS,
    ("GET", "/reports/receivables"): _CUSTOMER_READERS,
    ("GET", "/reports/ledger"): _READERS,  # the one-ledger audit, as the money audit
    ("POST", "/billRuns"): frozenset({Role.ADMIN}),  # every account's invoice at once
    ("POST", "/payments"): _CUSTOMER_WORK,
    ("POST", "/payments/bank-file"): frozenset({Role.ADMIN}),  # thousands of payments at once
    ("POST", "/customerBills/{bill_id}/creditNotes"): frozenset({Role.ADMIN}),  # money given away: not care's
    ("POST", "/customerBills/{bill_id}/disputes"): _CUSTOMER_WORK,
    ("PATCH", "/disputes/{dispute_id}"): frozenset({Role.ADMIN}),  # ends in a credit note
    ("POST", "/billingAccounts/{billing_account_id}/refunds"): frozenset({Role.ADMIN}),
    ("POST", "/billingAccounts/{billing_account_id}/adjustments"): _CUSTOMER_WORK,
    ("PUT", "/customers/{customer_id}/status"): _CUSTOMER_WORK,
    ("PUT", "/customers/{customer_id}/nodes/{node_id}/status"): _CUSTOMER_WORK,
    ("PUT", "/lines/{line_id}/status"): _CUSTOMER_WORK,
    ("POST", "/dunningRuns"): frozenset({Role.ADMIN}),  # restricts, bars and terminates customers in bulk
    ("GET", "/billingAccounts/{billing_account_id}/dunning"): _CUSTOMER_READERS,
    ("POST", "/billingAccounts/{billing_account_id}/promisesToPay"): _CUSTOMER_WORK,
    ("PUT", "/customers/{customer_id}/dunningExemption"): frozenset({Role.ADMIN}),  # never chased: not care's
    ("DELETE", "/customers/{customer_id}/dunningExemption"): frozenset({Role.ADMIN}),
    ("GET", "/reports/revenue"): _CUSTOMER_READERS,
    ("GET", "/customers/{customer_id}/score"): _CUSTOMER_READERS,
    ("GET", "/customers/{customer_id}/score-history"): _CUSTOMER_READERS,
    ("GET", "/reports/segment-movements"): _CUSTOMER_READERS,
    ("GET", "/loyalty/programmes"): _CUSTOMER_READERS,
    ("GET", "/loyalty/programmes/{programme_id}"): _CUSTOMER_READERS,
    ("GET", "/loyalty/members/{customer_id}"): _CUSTOMER_READERS,
    ("PUT", "/loyalty/members/{customer_id}/segment"): frozenset({Role.ADMIN}),
    ("GET", "/loyalty/applications"): _CUSTOMER_READERS,
    ("GET", "/loyalty/reports/segments"): _CUSTOMER_READERS,
    ("GET", "/loyalty/reports/programmes"): _CUSTOMER_READERS,
    ("GET", "/loyalty/reports/ledger"): _READERS,
}
READ_METHODS = frozenset({"GET", "HEAD"})
_NOT_CHANGES = frozenset({("POST", "/rate")})
# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_BEARER = re.compile(r"^Bearer +([A-Za-z0-9\-._~+/]+=*) *$", re.IGNORECASE)


class Unauthenticated(ApiError):
    status = 401
    code = "unauthenticated"

    def __init__(self, message: str, *, token_given: bool) -> None:
        super().__init__(message)
        self.token_given = token_given

    @property
    def challenge(self) -> str:
        """RFC 6750 section 3: no error code when the request had no token at all (3.1)."""
        if not self.token_given:
            return 'Bearer realm="ocs"'
        return f'Bearer realm="ocs", error="invalid_token", error_description="{self.message}"'


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated caller of one request."""

    token: Token
    adjust_limit_micros: int  # care: the effective limit per adjustment

    @property
    def role(self) -> Role:
        return self.token.role

    def check_adjustment(self, micros: int) -> None:
        if self.role is Role.CARE and abs(micros) > self.adjust_limit_micros:
            raise Forbidden(
                f"an adjustment of {format_money(micros)} is over this care token's limit of "
                f"{format_money(self.adjust_limit_micros)} per adjustment"
            )


def route_key(method: str, route: str) -> tuple[str, str]:
    return ("GET" if method == "HEAD" else method, route)


def is_change(method: str, route: str) -> bool:
    """Whether a call changes state (and so is recorded in the audit trail)."""
    return method not in READ_METHODS and (method, route) not in _NOT_CHANGES


def bearer_token(header: str | None) -> str:
    if header is None or not header.strip():
        raise Unauthenticated("this call needs a token: Authorization: Bearer <token>", token_given=False)
    match = _BEARER.match(header.strip())
    if match is None:
        raise Unauthenticated("the Authorization header is not 'Bearer <token>'", token_given=True)
    return match.group(1)


async def authenticate(engine: AsyncEngine, header: str | None, *, care_adjust_limit_micros: int) -> Actor:
    secret = bearer_token(header)
    token = await tokens.find(engine, secret)
    if token is None:
        raise Unauthenticated("the token is not known", token_given=True)
    refusal = token.refusal(datetime.now(UTC))
    if refusal is not None:
        raise Unauthenticated(refusal, token_given=True)
    own = token.adjust_limit_micros
    limit = care_adjust_limit_micros if own is None else min(own, care_adjust_limit_micros)
    return Actor(token, limit)


def authorize(actor: Actor, method: str, route: str, account_id: str | None) -> None:
    key = route_key(method, route)
    allowed = PERMISSIONS.get(key, frozenset({Role.ADMIN}))
    if actor.role not in allowed:
        raise Forbidden(f"a {actor.role} token may not {key[0]} {route}")
    if actor.role is Role.SELF_CARE and account_id is not None and account_id != actor.token.account_id:
        raise Forbidden(f"this self-care token is for account {actor.token.account_id!r} only")
