"""A seeded load run across a switch of tariff against the real server: the simulator's ledger
agrees with the balances.

The plans are config/tariffs.toml with their peak band moved (UTC, every day) to end at a whole
minute a little after the test starts, and mobile data banded the other way (dearer after the
switch), so both directions are priced. When the accounts are provisioned the server's clock
(``CreditControl.clock``, what its engine reserves and commits by) is moved to shortly before that
minute, so the switch happens, for the server, while the traffic runs, whatever the time of day:
grants made before it carry Tariff-Time-Change, and usage is reported after it. The elements
stamp their requests with the machine's clock, which the test server trusts (tests/ocs/conftest.py
``TRUST_ANY_TIMESTAMP``), and their sessions' simulated clocks cross the switch.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from balance.embedded import EmbeddedRedis
from ocs.config import TariffSettings
from simulator.http_api import OcsApi
from simulator.ledger import cost_across, tariff_price
from simulator.population import DATA_RATING_GROUP
from simulator.report import render_text, summarize
from simulator.runner import run_scenario
from simulator.scenario import DATA_CONTEXT, VOICE_CONTEXT, load_scenario
from tests.conftest import ADMIN_TOKEN
from tests.ocs.conftest import RunningServer, server_settings, server_with

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "config" / "scenarios" / "smoke.toml"
SETUP_MARGIN_SECONDS = 10  # the switch lies at least this far ahead of the test's start (server start, provisioning)
SWITCH_LEAD_SECONDS = 2.0  # server time from the end of provisioning to the switch
MINUTES_PER_DAY = 1440
ALL_DAYS = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'
PEAK_BAND = re.compile(
    r'\[\[plans\.(\w+)\.bands\]\]\nname = "peak"\ndays = \[[^\]]*\]\nstart = "[0-9:]+"\nend = "[0-9:]+"\n'
)
MOBILE_DATA_PRICE = 'description = "Internet, per MB, charged per started 10 kB"\nprice = "0.01"\n'


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def tariffs_switching_at(switch: datetime) -> str:
    """config/tariffs.toml with every plan's peak the hour before ``switch`` (a whole UTC minute)
    on every day, off-peak from it on; mobile prepaid data cheaper at peak (0.01 a MB) than after
    (0.02)."""
    end = switch.hour * 60 + switch.minute or MINUTES_PER_DAY
    start = end - 60
    windows = [(max(start, 0), end)] + ([(MINUTES_PER_DAY + start, MINUTES_PER_DAY)] if start < 0 else [])

    def peak(match: re.Match[str]) -> str:
        return "".join(
            f'[[plans.{match[1]}.bands]]\nname = "peak"\ndays = {ALL_DAYS}\nstart = "{_clock(first)}"\n'
            f'end = "{_clock(last)}"\n'
            for first, last in windows
        )

    text, bands = PEAK_BAND.subn(peak, (ROOT / "config" / "tariffs.toml").read_text())
    assert bands == 4 and text.count('time_zone = "Europe/Berlin"') == 4 and MOBILE_DATA_PRICE in text
    banded_data = MOBILE_DATA_PRICE.replace('"0.01"', '{ peak = "0.01", off_peak = "0.02" }')
    return text.replace('time_zone = "Europe/Berlin"', 'time_zone = "UTC"').replace(MOBILE_DATA_PRICE, banded_data)


async def test_a_run_across_a_switch_of_tariff_keeps_the_ledger(embedded_redis: EmbeddedRedis, tmp_path: Path) -> None:
    switch_seconds = math.ceil((time.time() + SETUP_MARGIN_SECONDS) / 60) * 60
    tariffs = tmp_path / "tariffs.toml"
    tariffs.write_text(tariffs_switching_at(datetime.fromtimestamp(switch_seconds, UTC)))
    settings = server_settings(embedded_redis.url, tmp_path / "spool.sqlite3")
    full = load_scenario(SMOKE)
    scenario = dataclasses.replace(
        full,
        duration_seconds=3.0,
        arrival_rate_per_second=25.0,
        connections=2,
        # 200 simulated seconds a second: calls of minutes and data sessions of a minute or two
        # last a second or so, and many are open when the server's clock passes the switch. The
        # sessions' simulated clocks start on the machine's clock, 10 to 70 s before the switch,
        # so most of them cross it.
        timing=dataclasses.replace(full.timing, time_compression=200.0, data_rate_octets_per_second=1_000_000.0),
        voice_mean_seconds=300.0,
        # Calls mostly on one grant, reported at their end: the server's own split of a report
        # after the switch (seconds since the grant) applies from one second after it.
        voice_request_seconds=600,
        data_mean_octets={group: 60_000_000 for group in full.data_mean_octets},
        population=dataclasses.replace(full.population, size=30),
    )
    async with server_with(dataclasses.replace(settings, tariffs=TariffSettings(path=str(tariffs)))) as server:
        handler = server.state.credit_control
        assert handler is not None and server.state.http is not None

        def near_the_switch(line: str, done: float | None) -> None:
            if line.startswith("provisioned"):
                offset = switch_seconds - SWITCH_LEAD_SECONDS - time.time()
                handler.clock = lambda: time.time() + offset

        result = await run_scenario(
            scenario,
            diameter_host="127.0.0.1",
            diameter_port=server.port,
            api_url=server.state.http.url,
            api_token=ADMIN_TOKEN,
            seed=17,
            run_number=3,
            progress=near_the_switch,
        )
        assert handler.clock() > switch_seconds  # the switch happened during the run
    summary = summarize(result)
    report = render_text(summary)
    # What the simulator believes each account spent is what it committed: the ledger check.
    assert summary["problems"] == [], report
    assert result.audit.ok, report
    for subscriber in result.population.subscribers:
        committed = result.closing[subscriber.account_id].committed_micros
        assert (
            result.believed_micros[subscriber.account_id]
            == committed - result.opening[subscriber.account_id].committed_micros
        )
    # The run did what it is about: usage itemised on both sides of the switch, calls and data.
    straddling = [
        commit
        for commit in result.recorder.commits
        if commit.tariff_change_at_seconds == switch_seconds and 0 < commit.units_before_change < commit.units
    ]
    assert {commit.context for commit in straddling} == {VOICE_CONTEXT, DATA_CONTEXT}, report


BEFORE_SIX = int(datetime(2026, 11, 23, 16, 59, tzinfo=UTC).timestamp())  # a Monday, 17:59 in Berlin
SIX = BEFORE_SIX + 60  # peak ends at 18:00 for fixed lines, at 20:00 for mobile ones
BEFORE_EIGHT = SIX + 7_140


async def test_the_ledger_prices_usage_across_a_switch_as_the_server_does(server: RunningServer) -> None:
    """The numbers of tests/ocs/test_credit_control.py: a fixed national call, 60/60, 0.04 a
    minute before 18:00 and 0.02 after: 60 s before and 45 s after cost 0.06. A mobile one,
    60/1, 0.09 before 20:00 and 0.05 after: 30 s and 40 s cost (30 x 0.09 + 40 x 0.05) / 60,
    rounded up once. A data quote states its price per its own octets."""
    assert server.state.http is not None
    async with OcsApi(server.state.http.url, token=ADMIN_TOKEN) as api:

        async def across(plan: str, before: int, after: int, switch: int) -> int:
            where = (plan, VOICE_CONTEXT, None, "tel:+4930123456")
            early = await api.quote(*where, switch - 60, before + after)
            late = await api.quote(*where, switch, before + after)
            return cost_across(before, early, late)

        assert await across("fixed_prepaid", 60, 45, SIX) == 60_000
        assert await across("mobile_prepaid", 30, 40, BEFORE_EIGHT + 60) == 78_334
        data = await api.quote("mobile_prepaid", DATA_CONTEXT, DATA_RATING_GROUP, None, SIX, 2_000_000)
    assert tariff_price(data) == (10_000, 1_000_000)  # 0.01 a MB
