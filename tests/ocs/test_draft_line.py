"""``draft_line`` makes the line ``DraftLine.model_construct`` makes (ocs.billing.draft_line)."""

from __future__ import annotations

import pytest
from pydantic import JsonValue

from ocs.billing import draft_line as module
from ocs.billing.draft_line import draft_line
from ocs.billing.values import DraftLine, LineKind


@pytest.mark.parametrize(
    ("kind", "amount", "tax", "node", "line"),
    [(LineKind.RENTAL, 12_500_000, 2_375_000, "dept-1", "line-1"), (LineKind.DISCOUNT, -1_000_000, 0, None, None)],
)
def test_the_line_is_model_constructs_and_valid(
    kind: LineKind, amount: int, tax: int, node: str | None, line: str | None
) -> None:
    explanation: dict[str, JsonValue] = {"product": "fixed_rental", "discounts": [{"code": "d", "micros": 1}]}
    made = draft_line(kind, "a line", amount, tax, node, line, explanation)
    expected = DraftLine.model_construct(
        kind=kind,
        description="a line",
        amount_micros=amount,
        tax_micros=tax,
        node_id=node,
        line_id=line,
        explanation=explanation,
    )
    assert made == expected
    assert made.model_fields_set == expected.model_fields_set
    assert made.model_dump_json() == expected.model_dump_json()
    assert DraftLine.model_validate(made.model_dump()) == made  # what the validators accept
    assert made.explanation is explanation  # shared, not copied (a page's lines share one)


def test_the_fast_path_is_taken_with_the_pinned_pydantic() -> None:
    assert module._fast
