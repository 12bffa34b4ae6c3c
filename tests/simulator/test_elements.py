"""Network elements against the real server, one session at a time: what RFC 4006 clients do
at the edges (a partial grant with Final-Unit-Indication, 4012, an event refused)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from balance.embedded import EmbeddedRedis
from protocol.capabilities import LocalIdentity
from simulator.elements import ElementTiming, NetworkElement
from simulator.http_api import OcsApi
from simulator.ledger import believed_charges
from simulator.population import DATA_RATING_GROUP, CustomerType, SimulatedSubscriber, provision
from simulator.records import Recorder, SessionOutcome
from simulator.scenario import DATA_CONTEXT, SMS_CONTEXT, VOICE_CONTEXT
from simulator.sessions import (
    CallerContext,
    MeteredService,
    run_metered_session,
    run_sms_event,
    run_sms_session,
    sms_information,
    voice_information,
)
from tests.conftest import ADMIN_TOKEN
from tests.ocs.conftest import RunningServer, running_server

TIMING = ElementTiming(step_seconds=0.0, request_timeout_seconds=5.0, retransmissions=0)
NATIONAL_MOBILE = "4917612345678"


def line(account_id: str, msisdn: str, main_micros: int, allowance_octets: int = 0) -> SimulatedSubscriber:
    return SimulatedSubscriber(
        account_id,
        CustomerType.MOBILE_PREPAID,
        "mobile_prepaid",
        True,
        msisdn,
        main_micros=main_micros,
        data_allowance_octets=allowance_octets,
    )


async def test_calls_use_the_final_grant_then_end_and_money_matches(server: RunningServer) -> None:
    assert server.state.http is not None
    poor = line("poor", "4915199990001", 150_000)  # 0.15 EUR: one or two minutes (peak / off-peak)
    rich = line("rich", "4915199990002", 5_000_000, allowance_octets=3_000_000)
    recorder = Recorder()
    async with OcsApi(server.state.http.url, token=ADMIN_TOKEN) as api:
        await provision(api, [poor, rich])
        element = await NetworkElement.connect(
            "127.0.0.1", server.port, LocalIdentity("sim-test.simulator.test", "simulator.test"), recorder, TIMING
        )
        call = CallerContext(
            element,
            poor,
            "voice",
            VOICE_CONTEXT,
            f"tel:+{NATIONAL_MOBILE}",
            voice_information("4915199990001", NATIONAL_MOBILE),
        )
        # Asks 60 s at a time for a 600 s call: the balance runs out, the call is cut.
        first = await run_metered_session(call, [MeteredService(None, "CC-Time", 600, 60)])
        # Nothing is left: the next call is refused at CCR-I, an SMS event too.
        second = await run_metered_session(call, [MeteredService(None, "CC-Time", 60, 60)])
        sms = CallerContext(element, poor, "sms_iec", SMS_CONTEXT, NATIONAL_MOBILE, sms_information(NATIONAL_MOBILE))
        refused_sms = await run_sms_event(sms)
        data = CallerContext(element, rich, "data", DATA_CONTEXT, None, None)
        session = [MeteredService(DATA_RATING_GROUP, "CC-Total-Octets", 5_000_000, 2_000_000)]
        surfing = await run_metered_session(data, session)
        sms_rich = CallerContext(
            element, rich, "sms_ecur", SMS_CONTEXT, NATIONAL_MOBILE, sms_information(NATIONAL_MOBILE)
        )
        reserved_sms = await run_sms_session(sms_rich)
        await element.close()
        assert (first, second, refused_sms) == (SessionOutcome.CUT, SessionOutcome.REFUSED, SessionOutcome.REFUSED)
        assert (surfing, reserved_sms) == (SessionOutcome.COMPLETED, SessionOutcome.COMPLETED)
        # What the elements believe they used, priced, is what each account committed and lost.
        believed = await believed_charges(api, recorder.commits, [poor, rich])
        poor_after, rich_after = await api.balance("poor"), await api.balance("rich")
        assert 0 < believed["poor"] == poor_after.committed_micros == 150_000 - poor_after.available_micros
        # Cut because the rest cannot buy a first minute at even the highest national price.
        assert poor_after.available_micros < 90_000
        # 3 MB of the 5 MB came from the allowance, 2 MB were paid, and one SMS.
        assert 0 < believed["rich"] == rich_after.committed_micros == 5_000_000 - rich_after.available_micros
        quote = await api.price("mobile_prepaid", DATA_CONTEXT, DATA_RATING_GROUP, None, int(time.time()), 2_000_000)
        sms_quote = await api.price("mobile_prepaid", SMS_CONTEXT, None, NATIONAL_MOBILE, int(time.time()), 1)
        assert believed["rich"] == quote + sms_quote == 20_000 + 90_000
        assert (await api.audit(sessions_ended=True)).ok
    assert recorder.requests[("voice CCR-I", 4012)] == 1 and recorder.requests[("sms_iec CCR-E", 4012)] == 1


async def test_a_grant_whose_validity_time_runs_out_is_reported_and_asked_again(
    embedded_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """RFC 4006 section 8.33 with simulated time: 2 MB granted for 10 s, used at 100 kB/s, so
    after 10 s (1 MB) the element reports with Reporting-Reason VALIDITY_TIME and asks again."""
    timing = dataclasses.replace(TIMING, time_compression=10_000.0, data_rate_octets_per_second=100_000.0)
    surfer = line("surfer", "4915199990003", 5_000_000)
    recorder = Recorder()
    async with running_server(embedded_redis.url, tmp_path / "spool.sqlite3", validity_seconds=10) as server:
        assert server.state.http is not None
        async with OcsApi(server.state.http.url, token=ADMIN_TOKEN) as api:
            await provision(api, [surfer])
            element = await NetworkElement.connect(
                "127.0.0.1", server.port, LocalIdentity("pgw-v.simulator.test", "simulator.test"), recorder, timing
            )
            data = CallerContext(element, surfer, "data", DATA_CONTEXT, None, None)
            outcome = await run_metered_session(data, [MeteredService(20, "CC-Total-Octets", 3_000_000, 2_000_000)])
            await element.close()
            believed = await believed_charges(api, recorder.commits, [surfer])
            after = await api.balance("surfer")
            assert (await api.audit(sessions_ended=True)).ok
    assert outcome is SessionOutcome.COMPLETED
    assert [commit.units for commit in recorder.commits] == [1_000_000, 1_000_000, 1_000_000]
    assert recorder.reporting_reasons["VALIDITY_TIME"] == 2 and recorder.longest_validity_seconds == 10
    assert 0 < believed["surfer"] == after.committed_micros == 5_000_000 - after.available_micros
