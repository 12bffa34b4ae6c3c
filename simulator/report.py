"""The end-of-run report: what was sent, how fast it was answered, where the money went, and
whether the OCS's books agree.

Theory of operation: ``summarize`` turns a ``RunResult`` into one plain JSON-ready dictionary;
``render_text`` prints the same dictionary as tables, so the text and ``--json`` never disagree.
Latency percentiles come from the recorder's HDR histograms (``hdrhistogram``, 3 significant
digits), one per request label, merged for the "all" row.

Money is checked three ways per account: what the simulator believes it was charged (its own
usage priced by ``simulator.ledger``), what the OCS says it committed for the account (the
``committed`` counter's growth), and what the operator sees on the balance: the drop of the
available money for prepaid lines (plus what the simulator topped up during the run), the
growth of ``unbilled`` for postpaid ones, and for the company the drop of the parent's pool
(its children have no money of their own). The run is good when the audit passes, all three
agree and every fault was answered as it should be; ``problems`` lists why it is not.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from hdrh.histogram import HdrHistogram

from simulator.population import CustomerType, SimulatedSubscriber, money_text
from simulator.records import NO_ANSWER, SessionOutcome, new_latency_histogram
from simulator.runner import RunResult

PERCENTILES = (50.0, 95.0, 99.0, 99.9)
Summary = dict[str, object]


def _latency_row(histogram: HdrHistogram) -> dict[str, object]:
    row: dict[str, object] = {"count": histogram.get_total_count()}
    for percent in PERCENTILES:
        row[f"p{percent:g}_ms"] = round(histogram.get_value_at_percentile(percent) / 1000.0, 3)
    row["max_ms"] = round(histogram.get_max_value() / 1000.0, 3)
    return row


def _balance_drop(subscriber: SimulatedSubscriber, result: RunResult) -> int:
    before, after = result.opening[subscriber.account_id], result.closing[subscriber.account_id]
    if subscriber.parent_id:
        return 0  # a child's money is its parent's pool: counted on the parent
    if subscriber.prepaid:
        topped_up = result.recorder.topups_micros.get(subscriber.account_id, 0)
        if result.loyalty is not None:  # loyalty bonus is money on the balance, as a top-up is
            topped_up += result.loyalty.bonus_by_line().get(subscriber.account_id, 0)
        return before.available_micros + topped_up - after.available_micros
    # What the bill run's cuts took off unbilled was used all the same (and invoiced).
    return after.unbilled_micros + after.billed_micros - before.unbilled_micros - before.billed_micros


def _money(result: RunResult) -> tuple[dict[str, dict[str, object]], list[str]]:
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"accounts": 0, "believed": 0, "committed": 0, "drop": 0})
    problems: list[str] = []
    for subscriber in result.population.subscribers:
        account_id = subscriber.account_id
        believed = result.believed_micros.get(account_id, 0)
        committed = result.closing[account_id].committed_micros - result.opening[account_id].committed_micros
        if believed != committed:
            problems.append(f"{account_id}: the simulator believes {believed} micros, the OCS committed {committed}")
        if result.closing[account_id].held_micros or result.closing[account_id].reservations:
            problems.append(f"{account_id}: still holds money or reservations after the run")
        row = totals[subscriber.customer_type.value]
        row["accounts"] += 1
        row["believed"] += believed
        row["committed"] += committed
        row["drop"] += _balance_drop(subscriber, result)
    table: dict[str, dict[str, object]] = {}
    for customer_type in CustomerType:
        if customer_type.value not in totals:
            continue
        row = totals[customer_type.value]
        if row["believed"] != row["drop"]:
            problems.append(
                f"{customer_type.value}: believed {row['believed']} micros, balances moved by {row['drop']}"
            )
        table[customer_type.value] = {
            "accounts": row["accounts"],
            "believed_micros": row["believed"],
            "committed_micros": row["committed"],
            "balance_drop_micros": row["drop"],
            "believed": money_text(row["believed"]),
            "balance_drop": money_text(row["drop"]),
        }
    return table, problems


def summarize(result: RunResult) -> Summary:
    recorder = result.recorder
    seconds = result.traffic_seconds or 1.0
    requests = [
        {"request": label, "result_code": code, "count": count, "per_second": round(count / seconds, 1)}
        for (label, code), count in sorted(recorder.requests.items())
    ]
    latencies = {label: _latency_row(histogram) for label, histogram in sorted(recorder.latencies.items())}
    everything = new_latency_histogram()
    for histogram in recorder.latencies.values():
        everything.add(histogram)
    latencies["all"] = _latency_row(everything)
    sessions: dict[str, dict[str, int]] = {}
    for (service, outcome), count in sorted(recorder.sessions.items()):
        sessions.setdefault(service, {kind.value: 0 for kind in SessionOutcome})[outcome.value] = count
    for row in sessions.values():  # started: everything the OCS let open (refused ones never were)
        row["started"] = sum(row.values()) - row[SessionOutcome.REFUSED.value]
    money, problems = _money(result)
    if not result.audit.ok:
        problems.insert(0, f"audit failed with {len(result.audit.findings)} finding(s)")
    problems += recorder.fault_problems
    if result.session_errors:
        problems.append(f"{len(result.session_errors)} session error(s), listed above")
    answered_any = any(code != NO_ANSWER for (_, code) in recorder.requests)
    if not answered_any:
        problems.append("no request was answered")
    answered = sum(count for (_, code), count in recorder.requests.items() if code != NO_ANSWER)
    lifecycle: Summary | None = None
    if result.lifecycle is not None:
        if result.lifecycle.settings.interval_seconds > 0:  # the scenario makes status changes
            statuses = Counter(result.closing[line.account_id].status for line in result.population.lines)
            lifecycle = result.lifecycle.summary(statuses)
        problems += result.lifecycle.problems
    billing: Summary | None = None
    if result.billing is not None:
        billing = result.billing.summary()
        problems += [f"billing: {problem}" for problem in result.billing.verdict_problems()]
    loyalty: Summary | None = None
    if result.loyalty is not None:
        loyalty = result.loyalty.summary()
        problems += [f"loyalty: {problem}" for problem in result.loyalty.verdict_problems()]
    return {
        "scenario": result.scenario.name,
        "seed": result.seed,
        "run_number": result.population.run_number,
        "traffic_seconds": round(result.traffic_seconds, 3),
        "answers_per_second": round(answered / result.traffic_seconds, 1) if result.traffic_seconds else 0.0,
        "requests": requests,
        "retransmissions": recorder.retransmissions,
        "latency": latencies,
        "sessions": sessions,
        "arrivals_dropped": dict(recorder.arrivals_dropped),
        "units": [{"service": s, "unit": u, "used": n} for (s, u), n in sorted(recorder.units.items())],
        "server_requests": dict(recorder.server_requests),
        "reporting_reasons": dict(recorder.reporting_reasons),
        "faults": dict(recorder.faults),
        "replays": dict(recorder.replays),
        "topups": {"accounts": len(recorder.topups_micros), "money": money_text(sum(recorder.topups_micros.values()))},
        "money": money,
        "audit": {
            "ok": result.audit.ok,
            "accounts": result.audit.accounts,
            "spool_records": result.audit.spool_records,
            "findings": [{"account": f.account_id, "rule": f.rule, "detail": f.detail} for f in result.audit.findings],
        },
        "session_errors": list(result.session_errors),
        "uncertain_sessions": list(recorder.uncertain_sessions),
        "tcc_wait": recorder.tcc_wait,
        **({"lifecycle": lifecycle} if lifecycle is not None else {}),
        **({"billing": billing} if billing is not None else {}),
        **({"loyalty": loyalty} if loyalty is not None else {}),
        "problems": problems,
        "ok": not problems,
    }


def _rows(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(item) for item in header], *([str(item) for item in row] for row in rows)]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    return ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]


def render_text(summary: Summary) -> str:
    lines = [
        f"scenario {summary['scenario']}  seed {summary['seed']}  run {summary['run_number']}  "
        f"traffic {summary['traffic_seconds']} s  {summary['answers_per_second']} answers/s  "
        f"retransmissions {summary['retransmissions']}",
        "",
        "requests by result code",
    ]
    requests = summary["requests"]
    assert isinstance(requests, list)
    lines += _rows(
        ("request", "code", "count", "per s"),
        [(r["request"], r["result_code"], r["count"], r["per_second"]) for r in requests],
    )
    latency = summary["latency"]
    assert isinstance(latency, dict)
    columns = ("count", *(f"p{percent:g}_ms" for percent in PERCENTILES), "max_ms")
    lines += ["", "latency (ms)"]
    lines += _rows(("request", *columns), [(label, *(row[c] for c in columns)) for label, row in latency.items()])
    sessions = summary["sessions"]
    assert isinstance(sessions, dict)
    outcomes = ["started", *(kind.value for kind in SessionOutcome)]
    lines += ["", "sessions"]
    lines += _rows(
        ("service", *outcomes), [(service, *(row[o] for o in outcomes)) for service, row in sessions.items()]
    )
    lines.append(f"arrivals dropped: {summary['arrivals_dropped'] or 'none'}")
    lines.append(f"server requests (RAR/ASR): {summary['server_requests'] or 'none'}")
    lines.append(
        f"faults injected: {summary['faults'] or 'none'}; repeated requests answered: {summary['replays'] or 'none'}"
    )
    lines.append(f"top-ups during the run: {summary['topups']}")
    lines.append(f"usage reports by Reporting-Reason: {summary['reporting_reasons'] or 'none'}")
    lines.append(f"end of run: {summary['tcc_wait'] or 'no session left for Tcc to close'}")
    lifecycle = summary.get("lifecycle")
    if isinstance(lifecycle, dict):
        lines.append(
            f"lifecycle changes: {lifecycle['changes'] or 'none'}; enforced {lifecycle['enforced']}, "
            f"p50 {lifecycle['enforcement_p50_ms']} ms, p99 {lifecycle['enforcement_p99_ms']} ms "
            f"(API call to the first RAR/ASR); customers by status: {lifecycle['customers']}; "
            f"lines by effective status: {lifecycle['lines']}"
        )
    billing = summary.get("billing")
    if isinstance(billing, dict):
        lines.append(
            f"billing calendar {billing['calendar']}: {billing['invoices']} invoice(s), billed {billing['billed']}, "
            f"paid {billing['paid']} in {billing['payments']} payment(s); accounts by behaviour "
            f"{billing['billing_accounts']}; disputes {billing['disputes'] or 'none'}; promises to pay "
            f"{billing['promises_to_pay']}; dunning steps {billing['dunning_steps'] or 'none'}; lifted by payment "
            f"{billing['lifted_by_payment']}; redirects {billing['redirects']}; payment to normal "
            f"grant p50 {billing['payment_to_grant_p50_ms']} ms, p99 {billing['payment_to_grant_p99_ms']} ms "
            f"({billing['payment_to_grant_timed']} timed); ledger {'ok' if billing['ledger_ok'] else 'NOT OK'}"
        )
    loyalty = summary.get("loyalty")
    if isinstance(loyalty, dict):
        lines.append(
            f"loyalty: members by segment {loyalty['members_by_segment']}; credits by programme "
            f"{loyalty['credits'] or 'none'}; bonus issued {loyalty['bonus_issued']}; commit to credit p50 "
            f"{loyalty['credit_latency_p50_ms']} ms, p99 {loyalty['credit_latency_p99_ms']} ms (target "
            f"{loyalty['credit_latency_target_ms']:.0f} ms, {loyalty['credits_timed']} timed); ledger "
            f"{'ok' if loyalty['ledger_ok'] else 'NOT OK'}"
        )
    money = summary["money"]
    assert isinstance(money, dict)
    lines += ["", "money by customer type (believed = own usage priced by POST /rate)"]
    lines += _rows(
        ("type", "accounts", "believed", "balance drop", "committed micros"),
        [(kind, r["accounts"], r["believed"], r["balance_drop"], r["committed_micros"]) for kind, r in money.items()],
    )
    audit = summary["audit"]
    assert isinstance(audit, dict)
    lines += [
        "",
        f"audit: {'PASS' if audit['ok'] else 'FAIL'} ({audit['accounts']} accounts, "
        f"{audit['spool_records']} spool records)",
    ]
    lines += [f"  {f['account']}: {f['rule']}: {f['detail']}" for f in audit["findings"]]
    for name in ("session_errors", "uncertain_sessions", "problems"):
        items = summary[name]
        assert isinstance(items, list)
        if items:
            lines.append(f"{name.replace('_', ' ')}:")
            lines += [f"  {item}" for item in items]
    lines.append(f"verdict: {'OK' if summary['ok'] else 'NOT OK'}")
    return "\n".join(lines)
