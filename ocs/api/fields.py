"""Operator input as the HTTP API receives it, read into typed values or refused.

Theory of operation: errors carry the HTTP status they stand for (``ApiError``: 400 malformed,
404 unknown account, 409 conflict, 422 refused by the money rules, 503 Redis not answering);
``Fields`` reads a JSON object field by field, each error naming the field, and refuses fields it
does not know; the subscriber, bucket and identity readers and the CSV format of the bulk load
build on it. The input rules (money as decimal strings, times, identities) are listed in
``ocs.api.provisioning``'s docstring; every field is checked before anything is written.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar

from balance.directory import Identity, IdentityKind, Subscriber
from balance.keys import is_valid_account_id
from balance.types import (
    MAX_AMOUNT_MICROS,
    MAX_SERVICE_UNITS,
    MICROS_PER_UNIT,
    MONETARY_KINDS,
    Account,
    AccountStatus,
    Bucket,
    BucketKind,
    PaymentType,
)
from balance.validation import invalid_account, invalid_bucket

if TYPE_CHECKING:
    from _csv import Reader  # what csv.reader returns

CUSTOMER_TYPES = ("mobile", "fixed")
SECONDS_PER_DAY = 86_400
_MONEY = re.compile(r"^(-?)([0-9]{1,16})(?:\.([0-9]+))?$")
_DIGITS = re.compile(r"^[0-9]+$")
_MONEY_DECIMALS = 6  # micros
_MAX_TIME_SECONDS = 2**40  # balance.validation's bound on bucket validity
_MAX_TEXT = 256  # names and idempotency ids: they are stored in Redis hashes, keep them short
_IDENTITY_KINDS = {
    "msisdn": IdentityKind.E164,
    "e164": IdentityKind.E164,
    "imsi": IdentityKind.IMSI,
    "sip": IdentityKind.SIP_URI,
    "nai": IdentityKind.NAI,
    "private": IdentityKind.PRIVATE,
}


class ApiError(Exception):
    """A refused request; ``status`` is the HTTP status, ``code`` a stable word for programs."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(ApiError):
    status = 400
    code = "bad_request"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Refused(ApiError):
    status = 422
    code = "refused"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


# -- scalar values --------------------------------------------------------------------------


def money_micros(text: str) -> int:
    """``"12.50"`` -> 12_500_000, exactly; ValueError for anything else (the CLI's argument type)."""
    match = _MONEY.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a decimal amount such as 12.50")
    sign, whole, fraction = match.groups()
    fraction = fraction or ""
    if len(fraction) > _MONEY_DECIMALS:
        raise ValueError(f"{text!r} has more than {_MONEY_DECIMALS} decimals (the smallest amount is 0.000001)")
    micros = int(whole) * MICROS_PER_UNIT + int(fraction.ljust(_MONEY_DECIMALS, "0"))
    if micros > MAX_AMOUNT_MICROS:
        raise ValueError(f"{text!r} is out of range (at most {MAX_AMOUNT_MICROS // MICROS_PER_UNIT})")
    return -micros if sign else micros


def parse_instant(value: object, name: str) -> datetime:
    """Epoch seconds or ISO 8601 as an aware datetime (naive ISO text is UTC)."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and _DIGITS.match(value.strip()):
        seconds = int(value.strip())
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise BadInput(f"{name}: {value!r} is not an ISO 8601 time or epoch seconds") from None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    else:
        raise BadInput(f"{name}: give a time as ISO 8601 text or epoch seconds")
    if not 0 <= seconds < _MAX_TIME_SECONDS:
        raise BadInput(f"{name}: {seconds} is out of range")
    return datetime.fromtimestamp(seconds, UTC)


class Fields:
    """One JSON object (or CSV row) read field by field; ``done()`` refuses fields nobody read."""

    def __init__(self, values: object, where: str = "body") -> None:
        if not isinstance(values, Mapping):
            raise BadInput(f"{where}: expected a JSON object")
        self.values: Mapping[str, object] = values
        self.where = where
        self.read: set[str] = set()

    def _get(self, name: str) -> object:
        self.read.add(name)
        value = self.values.get(name)
        return None if value == "" else value  # an empty CSV cell is an absent field

    def _name(self, name: str) -> str:
        return name if self.where == "body" else f"{self.where}.{name}"

    def has(self, name: str) -> bool:
        return self._get(name) is not None

    def text(self, name: str, default: str | None = None) -> str:
        value = self._get(name)
        if value is None:
            if default is None:
                raise BadInput(f"{self._name(name)} is required")
            return default
        if not isinstance(value, str):
            raise BadInput(f"{self._name(name)}: expected text")
        if len(value) > _MAX_TEXT:
            raise BadInput(f"{self._name(name)}: longer than {_MAX_TEXT} characters")
        return value

    def choice(self, name: str, choices: Sequence[str], default: str | None = None) -> str:
        value = self.text(name, default).strip().lower()
        if value not in choices:
            raise BadInput(f"{self._name(name)}: {value!r} is not one of {', '.join(choices)}")
        return value

    def money(self, name: str, default: int | None = None) -> int:
        """Micros from a decimal string or a whole JSON integer (units of currency)."""
        value = self._get(name)
        if value is None:
            if default is None:
                raise BadInput(f"{self._name(name)} is required")
            return default
        if isinstance(value, (float, Decimal)):
            raise BadInput(f'{self._name(name)}: give money as a decimal string ("12.50"), not a JSON fraction')
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise BadInput(f'{self._name(name)}: give money as a decimal string ("12.50")')
        try:
            return money_micros(value)
        except ValueError as error:
            raise BadInput(f"{self._name(name)}: {error}") from None

    def integer(self, name: str, default: int | None = None, *, minimum: int = 0, maximum: int = 2**63) -> int:
        value = self._get(name)
        if value is None:
            if default is None:
                raise BadInput(f"{self._name(name)} is required")
            return default
        if isinstance(value, str) and re.match(r"^-?[0-9]{1,19}$", value.strip()):
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInput(f"{self._name(name)}: expected a whole number")
        if not minimum <= value <= maximum:
            raise BadInput(f"{self._name(name)}: {value} is not between {minimum} and {maximum}")
        return value

    def optional_integer(self, name: str, *, minimum: int = 0, maximum: int = 2**63) -> int | None:
        return self.integer(name, minimum=minimum, maximum=maximum) if self.has(name) else None

    def epoch(self, name: str, default: int = 0) -> int:
        value = self._get(name)
        if value is None:
            return default
        seconds = int(parse_instant(value, self._name(name)).timestamp())
        if not 0 <= seconds < _MAX_TIME_SECONDS:
            raise BadInput(f"{self._name(name)}: {value!r} is out of range")
        return seconds

    def instant(self, name: str, default: datetime) -> datetime:
        value = self._get(name)
        return default if value is None else parse_instant(value, self._name(name))

    def items(self, name: str) -> list[object]:
        value = self._get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise BadInput(f"{self._name(name)}: expected a list")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.values) - self.read)
        if unknown:
            raise BadInput(f"{self.where}: unknown field(s) {', '.join(unknown)}")


# -- composite values -------------------------------------------------------------------------


def account_id_of(text: str) -> str:
    if not is_valid_account_id(text):
        raise BadInput(f"account id {text!r}: 1 to 64 letters, digits, '.', '_', ':' or '-', starting alphanumeric")
    return text


def parse_identity(kind_text: str, value: str, where: str) -> Identity:
    kind = _IDENTITY_KINDS.get(kind_text.strip().lower())
    if kind is None:
        raise BadInput(f"{where}: identity kind {kind_text!r} is not one of {', '.join(_IDENTITY_KINDS)}")
    value = value.strip()
    if kind is IdentityKind.E164:
        value = value.removeprefix("+")
        if not re.match(r"^[0-9]{1,15}$", value):  # ITU-T E.164: at most 15 digits
            raise BadInput(f"{where}: MSISDN {value!r} must be 1 to 15 digits (E.164)")
    elif kind is IdentityKind.IMSI:
        if not re.match(r"^[0-9]{5,15}$", value):
            raise BadInput(f"{where}: IMSI {value!r} must be 5 to 15 digits (3GPP TS 23.003)")
    elif kind is IdentityKind.SIP_URI and not value.lower().startswith(("sip:", "sips:")):
        raise BadInput(f"{where}: SIP URI {value!r} must start with sip: or sips:")
    if not value or len(value) > _MAX_TEXT or any(character.isspace() for character in value):
        raise BadInput(f"{where}: identity {value!r} must be non-empty text without spaces")
    return Identity(kind, value)


def parse_bucket(values: object, where: str, bucket_id: int = 1) -> Bucket:
    """A bucket: money kinds take a decimal ``amount``; allowances whole units and ``services``."""
    fields = Fields(values, where)
    kind = BucketKind(fields.choice("kind", [kind.value for kind in BucketKind]))
    if kind in MONETARY_KINDS:
        amount = fields.money("amount")
        if fields.has("services"):
            raise BadInput(f"{where}.services: only unit allowances are scoped to services")
    else:
        amount = fields.integer("amount", maximum=MAX_SERVICE_UNITS)
    services = fields.items("services")
    if not all(isinstance(service, str) for service in services):
        raise BadInput(f"{where}.services: expected a list of service names")
    bucket = Bucket(
        bucket_id=bucket_id,
        kind=kind,
        amount=amount,
        services=tuple(str(service) for service in services),
        valid_from=fields.epoch("valid_from"),
        valid_until=fields.epoch("valid_until"),
        priority=fields.integer("priority", 0, minimum=-(2**31), maximum=2**31 - 1),
    )
    fields.done()
    problem = invalid_bucket(bucket)
    if problem:
        raise BadInput(f"{where}: {problem}")
    if bucket.valid_until and bucket.valid_until <= bucket.valid_from:
        raise BadInput(f"{where}: valid_until must be after valid_from")
    return bucket


@dataclass(frozen=True, slots=True)
class NewSubscriber:
    account: Account
    profile: Subscriber


def parse_new_subscriber(values: object, *, default_plan: str, where: str = "body") -> NewSubscriber:
    fields = Fields(values, where)
    account_id = account_id_of(fields.text("account_id"))
    payment_type = PaymentType(fields.choice("payment_type", [kind.value for kind in PaymentType], "prepaid"))
    buckets = tuple(
        parse_bucket(bucket, f"{where}.buckets[{index}]", bucket_id=index + 1)
        for index, bucket in enumerate(fields.items("buckets"))
    )
    identities: list[Identity] = []
    for index, item in enumerate(fields.items("identities")):
        identity_fields = Fields(item, f"{where}.identities[{index}]")
        kind, value = identity_fields.text("kind"), identity_fields.text("value")
        identity_fields.done()
        identities.append(parse_identity(kind, value, f"{where}.identities[{index}]"))
    if len(set(identities)) != len(identities):
        raise BadInput(f"{where}.identities: listed twice")
    parent_id = fields.text("parent_id", "")
    account = Account(
        account_id=account_id,
        currency=fields.text("currency", "").upper(),  # "" until the plan's currency is known
        payment_type=payment_type,
        status=AccountStatus(fields.choice("status", [status.value for status in AccountStatus], "active")),
        credit_limit_micros=fields.money("credit_limit", 0),
        parent_id=account_id_of(parent_id) if parent_id else "",
        child_cap_micros=fields.money("child_cap", 0),
        buckets=buckets,
    )
    profile = Subscriber(
        account_id=account_id,
        plan=fields.text("plan", default_plan),
        customer_type=fields.choice("customer_type", CUSTOMER_TYPES, "mobile"),
        name=fields.text("name", ""),
        identities=tuple(identities),
    )
    fields.done()
    if account.child_cap_micros and not account.parent_id:
        raise BadInput(f"{where}.child_cap: only a child account (with parent_id) has a cap")
    return NewSubscriber(account, profile)


def account_problem(account: Account) -> str | None:
    """The engine's own input checks (``balance.validation``), as text for a 400."""
    return invalid_account(account)


# -- CSV ------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "account_id",
    "payment_type",
    "customer_type",
    "plan",
    "name",
    "currency",
    "credit_limit",
    "parent_id",
    "child_cap",
    "balance",
    "bonus",
    "msisdn",
    "imsi",
    "sip",
    "status",
)
_CSV_IDENTITY_COLUMNS = ("msisdn", "imsi", "sip")  # several in one cell: separated by spaces


@dataclass(frozen=True, slots=True)
class CsvRow:
    line: int  # where the record starts in the file, counting the header as line 1
    account_id: str  # as written, for the report (may be invalid)
    values: dict[str, object]  # shaped like the JSON body of a create
    error: str | None = None  # the record could not even be split into the header's columns


def read_csv(text: str) -> Iterator[CsvRow]:
    """The rows of a subscriber file, each shaped like a JSON create body, as they are read: the
    header is checked at once (BadInput for the file), the rows one by one as they are taken."""
    reader = csv.reader(io.StringIO(text), strict=True)  # a stray quote is an error, not data
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise BadInput(f"line 1: {error}") from None
    if not header or not any(header):
        raise BadInput("the file is empty: a header line naming the columns comes first")
    columns = [name.strip().lower() for name in header]
    unknown = sorted(set(columns) - set(CSV_COLUMNS))
    if unknown:
        raise BadInput(f"line 1: unknown column(s) {', '.join(unknown)}; known: {', '.join(CSV_COLUMNS)}")
    if "account_id" not in columns or len(set(columns)) != len(columns):
        raise BadInput("line 1: the header needs an account_id column and no column twice")
    return _csv_rows(reader, columns)


def _csv_rows(reader: Reader, columns: list[str]) -> Iterator[CsvRow]:
    line = reader.line_num
    while True:
        start = line + 1
        try:
            cells = next(reader, None)
        except csv.Error as error:  # e.g. a quote left open: the rest of the file is unreadable
            yield CsvRow(start, "", {}, f"malformed CSV: {error}; the rest of the file was not read")
            return
        if cells is None:
            return
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(columns):
            yield CsvRow(start, cells[0].strip(), {}, f"{len(cells)} fields, the header has {len(columns)}")
            continue
        yield _csv_row(start, dict(zip(columns, (cell.strip() for cell in cells), strict=True)))


def _csv_row(line: int, cells: dict[str, str]) -> CsvRow:
    special = (*_CSV_IDENTITY_COLUMNS, "balance", "bonus")
    values: dict[str, object] = {name: value for name, value in cells.items() if value and name not in special}
    buckets = [
        {"kind": kind, "amount": cells.get(column, "")} for column, kind in (("balance", "main"), ("bonus", "bonus"))
    ]
    values["buckets"] = [bucket for bucket in buckets if bucket["amount"]]
    values["identities"] = [
        {"kind": column, "value": value} for column in _CSV_IDENTITY_COLUMNS for value in cells.get(column, "").split()
    ]
    return CsvRow(line, cells.get("account_id", ""), values)
