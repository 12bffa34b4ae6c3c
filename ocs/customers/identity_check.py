"""Identity validation at activation: refuse the obvious frauds before any credit is extended.

Theory of operation: pure functions over values; the caller reads the database and passes what it
found (the customers already holding the same document, as ``Holder`` values) and today's date.
A check never stops at the first problem: it returns an ``IdentityCheck`` listing every refusal,
each naming the application field and a reason, so a form can mark all of them at once; an
empty list means accepted.

What is refused:

- a malformed identity document. Where a standard defines a check digit it is verified: the ICAO
  Doc 9303 Part 3 section 4.9 digit (weights 7-3-1) on a German identity card number given with
  its check digit, and every check digit of a passport's machine readable zone when one is given
  (ICAO Doc 9303 Part 4 section 4.2.2, line 2 of a TD3 document), whose number and date of birth
  must also agree with the application. Other documents are held to a documented format per
  issuing country: ``DE`` (the formats below) and a generic fallback for every other country.
- a direct-debit IBAN that is malformed or fails the ISO 13616 check (ISO/IEC 7064 MOD 97-10).
- a date of birth that makes the person under 18 (no contract without a guardian) or over 120
  (no one that old is alive to sign: a typo or an invention), or one in the future.
- a document already held by a barred or terminated customer who still owes money: the same
  person coming back under a new customer record to leave the old debt behind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

ADULT_AGE_YEARS = 18  # legal age to sign a contract (DE: BGB section 2)
OLDEST_PLAUSIBLE_AGE_YEARS = 120  # above any verified human age: a typo or an invented date
# A customer in one of these states holding the same document, with debt, refuses the application.
REFUSING_STATUSES = frozenset({"barred", "terminated"})

# ICAO Doc 9303 Part 3 section 4.9: weights repeat 7, 3, 1; '<' (filler) counts 0, A-Z 10-35.
_CHECK_WEIGHTS = (7, 3, 1)
_MRZ_TD3_LINE_LENGTH = 44  # ICAO Doc 9303 Part 4 section 4.2.2
# German identity card (Personalausweis, since November 2010): 9 characters of digits and the
# consonants below (no vowels, nothing readable as a digit); the MRZ adds one check digit.
_DE_CARD_NUMBER = re.compile(r"^[CFGHJKLMNPRTVWXYZ0-9]{9}([0-9])?$")
# German passport (since 2017): the same 9-character alphabet as the card.
_DE_PASSPORT_NUMBER = re.compile(r"^[CFGHJKLMNPRTVWXYZ0-9]{9}$")
# German commercial and other registers (Handelsregister A/B, Genossenschafts-, Gesellschafts-,
# Partnerschafts-, Vereinsregister): "HRB 12345", Berlin's courts add a letter ("HRB 12345 B").
_DE_REGISTRATION = re.compile(r"^(HRA|HRB|GNR|GSR|PR|VR) ?[0-9]{1,6}( ?[A-Z]{1,2})?$")
# Generic fallback for countries without their own rule: plausible lengths and characters only.
_GENERIC_NATIONAL_ID = re.compile(r"^[A-Z0-9]{4,20}$")
_GENERIC_PASSPORT = re.compile(r"^[A-Z0-9]{6,9}$")  # the 9-character MRZ document number field
_GENERIC_REGISTRATION = re.compile(r"^[A-Z0-9][A-Z0-9 ./-]{2,29}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")  # ISO 3166-1 alpha-2

# ISO 13616-1: two letters, two check digits, at most 30 alphanumeric characters of BBAN.
_IBAN = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
# IBAN lengths of the countries around us (SWIFT IBAN Registry); other countries: the shape only.
IBAN_LENGTHS = {"AT": 20, "BE": 16, "CH": 21, "DE": 22, "DK": 18, "ES": 24, "FR": 27, "GB": 22, "IT": 27, "NL": 18}


class DocumentKind(StrEnum):
    NATIONAL_ID = "national_id"
    PASSPORT = "passport"
    COMPANY_REGISTRATION = "company_registration"


class IdentityReason(StrEnum):
    """Why an application field was refused."""

    MALFORMED = "malformed"  # not in the format of its kind and country
    CHECK_DIGIT = "check_digit_wrong"  # the format fits, a check digit does not: a typo or a forgery
    MISMATCH = "mismatch"  # the machine readable zone says otherwise than the application
    UNDER_AGE = "under_age"
    IMPLAUSIBLE_AGE = "implausible_age"
    HELD_BY_DEBTOR = "held_by_debtor"  # a barred or terminated customer with debt holds this document


@dataclass(frozen=True, slots=True)
class IdentityDocument:
    """A person's identity card or passport, or an organization's registration."""

    kind: DocumentKind
    issuing_country: str  # ISO 3166-1 alpha-2
    number: str
    mrz: str = ""  # passports: line 2 of the machine readable zone (TD3), if it was read


@dataclass(frozen=True, slots=True)
class Holder:
    """A customer already holding the same document, as the caller found it."""

    status: str  # the customer's lifecycle state ("active", "barred", "terminated", ...)
    debt_micros: int  # what it still owes, in micros of its account currency


@dataclass(frozen=True, slots=True)
class IdentityRefusal:
    field: str  # the application field: "identity_document.number", "date_of_birth", ...
    reason: IdentityReason
    detail: str  # for the operator and the applicant


@dataclass(frozen=True, slots=True)
class IdentityCheck:
    refusals: tuple[IdentityRefusal, ...]

    @property
    def accepted(self) -> bool:
        return not self.refusals


def check_person(
    document: IdentityDocument, date_of_birth: date, iban: str, holders: Sequence[Holder], today: date
) -> IdentityCheck:
    """An individual's application: the document, the age, the IBAN if paying by direct debit
    (``""``: another payment method) and the holders of the same document."""
    refusals = [
        *_document_refusals(document, "identity_document", date_of_birth),
        *_age_refusals(date_of_birth, today),
        *_iban_refusals(iban),
        *_holder_refusals(holders, "identity_document.number"),
    ]
    return IdentityCheck(tuple(refusals))


def check_organization(registration: IdentityDocument | None, iban: str, holders: Sequence[Holder]) -> IdentityCheck:
    """An organization's application: its registration (``None``: not registered, which the credit
    check weighs), the IBAN if paying by direct debit, and the holders of the same registration."""
    refusals: list[IdentityRefusal] = []
    if registration is not None:
        refusals += _document_refusals(registration, "registration", None)
        refusals += _holder_refusals(holders, "registration.number")
    refusals += _iban_refusals(iban)
    return IdentityCheck(tuple(refusals))


def normalise_document_number(number: str) -> str:
    """Upper case without spaces or hyphens: how the number is compared and stored."""
    return re.sub(r"[\s-]", "", number).upper()


def mrz_check_digit(characters: str) -> int:
    """ICAO Doc 9303 Part 3 section 4.9 check digit of MRZ characters (0-9, A-Z, '<')."""
    total = 0
    for position, character in enumerate(characters):
        if character.isdigit():
            value = int(character)
        elif "A" <= character <= "Z":
            value = ord(character) - ord("A") + 10
        elif character == "<":
            value = 0
        else:
            raise ValueError(f"{character!r} is not an MRZ character (0-9, A-Z, <)")
        total += value * _CHECK_WEIGHTS[position % 3]
    return total % 10


def iban_is_valid(iban: str) -> bool:
    """ISO 13616: see ``iban_problem``."""
    return iban_problem(iban) is None


def iban_problem(iban: str) -> IdentityReason | None:
    """ISO 13616 IBAN (spaces allowed): MALFORMED unless its shape and the country's length where
    known fit, CHECK_DIGIT unless the MOD 97-10 check (ISO/IEC 7064) holds: the country code and
    check digits moved to the end, letters read as 10-35, the number leaves remainder 1."""
    text = normalise_document_number(iban)
    if not _IBAN.match(text) or len(text) != IBAN_LENGTHS.get(text[:2], len(text)):
        return IdentityReason.MALFORMED
    if not 2 <= int(text[2:4]) <= 98:  # MOD 97-10 yields 02-98: 00, 01 and 99 are never issued
        return IdentityReason.CHECK_DIGIT
    rearranged = text[4:] + text[:4]
    remainder = int("".join(str(int(character, 36)) for character in rearranged)) % 97
    return None if remainder == 1 else IdentityReason.CHECK_DIGIT


def age_years(date_of_birth: date, today: date) -> int:
    """Completed years of life on ``today`` (a birthday counts from its day)."""
    before_birthday = (today.month, today.day) < (date_of_birth.month, date_of_birth.day)
    return today.year - date_of_birth.year - int(before_birthday)


def _document_refusals(document: IdentityDocument, field: str, date_of_birth: date | None) -> list[IdentityRefusal]:
    country = document.issuing_country
    if not _COUNTRY.match(country):
        detail = f"{country!r} is not an ISO 3166 alpha-2 code such as DE"
        return [IdentityRefusal(f"{field}.issuing_country", IdentityReason.MALFORMED, detail)]
    number = normalise_document_number(document.number)
    pattern = _document_pattern(document.kind, country)
    if not pattern.match(number):
        detail = f"{document.number!r} is not a {country} {document.kind.value.replace('_', ' ')} number"
        return [IdentityRefusal(f"{field}.number", IdentityReason.MALFORMED, detail)]
    with_check_digit = document.kind is DocumentKind.NATIONAL_ID and country == "DE" and len(number) == 10
    if with_check_digit and mrz_check_digit(number[:9]) != int(number[9]):
        detail = f"the check digit of {document.number!r} is wrong (ICAO 9303)"
        return [IdentityRefusal(f"{field}.number", IdentityReason.CHECK_DIGIT, detail)]
    if document.kind is DocumentKind.PASSPORT and document.mrz:
        return _mrz_refusals(document.mrz, number, date_of_birth, f"{field}.mrz")
    return []


def _document_pattern(kind: DocumentKind, country: str) -> re.Pattern[str]:
    if country == "DE":
        return {
            DocumentKind.NATIONAL_ID: _DE_CARD_NUMBER,
            DocumentKind.PASSPORT: _DE_PASSPORT_NUMBER,
            DocumentKind.COMPANY_REGISTRATION: _DE_REGISTRATION,
        }[kind]
    return {
        DocumentKind.NATIONAL_ID: _GENERIC_NATIONAL_ID,
        DocumentKind.PASSPORT: _GENERIC_PASSPORT,
        DocumentKind.COMPANY_REGISTRATION: _GENERIC_REGISTRATION,
    }[kind]


def _mrz_refusals(mrz: str, number: str, date_of_birth: date | None, field: str) -> list[IdentityRefusal]:
    """Line 2 of a TD3 MRZ (ICAO Doc 9303 Part 4 section 4.2.2), positions 1-based: document number
    1-9 and its check digit 10, date of birth (YYMMDD) 14-19 and 20, expiry 22-27 and 28, optional
    data 29-42 and 43 ('<' when the data is all filler), the composite check digit 44 over 1-10,
    14-20 and 22-43."""
    line = mrz.strip().upper()
    if len(line) != _MRZ_TD3_LINE_LENGTH or not re.fullmatch(r"[A-Z0-9<]+", line):
        return [IdentityRefusal(field, IdentityReason.MALFORMED, f"not a {_MRZ_TD3_LINE_LENGTH}-character TD3 line 2")]
    fields = {"document number": (0, 9), "date of birth": (13, 19), "expiry date": (21, 27), "optional data": (28, 42)}
    for name, (start, end) in fields.items():
        digit = line[end]
        if name == "optional data" and digit == "<" and set(line[start:end]) <= {"<"}:
            continue
        if not digit.isdigit() or mrz_check_digit(line[start:end]) != int(digit):
            return [IdentityRefusal(field, IdentityReason.CHECK_DIGIT, f"the {name} check digit is wrong (ICAO 9303)")]
    composite = line[0:10] + line[13:20] + line[21:43]
    if not line[43].isdigit() or mrz_check_digit(composite) != int(line[43]):
        return [IdentityRefusal(field, IdentityReason.CHECK_DIGIT, "the composite check digit is wrong (ICAO 9303)")]
    mismatches = []
    if line[0:9].rstrip("<") != number:
        mismatches.append(f"its document number is {line[0:9].rstrip('<')}")
    if date_of_birth is not None and line[13:19] != date_of_birth.strftime("%y%m%d"):
        mismatches.append(f"its date of birth (YYMMDD) is {line[13:19]}")
    return [IdentityRefusal(field, IdentityReason.MISMATCH, mismatch) for mismatch in mismatches]


def _age_refusals(date_of_birth: date, today: date) -> list[IdentityRefusal]:
    if date_of_birth > today:
        return [IdentityRefusal("date_of_birth", IdentityReason.IMPLAUSIBLE_AGE, f"{date_of_birth} is in the future")]
    age = age_years(date_of_birth, today)
    if age < ADULT_AGE_YEARS:
        detail = f"{age} years old; a contract needs {ADULT_AGE_YEARS}"
        return [IdentityRefusal("date_of_birth", IdentityReason.UNDER_AGE, detail)]
    if age > OLDEST_PLAUSIBLE_AGE_YEARS:
        detail = f"{age} years old; more than {OLDEST_PLAUSIBLE_AGE_YEARS} is not plausible"
        return [IdentityRefusal("date_of_birth", IdentityReason.IMPLAUSIBLE_AGE, detail)]
    return []


def _iban_refusals(iban: str) -> list[IdentityRefusal]:
    problem = iban_problem(iban) if iban else None
    if problem is None:
        return []
    malformed = problem is IdentityReason.MALFORMED
    detail = f"{iban!r} is not an IBAN (ISO 13616)" if malformed else "the IBAN check (ISO 13616 MOD 97-10) fails"
    return [IdentityRefusal("payment_method.iban", problem, detail)]


def _holder_refusals(holders: Sequence[Holder], field: str) -> list[IdentityRefusal]:
    debtors = [holder for holder in holders if holder.status in REFUSING_STATUSES and holder.debt_micros > 0]
    if not debtors:
        return []
    statuses = ", ".join(sorted({holder.status for holder in debtors}))
    detail = f"already held by {len(debtors)} {statuses} customer(s) with open debt"
    return [IdentityRefusal(field, IdentityReason.HELD_BY_DEBTOR, detail)]
