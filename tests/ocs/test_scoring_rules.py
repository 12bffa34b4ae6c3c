"""The scoring rules file (ocs/loyalty/scoring_load.py): the shipped file loads; every mistake is
refused naming the file, the section and the field; bands and segments choose as documented; the
score history table is made by its migration as it is defined."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.config import ConfigError, load_settings
from ocs.db.loyalty_scores import LOYALTY_SCORE_TABLES
from ocs.db.schema import metadata
from ocs.loyalty.scoring_load import Measure, ScoringRulesError, load_scoring_rules, parse_scoring_rules
from tests.ocs.postgres_support import postgresql_url
from tests.ocs.scoring_support import RULES, database

__all__ = ["database", "postgresql_url"]

GOOD = """
months = 3
ticket_days = 90

[[segments]]
name = "bad"

[[segments]]
name = "ideal"
min_points = 10

[factors.spend]
weight = 2
bands = [{ from = "0", points = 0 }, { from = "10.00", points = 5 }]

[factors.spend_trend]
bands = [{ from = -50, points = -5 }, { from = 0, points = 0 }]

[factors.tenure]
bands = [{ from = 30, points = 1 }]
"""


def test_the_shipped_file_scores_every_measure() -> None:
    assert {factor.measure for factor in RULES.factors} == set(Measure)
    assert [segment.name for segment in RULES.segments] == ["bad", "average", "ideal"]


def test_a_band_is_the_greatest_from_at_or_below_the_value_and_money_is_read_exactly() -> None:
    rules = parse_scoring_rules(GOOD, "x.toml")
    spend, trend, tenure = rules.factors
    assert (spend.weight, [band.start for band in spend.bands]) == (2, [0, 10_000_000])
    assert [getattr(spend.band_of(value), "points", None) for value in (0, 9_999_999, 10_000_000)] == [0, 0, 5]
    assert [getattr(trend.band_of(value), "points", None) for value in (-51, -50, -1, 40)] == [None, -5, -5, 0]
    assert tenure.band_of(29) is None
    assert [rules.segment_of(points) for points in (-3, 9, 10)] == ["bad", "bad", "ideal"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (("months = 3", "months = 1"), "x.toml: (top level): months: 1 is below 2"),
        (("ticket_days = 90\n", "ticket_days = 90\nweights = 1\n"), "x.toml: (top level): weights: unknown key"),
        (("[factors.tenure]", "[factors.loyalty]"), "x.toml: factors.loyalty: (name): 'loyalty' is not a measure"),
        (("weight = 2", "weight = -1"), "x.toml: factors.spend: weight: -1 is below 0"),
        (('{ from = "10.00"', "{ from = 10.0"), "x.toml: factors.spend.bands[2]: from: write the price as a string"),
        (('"10.00", points = 5', '"0", points = 5'), "x.toml: factors.spend.bands[2]: from: 0 is not above"),
        (("{ from = -50, points = -5 }", "{ from = -50, points = 1.5 }"), "x.toml: factors.spend_trend.bands[1]:"),
        (("bands = [{ from = 30, points = 1 }]", "bands = []"), "x.toml: factors.tenure: bands: must be a non-empty"),
        (("{ from = 30, points = 1 }", "{ from = -30, points = 1 }"), "x.toml: factors.tenure.bands[1]: from: -30"),
        (('name = "bad"', 'name = "bad"\nmin_points = 0'), "x.toml: segments[1]: min_points: the lowest"),
        (("min_points = 10", "min_points = 10\ncolour = 1"), "x.toml: segments[2]: colour: unknown key"),
        (('name = "ideal"', 'name = "bad"'), "x.toml: segments[2]: name: 'bad' is named twice"),
        (('name = "ideal"', f'name = "{"x" * 33}"'), "x.toml: segments[2]: name:"),
        (("min_points = 10\n", ""), "x.toml: segments[2]: min_points: missing"),
        (("months = 3", "months = ["), "x.toml: (top level): (syntax):"),
    ],
)
def test_a_mistake_is_refused_naming_the_file_the_section_and_the_field(change: tuple[str, str], where: str) -> None:
    with pytest.raises(ScoringRulesError) as refused:
        parse_scoring_rules(GOOD.replace(*change), "x.toml")
    assert str(refused.value).startswith(where), str(refused.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScoringRulesError, match=r"nothing.toml: \(file\)"):
        load_scoring_rules(tmp_path / "nothing.toml")


def test_the_settings_find_the_rules_and_refuse_an_hour_out_of_range() -> None:
    settings = load_settings(environ={})
    assert Path(settings.scoring.rules).is_file() and settings.scoring.run_hour == 3
    with pytest.raises(ConfigError, match="OCS_SCORING_RUN_HOUR"):
        load_settings(environ={"OCS_SCORING_RUN_HOUR": "24"})


async def test_the_migration_makes_the_score_table_as_it_is_defined(database: AsyncEngine) -> None:
    names = {table.name for table in LOYALTY_SCORE_TABLES}

    def ours(item: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        return (name if kind == "table" else item.table.name) in names

    def differences(connection: Connection) -> list[Any]:
        options = {"compare_type": True, "include_object": ours}
        return list(compare_metadata(MigrationContext.configure(connection, opts=options), metadata))

    async with database.connect() as connection:
        assert await connection.run_sync(differences) == []
