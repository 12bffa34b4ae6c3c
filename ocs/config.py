"""The server's configuration: one typed, frozen object built once and passed down.

Theory of operation: defaults live in the dataclasses below; a TOML file (``config/ocs.toml``)
overrides them section by section, and environment variables override the file. Every setting has
one variable: ``OCS_<SECTION>_<FIELD>`` (``OCS_REDIS_URL``, ``OCS_FINAL_UNIT_ACTION``), or
``OCS_<FIELD>`` for a top-level field (``OCS_SHUTDOWN_TIMEOUT_SECONDS``); the names are built from
the dataclasses and checked to be unique when this module loads, so a section whose name holds an
``_`` cannot be misread. Unknown sections or fields, and values of the wrong type or out of range,
are refused with a ``ConfigError`` that names the file and field, or the variable. A variable that
starts with a section's name but names none of its fields is refused as a mistyped setting; other
``OCS_`` variables are not settings and are ignored (``unused_environment`` lists them).

Relative data paths (this file, the tariff file, the credit classes file, the catalog) are looked up in the
current directory, then in the directory the packages were installed from (``find_data_file``), so
the shipped defaults are found when ``ocs`` runs from anywhere.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import ip_network
from pathlib import Path

from balance.keys import DEFAULT_TOMBSTONE_SECONDS

DEFAULT_CONFIG_PATH = Path("config/ocs.toml")
INSTALLATION_DIRECTORY = Path(__file__).resolve().parents[1]  # holds config/ in a checkout


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
    # Peer admission by address: IPs or CIDR networks a peer may connect from (empty: any); a
    # connection from elsewhere is closed at accept. peer_addresses binds an Origin-Host to its
    # own networks, "host=network" (a CER claiming it from elsewhere: 3010 DIAMETER_UNKNOWN_PEER).
    allowed_addresses: tuple[str, ...] = ()
    peer_addresses: tuple[str, ...] = ()
    # TLS/TCP (RFC 6733 section 13). On when tls_certificate is set: a second listener on
    # tls_port, mutual authentication against tls_ca_file, and the inband upgrade offered on the
    # clear port. The port is 5868: RFC 6733 section 11.4 and verified errata 3997 (the 5658 of
    # section 2.1 is the typo the erratum corrects).
    tls_port: int = 5868
    tls_certificate: str = ""  # PEM: our certificate (chain)
    tls_private_key: str = ""  # PEM: its key; empty: the key is in tls_certificate
    tls_ca_file: str = ""  # PEM: the CAs peers' certificates must chain to
    # Every peer must be protected by TLS: on the clear port only a CER offering
    # Inband-Security-Id TLS is accepted, others get 5017 DIAMETER_NO_COMMON_SECURITY.
    require_tls: bool = False
    # Listen on the clear port at all. RFC 6733 section 2.1: a node "MUST always be prepared to
    # receive connections on port 3868" (RFC 3588 peers upgrade there), so true by default, also
    # with require_tls; false when every peer connects with TLS at once.
    clear_port_enabled: bool = True


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080  # provisioning API, /metrics, /health
    enabled: bool = True
    # HTTPS on the same port when a certificate is set (PEM; the key may be in the same file).
    tls_certificate: str = ""
    tls_private_key: str = ""
    # /metrics without a token on a second listener for the Prometheus scraper (0: none; on the
    # main port /metrics needs a token like any call). metrics_host empty: the same host as the API.
    metrics_port: int = 0
    metrics_host: str = ""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Who may do what on the API (ocs/api/access.py); tokens themselves are in the database."""

    # The most a care agent's token may adjust a balance by in one adjustment, either way, in
    # micros of the account's currency; a token may carry its own lower limit. Larger amounts are
    # an admin's, so that a mistake or a misused care account cannot move much money at once.
    care_adjust_limit_micros: int = 50_000_000


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """The business database (ocs/db): SQLAlchemy URL with an asyncio driver, for example
    ``postgresql+asyncpg://ocs@db.example/ocs``. Empty: the SQLite file ``ocs.sqlite3`` in the
    directory of the usage spool (``[spool] path``: ``data/`` by default)."""

    url: str = ""


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str = ""  # empty: start the embedded redis-server in data_directory
    cluster: bool = False
    pipelined: bool = True  # charges on the pipelined client (single Redis only)
    functions: bool = True  # the function library (FCALL) where Redis has it; false: EVAL scripts
    data_directory: str = "data/redis"


# The shortest quota.tombstone_seconds allowed. A call the store settles (balance/store.py: its
# reply lost, it is sent again once its deadline has passed, up to the reply timeout, 5 s, plus
# DEADLINE_MARGIN_SECONDS and SETTLE_TIMEOUT_SECONDS later) and a client's retransmission after
# its Tx timer (RFC 4006 section 13, default 10 s) must still find a closed session's tombstone:
# an EVENT that applied and whose tombstone is gone is evaluated anew, past its deadline answered
# 3004 although it was charged, or charged a second time. 60 s covers those ~16 s with room for a
# slow client; the default (balance/keys.py DEFAULT_TOMBSTONE_SECONDS) is ten times that.
MIN_TOMBSTONE_SECONDS = 60
# More workers than this is a typo, not a machine: each holds Redis connections and a database pool.
MAX_WORKERS = 256


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
class RefundSettings:
    """Limits on REFUND_ACCOUNT (RFC 4006 section 6.3/6.4), in micros of the account's currency;
    0: no limit. A refund from the network gives back what a service failed to deliver, cents
    rather than tens of units; larger amounts are an operator's adjustment (the API), recorded
    with who and why. A refund over a limit is refused and credits nothing (ocs/charging/queries.py)."""

    max_request_micros: int = 20_000_000  # the most one refund may credit
    # The most the refunds of one account may credit in one calendar day of its plan's time zone.
    max_day_micros: int = 50_000_000


@dataclass(frozen=True, slots=True)
class TariffSettings:
    path: str = "config/tariffs.toml"
    default_plan: str = "mobile_prepaid"


@dataclass(frozen=True, slots=True)
class CustomersSettings:
    """The customer side's rule files (ocs/customers/): loaded once at startup, like the tariffs."""

    credit_classes_path: str = "config/credit_classes.toml"  # credit check rules (ocs/customers/credit.py)
    # A prepaid line with no usage for this long counts as inactive in the customer base report
    # (ocs/customers/reports.py): about a quarter, the window operators commonly use for
    # prepaid inactivity churn.
    inactivity_days: int = 90


@dataclass(frozen=True, slots=True)
class RatingSettings:
    """How far rating trusts the client's clock (``ocs.ccr.request_time``)."""

    # Event-Timestamp (RFC 6733 section 8.21) chooses the time band (ocs.ccr.request_time). Network
    # elements keep NTP time, within a second of ours; five minutes absorbs a bad day of drift
    # yet cannot move a request into another band by more than that. A stamp further off is
    # replaced by our clock. UPDATE / TERMINATION may also lag by Tcc (quota.tcc_seconds), the
    # longest a session can live without news: a late or retransmitted CCR-T is legitimate.
    event_timestamp_skew_seconds: int = 300


@dataclass(frozen=True, slots=True)
class SpoolSettings:
    # The usage records live in the business database (ocs/db/usage.py). This path names the data
    # directory (its directory holds ocs.sqlite3 when [database] url is empty: ocs/db/engine.py)
    # and the spool file an older server wrote: if it exists at startup, its records are copied
    # into the business database and it is renamed <name>.migrated (ocs/billing/spool_upgrade.py).
    path: str = "data/spool.sqlite3"
    batch_size: int = 500
    interval_seconds: float = 0.2
    # Retention (ocs/billing/spool.py): records older than this that have been exported (and, if
    # postpaid, billed) are deleted. One day leaves room to export a period again after a failed
    # transfer; records never exported, and postpaid ones not yet billed, are kept whatever their age.
    retention_seconds: int = 86_400
    retention_interval_seconds: float = 60.0  # how often the retention job looks
    # Rows deleted per transaction: each batch holds SQLite's write lock for milliseconds, so the
    # writer's inserts wait at most that long.
    retention_batch_size: int = 2_000


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    """What a status change does beyond the status (ocs/api/provisioning.py ``set_status``)."""

    # A terminated line's identities (MSISDN, IMSI, SIP URI) go to no other account for this
    # long: callers and services that still have the old number reach nobody instead of a
    # stranger. Operators commonly hold a number back for about three months before reuse;
    # 0 frees it at once. During it the identity answers 5030 on the network.
    identity_quarantine_days: int = 90


@dataclass(frozen=True, slots=True)
class BillingSettings:
    """The billing side's rule files (ocs/billing/): loaded once, like the tariffs."""

    catalog: str = "config/catalog.toml"  # products, offers, discounts, taxes (ocs/billing/catalog_load.py)
    run_hour: int = 2  # the daily bill run's hour, UTC (ocs/billing/bill_runs.py): after midnight's cycle close
    page_size: int = 1_000  # billing accounts per bill run transaction (at most issue_many's 5,000)
    # The issuer printed on every bill document (ocs/billing/documents.py): name, postal address
    # (one item per line), tax identification number, and how to pay.
    issuer_name: str = "Open OCS Telecom"
    issuer_address: tuple[str, ...] = ()
    issuer_tax_id: str = ""
    payment_instructions: str = "Pay by bank transfer, quoting the bill number as the payment reference."
    # How often the document consumer looks for issued invoices to render (ocs/billing/delivery.py).
    documents_interval_seconds: float = 5.0
    dunning: str = "config/dunning.toml"  # dunning ladders per credit class (ocs/billing/dunning_rules.py)


@dataclass(frozen=True, slots=True)
class LoyaltySettings:
    """The loyalty engine (ocs/loyalty/engine.py): programmes evaluated on every usage record the
    spool stores and on every payment, bonus credited into the balance engine."""

    enabled: bool = False  # off until an operator has written the programmes
    rules: str = "config/loyalty.toml"  # the programmes and their rules (ocs/loyalty/rules_load.py)
    # How often applications left pending (a crash, Redis away) are credited again; a batch's
    # credits are made at once after its commit, so this only bounds the wait after a failure.
    credit_interval_seconds: float = 5.0
    # The hour of the day (UTC) from which the day's birthdays and anniversaries are fed (ocs/loyalty/daily_feed.py).
    occasions_hour: int = 8


@dataclass(frozen=True, slots=True)
class ScoringSettings:
    """Customer scores and segments (ocs/loyalty/scoring.py): loaded once, like the tariffs."""

    rules: str = "config/scoring.toml"  # factors, weights, bands, segments (ocs/loyalty/scoring_load.py)
    # The daily scoring of every customer: after the bill run (billing.run_hour), whose invoices
    # are part of the spend and the payment behaviour it reads.
    run_hour: int = 3


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The processes of ``ocs serve`` (ocs/supervisor.py)."""

    # Worker processes sharing the ports: 0, one per core; 1, one process and no supervisor.
    workers: int = 0


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    diameter: DiameterSettings = field(default_factory=DiameterSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    quota: QuotaSettings = field(default_factory=QuotaSettings)
    final_unit: FinalUnitSettings = field(default_factory=FinalUnitSettings)
    refund: RefundSettings = field(default_factory=RefundSettings)
    tariffs: TariffSettings = field(default_factory=TariffSettings)
    rating: RatingSettings = field(default_factory=RatingSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    customers: CustomersSettings = field(default_factory=CustomersSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    billing: BillingSettings = field(default_factory=BillingSettings)
    loyalty: LoyaltySettings = field(default_factory=LoyaltySettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
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


def _section(cls: type[object], values: Mapping[str, object], origins: Mapping[str, str], section: str) -> object:
    hints = typing.get_type_hints(cls)
    known = {item.name for item in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{origins[section]} [{section}]: unknown field(s) {', '.join(sorted(unknown))}")
    converted = {
        name: _convert(value, hints[name], _place(origins, f"{section}.{name}")) for name, value in values.items()
    }
    return cls(**converted)


def _place(origins: Mapping[str, str], dotted: str) -> str:
    """Where a setting's value came from, for an error: the variable, or the file and the field."""
    origin = origins.get(dotted) or origins.get(dotted.partition(".")[0]) or origins.get("", "defaults")
    return f"{origin} ({dotted})" if origin.startswith("environment") else f"{origin}: {dotted}"


def _build_environment_names() -> dict[str, tuple[str, str]]:
    """``OCS_<SECTION>_<FIELD>`` (``OCS_<FIELD>`` for a top-level field) -> (section, field); section
    "" for a top-level field. Refuses to build (a programming error) if two settings would share a
    name: section names may contain ``_`` (final_unit), so the mapping is only unambiguous as long
    as no ``<section>_<field>`` spells another one; a test holds every setting to its own name."""
    names: dict[str, tuple[str, str]] = {}
    for top in dataclasses.fields(Settings):
        kind = typing.get_type_hints(Settings)[top.name]
        pairs = (
            [(top.name, item.name) for item in dataclasses.fields(kind)]
            if dataclasses.is_dataclass(kind)
            else [("", top.name)]
        )
        for section, name in pairs:
            variable = f"OCS_{section}_{name}".upper() if section else f"OCS_{name}".upper()
            if variable in names:
                raise RuntimeError(f"{variable} would name two settings: {names[variable]} and {(section, name)}")
            names[variable] = (section, name)
    return names


def environment_names() -> dict[str, tuple[str, str]]:
    """Every setting's environment variable, mapped to its (section, field); section "" when top-level."""
    return dict(_ENVIRONMENT_NAMES)


def _section_names() -> list[str]:
    return [name for name, kind in typing.get_type_hints(Settings).items() if dataclasses.is_dataclass(kind)]


def _environment(environ: Mapping[str, str]) -> list[tuple[str, str, str, str]]:
    """(variable, section, field, value) of every ``OCS_`` variable that names a setting.

    A variable that starts like a section but names no field of it (``OCS_REDIS_ULR``) is
    refused: it is a setting mistyped, and running on the default instead (an embedded Redis
    in place of the production one) would be worse than not starting. Other ``OCS_`` variables
    are left alone (``unused_environment`` lists them, the CLI warns), because the prefix is
    shared with build and test switches (``OCS_MYPYC``, ``OCS_FUZZ_SEED``).
    """
    sections = sorted({section for section, _ in _ENVIRONMENT_NAMES.values() if section}, key=len, reverse=True)
    found: list[tuple[str, str, str, str]] = []
    for variable, value in environ.items():
        named = _ENVIRONMENT_NAMES.get(variable.upper()) if variable.startswith("OCS_") else None
        if named is not None:
            found.append((variable, *named, value))
            continue
        for section in sections:  # the longest section first: final_unit before a section "final"
            if variable.upper().startswith(f"OCS_{section.upper()}_"):
                fields = ", ".join(name.upper() for owner, name in _ENVIRONMENT_NAMES.values() if owner == section)
                raise ConfigError(f"environment {variable}: [{section}] has no such field (known: {fields})")
    return found


def unused_environment(environ: Mapping[str, str]) -> list[str]:
    """``OCS_`` variables that name no setting (and no section): ignored by ``load_settings``."""
    sections = {section.upper() for section, _ in _ENVIRONMENT_NAMES.values() if section}
    return sorted(
        variable
        for variable in environ
        if variable.startswith("OCS_")
        and variable.upper() not in _ENVIRONMENT_NAMES
        and not any(variable.upper().startswith(f"OCS_{section}_") for section in sections)
    )


def _networks(values: tuple[str, ...], where: str) -> None:
    for value in values:
        try:
            ip_network(value, strict=False)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not an IP address or network") from None


def _validate_diameter(diameter: DiameterSettings, origins: Mapping[str, str]) -> None:
    _networks(diameter.allowed_addresses, _place(origins, "diameter.allowed_addresses"))
    for entry in diameter.peer_addresses:
        where = _place(origins, "diameter.peer_addresses")
        host, separator, network = entry.partition("=")
        if not separator or not host.strip():
            raise ConfigError(f"{where}: {entry!r} is not host=network")
        _networks((network.strip(),), where)
    tls = bool(diameter.tls_certificate)
    if tls and not diameter.tls_ca_file:
        # RFC 6733 section 13.1: the TLS server MUST request the peer's certificate.
        raise ConfigError(f"{_place(origins, 'diameter.tls_ca_file')} is required with diameter.tls_certificate")
    if diameter.require_tls and not tls:
        raise ConfigError(f"{_place(origins, 'diameter.require_tls')} needs diameter.tls_certificate")
    if not diameter.clear_port_enabled and not tls:
        raise ConfigError(f"{_place(origins, 'diameter.clear_port_enabled')} = false needs diameter.tls_certificate")
    for name in ("tls_certificate", "tls_private_key", "tls_ca_file"):
        path = getattr(diameter, name)
        if path and not Path(path).is_file():
            raise ConfigError(f"{_place(origins, f'diameter.{name}')}: no file {path!r}")


def _validate_http(http: HttpSettings, origins: Mapping[str, str]) -> None:
    if http.tls_private_key and not http.tls_certificate:
        raise ConfigError(f"{_place(origins, 'http.tls_private_key')} needs http.tls_certificate")
    for name in ("tls_certificate", "tls_private_key"):
        path = getattr(http, name)
        if path and not Path(path).is_file():
            raise ConfigError(f"{_place(origins, f'http.{name}')}: no file {path!r}")


def validate(settings: Settings, origins: Mapping[str, str]) -> Settings:
    """Range checks over the built settings; an error names where the value came from."""
    _validate_diameter(settings.diameter, origins)
    _validate_http(settings.http, origins)
    checks = [
        (0 <= settings.server.workers <= MAX_WORKERS, "server.workers", f" (0 to {MAX_WORKERS})"),
        (0 <= settings.diameter.port < 65_536, "diameter.port", ""),
        (0 <= settings.http.port < 65_536, "http.port", ""),
        (0 <= settings.http.metrics_port < 65_536, "http.metrics_port", ""),
        (settings.auth.care_adjust_limit_micros >= 0, "auth.care_adjust_limit_micros", ""),
        (settings.diameter.max_in_flight > 0, "diameter.max_in_flight", ""),
        (settings.diameter.watchdog_seconds >= 6, "diameter.watchdog_seconds", " (RFC 3539: Tw >= 6 s)"),
        (settings.final_unit.action in _FINAL_UNIT_ACTIONS, "final_unit.action", ""),
        (settings.final_unit.suspended_action in _FINAL_UNIT_ACTIONS, "final_unit.suspended_action", ""),
        (0 <= settings.quota.threshold_percent < 100, "quota.threshold_percent", ""),
        (settings.quota.validity_seconds > 0, "quota.validity_seconds", ""),
        (settings.spool.batch_size > 0, "spool.batch_size", ""),
        (settings.shutdown_timeout_seconds >= 0, "shutdown_timeout_seconds", ""),
        (0 <= settings.diameter.tls_port < 65_536, "diameter.tls_port", ""),
        (settings.rating.event_timestamp_skew_seconds >= 0, "rating.event_timestamp_skew_seconds", ""),
        (settings.spool.retention_seconds > 0, "spool.retention_seconds", ""),
        (settings.spool.retention_interval_seconds > 0, "spool.retention_interval_seconds", ""),
        (settings.spool.retention_batch_size > 0, "spool.retention_batch_size", ""),
        (
            settings.quota.tombstone_seconds >= MIN_TOMBSTONE_SECONDS,
            "quota.tombstone_seconds",
            f" (at least {MIN_TOMBSTONE_SECONDS} s: the settle and retransmission window)",
        ),
        (settings.refund.max_request_micros >= 0, "refund.max_request_micros", ""),
        (settings.refund.max_day_micros >= 0, "refund.max_day_micros", ""),
        (0 <= settings.lifecycle.identity_quarantine_days <= 36_600, "lifecycle.identity_quarantine_days", ""),
        (0 < settings.customers.inactivity_days <= 36_600, "customers.inactivity_days", ""),
        (0 <= settings.billing.run_hour <= 23, "billing.run_hour", " (an hour of the day, UTC: 0 to 23)"),
        (0 <= settings.scoring.run_hour <= 23, "scoring.run_hour", " (an hour of the day, UTC: 0 to 23)"),
        (1 <= settings.billing.page_size <= 5_000, "billing.page_size", " (1 to 5,000)"),
        (settings.billing.documents_interval_seconds > 0, "billing.documents_interval_seconds", ""),
        (bool(settings.billing.issuer_name.strip()), "billing.issuer_name", " (empty)"),
        (settings.loyalty.credit_interval_seconds > 0, "loyalty.credit_interval_seconds", ""),
        (0 <= settings.loyalty.occasions_hour <= 23, "loyalty.occasions_hour", " (an hour of the day, UTC: 0 to 23)"),
    ]
    quota = settings.quota
    for unit in ("seconds", "octets", "events"):
        default, maximum = getattr(quota, f"default_{unit}"), getattr(quota, f"max_{unit}")
        checks.append((0 < default <= maximum, f"quota.default_{unit}", f" / max_{unit}"))
    for ok, name, note in checks:
        if not ok:
            raise ConfigError(f"{_place(origins, name)}{note} is out of range")
    return settings


def find_data_file(path: str | Path) -> Path:
    """A relative data path (configuration, tariffs, scenarios) as found: in the current directory
    first, else beside the installed packages (the checkout an editable install or ``scripts/run.sh``
    runs from, where ``config/`` lives), so ``ocs`` started from any directory finds the shipped
    defaults. An absolute path, or one found nowhere, is returned as given (the caller says it is
    missing, naming it)."""
    given = Path(path)
    if given.is_absolute() or given.exists():
        return given
    beside = INSTALLATION_DIRECTORY / given
    return beside if beside.exists() else given


def _read_file(path: Path | None) -> tuple[dict[str, object], str]:
    chosen = path if path is not None else find_data_file(DEFAULT_CONFIG_PATH)
    if path is None and not chosen.exists():
        return {}, "defaults"
    try:
        return tomllib.loads(chosen.read_text(encoding="utf-8")), str(chosen)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{chosen}: {error}") from None


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then the TOML file (if given, else ``config/ocs.toml`` where ``find_data_file``
    finds it), then the environment; a relative tariff, credit classes, catalog, dunning, scoring or loyalty path is
    resolved the same way."""
    file_values, where = _read_file(path)
    hints = typing.get_type_hints(Settings)
    sections = set(_section_names())
    merged: dict[str, dict[str, object]] = {}
    scalars: dict[str, object] = {}
    origins: dict[str, str] = {"": where}
    for name, value in file_values.items():
        if name in sections and isinstance(value, dict):
            merged[name] = dict(value)
            origins[name] = where
        elif name in hints and name not in sections:
            scalars[name] = _convert(value, hints[name], f"{where}: {name}")
        else:
            raise ConfigError(f"{where}: unknown section or field {name!r}")
    for variable, section, name, value in _environment(environ if environ is not None else os.environ):
        if section:
            merged.setdefault(section, {})[name] = value
            origins.setdefault(section, where)
            origins[f"{section}.{name}"] = f"environment {variable}"
        else:
            scalars[name] = _convert(value, hints[name], f"environment {variable}")
            origins[name] = f"environment {variable}"
    built = {name: _section(hints[name], values, origins, name) for name, values in merged.items()}
    settings = validate(Settings(**built, **scalars), origins)  # type: ignore[arg-type]
    tariffs = find_data_file(settings.tariffs.path)
    if str(tariffs) != settings.tariffs.path:
        settings = dataclasses.replace(settings, tariffs=dataclasses.replace(settings.tariffs, path=str(tariffs)))
    credit_classes = str(find_data_file(settings.customers.credit_classes_path))
    if credit_classes != settings.customers.credit_classes_path:
        customers = dataclasses.replace(settings.customers, credit_classes_path=credit_classes)
        settings = dataclasses.replace(settings, customers=customers)
    catalog = str(find_data_file(settings.billing.catalog))
    if catalog != settings.billing.catalog:
        settings = dataclasses.replace(settings, billing=dataclasses.replace(settings.billing, catalog=catalog))
    dunning = str(find_data_file(settings.billing.dunning))
    if dunning != settings.billing.dunning:
        settings = dataclasses.replace(settings, billing=dataclasses.replace(settings.billing, dunning=dunning))
    loyalty = str(find_data_file(settings.loyalty.rules))
    if loyalty != settings.loyalty.rules:
        settings = dataclasses.replace(settings, loyalty=dataclasses.replace(settings.loyalty, rules=loyalty))
    scoring = str(find_data_file(settings.scoring.rules))
    if scoring != settings.scoring.rules:
        settings = dataclasses.replace(settings, scoring=dataclasses.replace(settings.scoring, rules=scoring))
    return settings


_ENVIRONMENT_NAMES = _build_environment_names()
