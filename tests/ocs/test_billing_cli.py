"""``ocs payment``, ``ocs bill``, ``ocs dispute`` and ``ocs report receivables`` against a running
server: a payment typed twice is recorded once, a bank file with a bad row exits 1 naming the
line, a malformed amount is a usage error before anything is sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ocs.test_api import Api, api
from tests.ocs.test_billing_api import _bea_with_a_bill
from tests.ocs.test_cli import ocs

__all__ = ["api"]


async def test_payments_bills_disputes_and_the_aging_report(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ("--url", api.url)
    account, bill_id = await _bea_with_a_bill(api)
    status, out, err = await ocs(capsys, *url, "bill", "list", "--account", account)
    assert status == 0 and bill_id in out and "30.00 EUR" in out, err
    status, out, err = await ocs(capsys, *url, "payment", "add", account, "12.50", "--reference", "tx-1")
    assert status == 0 and "paid 12.50 of " + bill_id in out, err
    status, out, err = await ocs(capsys, *url, "payment", "add", account, "12.50", "--reference", "tx-1")
    assert status == 0 and "replayed" in out, err
    status, out, err = await ocs(capsys, *url, "payment", "add", account, "12.5x", "--reference", "tx-2")
    assert status == 2 and "12.5x" in err
    file = tmp_path / "bank.csv"
    file.write_text(
        f"reference,billing_account,amount,date\nb-1,{account},2.50,2026-02-03\nb-2,{account},x,2026-02-03\n"
    )
    status, out, err = await ocs(capsys, *url, "payment", "load", str(file))
    assert status == 1 and "1 recorded" in out and "line 3: amount: " in err, (out, err)
    status, out, err = await ocs(
        capsys, *url, "dispute", "open", bill_id, "5", "--reason", "roaming", "--dispute-id", "D1"
    )
    assert status == 0 and "dispute D1" in out and "open" in out, err
    status, out, err = await ocs(capsys, *url, "bill", "show", bill_id)
    assert status == 0 and "left 15.00 EUR" in out and "disputed 5.00 EUR" in out and "rental" in out, err
    status, out, err = await ocs(capsys, *url, "dispute", "resolve", "D1", "rejected", "--resolution", "charged right")
    assert status == 0 and "rejected" in out, err
    status, out, err = await ocs(capsys, *url, "report", "receivables", "--json")
    assert status == 0, err
    [aged] = json.loads(out)["accounts"]
    assert sum(aged["buckets"].values()) == 15_000_000 and aged["billing_account_id"] == account
    status, out, err = await ocs(capsys, *url, "report", "receivables")
    assert status == 0 and "receivables as of" in out and account in out, err
