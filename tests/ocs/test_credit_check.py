"""The credit check (ocs/customers/credit.py, credit_load.py): hand-checked classes from the shipped
rules, monotonic rules as properties, every load error naming file, table and field, and the
pluggable bureau."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocs.config import load_settings
from ocs.customers.credit import (
    Application,
    BureauError,
    CreditBureau,
    CreditDecision,
    Employment,
    FactorScore,
    IncomeBand,
    IndividualApplication,
    Offer,
    OfferKind,
    OrganizationApplication,
    PaymentHistory,
    RuleTable,
    assess,
)
from ocs.customers.credit_load import CreditRulesError, load_credit_rules, parse_credit_rules

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "credit_classes.toml"
SHIPPED_TEXT = SHIPPED.read_text(encoding="utf-8")
RULES = load_credit_rules(SHIPPED)
TABLE = RuleTable(RULES)
ON = date(2025, 6, 15)
EUR = 1_000_000  # micros


def person(born: date, employment: Employment, income: IncomeBand, years_at_address: int) -> IndividualApplication:
    return IndividualApplication(ON, born, employment, income, years_at_address)


# Each total worked out by hand from config/credit_classes.toml.
HAND_CHECKED: list[tuple[Application, PaymentHistory | None, int, str]] = [
    # age 40 (+20), employed (+25), high (+30), 12 years (+15)
    (person(date(1985, 1, 1), Employment.EMPLOYED, IncomeBand.HIGH, 12), None, 90, "A"),
    # age 20 (+5), student (+5), low (+10), 0 years (0)
    (person(date(2005, 1, 1), Employment.STUDENT, IncomeBand.LOW, 0), None, 20, "D"),
    # age 30 (+15), self-employed (+15), medium (+20), 2 years (+5)
    (person(date(1995, 6, 15), Employment.SELF_EMPLOYED, IncomeBand.MEDIUM, 2), None, 55, "B"),
    # age 34, the day before 35 (+15), retired (+20), no income (0), 3 years (+10)
    (person(date(1990, 6, 16), Employment.RETIRED, IncomeBand.NONE, 3), None, 45, "C"),
    # the first: 90, worst of the last 6 invoices 20 days (-20): 70, exactly A's minimum
    (person(date(1985, 1, 1), Employment.EMPLOYED, IncomeBand.HIGH, 12), PaymentHistory((0, 20, 3), 0), 70, "A"),
    # and 60.00 of open debt (-30): 40
    (
        person(date(1985, 1, 1), Employment.EMPLOYED, IncomeBand.HIGH, 12),
        PaymentHistory((0, 20, 3), 60 * EUR),
        40,
        "C",
    ),
    # a 90-day late invoice seven invoices ago no longer counts (last 6): 1 day late (-5), 0.01 owed (-10)
    (
        person(date(1985, 1, 1), Employment.EMPLOYED, IncomeBand.HIGH, 12),
        PaymentHistory((1, 0, 0, 0, 0, 0, 90), 10_000),
        75,
        "A",
    ),
    # company: 5 years trading (+25), registered (+25), 30 employees (+15)
    (OrganizationApplication(ON, 5, True, 30), None, 65, "B"),
    # company: new (0), unregistered (0), 2 employees (+5)
    (OrganizationApplication(ON, 0, False, 2), None, 5, "D"),
    # company: 12 years (+35), registered (+25), 300 employees (+35), 250.00 owed (-80)
    (OrganizationApplication(ON, 12, True, 300), PaymentHistory((), 250 * EUR), 15, "D"),
]


@pytest.mark.parametrize(("application", "history", "points", "credit_class"), HAND_CHECKED)
def test_hand_checked_classes(
    application: Application, history: PaymentHistory | None, points: int, credit_class: str
) -> None:
    decision = TABLE.assess(application, history)
    assert (decision.points, decision.credit_class) == (points, credit_class)
    assert sum(factor.points for factor in decision.factors) == points


def test_each_class_carries_its_offer_from_the_file() -> None:
    offers = {credit_class.name: credit_class.offer for credit_class in RULES.classes}
    assert offers == {
        "A": Offer(OfferKind.POSTPAID, 300 * EUR, 0),
        "B": Offer(OfferKind.POSTPAID, 100 * EUR, 0),
        "C": Offer(OfferKind.POSTPAID, 30 * EUR, 50 * EUR),
        "D": Offer(OfferKind.PREPAID_ONLY, 0, 0, ("mobile_prepaid", "fixed_prepaid")),
    }
    assert RULES.classes[3].offer.allows_plan("fixed_prepaid") and not RULES.classes[3].offer.allows_plan("x")
    assert RULES.classes[0].offer.allows_plan("any plan at all")  # no list: every plan
    assert [credit_class.minimum_points for credit_class in RULES.classes] == [70, 50, 30, None]


def test_a_decision_explains_which_factors_gave_which_points() -> None:
    application = person(date(1985, 1, 1), Employment.EMPLOYED, IncomeBand.HIGH, 12)
    decision = TABLE.assess(application, PaymentHistory((0, 20, 3), 60 * EUR))
    assert decision.factors == (
        FactorScore("age", "40", 20),
        FactorScore("employment", "employed", 25),
        FactorScore("income_band", "high", 30),
        FactorScore("years_at_address", "12", 15),
        FactorScore("worst_days_late", "20 (last 3 invoices)", -20),
        FactorScore("open_debt", "60.00", -30),
    )
    assert decision.explain().splitlines() == [
        "age 40: +20",
        "employment employed: +25",
        "income_band high: +30",
        "years_at_address 12: +15",
        "worst_days_late 20 (last 3 invoices): -20",
        "open_debt 60.00: -30",
        f"total 40: class C (postpaid, credit limit 30.00 EUR, deposit 50.00 EUR) by rule table {SHIPPED}",
    ]


CLASS_RANK = {credit_class.name: rank for rank, credit_class in enumerate(RULES.classes)}  # 0 is best
people = st.builds(
    IndividualApplication,
    application_date=st.just(ON),
    date_of_birth=st.dates(date(1900, 1, 1), date(2007, 6, 15)),
    employment=st.sampled_from(Employment),
    income_band=st.sampled_from(IncomeBand),
    years_at_address=st.integers(0, 80),
)
histories = st.none() | st.builds(
    PaymentHistory, st.lists(st.integers(0, 400), max_size=12).map(tuple), st.integers(0, 10_000 * EUR)
)


@given(people, histories, st.sampled_from(IncomeBand))
def test_more_income_never_lowers_the_class(
    application: IndividualApplication, history: PaymentHistory | None, other: IncomeBand
) -> None:
    bands = list(IncomeBand)
    lower, higher = sorted([application.income_band, other], key=bands.index)
    low = TABLE.assess(dataclasses.replace(application, income_band=lower), history)
    high = TABLE.assess(dataclasses.replace(application, income_band=higher), history)
    assert CLASS_RANK[high.credit_class] <= CLASS_RANK[low.credit_class]


@given(people, histories, st.integers(0, 400), st.integers(0, 10_000 * EUR))
def test_paying_later_or_owing_more_never_raises_the_class(
    application: IndividualApplication, history: PaymentHistory | None, more_days: int, more_debt: int
) -> None:
    before = history or PaymentHistory((), 0)
    worse = PaymentHistory(tuple(days + more_days for days in before.days_late), before.open_debt_micros + more_debt)
    assert (
        CLASS_RANK[TABLE.assess(application, worse).credit_class]
        >= CLASS_RANK[TABLE.assess(application, before).credit_class]
    )


@given(st.integers(0, 60), st.integers(0, 60), st.booleans(), st.integers(0, 1_000), st.integers(0, 1_000))
def test_a_longer_trading_larger_company_never_gets_a_lower_class(
    years: int, more_years: int, registered: bool, employees: int, more_employees: int
) -> None:
    smaller = TABLE.assess(OrganizationApplication(ON, years, registered, employees), None)
    larger = TABLE.assess(OrganizationApplication(ON, years + more_years, True, employees + more_employees), None)
    assert CLASS_RANK[larger.credit_class] <= CLASS_RANK[smaller.credit_class]


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (
            lambda: IndividualApplication(ON, date(1985, 1, 1), Employment.EMPLOYED, IncomeBand.LOW, -1),
            "years_at_address",
        ),
        (lambda: OrganizationApplication(ON, 1, True, -3), "employees"),
        (lambda: PaymentHistory((1, -2), 0), "days_late"),
        (lambda: PaymentHistory((), -1), "open_debt_micros"),
    ],
)
def test_negative_counts_and_amounts_are_refused_naming_the_field(make: object, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        make()  # type: ignore[operator]


# --- the pluggable interface -------------------------------------------------------------------


class ExternalBureau:
    """A test stand-in for an external bureau's adapter: a fixed score, its own classes."""

    def __init__(self, offer: Offer) -> None:
        self.offer = offer
        self.asked: list[tuple[Application, PaymentHistory | None]] = []

    def assess(self, application: Application, history: PaymentHistory | None) -> CreditDecision:
        self.asked.append((application, history))
        return CreditDecision("B", self.offer, "EUR", 640, (FactorScore("bureau score", "640", 640),), "bureau X")


def test_an_external_bureau_replaces_the_rule_table() -> None:
    bureau = ExternalBureau(Offer(OfferKind.POSTPAID, 50 * EUR, 0))
    bureaus: list[CreditBureau] = [bureau, TABLE]  # both satisfy the Protocol (mypy and at run time)
    assert all(isinstance(each, CreditBureau) for each in bureaus)
    application = OrganizationApplication(ON, 0, False, 2)
    history = PaymentHistory((3,), 0)
    decision = assess(bureau, application, history)
    assert bureau.asked == [(application, history)]
    assert (decision.credit_class, decision.assessed_by) == ("B", "bureau X")
    assert decision.explain().endswith("total 640: class B (postpaid, credit limit 50.00 EUR) by bureau X")
    assert assess(TABLE, application, history).credit_class == "D"


@pytest.mark.parametrize(
    ("offer", "field"),
    [
        (Offer(OfferKind.POSTPAID, 0, 0), "offer.credit_limit_micros"),  # postpaid with no credit
        (Offer(OfferKind.PREPAID_ONLY, 10 * EUR, 0), "offer.credit_limit_micros"),
        (Offer(OfferKind.PREPAID_ONLY, -1, 0), "offer.credit_limit_micros"),
        (Offer(OfferKind.PREPAID_ONLY, 0, -5), "offer.deposit_micros"),
    ],
)
def test_a_bureau_decision_activation_cannot_act_on_is_refused(offer: Offer, field: str) -> None:
    with pytest.raises(BureauError, match=f"^bureau X: {field}: "):
        assess(ExternalBureau(offer), OrganizationApplication(ON, 0, False, 2), None)


# --- loading -----------------------------------------------------------------------------------


def test_the_setting_names_the_shipped_file_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(None, {}).customers.credit_classes_path == "config/credit_classes.toml"
    monkeypatch.chdir(tmp_path)
    assert Path(load_settings(None, {}).customers.credit_classes_path) == SHIPPED
    environment = {"OCS_CUSTOMERS_CREDIT_CLASSES_PATH": str(tmp_path / "mine.toml")}
    assert load_settings(None, environment).customers.credit_classes_path == str(tmp_path / "mine.toml")


def test_an_unreadable_file_is_named() -> None:
    with pytest.raises(CreditRulesError, match=r"^/nonexistent/credit\.toml: \(file\): \(file\): cannot be read"):
        load_credit_rules("/nonexistent/credit.toml")


def _replace(old: str, new: str) -> str:
    assert SHIPPED_TEXT.count(old) == 1, old
    return SHIPPED_TEXT.replace(old, new)


# (text of the shipped file, its replacement, the table and the field the error must name)
ADDRESS_STEPS = "years_at_address = [\n" + "".join(
    f"    {{ from = {start}, points = {points} }},\n" for start, points in ((0, 0), (1, 5), (3, 10), (10, 15))
)
BAD_FILES = [
    ('currency = "EUR"', "currency = ", "(top level)", "(syntax)"),
    ('currency = "EUR"', "", "(top level)", "currency"),
    ('currency = "EUR"', 'currency = "euro"', "(top level)", "currency"),
    ('currency = "EUR"', "currency = 978", "(top level)", "currency"),
    ('currency = "EUR"', 'currency = "EUR"\ncolour = "red"', "(top level)", "colour"),
    ("[history]\n", "[histories]\n", "(top level)", "histories"),
    ("[individual]\n", "[individual]\nshoe_size = 3\n", "individual", "shoe_size"),
    ("invoices = 6", "", "history", "invoices"),
    ("invoices = 6", "invoices = 0", "history", "invoices"),
    ("invoices = 6", 'invoices = "6"', "history", "invoices"),
    (ADDRESS_STEPS, "years_at_address = [\n", "individual", "years_at_address"),
    (ADDRESS_STEPS + "]", "years_at_address = 3", "individual", "years_at_address"),
    (
        "{ from = 0, points = 0 },\n    { from = 18",
        "{ from = 1, points = 0 },\n    { from = 18",
        "individual",
        "age[0].from",
    ),
    ("{ from = 18, points = 5 }", "{ from = 18, points = 5.0 }", "individual", "age[1].points"),
    ("{ from = 25, points = 15 }", "{ from = 18, points = 15 }", "individual", "age[2].from"),
    ("{ from = 65, points = 15 }", "{ from = 35, points = 15 }", "individual", "age[4].from"),
    ("{ from = 80, points = 5 }", "{ from = 80, weight = 5 }", "individual", "age[5].weight"),
    ("{ from = 80, points = 5 }", "{ from = 80 }", "individual", "age[5].points"),
    ("{ from = 80, points = 5 }", "80", "individual", "age[5]"),
    ("{ from = 1, points = 10 }", "{ from = 1, points = true }", "organization", "years_trading[1].points"),
    ('{ from = "0.01", points = -10 }', "{ from = 0.01, points = -10 }", "history", "open_debt[1].from"),
    ('{ from = "50.00", points = -30 }', '{ from = "50.0000001", points = -30 }', "history", "open_debt[2].from"),
    ('{ from = "200.00", points = -80 }', '{ from = "2000000000", points = -80 }', "history", "open_debt[3].from"),
    (", very_high = 35 }", " }", "individual.income_band", "very_high"),
    ("unemployed = 0 }", "unemployed = 0, retiree = 10 }", "individual.employment", "retiree"),
    ("student = 5, ", "", "individual.employment", "student"),
    ("{ present = 25, absent = 0 }", "{ present = 25 }", "organization.registration", "absent"),
    ("{ present = 25, absent = 0 }", "25", "organization.registration", "(table)"),
    ('name = "B"', 'name = "A"', "classes[1]", "name"),
    ("min_points = 50", "min_points = 70", "classes[1]", "min_points"),
    ("min_points = 30\n", "", "classes[2]", "min_points"),
    ('offer = "prepaid_only"', 'offer = "prepaid_only"\nmin_points = 0', "classes[3]", "min_points"),
    ('offer = "prepaid_only"', 'offer = "prepaid_only"\ncredit_limit = "5"', "classes[3]", "credit_limit"),
    ('offer = "postpaid"\ncredit_limit = "100.00"', 'offer = "credit"', "classes[1]", "offer"),
    ('credit_limit = "300.00"', 'credit_limit = "0"', "classes[0]", "credit_limit"),
    ('deposit = "50.00"', 'deposit = "-50.00"', "classes[2]", "deposit"),
    ('deposit = "50.00"', "deposit = 50", "classes[2]", "deposit"),
    ('description = "prepaid only"', 'colour = "grey"', "classes[3]", "colour"),
    ('plans = ["mobile_prepaid", "fixed_prepaid"]', "plans = []", "classes[3]", "plans"),
    ('plans = ["mobile_prepaid", "fixed_prepaid"]', 'plans = "mobile_prepaid"', "classes[3]", "plans"),
]


@pytest.mark.parametrize(("old", "new", "table", "field"), BAD_FILES)
def test_every_load_error_names_the_file_the_table_and_the_field(old: str, new: str, table: str, field: str) -> None:
    with pytest.raises(CreditRulesError) as raised:
        parse_credit_rules(_replace(old, new), "credit.toml")
    error = raised.value
    assert (error.file, error.table, error.field) == ("credit.toml", table, field), str(error)
    assert str(error).startswith(f"credit.toml: {table}: {field}: ")
    assert error.problem


def test_classes_must_be_an_array_of_tables() -> None:
    text = SHIPPED_TEXT[: SHIPPED_TEXT.index("[[classes]]")].replace(
        'currency = "EUR"', 'currency = "EUR"\nclasses = []'
    )
    with pytest.raises(CreditRulesError, match=r"^x\.toml: classes: \(table\): must be a non-empty array"):
        parse_credit_rules(text, "x.toml")
