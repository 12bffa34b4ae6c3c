"""Identity validation at activation (ocs/customers/identity_check.py): the check digit functions
against published examples, and each refusal naming its field and reason."""

from __future__ import annotations

from datetime import date

import pytest

from ocs.customers.identity_check import (
    DocumentKind,
    Holder,
    IdentityDocument,
    IdentityReason,
    check_organization,
    check_person,
    iban_is_valid,
    iban_problem,
    mrz_check_digit,
)

TODAY = date(2025, 6, 15)
ADULT = date(1985, 3, 1)
# ICAO Doc 9303 Part 4 Appendix A: the specimen passport of Anna Maria Eriksson, Utopia (line 2).
SPECIMEN_MRZ = "L898902C36UTO7408122F1204159ZE184226B<<<<<10"
SPECIMEN_PASSPORT = IdentityDocument(DocumentKind.PASSPORT, "UT", "L898902C3", SPECIMEN_MRZ)
SPECIMEN_BIRTH = date(1974, 8, 12)
# The German identity card specimen (Erika Mustermann): document number T22000129, check digit 3.
GERMAN_CARD = IdentityDocument(DocumentKind.NATIONAL_ID, "DE", "T220001293")


@pytest.mark.parametrize(
    ("characters", "digit"),
    [
        ("L898902C3", 6),  # ICAO 9303 specimen: document number
        ("740812", 2),  # date of birth
        ("120415", 9),  # date of expiry
        ("ZE184226B<<<<<", 1),  # optional data, fillers count 0
        ("L898902C36" + "7408122" + "1204159ZE184226B<<<<<1", 0),  # the composite
        ("T22000129", 3),  # German identity card specimen
    ],
)
def test_mrz_check_digit_of_the_published_specimens(characters: str, digit: int) -> None:
    assert mrz_check_digit(characters) == digit


def test_an_mrz_check_digit_of_a_character_outside_the_mrz_alphabet_is_refused() -> None:
    with pytest.raises(ValueError, match="not an MRZ character"):
        mrz_check_digit("ab")


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 00",  # the example of the German banks and ECBS
        "GB82 WEST 1234 5698 7654 32",  # ECBS TR201 example
        "GB82WEST12345698765432",
        "de89370400440532013000",
    ],
)
def test_published_ibans_are_valid(iban: str) -> None:
    assert iban_is_valid(iban)


@pytest.mark.parametrize(
    ("iban", "problem"),
    [
        ("DE88 3704 0044 0532 0130 00", IdentityReason.CHECK_DIGIT),  # check digits off by one
        ("DE89 3704 0044 0532 0130 01", IdentityReason.CHECK_DIGIT),  # account number mistyped
        ("DE89 3704 0044 0532 0103 00", IdentityReason.CHECK_DIGIT),  # two digits swapped
        ("DE89 3704 0044 0532 0130 0", IdentityReason.MALFORMED),  # 21 characters: DE has 22
        ("1234 3704 0044 0532 0130 00", IdentityReason.MALFORMED),
        ("DE89-3704-0044-0532-0130-00X", IdentityReason.MALFORMED),
    ],
)
def test_wrong_ibans_are_refused_with_their_problem(iban: str, problem: IdentityReason) -> None:
    assert iban_problem(iban) is problem


def test_check_digits_99_are_refused_although_mod_97_holds() -> None:
    """MOD 97-10 check digits lie in 02-98: "99" is the true "02" plus 97 and satisfies the
    remainder, but no bank issues it. Find an account whose true check digits are 02."""
    for account in range(10_000):
        bban = f"37040044{account:010d}"
        check = 98 - int(bban + "1314" + "00") % 97  # D=13, E=14
        if check == 2:
            break
    assert iban_is_valid(f"DE02{bban}")
    assert int(f"{bban}131499") % 97 == 1
    assert iban_problem(f"DE99{bban}") is IdentityReason.CHECK_DIGIT


def _person(
    document: IdentityDocument = GERMAN_CARD, born: date = ADULT, iban: str = "", holders: tuple[Holder, ...] = ()
) -> list[tuple[str, IdentityReason]]:
    check = check_person(document, born, iban, holders, TODAY)
    assert check.accepted == (not check.refusals)
    assert all(refusal.detail for refusal in check.refusals)
    return [(refusal.field, refusal.reason) for refusal in check.refusals]


def test_a_sound_person_is_accepted() -> None:
    assert _person(iban="DE89370400440532013000") == []
    assert _person(IdentityDocument(DocumentKind.NATIONAL_ID, "DE", "T22000129")) == []  # without the check digit
    assert _person(IdentityDocument(DocumentKind.PASSPORT, "DE", "c01x 00t47")) == []  # spaces, lower case
    assert _person(IdentityDocument(DocumentKind.NATIONAL_ID, "FR", "X4RTBPFW4")) == []  # generic rule
    assert _person(SPECIMEN_PASSPORT, SPECIMEN_BIRTH) == []


@pytest.mark.parametrize(
    ("document", "refusal"),
    [
        (IdentityDocument(DocumentKind.NATIONAL_ID, "DE", "T220001294"), ("number", IdentityReason.CHECK_DIGIT)),
        (IdentityDocument(DocumentKind.NATIONAL_ID, "DE", "T2200012"), ("number", IdentityReason.MALFORMED)),
        (IdentityDocument(DocumentKind.NATIONAL_ID, "DE", "A22000129"), ("number", IdentityReason.MALFORMED)),  # vowel
        (IdentityDocument(DocumentKind.PASSPORT, "DE", "T220001293"), ("number", IdentityReason.MALFORMED)),
        (IdentityDocument(DocumentKind.PASSPORT, "FR", "12"), ("number", IdentityReason.MALFORMED)),
        (IdentityDocument(DocumentKind.NATIONAL_ID, "FR", "!!!!!"), ("number", IdentityReason.MALFORMED)),
        (
            IdentityDocument(DocumentKind.NATIONAL_ID, "Germany", "T22000129"),
            ("issuing_country", IdentityReason.MALFORMED),
        ),
    ],
)
def test_a_malformed_document_is_refused_naming_its_field(
    document: IdentityDocument, refusal: tuple[str, IdentityReason]
) -> None:
    field, reason = refusal
    assert _person(document) == [(f"identity_document.{field}", reason)]


@pytest.mark.parametrize(
    ("mrz", "reason"),
    [
        (SPECIMEN_MRZ.replace("L898902C36", "L898902C37"), IdentityReason.CHECK_DIGIT),  # document number
        (SPECIMEN_MRZ.replace("7408122", "7408132"), IdentityReason.CHECK_DIGIT),  # date of birth altered
        (SPECIMEN_MRZ.replace("1204159", "1304159"), IdentityReason.CHECK_DIGIT),  # expiry extended
        (SPECIMEN_MRZ.replace("ZE184226B<<<<<1", "ZE184226C<<<<<1"), IdentityReason.CHECK_DIGIT),  # optional data
        (SPECIMEN_MRZ[:-1] + "1", IdentityReason.CHECK_DIGIT),  # composite
        (SPECIMEN_MRZ[:-1], IdentityReason.MALFORMED),  # 43 characters
        (SPECIMEN_MRZ.replace("<", " "), IdentityReason.MALFORMED),
    ],
)
def test_a_passport_mrz_with_a_wrong_check_digit_is_refused(mrz: str, reason: IdentityReason) -> None:
    document = IdentityDocument(DocumentKind.PASSPORT, "UT", "L898902C3", mrz)
    assert _person(document, SPECIMEN_BIRTH) == [("identity_document.mrz", reason)]


def test_an_mrz_whose_optional_data_is_all_filler_may_have_a_filler_check_digit() -> None:
    line = "L898902C36UTO7408122F1204159" + "<" * 14 + "<"
    line += str(mrz_check_digit(line[0:10] + line[13:20] + line[21:43]))
    assert _person(IdentityDocument(DocumentKind.PASSPORT, "UT", "L898902C3", line), SPECIMEN_BIRTH) == []


def test_a_valid_mrz_of_another_passport_or_person_is_a_mismatch() -> None:
    other_number = IdentityDocument(DocumentKind.PASSPORT, "UT", "L898902C4", SPECIMEN_MRZ)
    assert _person(other_number, SPECIMEN_BIRTH) == [("identity_document.mrz", IdentityReason.MISMATCH)]
    assert _person(SPECIMEN_PASSPORT, date(1974, 8, 13)) == [("identity_document.mrz", IdentityReason.MISMATCH)]


@pytest.mark.parametrize(
    ("born", "reason"),
    [
        (date(2007, 6, 16), IdentityReason.UNDER_AGE),  # 18 tomorrow
        (date(2025, 6, 16), IdentityReason.IMPLAUSIBLE_AGE),  # born tomorrow
        (date(1904, 6, 14), IdentityReason.IMPLAUSIBLE_AGE),  # 121 years old
    ],
)
def test_an_age_under_18_or_over_120_is_refused(born: date, reason: IdentityReason) -> None:
    assert _person(born=born) == [("date_of_birth", reason)]


@pytest.mark.parametrize("born", [date(2007, 6, 15), date(1904, 6, 16)])  # 18 today; 120 until tomorrow
def test_the_age_limits_themselves_are_accepted(born: date) -> None:
    assert _person(born=born) == []


def test_a_document_held_by_a_barred_or_terminated_customer_with_debt_is_refused() -> None:
    refused = [("identity_document.number", IdentityReason.HELD_BY_DEBTOR)]
    assert _person(holders=(Holder("terminated", 1),)) == refused
    assert _person(holders=(Holder("active", 0), Holder("barred", 25_000_000))) == refused
    # Debt alone is for dunning; a closed customer who paid up may come back.
    assert _person(holders=(Holder("active", 25_000_000), Holder("terminated", 0), Holder("suspended", 9))) == []


def test_every_refusal_is_reported_at_once() -> None:
    refusals = _person(
        IdentityDocument(DocumentKind.NATIONAL_ID, "DE", "T220001294"),
        date(2010, 1, 1),
        "DE00370400440532013000",
        (Holder("barred", 5),),
    )
    assert refusals == [
        ("identity_document.number", IdentityReason.CHECK_DIGIT),
        ("date_of_birth", IdentityReason.UNDER_AGE),
        ("payment_method.iban", IdentityReason.CHECK_DIGIT),
        ("identity_document.number", IdentityReason.HELD_BY_DEBTOR),
    ]


@pytest.mark.parametrize("number", ["HRB 12345", "HRB 12345 B", "hra 1", "VR 7788", "GnR 12"])
def test_german_register_numbers_are_accepted(number: str) -> None:
    registration = IdentityDocument(DocumentKind.COMPANY_REGISTRATION, "DE", number)
    assert check_organization(registration, "", ()).accepted


@pytest.mark.parametrize("number", ["12345", "HRC 12345", "HRB", "HRB 1234567"])
def test_malformed_german_register_numbers_are_refused(number: str) -> None:
    registration = IdentityDocument(DocumentKind.COMPANY_REGISTRATION, "DE", number)
    refusals = check_organization(registration, "", ()).refusals
    assert [(refusal.field, refusal.reason) for refusal in refusals] == [
        ("registration.number", IdentityReason.MALFORMED)
    ]


def test_an_organization_without_registration_is_checked_for_its_iban_only() -> None:
    assert check_organization(None, "GB82WEST12345698765432", (Holder("barred", 10),)).accepted
    refusals = check_organization(None, "GB82WEST12345698765433", ()).refusals
    assert [(refusal.field, refusal.reason) for refusal in refusals] == [
        ("payment_method.iban", IdentityReason.CHECK_DIGIT)
    ]


def test_a_registration_held_by_a_terminated_company_with_debt_is_refused() -> None:
    registration = IdentityDocument(DocumentKind.COMPANY_REGISTRATION, "GB", "SC123456")
    refusals = check_organization(registration, "", (Holder("terminated", 1_000_000),)).refusals
    assert [(refusal.field, refusal.reason) for refusal in refusals] == [
        ("registration.number", IdentityReason.HELD_BY_DEBTOR)
    ]
