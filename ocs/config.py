"""The server's configuration: one typed, frozen object built once and passed down.

Theory of operation: defaults live in the dataclasses below; a TOML file (``config/ocs.toml``)
overrides them section by section, and environment variables ``OCS_<SECTION>_<FIELD>`` override
the file (``OCS_REDIS_URL=redis://...``). Unknown sections or fields, and values of the wrong type
or out of range, are refused with a ``ConfigError`` that names the file, section and field.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from balance.keys import DEFAULT_TOMBSTONE_SECONDS

DEFAULT_CONFIG_PATH = Path("config/ocs.toml")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class DiameterSettings:
    host: str = "127.0.0.1"
    port: int = 3868  # RFC 6733 section 11.4: the IANA port for Diameter over TCP
    origin_host: str = "ocs.localdomain"
    origin_realm: str = "localdomain"
    max_in_flight: int = 4_096  # requests in progress over all connections; beyond: 3004 at once
    allowed_hosts: tuple[str, ...] = ()  # empty: any peer
    allowed_realms: tuple[str, ...] = ()
    watchdog_seconds: float = 30.0  # RFC 3539 section 3.4.1: Tw default


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080  # provisioning API, /metrics, /health
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str = ""  # empty: start the embedded redis-server in data_directory
    cluster: bool = False
    pipelined: bool = True  # charges on the pipelined client (single Redis only)
    functions: bool = True  # the function library (FCALL) where Redis has it; false: EVAL scripts
    data_directory: str = "data/redis"


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    """Grant sizing (DESIGN.md "Grants are sized from the request, the configured default quota
    and what the balance affords") and the timers RFC 4006 leaves to the server."""

    default_seconds: int = 300
    default_octets: int = 10_000_000
    default_events: int = 1
    max_seconds: int = 3_600
    max_octets: int = 1_000_000_000
    max_events: int = 100
    validity_seconds: int = 1_800  # Validity-Time, RFC 4006 section 8.33
    quota_holding_seconds: int = 0  # Quota-Holding-Time, TS 32.299 clause 7.2.164 (0: not sent)
    threshold_percent: int = 20  # Time/Volume/Unit-Quota-Threshold as a share of the grant (0: none)
    supervision_interval_seconds: float = 1.0  # how often the Tcc supervisor looks
    # How long a closed session answers retransmissions of its last request as a duplicate:
    # the clients' window, RFC 6733 section 3 (End-to-End Identifier unique for 4 minutes) plus
    # a failover retransmission; balance/keys.py DEFAULT_TOMBSTONE_SECONDS says why 600 s.
    tombstone_seconds: int = DEFAULT_TOMBSTONE_SECONDS

    @property
    def tcc_seconds(self) -> int:
        """RFC 4006 section 13: Tcc, about 2 x Validity-Time, after which a silent session ends."""
        return 2 * self.validity_seconds


@dataclass(frozen=True, slots=True)
class FinalUnitSettings:
    """Final-Unit-Indication (RFC 4006 section 8.34): what the network does at the last grant."""

    action: str = "TERMINATE"  # for active accounts: TERMINATE, REDIRECT or RESTRICT_ACCESS
    suspended_action: str = "REDIRECT"  # for accounts suspended for non-payment
    redirect_address: str = "http://topup.localdomain/"  # Redirect-Server-Address (URL)
    restriction_filter: str = "permit out ip from any to any 80"  # Restriction-Filter-Rule


@dataclass(frozen=True, slots=True)
class TariffSettings:
    path: str = "config/tariffs.toml"
    default_plan: str = "mobile_prepaid"


@dataclass(frozen=True, slots=True)
class SpoolSettings:
    path: str = "data/spool.sqlite3"
    batch_size: int = 500
    interval_seconds: float = 0.2
    # Retention (ocs/spool.py): records older than this that have been exported are deleted.
    # One day leaves room to export a period again after a failed transfer; records never
    # exported are kept whatever their age (nothing else copies them yet: no bill run exists).
    retention_seconds: int = 86_400
    retention_interval_seconds: float = 60.0  # how often the retention job looks
    # Rows deleted per transaction: each batch holds the spool's one connection (and SQLite's
    # write lock) for milliseconds, so the writer's inserts wait at most that long.
    retention_batch_size: int = 2_000


@dataclass(frozen=True, slots=True)
class Settings:
    diameter: DiameterSettings = field(default_factory=DiameterSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    quota: QuotaSettings = field(default_factory=QuotaSettings)
    final_unit: FinalUnitSettings = field(default_factory=FinalUnitSettings)
    tariffs: TariffSettings = field(default_factory=TariffSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    shutdown_timeout_seconds: float = 5.0


_FINAL_UNIT_ACTIONS = ("TERMINATE", "REDIRECT", "RESTRICT_ACCESS")


def _convert(value: object, kind: object, where: str) -> object:
    if kind is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes"):
                return True
            if value.lower() in ("0", "false", "no"):
                return False
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(kind) is tuple:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
    raise ConfigError(f"{where}: {value!r} is not a {getattr(kind, '__name__', kind)}")


def _section(cls: type[object], values: Mapping[str, object], where: str) -> object:
    hints = typing.get_type_hints(cls)
    known = {item.name for item in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    converted = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in values.items()}
    return cls(**converted)


def _environment(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    overrides: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith("OCS_"):
            continue
        section, _, field_name = name[4:].lower().partition("_")
        if field_name:
            overrides.setdefault(section, {})[field_name] = value
    return overrides


def validate(settings: Settings, where: str) -> Settings:
    checks = [
        (0 <= settings.diameter.port < 65_536, "diameter.port"),
        (0 <= settings.http.port < 65_536, "http.port"),
        (settings.diameter.max_in_flight > 0, "diameter.max_in_flight"),
        (settings.diameter.watchdog_seconds >= 6, "diameter.watchdog_seconds (RFC 3539: Tw >= 6 s)"),
        (settings.final_unit.action in _FINAL_UNIT_ACTIONS, "final_unit.action"),
        (settings.final_unit.suspended_action in _FINAL_UNIT_ACTIONS, "final_unit.suspended_action"),
        (0 <= settings.quota.threshold_percent < 100, "quota.threshold_percent"),
        (settings.quota.validity_seconds > 0, "quota.validity_seconds"),
        (settings.spool.batch_size > 0, "spool.batch_size"),
        (settings.spool.retention_seconds > 0, "spool.retention_seconds"),
        (settings.spool.retention_interval_seconds > 0, "spool.retention_interval_seconds"),
        (settings.spool.retention_batch_size > 0, "spool.retention_batch_size"),
        (settings.quota.tombstone_seconds > 0, "quota.tombstone_seconds"),
    ]
    quota = settings.quota
    for unit in ("seconds", "octets", "events"):
        default, maximum = getattr(quota, f"default_{unit}"), getattr(quota, f"max_{unit}")
        checks.append((0 < default <= maximum, f"quota.default_{unit} / max_{unit}"))
    for ok, name in checks:
        if not ok:
            raise ConfigError(f"{where}: {name} is out of range")
    return settings


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then the TOML file (if given or present at the default path), then the environment."""
    file_values: dict[str, object] = {}
    where = "defaults"
    chosen = path if path is not None else (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
    if chosen is not None:
        where = str(chosen)
        try:
            file_values = tomllib.loads(chosen.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"{where}: {error}") from None
    hints = typing.get_type_hints(Settings)
    sections = {name for name, kind in hints.items() if dataclasses.is_dataclass(kind)}
    merged: dict[str, dict[str, object]] = {}
    scalars: dict[str, object] = {}
    for name, value in file_values.items():
        if name in sections and isinstance(value, dict):
            merged[name] = dict(value)
        elif name in hints and name not in sections:
            scalars[name] = _convert(value, hints[name], f"{where}: {name}")
        else:
            raise ConfigError(f"{where}: unknown section or field {name!r}")
    for name, values in _environment(environ if environ is not None else os.environ).items():
        if name not in sections:
            raise ConfigError(f"environment: unknown section in OCS_{name.upper()}_*")
        merged.setdefault(name, {}).update(values)
    built = {name: _section(hints[name], values, f"{where} [{name}]") for name, values in merged.items()}
    return validate(Settings(**built, **scalars), where)  # type: ignore[arg-type]
