"""The HTTP API's answers as JSON: balances, buckets, subscribers, applied credits and price quotes.
Money comes twice: ``<name>_micros`` (integer) and ``<name>`` (decimal string)."""

from __future__ import annotations

from balance.directory import IdentityKind, Subscriber
from balance.types import MONETARY_KINDS, BalanceView, Bucket
from ocs.api.provisioning import Applied
from ocs.rating.rate import Quote, format_money

IDENTITY_WORDS = {
    IdentityKind.E164: "msisdn",
    IdentityKind.IMSI: "imsi",
    IdentityKind.SIP_URI: "sip",
    IdentityKind.NAI: "nai",
    IdentityKind.PRIVATE: "private",
}


def money_json(name: str, micros: int) -> dict[str, object]:
    return {f"{name}_micros": micros, name: format_money(micros)}


def bucket_json(bucket: Bucket) -> dict[str, object]:
    amount = money_json("amount", bucket.amount) if bucket.kind in MONETARY_KINDS else {"amount": bucket.amount}
    return {
        "bucket_id": bucket.bucket_id,
        "kind": bucket.kind.value,
        **amount,
        "services": list(bucket.services),
        "valid_from": bucket.valid_from,
        "valid_until": bucket.valid_until,
        "priority": bucket.priority,
    }


def view_json(view: BalanceView) -> dict[str, object]:
    account = view.account
    return {
        "account_id": account.account_id,
        "currency": account.currency,
        "payment_type": account.payment_type.value,
        "status": account.status.value,
        "parent_id": account.parent_id,
        **money_json("available", view.available_micros),
        **money_json("credit_limit", account.credit_limit_micros),
        **money_json("child_cap", account.child_cap_micros),
        "counters": {
            **money_json("credits", view.credits_micros),
            **money_json("debits", view.debits_micros),
            **money_json("committed", view.committed_micros),
            **money_json("held", view.held_micros),
            **money_json("limit_held", view.limit_held_micros),
            **money_json("unbilled", view.unbilled_micros),
            **money_json("billed", view.billed_micros),  # taken off unbilled by the bill run's cuts
            **money_json("pool_used", view.pool_used_micros),
        },
        "reservations": view.reservations,
        "buckets": [bucket_json(bucket) for bucket in account.buckets],
    }


def subscriber_json(profile: Subscriber | None, view: BalanceView) -> dict[str, object]:
    shown = None
    if profile is not None:
        shown = {
            "plan": profile.plan,
            "customer_type": profile.customer_type,
            "name": profile.name,
            "identities": [
                {"kind": IDENTITY_WORDS[identity.kind], "value": identity.value} for identity in profile.identities
            ],
        }
    return {"account_id": view.account.account_id, "profile": shown, "balance": view_json(view)}


def applied_json(applied: Applied, **extra: object) -> dict[str, object]:
    return {
        "account_id": applied.view.account.account_id,
        **extra,
        "replayed": applied.result.replayed,
        "bucket_id": applied.result.bucket_id,
        "notified_sessions": applied.notified_sessions,
        "balance": view_json(applied.view),
    }


def quote_json(quote: Quote) -> dict[str, object]:
    rated = quote.rated
    return {
        "plan": rated.plan,
        "plan_version": rated.version,  # the version in force at ``at`` (config/tariffs.toml [[versions]])
        "service": rated.service,
        "unit": rated.unit.value,
        "zone": rated.zone,
        "band": rated.band,
        "currency": rated.currency,
        "selected_by": rated.selected_by,
        "destination": rated.destination,
        "local_time": rated.local_time.isoformat(),
        "units": quote.units,
        "charged_units": quote.charged_units,
        **money_json("cost", quote.cost_micros),
        # The tariff itself (balance.types.Tariff), so a client can price usage split across a
        # tariff change (balance/RULES.md "Tariff change") with the engine's own arithmetic.
        "tariff": {
            "price_micros": rated.tariff.price_micros,
            "per_units": rated.tariff.per_units,
            "block_units": rated.tariff.block_units,
            "first_units": rated.tariff.first_units,
        },
        "explanation": rated.explanation,
        "text": quote.text,
    }


def audited_balance(view: BalanceView) -> dict[str, object]:
    """The part of an account an audit record keeps: status, money available, buckets."""
    return {
        "status": view.account.status.value,
        "available_micros": view.available_micros,
        "buckets": len(view.account.buckets),
    }
