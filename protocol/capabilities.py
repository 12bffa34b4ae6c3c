"""Capabilities exchange: building CER/CEA and judging the peer's (RFC 6733 section 5.3).

Theory of operation: ``LocalIdentity`` is what we announce; ``PeerPolicy`` is who may talk to us.
``evaluate_capabilities`` reads a CER (or CEA) and decides: the peer's identity, the applications
we share (a peer advertising Relay, 0xffffffff, shares all of ours), or the Result-Code that
refuses it (3010 unknown peer, 5010 no common application). Pure functions, no state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from protocol.constants import ApplicationId, CommandCode, ResultCode
from protocol.message import Avp, Message, answer_to, avp, request

VENDOR_ID_3GPP = 10415  # TS 29.230 / IANA enterprise number of 3GPP


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    origin_host: str
    origin_realm: str
    host_ip_addresses: tuple[IPv4Address | IPv6Address, ...] = (IPv4Address("127.0.0.1"),)
    vendor_id: int = 0
    product_name: str = "open-ocs"
    firmware_revision: int = 1
    origin_state_id: int = 1  # the owner sets it from the start time (RFC 6733 section 8.16)
    auth_application_ids: tuple[int, ...] = (ApplicationId.CREDIT_CONTROL,)
    supported_vendor_ids: tuple[int, ...] = (VENDOR_ID_3GPP,)

    def origin_avps(self) -> list[Avp]:
        return [avp("Origin-Host", self.origin_host), avp("Origin-Realm", self.origin_realm)]


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """Which peers may connect. Empty sets allow any host / realm."""

    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    allowed_realms: frozenset[str] = field(default_factory=frozenset)

    def allows(self, origin_host: str, origin_realm: str) -> bool:
        host_ok = not self.allowed_hosts or origin_host in self.allowed_hosts
        realm_ok = not self.allowed_realms or origin_realm in self.allowed_realms
        return host_ok and realm_ok


@dataclass(frozen=True, slots=True)
class PeerCapabilities:
    origin_host: str
    origin_realm: str
    applications: frozenset[int]  # the applications we share
    product_name: str
    origin_state_id: int | None


@dataclass(frozen=True, slots=True)
class CapabilitiesVerdict:
    result_code: ResultCode
    capabilities: PeerCapabilities | None
    reason: str


def _capability_avps(identity: LocalIdentity) -> list[Avp]:
    avps = identity.origin_avps()
    avps += [avp("Host-IP-Address", address) for address in identity.host_ip_addresses]
    avps.append(avp("Vendor-Id", identity.vendor_id))
    avps.append(avp("Product-Name", identity.product_name))
    avps.append(avp("Origin-State-Id", identity.origin_state_id))
    avps += [avp("Supported-Vendor-Id", vendor) for vendor in identity.supported_vendor_ids]
    avps += [avp("Auth-Application-Id", application) for application in identity.auth_application_ids]
    avps.append(avp("Firmware-Revision", identity.firmware_revision))
    return avps


def build_cer(identity: LocalIdentity) -> Message:
    """CER, RFC 6733 section 5.3.1."""
    return request(
        CommandCode.CAPABILITIES_EXCHANGE, ApplicationId.DIAMETER_COMMON_MESSAGES, _capability_avps(identity)
    )


def build_cea(identity: LocalIdentity, cer: Message, result_code: ResultCode, error_message: str = "") -> Message:
    """CEA, RFC 6733 section 5.3.2; the E bit is set for a 3xxx refusal (section 7.1.3)."""
    avps = [avp("Result-Code", int(result_code)), *_capability_avps(identity)]
    if error_message and result_code != ResultCode.DIAMETER_SUCCESS:
        avps.append(avp("Error-Message", error_message))
    return answer_to(cer, avps, error=3000 <= result_code < 4000)


def advertised_applications(message: Message) -> set[int]:
    """Auth-, Acct- and vendor-specific application ids a CER or CEA advertises."""
    applications: set[int] = set()
    for item in message.avps:
        if item.code in (258, 259) and item.vendor_id == 0 and isinstance(item.value, int):
            applications.add(item.value)  # Auth-Application-Id 258, Acct-Application-Id 259
        elif item.code == 260 and isinstance(item.value, list):  # Vendor-Specific-Application-Id
            applications.update(
                child.value for child in item.value if child.code in (258, 259) and isinstance(child.value, int)
            )
    return applications


def evaluate_capabilities(
    message: Message,
    identity: LocalIdentity,
    policy: PeerPolicy,
) -> CapabilitiesVerdict:
    """Judge a CER received (server) or a CEA received (client)."""
    origin_host = message.get("Origin-Host")
    origin_realm = message.get("Origin-Realm")
    if not isinstance(origin_host, str) or not isinstance(origin_realm, str):
        return CapabilitiesVerdict(ResultCode.DIAMETER_MISSING_AVP, None, "no Origin-Host / Origin-Realm")
    if not policy.allows(origin_host, origin_realm):
        return CapabilitiesVerdict(
            ResultCode.DIAMETER_UNKNOWN_PEER, None, f"{origin_host} ({origin_realm}) not allowed"
        )
    ours = set(identity.auth_application_ids)
    theirs = advertised_applications(message)
    common = ours if ApplicationId.RELAY in theirs else ours & theirs
    if not common:
        return CapabilitiesVerdict(
            ResultCode.DIAMETER_NO_COMMON_APPLICATION, None, f"peer offers {sorted(theirs)}, we serve {sorted(ours)}"
        )
    state = message.get("Origin-State-Id")
    product = message.get("Product-Name")
    capabilities = PeerCapabilities(
        origin_host=origin_host,
        origin_realm=origin_realm,
        applications=frozenset(common | {ApplicationId.DIAMETER_COMMON_MESSAGES}),
        product_name=product if isinstance(product, str) else "",
        origin_state_id=state if isinstance(state, int) else None,
    )
    return CapabilitiesVerdict(ResultCode.DIAMETER_SUCCESS, capabilities, "")


def result_code_of(message: Message) -> int | None:
    value = message.get("Result-Code")
    return value if isinstance(value, int) else None


def base_answer_avps(identity: LocalIdentity, request_message: Message, result_code: int) -> Sequence[Avp]:
    """Session-Id (if the request had one), Result-Code, Origin-Host, Origin-Realm."""
    avps: list[Avp] = []
    session = request_message.find("Session-Id")
    if session is not None:
        avps.append(session)
    avps.append(avp("Result-Code", result_code))
    avps += identity.origin_avps()
    return avps
