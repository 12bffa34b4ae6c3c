"""The typed configuration (file, environment, refusals) and the outcome -> Result-Code table."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from balance.pipeline import DEFAULT_REPLY_TIMEOUT_SECONDS
from balance.store import DEADLINE_MARGIN_SECONDS, SETTLE_TIMEOUT_SECONDS
from balance.types import Outcome
from ocs.charging.cca import FinalUnit, FinalUnitAction, ServiceAnswer, command_result
from ocs.charging.result_codes import RESULT_CODES, result_code
from ocs.config import (
    MIN_TOMBSTONE_SECONDS,
    ConfigError,
    Settings,
    environment_names,
    load_settings,
    unused_environment,
)
from protocol.constants import ResultCode

ROOT = Path(__file__).resolve().parents[2]
CLIENT_TX_SECONDS = 10  # RFC 4006 section 13: the client's Tx timer, its default


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ocs.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_file_loads_and_the_environment_overrides_it() -> None:
    settings = load_settings(
        ROOT / "config" / "ocs.toml",
        {"OCS_REDIS_URL": "redis://10.0.0.5:6379/0", "OCS_REDIS_CLUSTER": "true", "OCS_REDIS_FUNCTIONS": "false"},
    )
    assert settings.redis.url == "redis://10.0.0.5:6379/0" and settings.redis.cluster is True
    assert settings.redis.functions is False and load_settings(ROOT / "config" / "ocs.toml", {}).redis.functions
    assert settings.diameter.port == 3868 and settings.quota.tcc_seconds == 2 * settings.quota.validity_seconds


def test_tombstone_lifetime_and_spool_retention_are_settings(tmp_path: Path) -> None:
    environment = {"OCS_QUOTA_TOMBSTONE_SECONDS": "300", "OCS_SPOOL_RETENTION_SECONDS": "3600"}
    settings = load_settings(write(tmp_path, "[spool]\nretention_batch_size = 100\n"), environment)
    assert settings.quota.tombstone_seconds == 300 and settings.spool.retention_seconds == 3_600
    assert settings.spool.retention_batch_size == 100 and Settings().quota.tombstone_seconds == 600


def test_the_tombstone_floor_outlasts_the_settle_and_retransmission_window(tmp_path: Path) -> None:
    """Issue 17 review: any lifetime above 0 was accepted; below the window in which the store
    settles a call and the client retransmits it, an EVENT that applied is evaluated anew (3004
    although charged, or charged twice). The floor covers that window and is accepted itself."""
    window = DEFAULT_REPLY_TIMEOUT_SECONDS + DEADLINE_MARGIN_SECONDS + SETTLE_TIMEOUT_SECONDS + CLIENT_TX_SECONDS
    assert window < MIN_TOMBSTONE_SECONDS
    settings = load_settings(write(tmp_path, f"[quota]\ntombstone_seconds = {MIN_TOMBSTONE_SECONDS}\n"), {})
    assert settings.quota.tombstone_seconds == MIN_TOMBSTONE_SECONDS


def test_refund_limits_are_settings(tmp_path: Path) -> None:
    environment = {"OCS_REFUND_MAX_DAY_MICROS": "0"}
    settings = load_settings(write(tmp_path, "[refund]\nmax_request_micros = 5000000\n"), environment)
    assert (settings.refund.max_request_micros, settings.refund.max_day_micros) == (5_000_000, 0)


def test_outside_the_repository_the_shipped_files_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config/ here: the installation's config/ocs.toml and tariffs are used
    settings = load_settings(None, {})
    assert settings == load_settings(ROOT / "config" / "ocs.toml", {})
    assert Path(settings.tariffs.path) == ROOT / "config" / "tariffs.toml"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "tariffs.toml").write_text("")
    assert load_settings(None, {}).tariffs.path == "config/tariffs.toml"  # the current directory comes first


def test_defaults_without_a_file(tmp_path: Path) -> None:
    empty = write(tmp_path, "")
    assert dataclasses.replace(load_settings(empty, {}), tariffs=Settings().tariffs) == Settings()


# A value unlike the default for each type, and valid for the range checks.
_SPECIAL_VALUES = {
    ("final_unit", "action"): "REDIRECT",
    ("final_unit", "suspended_action"): "TERMINATE",
    ("diameter", "allowed_addresses"): "127.0.0.0/8",
    ("diameter", "peer_addresses"): "pgw.example=10.0.0.0/8",
}
# Settings that are valid only with others (TLS needs a certificate and a trust store): set beside them.
_TLS_FILES = ("tls_certificate", "tls_private_key", "tls_ca_file")


def _supporting(section: str, name: str, directory: Path) -> dict[str, str]:
    if section == "diameter" and name in (*_TLS_FILES, "require_tls", "clear_port_enabled"):
        return {f"OCS_DIAMETER_{other.upper()}": str(directory / other) for other in _TLS_FILES if other != name}
    if section == "http" and name == "tls_private_key":  # HTTPS: a key needs its certificate
        return {"OCS_HTTP_TLS_CERTIFICATE": str(directory / "tls_certificate")}
    return {}


def _other_value(section: str, name: str, default: object, directory: Path) -> tuple[str, object]:
    """(text for the variable, the value it must give) for one setting."""
    if (section, name) in _SPECIAL_VALUES:
        text = _SPECIAL_VALUES[section, name]
        return text, tuple(text.split(",")) if isinstance(default, tuple) else text
    if isinstance(default, bool):
        return ("false", False) if default else ("true", True)
    if isinstance(default, int):
        return str(default + 1), default + 1
    if isinstance(default, float):
        return str(default + 1.5), default + 1.5
    if isinstance(default, tuple):
        return "peer-a, peer-b", ("peer-a", "peer-b")
    if section in ("diameter", "http") and name in _TLS_FILES:
        return str(directory / name), str(directory / name)
    return f"/set/by/environment/{name}", f"/set/by/environment/{name}"


def test_every_setting_is_reachable_from_the_environment_under_its_own_name(tmp_path: Path) -> None:
    names = environment_names()
    hints = typing.get_type_hints(Settings)
    expected_settings: set[tuple[str, str]] = set()
    for top in dataclasses.fields(Settings):
        kind = hints[top.name]
        if dataclasses.is_dataclass(kind):
            expected_settings |= {(top.name, item.name) for item in dataclasses.fields(kind)}
        else:
            expected_settings.add(("", top.name))
    assert set(names.values()) == expected_settings and len(names) == len(expected_settings)
    for file_name in _TLS_FILES:
        (tmp_path / file_name).write_text("PEM\n")
    defaults, empty = Settings(), write(tmp_path, "")
    for variable, (section, name) in names.items():
        owner = getattr(defaults, section) if section else defaults
        text, value = _other_value(section, name, getattr(owner, name), tmp_path)
        settings = load_settings(empty, {variable: text, **_supporting(section, name, tmp_path)})
        assert getattr(getattr(settings, section) if section else settings, name) == value, variable


def test_the_environment_beats_the_file_for_underscored_sections_and_top_level_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "shutdown_timeout_seconds = 1.0\n[final_unit]\naction = 'TERMINATE'\n")
    environment = {"OCS_FINAL_UNIT_ACTION": "RESTRICT_ACCESS", "OCS_SHUTDOWN_TIMEOUT_SECONDS": "9"}
    settings = load_settings(path, environment)
    assert settings.final_unit.action == "RESTRICT_ACCESS" and settings.shutdown_timeout_seconds == 9.0


def test_other_ocs_variables_are_not_settings_and_are_listed_not_refused(tmp_path: Path) -> None:
    environment = {"OCS_MYPYC": "1", "OCS_FUZZ_SEED": "7", "OCS_HTTP_PORT": "81", "HOME": "/root"}
    assert load_settings(write(tmp_path, ""), environment).http.port == 81
    assert unused_environment(environment) == ["OCS_FUZZ_SEED", "OCS_MYPYC"]


@pytest.mark.parametrize(
    ("text", "environment", "fragment"),
    [
        ("[nope]\nx = 1\n", {}, "unknown section or field 'nope'"),
        ("[quota]\nvalidity = 5\n", {}, "[quota]: unknown field(s) validity"),
        ("[diameter]\nport = 'x'\n", {}, "ocs.toml: diameter.port: 'x' is not a int"),
        ("[diameter]\nport = 70000\n", {}, "diameter.port is out of range"),
        ("[final_unit]\naction = 'EXPLODE'\n", {}, "final_unit.action"),
        ("[quota]\ndefault_seconds = 9000\n", {}, "quota.default_seconds / max_seconds"),
        ("[diameter]\nwatchdog_seconds = 2\n", {}, "Tw >= 6 s"),
        ("", {"OCS_REDIS_ULR": "redis://x"}, "environment OCS_REDIS_ULR: [redis] has no such field"),
        ("", {"OCS_FINAL_UNIT_ACTON": "REDIRECT"}, "environment OCS_FINAL_UNIT_ACTON: [final_unit] has no such"),
        ("", {"OCS_HTTP_ENABLED": "maybe"}, "environment OCS_HTTP_ENABLED (http.enabled): 'maybe' is not a bool"),
        ("[http]\nport = 80\n", {"OCS_HTTP_PORT": "99999"}, "environment OCS_HTTP_PORT (http.port) is out of range"),
        ("", {"OCS_FINAL_UNIT_ACTION": "EXPLODE"}, "environment OCS_FINAL_UNIT_ACTION (final_unit.action)"),
        ("", {"OCS_SHUTDOWN_TIMEOUT_SECONDS": "soon"}, "environment OCS_SHUTDOWN_TIMEOUT_SECONDS: 'soon' is not"),
        ("not toml [", {}, "ocs.toml"),
        ("", {"OCS_QUOTA_TOMBSTONE_SECONDS": "0"}, "quota.tombstone_seconds"),
        ("[quota]\ntombstone_seconds = 59\n", {}, "quota.tombstone_seconds (at least 60 s"),
        ("[spool]\nretention_seconds = -1\n", {}, "spool.retention_seconds"),
        ("[spool]\nretention_batch_size = 0\n", {}, "spool.retention_batch_size"),
        ("[spool]\nretention_interval_seconds = 0\n", {}, "spool.retention_interval_seconds"),
        ("[refund]\nmax_request_micros = -1\n", {}, "refund.max_request_micros"),
        ("", {"OCS_REFUND_MAX_DAY_MICROS": "-5"}, "refund.max_day_micros"),
    ],
)
def test_bad_configuration_is_refused_naming_the_place(
    tmp_path: Path, text: str, environment: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(write(tmp_path, text), environment)
    assert fragment in str(refused.value)


def test_every_outcome_has_one_result_code() -> None:
    assert set(RESULT_CODES) == set(Outcome)
    expected = {
        Outcome.OK: 2001,
        Outcome.PARTIAL: 2001,
        Outcome.INSUFFICIENT_FUNDS: 4012,
        Outcome.ACCOUNT_BLOCKED: 4010,
        Outcome.UNKNOWN_ACCOUNT: 5030,
        Outcome.UNKNOWN_SESSION: 5002,
        Outcome.STALE_REQUEST: 5012,
        Outcome.INVALID: 5012,
        Outcome.ALREADY_EXISTS: 5012,
        Outcome.REFUND_LIMIT: 4010,
    }
    assert {outcome: int(result_code(outcome)) for outcome in Outcome} == expected


def answer(code: ResultCode, final: bool = False) -> ServiceAnswer:
    final_unit = FinalUnit(FinalUnitAction.REDIRECT, "http://topup/") if final else None
    return ServiceAnswer(10, None, code, final_unit=final_unit)


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([], ResultCode.DIAMETER_SUCCESS),
        ([ResultCode.DIAMETER_SUCCESS, ResultCode.DIAMETER_CREDIT_LIMIT_REACHED], ResultCode.DIAMETER_SUCCESS),
        ([ResultCode.DIAMETER_CREDIT_LIMIT_REACHED], ResultCode.DIAMETER_CREDIT_LIMIT_REACHED),
        ([ResultCode.DIAMETER_CREDIT_LIMIT_REACHED] * 2, ResultCode.DIAMETER_CREDIT_LIMIT_REACHED),
        # Every service failed, with different codes: a failure still (no session was opened),
        # the first in request order (it was 2001, and the next CCR-U got 5002).
        (
            [ResultCode.DIAMETER_CREDIT_LIMIT_REACHED, ResultCode.DIAMETER_RATING_FAILED],
            ResultCode.DIAMETER_CREDIT_LIMIT_REACHED,
        ),
        (
            [ResultCode.DIAMETER_RATING_FAILED, ResultCode.DIAMETER_CREDIT_LIMIT_REACHED],
            ResultCode.DIAMETER_RATING_FAILED,
        ),
    ],
)
def test_command_level_result_code(codes: list[ResultCode], expected: ResultCode) -> None:
    assert command_result([answer(code) for code in codes]) == expected


def test_a_redirected_service_keeps_the_command_successful() -> None:
    assert command_result([answer(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED, final=True)]) == ResultCode.DIAMETER_SUCCESS
