"""Input checks the engine makes before any script runs: a refused input is ``Outcome.INVALID``.

Theory of operation: the scripts trust their ARGV, so everything that could break the money
arithmetic (amounts beyond 2^53, zero divisors, a first increment that is not a whole number of
blocks) or the stored formats (spaces, commas or bars inside names) is refused here. Each check
returns the reason as text, or None when the input is fine.
"""

from __future__ import annotations

import re
from dataclasses import replace

from balance.keys import is_valid_account_id
from balance.types import (
    MAX_AMOUNT_MICROS,
    MAX_EXACT_INTEGER,
    MAX_SERVICE_UNITS,
    Account,
    Bucket,
    ChargeItem,
    ChargeRequest,
    PaymentType,
    Tariff,
)

# Services name allowance scopes, stored "a,b" inside "kind|from|until|priority|services".
_SERVICE = re.compile(r"^[A-Za-z0-9._@:-]{1,64}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")  # ISO 4217 alphabetic code
_MAX_TIME = 2**40  # epoch seconds, far beyond any validity date
_MAX_ITEMS = 64  # MSCCs in one request; TS 32.299 sets no bound, real requests carry a handful


def invalid_bucket(bucket: Bucket) -> str | None:
    if bucket.bucket_id < 1:
        return "bucket ids start at 1"
    if not 0 <= bucket.amount <= MAX_AMOUNT_MICROS:
        return f"bucket {bucket.bucket_id}: amount out of range"
    if any(_SERVICE.match(service) is None for service in bucket.services):
        return f"bucket {bucket.bucket_id}: bad service name"
    if not (0 <= bucket.valid_from < _MAX_TIME and 0 <= bucket.valid_until < _MAX_TIME):
        return f"bucket {bucket.bucket_id}: validity out of range"
    if not -(2**31) <= bucket.priority < 2**31:
        return f"bucket {bucket.bucket_id}: priority out of range"
    return None


def invalid_account(account: Account) -> str | None:
    if not is_valid_account_id(account.account_id):
        return "bad account id"
    if account.parent_id and (not is_valid_account_id(account.parent_id) or account.parent_id == account.account_id):
        return "bad parent id"
    if _CURRENCY.match(account.currency) is None:
        return "currency must be an ISO 4217 code"
    if (
        not 0 <= account.credit_limit_micros <= MAX_AMOUNT_MICROS
        or not 0 <= account.child_cap_micros <= MAX_AMOUNT_MICROS
    ):
        return "limit or cap out of range"
    if account.payment_type is PaymentType.PREPAID and account.credit_limit_micros:
        return "a prepaid account has no credit limit"
    identifiers = [bucket.bucket_id for bucket in account.buckets]
    if len(set(identifiers)) != len(identifiers):
        return "bucket ids must be unique"
    for bucket in account.buckets:
        problem = invalid_bucket(bucket)
        if problem:
            return problem
    if sum(bucket.amount for bucket in account.buckets) > MAX_AMOUNT_MICROS:
        return "buckets too large"
    return None


def invalid_tariff(tariff: Tariff) -> str | None:
    if tariff.per_units < 1 or tariff.block_units < 1 or tariff.first_units < 1:
        return "per, block and first units must be at least 1"
    if tariff.first_units % tariff.block_units:
        return "first units must be a whole number of blocks"
    if not 0 <= tariff.price_micros <= MAX_AMOUNT_MICROS:
        return "price out of range"
    if tariff.price_micros * tariff.per_units >= MAX_EXACT_INTEGER:
        return "price x per units must stay below 2^53"
    return None


def invalid_item(item: ChargeItem) -> str | None:
    # Rating-Group and Service-Identifier are Unsigned32 (RFC 4006 sections 8.29 and 8.28).
    if not 0 <= item.rating_group < 2**32:
        return "rating group out of range"
    if item.service_identifier is not None and not 0 <= item.service_identifier < 2**32:
        return "service identifier out of range"
    if _SERVICE.match(item.service) is None:
        return "bad service name"
    if not (0 <= item.used_units <= MAX_SERVICE_UNITS and 0 <= item.requested_units <= MAX_SERVICE_UNITS):
        return "units out of range"
    if item.commit_reserved and (item.used_units or item.requested_units or item.used_split is not None):
        return "an item that commits its reservation in full carries no used or requested units"
    tariff = item.tariff
    problem = invalid_tariff(tariff)
    if problem:
        return problem
    # The cost of the largest quantity the item can charge must stay an exact Lua integer.
    largest = max(item.used_units, item.requested_units) + tariff.block_units + tariff.first_units
    if largest * tariff.price_micros // tariff.per_units > MAX_AMOUNT_MICROS:
        return "the cost of these units is out of range"
    return None


def invalid_change(item: ChargeItem, now_seconds: int) -> str | None:
    """The tariff change of a new reservation, and the itemised usage (RULES.md "Tariff change")."""
    change, split = item.tariff_change, item.used_split
    if change is not None:
        if not now_seconds < change.at_seconds < _MAX_TIME:
            return "a tariff change must lie ahead of now"
        tariff = item.tariff
        dearer = replace(tariff, price_micros=max(tariff.price_micros, change.after_price_micros))
        problem = invalid_tariff(dearer)
        if problem:
            return f"the tariff after the change: {problem}"
        largest = item.requested_units + tariff.block_units + tariff.first_units
        if largest * dearer.price_micros // tariff.per_units > MAX_AMOUNT_MICROS:
            return "the cost of these units after the change is out of range"
    if split is not None:
        parts = (split.before_units, split.after_units, split.indeterminate_units)
        if min(parts) < 0 or sum(parts) != item.used_units:
            return "the itemised units must add up to the used units"
    return None


def invalid_charge(request: ChargeRequest) -> str | None:
    if not 0 <= request.request_number < 2**32:
        return "request number out of range"
    if not (0 <= request.now_seconds < _MAX_TIME and 0 < request.validity_seconds < 2**31):
        return "time out of range"
    if len(request.items) > _MAX_ITEMS:
        return "too many items"
    if len({(item.rating_group, item.service_identifier) for item in request.items}) != len(request.items):
        return "services (rating group, service identifier) must be distinct"
    if request.event and any(item.commit_reserved for item in request.items):
        return "an event holds no reservation to commit"
    for item in request.items:
        problem = invalid_item(item) or invalid_change(item, request.now_seconds)
        if problem:
            return problem
    return None
