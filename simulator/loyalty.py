"""Loyalty during a run: the population's segments, and the simulator's own ledger of the bonus
each member should get, checked against the OCS's rule applications.

Theory of operation: with ``[loyalty]`` in the scenario, ``set_up`` gives every individual
customer a segment drawn from ``segments`` (weights, in their shares whatever the seed: the
billing calendar's draw) and the company ``company_segment``, through the API
(``PUT /loyalty/members/{id}/segment``), before any traffic. The programmes are the file the
server runs (``[server.loyalty] rules``); the simulator reads it itself, knowing only the rules
it can check exactly from its own usage:

- usage rules (other events are not made by the simulator: refused), filters on services,
  segments, payment types and customer kinds; month or day counters of spend (or events);
- ``every`` N on a spend counter with a fixed bonus amount: a member's bonus over a period is
  ``amount x floor(spend / N)``, however the spend was split into records; ``threshold``: one
  firing per period; ``percent`` of the trigger's spend: ``floor(micros x percent)`` per record
  (one usage record per commit, which the OCS keeps);
- ``invoice_discount``: one application per firing, checked by count;
- no budgets and no unit allowances (refused): a budget makes who gets the bonus depend on the
  order the OCS saw the records in, and an allowance changes what later usage costs, which the
  money check prices without it.

``expected`` computes, from the priced commits (``simulator.ledger.priced_commits``: what each
record cost), per member the bonus money and the count of discounts per rule. ``settle`` polls
the OCS's applications (``GET /loyalty/applications``) until they match or ``settle_seconds``
pass (records reach the rules when the spool writes them), then ``check`` says what differs, adds
the loyalty ledger's audit (``GET /loyalty/reports/ledger``), and measures the credit latency
(``credited_at_ms - committed_at_ms`` of every credited application: from the transaction that
stored the record to its bonus being spendable). The bonus credited to each line is also what the
money check adds to that line's top-ups (bonus is money on the balance).
"""

from __future__ import annotations

import asyncio
import random
import time
import tomllib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from simulator.billing import behaviour_draw
from simulator.http_api import ApiRefused, OcsApi
from simulator.ledger import PricedCommit
from simulator.lifecycle import percentile
from simulator.population import CustomerType, SimulatedSubscriber, money_text, parse_money

CREDIT_LATENCY_TARGET_MS = 1000.0  # issue 15 "Real time"
POLL_SECONDS = 0.5
BASIS_POINTS_PER_WHOLE = 10_000


class LoyaltyScenarioError(ValueError):
    """The rules file holds a rule the simulator's ledger cannot check (names the rule and field)."""


@dataclass(frozen=True, slots=True)
class LoyaltySettings:
    enabled: bool = False
    segments: Mapping[str, float] = field(default_factory=dict)  # weights of the individual customers' segments
    company_segment: str | None = None
    settle_seconds: float = 20.0  # longest wait for the OCS's applications to match after the traffic


@dataclass(frozen=True, slots=True)
class SimRule:
    rule_id: str
    programme_id: str
    services: frozenset[str]
    segments: frozenset[str]
    payment_types: frozenset[str]
    customer_kinds: frozenset[str]
    period: str  # day | month
    measure: str  # spend | events
    every: int  # 0: a threshold rule
    threshold: int
    action: str  # bonus_money | invoice_discount
    amount_micros: int
    percent_basis_points: int  # bonus money as a percent of the trigger's spend


@dataclass(frozen=True, slots=True)
class MemberFacts:
    customer_id: str
    kind: str  # individual | organization
    segment: str | None
    payment_type: str  # of the line


def _strings(table: Mapping[str, object], name: str) -> frozenset[str]:
    value = table.get(name, [])
    return frozenset(str(item) for item in value) if isinstance(value, list) else frozenset()


def _percent(text: object) -> int:
    return int(Decimal(str(text)) * 100)


def read_rules(path: Path) -> list[SimRule]:
    """The usage rules of the server's rules file, as the simulator's ledger checks them."""
    with path.open("rb") as file:
        document = tomllib.load(file)
    rules: list[SimRule] = []
    for programme in document.get("programmes", []):
        programme_id = str(programme["id"])
        if "budget" in programme:
            raise LoyaltyScenarioError(f"programme {programme_id}: budget: the simulator's ledger checks none")
        for rule in programme.get("rules", []):
            where = f"programme {programme_id} rule {rule.get('id')}"
            if rule.get("event") != "usage":
                raise LoyaltyScenarioError(f"{where}: event: the simulator makes usage only")
            filters, counter, condition, action = (
                rule.get("filters", {}),
                rule["counter"],
                rule["condition"],
                rule["action"],
            )
            measure = str(counter["measure"])
            if action["kind"] not in ("bonus_money", "invoice_discount"):
                raise LoyaltyScenarioError(f"{where}: action.kind: bonus_money or invoice_discount only")
            if action.get("percent_of", "trigger_spend") != "trigger_spend":
                raise LoyaltyScenarioError(f"{where}: action.percent_of: trigger_spend only")

            def value(text: object, measured: str = measure) -> int:
                return parse_money(str(text)) if measured == "spend" else int(str(text))

            rules.append(
                SimRule(
                    rule_id=str(rule["id"]),
                    programme_id=programme_id,
                    services=_strings(filters, "services"),
                    segments=_strings(filters, "segments"),
                    payment_types=_strings(filters, "payment_types"),
                    customer_kinds=_strings(filters, "customer_kinds"),
                    period=str(counter["period"]),
                    measure=measure,
                    every=value(condition["every"]) if "every" in condition else 0,
                    threshold=value(condition["threshold"]) if "threshold" in condition else 0,
                    action=str(action["kind"]),
                    amount_micros=parse_money(str(action["amount"])) if "amount" in action else 0,
                    percent_basis_points=_percent(action["percent"])
                    if action["kind"] == "bonus_money" and "percent" in action
                    else 0,
                )
            )
    return rules


def _period(period: str, at_seconds: int) -> str:
    moment = datetime.fromtimestamp(at_seconds, UTC)
    return moment.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


def _admits(rule: SimRule, service: str, member: MemberFacts) -> bool:
    return (
        (not rule.services or service in rule.services)
        and (not rule.segments or member.segment in rule.segments)
        and (not rule.payment_types or member.payment_type in rule.payment_types)
        and (not rule.customer_kinds or member.kind in rule.customer_kinds)
    )


@dataclass(slots=True)
class Expected:
    """What each member should have been given: bonus micros, and discounts per rule."""

    bonus: Counter[str] = field(default_factory=Counter)  # by member
    discounts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (member, rule)


def expected(rules: Sequence[SimRule], priced: Sequence[PricedCommit], members: Mapping[str, MemberFacts]) -> Expected:
    """The bonus and discounts each member should get for the priced commits (module docstring)."""
    counters: Counter[tuple[str, str, str]] = Counter()
    made = Expected()
    for item in sorted(priced, key=lambda item: item.commit.granted_at_seconds):
        member = members.get(item.commit.account_id)
        if member is None:
            continue
        for rule in rules:
            if not _admits(rule, item.service, member):
                continue
            key = (rule.rule_id, member.customer_id, _period(rule.period, item.commit.granted_at_seconds))
            before = counters[key]
            after = counters[key] = before + (item.micros if rule.measure == "spend" else 1)
            if rule.every:
                fired = after // rule.every - before // rule.every
            else:
                fired = 1 if before < rule.threshold <= after else 0
            if fired <= 0:
                continue
            if rule.action == "invoice_discount":
                made.discounts[(member.customer_id, rule.rule_id)] += 1
            elif rule.percent_basis_points:
                made.bonus[member.customer_id] += item.micros * rule.percent_basis_points // BASIS_POINTS_PER_WHOLE
            else:
                made.bonus[member.customer_id] += rule.amount_micros * fired
    return made


@dataclass(frozen=True, slots=True)
class Applied:
    """One rule application as the OCS lists it."""

    rule_id: str
    programme_id: str
    member_id: str
    line_id: str
    action: str
    amount_micros: int
    state: str
    committed_at_ms: int
    credited_at_ms: int | None


def _applied(item: Mapping[str, object]) -> Applied:
    credited = item.get("credited_at_ms")
    return Applied(
        str(item["rule_id"]),
        str(item["programme_id"]),
        str(item["member_id"]),
        str(item["line_id"]),
        str(item["action"]),
        int(str(item["amount_micros"])),
        str(item["state"]),
        int(str(item["committed_at_ms"])),
        None if credited is None else int(str(credited)),
    )


@dataclass(slots=True)
class LoyaltyLedger:
    settings: LoyaltySettings
    api: OcsApi
    subscribers: Sequence[SimulatedSubscriber]
    rules: Sequence[SimRule]
    rng: random.Random
    segments: dict[str, str | None] = field(default_factory=dict)  # by customer
    applied: list[Applied] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ledger_ok: bool = False
    settle_wait_seconds: float = 0.0

    def _members(self) -> dict[str, MemberFacts]:
        """Per line: its member's facts."""
        found: dict[str, MemberFacts] = {}
        for subscriber in self.subscribers:
            if not subscriber.msisdn:
                continue
            company = subscriber.customer_type is CustomerType.COMPANY
            found[subscriber.account_id] = MemberFacts(
                subscriber.owner_id,
                "organization" if company else "individual",
                self.segments.get(subscriber.owner_id),
                "prepaid" if subscriber.prepaid else "postpaid",
            )
        return found

    async def set_up(self) -> None:
        """Every customer's segment, through the API, before the traffic."""
        individuals = sorted(
            {s.owner_id for s in self.subscribers if s.msisdn and s.customer_type is not CustomerType.COMPANY}
        )
        drawn = behaviour_draw(self.settings.segments, len(individuals), self.rng) if self.settings.segments else []
        self.segments = dict(zip(individuals, drawn, strict=False))
        companies = sorted({s.owner_id for s in self.subscribers if s.customer_type is CustomerType.COMPANY})
        for customer_id in companies:
            self.segments[customer_id] = self.settings.company_segment
        for customer_id, segment in sorted(self.segments.items()):
            await self.api.set_segment(customer_id, segment)

    async def _read(self) -> list[Applied]:
        return [_applied(item) for item in await self.api.loyalty_applications()]

    def _differences(self, wanted: Expected, applied: Sequence[Applied]) -> list[str]:
        bonus: Counter[str] = Counter()
        discounts: Counter[tuple[str, str]] = Counter()
        for item in applied:
            if item.action == "bonus_money":
                bonus[item.member_id] += item.amount_micros
            elif item.action == "invoice_discount":
                discounts[(item.member_id, item.rule_id)] += 1
        found: list[str] = []
        for member_id in sorted(set(bonus) | set(wanted.bonus)):
            if bonus[member_id] != wanted.bonus[member_id]:
                found.append(
                    f"member {member_id}: bonus {money_text(bonus[member_id])} applied,"
                    f" the simulator expected {money_text(wanted.bonus[member_id])}"
                )
        for key in sorted(set(discounts) | set(wanted.discounts)):
            if discounts[key] != wanted.discounts[key]:
                found.append(
                    f"member {key[0]}: {discounts[key]} discount(s) of rule {key[1]},"
                    f" the simulator expected {wanted.discounts[key]}"
                )
        lines = self._members()
        for item in applied:
            facts = lines.get(item.line_id)
            if facts is None or facts.customer_id != item.member_id:
                found.append(f"rule {item.rule_id} credited line {item.line_id}, not a line of {item.member_id}")
        return found

    async def settle(self, priced: Sequence[PricedCommit]) -> None:
        """Wait (at most ``settle_seconds``) until the OCS's applications are what the simulator
        expects and all credited, then record what differs and the loyalty ledger's verdict."""
        wanted = expected(self.rules, priced, self._members())
        started = time.monotonic()
        while True:
            self.applied = await self._read()
            differences = self._differences(wanted, self.applied)
            pending = sum(1 for item in self.applied if item.state == "pending")
            if (not differences and not pending) or time.monotonic() - started > self.settings.settle_seconds:
                break
            await asyncio.sleep(POLL_SECONDS)
        self.settle_wait_seconds = time.monotonic() - started
        self.problems = list(differences)
        if pending:
            self.problems.append(f"{pending} application(s) still pending after {self.settings.settle_seconds:g} s")
        try:
            ledger = await self.api.loyalty_ledger()
        except ApiRefused as refused:
            ledger = [f"GET /loyalty/reports/ledger refused: {refused}"]
        self.problems += [f"OCS loyalty ledger: {problem}" for problem in ledger]
        self.ledger_ok = not self.problems

    def bonus_by_line(self) -> Counter[str]:
        """Bonus money the OCS credited into each line (for the money check: it is on the balance)."""
        found: Counter[str] = Counter()
        for item in self.applied:
            if item.action == "bonus_money" and item.state == "credited":
                found[item.line_id] += item.amount_micros
        return found

    def latencies_ms(self) -> list[float]:
        return sorted(
            float(item.credited_at_ms - item.committed_at_ms)
            for item in self.applied
            if item.state == "credited" and item.credited_at_ms is not None
        )

    def summary(self) -> dict[str, object]:
        latencies = self.latencies_ms()
        credits = Counter(item.programme_id for item in self.applied if item.state in ("credited", "recorded"))
        issued = sum(self.bonus_by_line().values())
        return {
            "members_by_segment": dict(sorted(Counter(str(value) for value in self.segments.values()).items())),
            "credits": dict(sorted(credits.items())),
            "applications": len(self.applied),
            "bonus_issued": money_text(issued),
            "bonus_issued_micros": issued,
            "credit_latency_p50_ms": round(percentile(latencies, 50.0), 1),
            "credit_latency_p99_ms": round(percentile(latencies, 99.0), 1),
            "credit_latency_target_ms": CREDIT_LATENCY_TARGET_MS,
            "credits_timed": len(latencies),
            "settle_wait_seconds": round(self.settle_wait_seconds, 1),
            "ledger_ok": self.ledger_ok,
            "problems": list(self.problems),
        }

    def verdict_problems(self) -> list[str]:
        found = list(self.problems)
        p99 = percentile(self.latencies_ms(), 99.0)
        if p99 > CREDIT_LATENCY_TARGET_MS:
            found.append(f"commit-to-credit p99 {p99:.0f} ms over the {CREDIT_LATENCY_TARGET_MS:.0f} ms target")
        return found
