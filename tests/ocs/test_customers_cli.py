"""``ocs customer add|show``, ``ocs customer node add``, ``ocs line add`` and the lifecycle commands
(``suspend|resume|bar|terminate`` of customers, nodes and lines) against a running server."""

from __future__ import annotations

import pytest

from tests.ocs.test_api import Api, api
from tests.ocs.test_cli import ocs

__all__ = ["api"]


async def test_a_company_with_a_branch_and_a_line_and_an_individual(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ("--url", api.url)
    status, out, err = await ocs(
        capsys,
        *("customer", "add", "acme", "--company", "ACME GmbH", "--registration", "HRB 9"),
        *("--pool", "postpaid", "--credit-limit", "500.00", "--currency", "EUR", "--bill-day", "15", *url),
    )
    assert (status, err) == (0, ""), err
    assert "customer  acme (organization, active): ACME GmbH" in out and "day 15" in out
    status, out, err = await ocs(
        capsys,
        *url,
        "customer",
        "node",
        "add",
        "acme",
        "North",
        "--node-id",
        "acme-n",
        "--pool",
        "postpaid",
        "--cap",
        "100",
    )
    assert status == 0 and "node      acme-n branch 'North' active, postpaid pool acme-n (active)" in out, err
    status, out, err = await ocs(
        capsys, *url, "line", "add", "acme", "--line-id", "acme-1", "--node", "acme-n", "--msisdn", "+4915600001"
    )
    assert status == 0 and "line      acme-1 (mobile prepaid, plan mobile_prepaid, active, draws on acme-n)" in out, err
    status, out, _ = await ocs(capsys, *url, "customer", "show", "acme", "--tree")
    assert status == 0
    assert out.index("node      acme-n") < out.index("    line      acme-1")  # the line under its branch
    status, out, err = await ocs(
        capsys,
        *url,
        *("customer", "add", "ana", "--given-name", "Ana", "--family-name", "Ex", "--birth-date", "1990-02-03"),
        *("--document", "passport:X1234567:DE", "--email", "ana@example.org"),
    )
    assert status == 0 and "customer  ana (individual, active): Ana Ex" in out, err
    status, out, err = await ocs(capsys, *url, "customer", "add", "bad", "--given-name", "B", "--family-name", "C")
    assert status == 1 and out == "" and "individual.birth_date" in err and "HTTP 422" in err
    status, _, err = await ocs(capsys, *url, "line", "add", "acme", "--cap", "lots")
    assert status == 2 and "lots" in err  # a usage error: nothing sent


async def test_customers_nodes_and_lines_are_suspended_resumed_and_terminated(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ("--url", api.url)
    company = ("customer", "add", "orga", "--company", "Orga AG", "--registration", "HRB 7", *url)
    assert (await ocs(capsys, *company))[0] == 0
    assert (await ocs(capsys, *url, "customer", "node", "add", "orga", "Ops", "--node-id", "ops"))[0] == 0
    assert (await ocs(capsys, *url, "line", "add", "orga", "--line-id", "o-1", "--node", "ops"))[0] == 0
    status, out, err = await ocs(capsys, *url, "line", "suspend", "o-1", "--reason", "lost", "--category", "voluntary")
    assert status == 0 and "o-1 (mobile prepaid, plan mobile_prepaid, suspended)" in out, err
    status, out, err = await ocs(capsys, *url, "customer", "node", "bar", "orga", "ops", "--reason", "abuse")
    assert status == 0 and "node      ops branch 'Ops' barred" in out, err
    status, out, err = await ocs(capsys, *url, "customer", "suspend", "orga", "--reason", "unpaid")
    assert status == 0 and "customer  orga (organization, suspended)" in out, err
    status, out, err = await ocs(capsys, *url, "customer", "resume", "orga", "--reason", "paid")
    assert status == 0 and "(organization, active)" in out, err
    status, out, err = await ocs(capsys, *url, "line", "resume", "o-1", "--reason", "found")
    assert status == 0 and "o-1 (mobile prepaid, plan mobile_prepaid, barred, its own active)" in out, err
    status, out, err = await ocs(
        capsys, *url, "customer", "terminate", "orga", "--reason", "left", "--category", "voluntary"
    )
    assert status == 0 and "(organization, terminated)" in out, err
    status, out, err = await ocs(capsys, *url, "customer", "resume", "orga", "--reason", "back")
    assert status == 1 and "status:" in err and "HTTP 409" in err
    status, _, err = await ocs(capsys, *url, "line", "bar", "o-1")
    assert status == 2 and "--reason" in err  # a usage error: nothing sent
