"""The run's end hangs up the sessions (``NetworkElement.hang_up``), against the real server.

A session still running when the traffic ends must end with its CCR-TERMINATION, so the OCS
releases what it holds, and promptly: before, the runner waited for the rest of the call's drawn
length, and a long call on a loaded machine (its rounds slower than planned) ran past the drain
timeout, was cancelled between two requests and left its reservation (the billing-cycle scenario's
"1 session(s) still running after 30.0 s", its line still holding a reservation). A session
waiting for a RAR (a redirected line, waiting for the lift) stops waiting too.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from protocol.capabilities import LocalIdentity
from simulator.elements import NetworkElement
from simulator.http_api import OcsApi
from simulator.population import SimulatedSubscriber, provision
from simulator.records import Recorder, SessionOutcome
from simulator.scenario import VOICE_CONTEXT
from simulator.sessions import CallerContext, MeteredService, run_metered_session, voice_information
from tests.conftest import ADMIN_TOKEN
from tests.ocs.conftest import RunningServer
from tests.simulator.test_elements import NATIONAL_MOBILE, TIMING, line

# How long a test waits for a session to end before it fails; never a measure of speed: without
# the hang-up these sessions would run for hours (a 100-hour call, a RAR wait of an hour).
SESSION_DEADLINE_SECONDS = 60.0
POLL_SECONDS = 0.01


@dataclass
class _Stage:
    api: OcsApi
    element: NetworkElement
    recorder: Recorder


@asynccontextmanager
async def _stage(
    server: RunningServer, subscriber: SimulatedSubscriber, hold_seconds: float = 0.0
) -> AsyncIterator[_Stage]:
    """The line provisioned and an element connected (``hold_seconds``: its wait for a RAR)."""
    assert server.state.http is not None
    timing = dataclasses.replace(TIMING, final_unit_hold_seconds=hold_seconds)
    identity = LocalIdentity("sim-hang-up.simulator.test", "simulator.test")
    recorder = Recorder()
    async with OcsApi(server.state.http.url, token=ADMIN_TOKEN) as api:
        await provision(api, [subscriber])
        element = await NetworkElement.connect("127.0.0.1", server.port, identity, recorder, timing)
        try:
            yield _Stage(api, element, recorder)
        finally:
            await element.close()


def _call(element: NetworkElement, caller: SimulatedSubscriber) -> CallerContext:
    assert caller.msisdn is not None
    information = voice_information(caller.msisdn, NATIONAL_MOBILE)
    return CallerContext(element, caller, "voice", VOICE_CONTEXT, f"tel:+{NATIONAL_MOBILE}", information)


def _kinds(recorder: Recorder, account_id: str) -> list[str]:
    return [kind for _, kind, _ in recorder.requests_by_line.get(account_id, [])]


async def test_a_long_call_ends_with_its_termination_at_the_next_round_after_the_hang_up(
    server: RunningServer,
) -> None:
    talker = line("talker", "4915199990301", 500_000_000)
    async with _stage(server, talker) as stage:
        api, element, recorder = stage.api, stage.element, stage.recorder
        call = _call(element, talker)
        service = MeteredService(None, "CC-Time", 360_000, 60)  # 100 hours, a minute at a time
        session = asyncio.create_task(run_metered_session(call, [service]))
        while _kinds(recorder, "talker").count("CCR-U") < 2:
            await asyncio.sleep(POLL_SECONDS)
        element.hang_up()
        updates_before = _kinds(recorder, "talker").count("CCR-U")
        outcome = await asyncio.wait_for(session, SESSION_DEADLINE_SECONDS)
        after = await api.balance("talker")
        assert (await api.audit(sessions_ended=True)).ok
    kinds = _kinds(recorder, "talker")
    assert outcome is SessionOutcome.COMPLETED
    # At most the update in flight at the hang-up, then the termination with the last usage.
    assert kinds[-1] == "CCR-T" and kinds.count("CCR-U") <= updates_before + 1
    assert recorder.requests[("voice CCR-T", 2001)] == 1
    assert after.reservations == 0 and after.held_micros == 0
    used = sum(commit.units for commit in recorder.commits)
    assert 0 < used < 360_000 and after.committed_micros > 0


async def test_a_redirected_session_waiting_for_the_lift_stops_waiting_at_the_hang_up(server: RunningServer) -> None:
    """A suspended line's call is granted nothing with Final-Unit-Indication REDIRECT and waits for
    the RAR of a lift (``final_unit_hold_seconds``, an hour here); the run's end ends the wait and
    the session closes with its CCR-TERMINATION, cut by the OCS's redirect."""
    debtor = line("debtor", "4915199990302", 5_000_000)
    async with _stage(server, debtor, hold_seconds=3_600.0) as stage:
        api, element, recorder = stage.api, stage.element, stage.recorder
        await api.set_lifecycle_status("/lines/debtor", "suspended", "test", "collections")
        call = _call(element, debtor)
        session = asyncio.create_task(run_metered_session(call, [MeteredService(None, "CC-Time", 600, 60)]))
        while not recorder.grants_by_line.get("debtor"):
            await asyncio.sleep(POLL_SECONDS)
        element.hang_up()
        outcome = await asyncio.wait_for(session, SESSION_DEADLINE_SECONDS)
        after = await api.balance("debtor")
        assert (await api.audit(sessions_ended=True)).ok
    assert recorder.final_unit_actions["REDIRECT"] == 1
    assert outcome is SessionOutcome.CUT
    assert _kinds(recorder, "debtor") == ["CCR-I", "CCR-T"]
    assert recorder.requests[("voice CCR-T", 2001)] == 1
    assert after.reservations == 0 and after.held_micros == 0 and after.committed_micros == 0


async def test_a_session_opened_after_the_hang_up_ends_after_its_first_round(server: RunningServer) -> None:
    """The hang-up holds for sessions the element opens after it (a start racing the run's end)."""
    late = line("late", "4915199990303", 500_000_000)
    async with _stage(server, late) as stage:
        api, element, recorder = stage.api, stage.element, stage.recorder
        element.hang_up()
        call = _call(element, late)
        outcome = await asyncio.wait_for(
            run_metered_session(call, [MeteredService(None, "CC-Time", 360_000, 60)]), SESSION_DEADLINE_SECONDS
        )
        after = await api.balance("late")
        assert (await api.audit(sessions_ended=True)).ok
    assert outcome is SessionOutcome.COMPLETED
    assert _kinds(recorder, "late") == ["CCR-I", "CCR-T"]
    assert after.reservations == 0 and len(recorder.commits) == 1  # the first round, reported by the CCR-T
