"""The simulator's population is made of customers, activated through the customer API: an
individual customer per line, and a company tree of three levels (company -> branches ->
departments -> lines) whose money is pooled at the company, capped at each department."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from simulator.http_api import OcsApi
from simulator.population import build_population, provision
from simulator.scenario import load_scenario
from tests.conftest import ADMIN_TOKEN
from tests.ocs.conftest import RunningServer

SMOKE = Path(__file__).resolve().parents[2] / "config" / "scenarios" / "smoke.toml"


async def test_customers_and_a_three_level_company_are_activated_through_the_customer_api(
    server: RunningServer,
) -> None:
    settings = dataclasses.replace(
        load_scenario(SMOKE).population, size=6, company_branches=2, branch_departments=2, company_children=2
    )
    population = build_population(settings, random.Random(5), 3)
    assert server.state.http is not None
    async with OcsApi(server.state.http.url, token=ADMIN_TOKEN) as api:
        subscribers = await provision(api, population.subscribers)
        tree = await api.tree("sim00003-company")
        individuals = [s for s in subscribers if not s.customer_id]
        for individual in individuals:
            own = await api.tree(individual.owner_id)
            assert [line["line_id"] for line in own["lines"]] == [individual.account_id]  # type: ignore[index]
        views = {s.account_id: await api.balance(s.account_id) for s in subscribers}
    assert len(individuals) == 6
    root = tree["root"]
    assert isinstance(root, dict)
    pool = next(s for s in subscribers if s.customer_id and not s.parent_id)
    assert root["node"]["account_id"] == pool.account_id != "sim00003-company-pool"
    # company -> 2 branches -> 2 departments each -> 2 lines each, every line active.
    branches = root["children"]
    assert len(branches) == 2 and all(len(branch["children"]) == 2 for branch in branches)
    departments = [department for branch in branches for department in branch["children"]]
    assert all(department["node"]["money"]["cap_micros"] == 2 * settings.child_cap_micros for department in departments)
    lines = [line for department in departments for line in department["lines"]]
    assert len(lines) == 8 and {line["status"] for line in lines} == {"active"}
    # The engine's tree mirrors it: a line draws on its department, a department on the pool.
    for line in lines:
        assert line["engine_parent_id"] == line["node_id"]
        assert views[line["node_id"]].status == "active"
    assert views[pool.account_id].available_micros == settings.company_pool_micros
