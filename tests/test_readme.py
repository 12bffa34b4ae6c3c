"""The README is what operators read: its configuration table names every setting, with its
environment variable and default, and its first two commands are the scripts the project ships."""

from __future__ import annotations

import re
from pathlib import Path

from ocs.config import Settings, environment_names

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
_ROW = re.compile(r"^\| `([a-z_.]+)` \| `(OCS_[A-Z_]+)` \| `([^`]*)` \| (.+) \|$", re.MULTILINE)


def _default_text(value: object) -> str:
    if isinstance(value, tuple):
        return ", ".join(value) if value else "[]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def test_the_configuration_table_names_every_setting_with_its_variable_and_default() -> None:
    rows = {dotted: (variable, default) for dotted, variable, default, _ in _ROW.findall(README)}
    defaults = Settings()
    expected = {}
    for variable, (section, name) in environment_names().items():
        owner = getattr(defaults, section) if section else defaults
        expected[f"{section}.{name}" if section else name] = (variable, _default_text(getattr(owner, name)))
    assert rows == expected


def test_the_first_two_commands_are_the_run_and_test_scripts() -> None:
    commands = re.findall(r"^bash (scripts/\S+)", README, re.MULTILINE)
    assert commands[:2] == ["scripts/run.sh", "scripts/test.sh"]
    assert all((ROOT / command).is_file() for command in commands[:2])
