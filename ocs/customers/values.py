"""The customer side's values: parties, customers, billing accounts, company nodes and lines.

Theory of operation: these pydantic (v2) models are both what the API takes and answers (so the
OpenAPI document is generated from them, ``ocs.api.customers``) and what the wing's queries return.
Shapes and names follow the TM Forum Open APIs where they fit: TMF632 Party (an ``Individual`` with
given and family name, birth date, contact media and an identification document; an
``Organization`` with its name and registration number), TMF629 Customer (the paying legal entity,
its status and credit profile), TMF666 Account (a billing account: currency, bill-cycle day,
payment method, "paid by parent"). A company customer is a tree of ``Node`` of any depth (company,
branches, departments); a node with ``money`` is an account of the balance engine (a pool, or a
budget capping what the nodes and lines below it draw). A ``Line`` (subscription) is itself an
engine account: its id is the account id.

Rules kept here, checked before anything is written (a refusal names the field, pydantic's loc):
unknown fields are refused (a typo is never ignored); ids are balance account ids (1 to 64
letters, digits, ``.``, ``_``, ``:``, ``-``, starting alphanumeric); money is integer micros
(1 unit = 1,000,000; DESIGN.md "Money and units"), never a float; a bill-cycle day is 1 to 28 so
every month has it; identities are an MSISDN (E.164, at most 15 digits), an IMSI (5 to 15 digits,
3GPP TS 23.003 section 2.2) or a SIP URI (RFC 3261 section 19.1: ``sip:`` or ``sips:``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from balance.types import MAX_AMOUNT_MICROS

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"  # balance.keys.is_valid_account_id
MAX_TEXT = 256

EntityId = Annotated[str, Field(pattern=ID_PATTERN, description="1 to 64 of A-Z a-z 0-9 . _ : -")]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Micros = Annotated[int, Field(ge=0, le=MAX_AMOUNT_MICROS, description="integer micros: 1 unit = 1,000,000")]


class CustomerStatus(enum.StrEnum):
    """TMF629 customer states as issue 13 names them; stored here, enforced by the lifecycle."""

    PROSPECT = "prospect"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    BARRED = "barred"
    TERMINATED = "terminated"


class LineStatus(enum.StrEnum):
    """A line's states; ``provisioning`` while its engine account is being made (a resumable step)."""

    PROVISIONING = "provisioning"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    BARRED = "barred"
    TERMINATED = "terminated"


# A line's effective status is the worst of its own, every node above it and its customer's
# (ocs.customers.lifecycle; balance/RULES.md "Effective status"). A prospect counts as active.
SEVERITY = {"prospect": 0, "provisioning": 0, "active": 0, "suspended": 1, "barred": 2, "terminated": 3}


def worst(statuses: Sequence[str]) -> LineStatus:
    """The effective status of these own statuses (a prospect counts as active)."""
    found = max(statuses, key=lambda status: SEVERITY[status], default="active")
    return LineStatus.ACTIVE if found in ("prospect", "provisioning") else LineStatus(found)


class Closed(BaseModel):
    """Refuses unknown fields; values are frozen once made."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactMedium(Closed):
    """TMF632 ContactMedium, reduced to a kind and its value."""

    kind: Literal["email", "phone", "postal"]
    value: Text


class IdentityDocument(Closed):
    """TMF632 IndividualIdentification: the document's type, number and issuing country."""

    type: Literal["passport", "national_id", "driving_licence", "residence_permit"]
    number: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{4,32}$")]
    issuing_country: Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]


class Individual(Closed):
    given_name: Text
    family_name: Text
    birth_date: date
    contact_media: list[ContactMedium] = Field(default_factory=list, max_length=16)
    identity_document: IdentityDocument | None = None


class Organization(Closed):
    name: Text
    registration_number: Annotated[str, Field(min_length=1, max_length=64)]
    contact_media: list[ContactMedium] = Field(default_factory=list, max_length=16)


class CreditProfile(Closed):
    """TMF629 CreditProfile: a score and the credit class the credit check assigned (stored only)."""

    credit_score: Annotated[int, Field(ge=0, le=1000)] | None = None
    credit_class: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{0,7}$")] | None = None


class BillingAccountSpec(Closed):
    """TMF666 BillingAccount: who pays a customer's or a node's bills, and when."""

    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")]
    bill_cycle_day: Annotated[int, Field(ge=1, le=28)] = 1  # 28: every month has the day
    payment_method: Literal["cash", "card", "direct_debit", "bank_transfer", "voucher"] = "bank_transfer"
    paid_by_parent: bool = False


class BillingAccount(BillingAccountSpec):
    billing_account_id: str


class NodeMoney(Closed):
    """What makes a node an account of the balance engine: a pool (prepaid money or a postpaid
    credit line) and/or a cap on what it draws from the paying node above it."""

    payment_type: Literal["prepaid", "postpaid"] = "postpaid"
    credit_limit_micros: Micros = 0
    cap_micros: Micros = 0
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None  # None: the default plan's


class NewCustomer(Closed):
    """A customer: exactly one of ``individual`` or ``organization``."""

    customer_id: EntityId | None = None  # None: one is made
    individual: Individual | None = None
    organization: Organization | None = None
    status: CustomerStatus = CustomerStatus.ACTIVE
    credit_profile: CreditProfile = Field(default_factory=CreditProfile)
    billing_account: BillingAccountSpec | None = None
    money: NodeMoney | None = None  # an organization's root pool

    @model_validator(mode="after")
    def _one_party(self) -> NewCustomer:
        if (self.individual is None) == (self.organization is None):
            raise ValueError("give exactly one of individual or organization")
        if self.money is not None and self.organization is None:
            raise ValueError("money: only an organization's root node holds a pool; an individual pays per line")
        return self


class NewNode(Closed):
    node_id: EntityId | None = None
    parent_node_id: EntityId | None = None  # None: under the company's root
    name: Text
    kind: Literal["branch", "department", "cost_centre"] = "branch"
    billing_account: BillingAccountSpec | None = None  # a paying node
    money: NodeMoney | None = None


class LineIdentity(Closed):
    kind: Literal["msisdn", "imsi", "sip"]
    value: Annotated[str, Field(min_length=1, max_length=MAX_TEXT, pattern=r"^(\+?[0-9]{1,15}|sips?:\S+)$")]

    @model_validator(mode="after")
    def _shape(self) -> LineIdentity:
        digits = self.value.removeprefix("+")
        if self.kind == "msisdn" and not (digits.isdigit() and len(digits) <= 15):
            raise ValueError("an MSISDN is 1 to 15 digits (ITU-T E.164)")
        if self.kind == "imsi" and not (self.value.isdigit() and 5 <= len(self.value) <= 15):
            raise ValueError("an IMSI is 5 to 15 digits (3GPP TS 23.003 section 2.2)")
        if self.kind == "sip" and not self.value.lower().startswith(("sip:", "sips:")):
            raise ValueError("a SIP URI starts with sip: or sips: (RFC 3261 section 19.1)")
        return self

    @property
    def key(self) -> tuple[str, str]:
        """How the identity is stored and compared: an MSISDN without its ``+``."""
        return self.kind, self.value.removeprefix("+") if self.kind == "msisdn" else self.value


class NewLine(Closed):
    line_id: EntityId | None = None  # the engine account id; None: one is made
    node_id: EntityId | None = None  # an organization's node; None: the root (or the individual)
    name: Annotated[str, Field(max_length=MAX_TEXT)] = ""
    network: Literal["mobile", "fixed"] = "mobile"
    payment_type: Literal["prepaid", "postpaid"] = "prepaid"
    plan: Annotated[str, Field(min_length=1, max_length=64)] | None = None  # None: the default plan
    credit_limit_micros: Micros = 0
    cap_micros: Micros = 0  # the most this line draws from the pool above it (0: no cap)
    identities: list[LineIdentity] = Field(default_factory=list, max_length=8)

    @model_validator(mode="after")
    def _distinct(self) -> NewLine:
        keys = [identity.key for identity in self.identities]
        if len(set(keys)) != len(keys):
            raise ValueError("identities: an identity is listed twice")
        return self


class Line(Closed):
    line_id: str
    customer_id: str
    node_id: str | None
    name: str
    network: str
    payment_type: str
    plan: str
    credit_limit_micros: int
    cap_micros: int
    engine_parent_id: str | None  # the engine account this line draws from (the nearest pool)
    status: LineStatus  # effective: the worst of its own, its nodes' and its customer's (what charging applies)
    own_status: LineStatus = LineStatus.ACTIVE  # the line's own, set on the line (ocs.customers.lifecycle)
    identities: list[LineIdentity]
    created_at: datetime


class Node(Closed):
    node_id: str
    customer_id: str
    parent_node_id: str | None
    name: str
    kind: str
    money: NodeMoney | None
    account_id: str | None  # the engine account when the node has money
    engine_parent_id: str | None
    account_state: str | None  # "provisioning" until its engine account exists, then "active"
    billing_account: BillingAccount | None
    status: CustomerStatus = CustomerStatus.ACTIVE  # the node's own (ocs.customers.lifecycle)


class Customer(Closed):
    customer_id: str
    party_id: str
    kind: Literal["individual", "organization"]
    individual: Individual | None
    organization: Organization | None
    status: CustomerStatus
    credit_profile: CreditProfile
    billing_account: BillingAccount | None
    root_node_id: str | None  # an organization's company node
    created_at: datetime


class TreeNode(Closed):
    node: Node
    lines: list[Line]
    children: list[TreeNode]


class CustomerTree(Closed):
    customer: Customer
    lines: list[Line]  # an individual's lines (an organization's hang under its nodes)
    root: TreeNode | None


class CustomerList(Closed):
    customers: list[Customer]
