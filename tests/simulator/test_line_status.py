"""Sessions on a line whose status stops them, against the real server: what the elements make
of the OCS's answers (simulator.sessions, module docstring). A suspended line's SMS with unit
reservation is granted no units with Final-Unit-Indication and must end with its CCR-T as cut;
a barred or terminated line's first request is refused (4010, 5030) with nothing opened. Before,
both counted as failed sessions, which the lifecycle demo then left waiting on Tcc (NOT OK)."""

from __future__ import annotations

from protocol.capabilities import LocalIdentity
from protocol.message import avp
from simulator.elements import SUCCESS, NetworkElement, result_code
from simulator.http_api import OcsApi
from simulator.population import SimulatedSubscriber, provision
from simulator.records import Recorder, SessionOutcome
from simulator.scenario import SMS_CONTEXT, VOICE_CONTEXT
from simulator.sessions import (
    CallerContext,
    MeteredService,
    _applied,
    _Session,
    run_metered_session,
    run_sms_event,
    run_sms_session,
    sms_information,
    voice_information,
)
from tests.conftest import ADMIN_TOKEN
from tests.ocs.conftest import RunningServer
from tests.simulator.test_elements import NATIONAL_MOBILE, TIMING, line

CHANGES = (("suspended", "collections"), ("barred", "fraud"), ("terminated", "voluntary"))


async def _play_each(element: NetworkElement, subscriber: SimulatedSubscriber) -> tuple[SessionOutcome, ...]:
    """An SMS event, an SMS with unit reservation and a call on the line."""
    sms = CallerContext(element, subscriber, "sms_iec", SMS_CONTEXT, NATIONAL_MOBILE, sms_information(NATIONAL_MOBILE))
    reserved = CallerContext(
        element, subscriber, "sms_ecur", SMS_CONTEXT, NATIONAL_MOBILE, sms_information(NATIONAL_MOBILE)
    )
    assert subscriber.msisdn is not None
    information = voice_information(subscriber.msisdn, NATIONAL_MOBILE)
    call = CallerContext(element, subscriber, "voice", VOICE_CONTEXT, f"tel:+{NATIONAL_MOBILE}", information)
    return (
        await run_sms_event(sms),
        await run_sms_session(reserved),
        await run_metered_session(call, [MeteredService(None, "CC-Time", 60, 60)]),
    )


async def test_sessions_on_a_suspended_barred_or_terminated_line_are_cut_or_refused(server: RunningServer) -> None:
    assert server.state.http is not None
    lines = [line(status, f"49151999901{index}", 5_000_000) for index, (status, _) in enumerate(CHANGES)]
    recorder = Recorder()
    async with OcsApi(server.state.http.url, token=ADMIN_TOKEN) as api:
        await provision(api, lines)
        for subscriber, (status, category) in zip(lines, CHANGES, strict=True):
            await api.set_lifecycle_status(f"/lines/{subscriber.account_id}", status, "test", category)
        element = await NetworkElement.connect(
            "127.0.0.1", server.port, LocalIdentity("sim-test.simulator.test", "simulator.test"), recorder, TIMING
        )
        outcomes = {subscriber.account_id: await _play_each(element, subscriber) for subscriber in lines}
        await element.close()
        balances = [await api.balance(subscriber.account_id) for subscriber in lines]
        assert (await api.audit(sessions_ended=True)).ok
    cut, refused = SessionOutcome.CUT, SessionOutcome.REFUSED
    # Suspended: the event is denied (4010); the sessions open, get no units and end at once.
    assert outcomes["suspended"] == (refused, cut, cut)
    assert outcomes["barred"] == (refused, refused, refused)  # 4010 at the first request
    assert outcomes["terminated"] == (refused, refused, refused)  # 5030: its identity is gone
    assert recorder.requests[("sms_ecur CCR-I", 2001)] == recorder.requests[("sms_ecur CCR-T", 2001)] == 1
    # A refused start opened nothing: no CCR-T for it (it would find no session, 5002).
    assert not [code for (label, code) in recorder.requests if code == 5002]
    assert recorder.commits == []  # nothing was used, nothing held, nothing charged
    assert all(view.committed_micros == view.held_micros == view.reservations == 0 for view in balances)
    refused_lines = sorted(recorder.status_refusals_by_line)
    assert refused_lines == ["barred", "suspended", "terminated"]


async def test_a_usage_report_answered_4010_after_a_bar_was_applied(server: RunningServer) -> None:
    """A CCR-U in flight when its line is barred: the OCS commits the usage it reports and
    refuses the new units (4010 in the MSCC and at command level, balance/RULES.md: only a
    request opening a session is refused whole). The element must count the commit as applied,
    or its ledger misses money the OCS took."""
    assert server.state.http is not None
    caller_line = line("caller", "4915199990120", 5_000_000)
    async with OcsApi(server.state.http.url, token=ADMIN_TOKEN) as api:
        await provision(api, [caller_line])
        element = await NetworkElement.connect(
            "127.0.0.1", server.port, LocalIdentity("sim-test.simulator.test", "simulator.test"), Recorder(), TIMING
        )
        information = voice_information("4915199990120", NATIONAL_MOBILE)
        call = CallerContext(element, caller_line, "voice", VOICE_CONTEXT, f"tel:+{NATIONAL_MOBILE}", information)
        session = _Session(call, element.open_session(caller_line.account_id))
        service = MeteredService(None, "CC-Time", 120, 60)
        indicator = avp("Multiple-Services-Indicator", 1)
        started, _ = await session.send("CCR-I", "INITIAL_REQUEST", indicator, service.mscc(report=False, ask=True))
        await api.set_lifecycle_status("/lines/caller", "barred", "test", "fraud")
        service.pending = 60
        report, _ = await session.send("CCR-U", "UPDATE_REQUEST", indicator, service.mscc(report=True, ask=True))
        await element.close()
        view = await api.balance("caller")
    assert started is not None and result_code(started) == SUCCESS
    assert report is not None and result_code(report) == 4010
    assert _applied(report)
    assert view.committed_micros > 0
