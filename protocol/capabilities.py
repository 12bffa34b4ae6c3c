"""Capabilities exchange: building CER/CEA and judging the peer's (RFC 6733 section 5.3).

Theory of operation: ``LocalIdentity`` is what we announce; ``PeerPolicy`` is who may talk to us.
``evaluate_capabilities`` reads a CER (or CEA) and decides: the peer's identity, the applications
we share (a peer advertising Relay, 0xffffffff, shares all of ours), the inband security both
sides accept, or the Result-Code that refuses it (3010 unknown peer, 5010 no common application,
5017 no common security). Pure functions, no state.

Who the peer is (RFC 6733 section 5.3: "CERs received from unknown peers MAY be silently
discarded, or a CEA MAY be issued with the Result-Code AVP set to DIAMETER_UNKNOWN_PEER"):
its Origin-Host and Origin-Realm must be allowed, the address it connects from must be in the
allowed networks (and in those bound to its Origin-Host, when bound), and on a TLS connection its
certificate must name its Origin-Host. The owner of the connection fills in what it knows
(``PeerPolicy.for_connection``: the source address, the certificate's names); the checks are here.

Inband security (RFC 6733 sections 5.3, 6.10 and 13): TLS at connect, on its own port, is the
rule; for peers of RFC 3588 age the CER may offer Inband-Security-Id TLS on the clear port, and
then the CEA says TLS and both sides start the TLS handshake right after it. ``LocalIdentity.
inband_security`` lists what we accept on this connection, preferred first; a CER with nothing in
common gets 5017 DIAMETER_NO_COMMON_SECURITY. The AVP is NOT RECOMMENDED (section 6.10), so our
CER carries it only when we want more than the default, and our CEA only when the CER carried it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from protocol.constants import ApplicationId, CommandCode, ResultCode
from protocol.message import Avp, Message, answer_to, avp, request

VENDOR_ID_3GPP = 10415  # TS 29.230 / IANA enterprise number of 3GPP

IpAddress = IPv4Address | IPv6Address
IpNetwork = IPv4Network | IPv6Network


class InbandSecurity(IntEnum):
    """Inband-Security-Id values, AVP 299 (RFC 6733 section 6.10)."""

    NO_INBAND_SECURITY = 0  # the default when the AVP is absent
    TLS = 1


DEFAULT_INBAND_SECURITY = (InbandSecurity.NO_INBAND_SECURITY,)


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
    # What we accept in the capabilities exchange on this connection, preferred first (RFC 6733
    # section 6.10). Empty: the connection is already protected by TLS, nothing to negotiate.
    inband_security: tuple[InbandSecurity, ...] = DEFAULT_INBAND_SECURITY

    def origin_avps(self) -> list[Avp]:
        return [avp("Origin-Host", self.origin_host), avp("Origin-Realm", self.origin_realm)]


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """Which peers may connect. Empty sets allow any host / realm / address.

    Hosts and realms compare without regard to case, as every name check here does: a
    DiameterIdentity is an FQDN (RFC 6733 section 4.3.1), and DNS names match case-insensitively
    (RFC 4343 section 3), so ``PGW.example`` in the allowed hosts admits ``pgw.example`` (and a
    certificate naming one proves the other). The names given are kept lower case.

    The last two fields are facts about one connection, set by its owner through
    ``for_connection``: None where unknown (no address check) or not TLS (no certificate check).
    """

    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    allowed_realms: frozenset[str] = field(default_factory=frozenset)
    allowed_networks: tuple[IpNetwork, ...] = ()
    # An Origin-Host bound to the networks it may connect from.
    host_networks: Mapping[str, tuple[IpNetwork, ...]] = field(default_factory=dict)
    peer_address: IpAddress | None = None
    certificate_names: frozenset[str] | None = None  # DNS names the peer's certificate proves, lower case

    def __post_init__(self) -> None:
        # Frozen: the lower-case forms are set once, here (dataclasses.replace comes through too).
        object.__setattr__(self, "allowed_hosts", frozenset(host.lower() for host in self.allowed_hosts))
        object.__setattr__(self, "allowed_realms", frozenset(realm.lower() for realm in self.allowed_realms))
        lowered = {host.lower(): networks for host, networks in self.host_networks.items()}
        object.__setattr__(self, "host_networks", lowered)

    def allows(self, origin_host: str, origin_realm: str) -> bool:
        host_ok = not self.allowed_hosts or origin_host.lower() in self.allowed_hosts
        realm_ok = not self.allowed_realms or origin_realm.lower() in self.allowed_realms
        return host_ok and realm_ok

    def admits_address(self, address: IpAddress) -> bool:
        """The source address is in ``allowed_networks`` (empty: any address)."""
        return not self.allowed_networks or any(address in network for network in self.allowed_networks)

    def for_connection(
        self, peer_address: IpAddress | None, certificate_names: frozenset[str] | None = None
    ) -> PeerPolicy:
        return dataclasses.replace(self, peer_address=peer_address, certificate_names=certificate_names)

    def refusal(self, origin_host: str, origin_realm: str) -> str:
        """Why this peer is unknown here (empty: it is known)."""
        if not self.allows(origin_host, origin_realm):
            return f"{origin_host} ({origin_realm}) not allowed"
        address = self.peer_address
        bound = self.host_networks.get(origin_host.lower())
        if address is not None and bound is not None and not any(address in network for network in bound):
            return f"{origin_host} may not connect from {address}"
        names = self.certificate_names
        if names is not None and origin_host.lower() not in names:
            # RFC 6733 section 13.1: TLS authenticates the peer; its Origin-Host must be the
            # identity that authentication proved, or any certified node could claim any name.
            return f"{origin_host} is not a name in the peer's certificate {sorted(names)}"
        return ""


@dataclass(frozen=True, slots=True)
class PeerCapabilities:
    origin_host: str
    origin_realm: str
    applications: frozenset[int]  # the applications we share
    product_name: str
    origin_state_id: int | None
    inband_security: InbandSecurity = InbandSecurity.NO_INBAND_SECURITY  # TLS: handshake right after CEA


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
    """CER, RFC 6733 section 5.3.1; Inband-Security-Id only when we want more than the default."""
    avps = _capability_avps(identity)
    if identity.inband_security and identity.inband_security != DEFAULT_INBAND_SECURITY:
        avps += [avp("Inband-Security-Id", int(value)) for value in identity.inband_security]
    return request(CommandCode.CAPABILITIES_EXCHANGE, ApplicationId.DIAMETER_COMMON_MESSAGES, avps)


def build_cea(identity: LocalIdentity, cer: Message, result_code: ResultCode, error_message: str = "") -> Message:
    """CEA, RFC 6733 section 5.3.2; the E bit is set for a 3xxx refusal (section 7.1.3).

    When the CER offered inband security, the CEA answers in kind with the one mechanism chosen
    (TLS: the handshake follows, RFC 6733 section 13); a 5017 CEA lists what we would accept."""
    avps = [avp("Result-Code", int(result_code)), *_capability_avps(identity)]
    if error_message and result_code != ResultCode.DIAMETER_SUCCESS:
        avps.append(avp("Error-Message", error_message))
    answered: Sequence[InbandSecurity] = ()
    if result_code == ResultCode.DIAMETER_NO_COMMON_SECURITY:
        answered = identity.inband_security  # what it would take
    elif _offered_security(cer) is not None:
        chosen = choose_inband_security(cer, identity)
        answered = (chosen,) if chosen is not None else ()
    avps += [avp("Inband-Security-Id", int(value)) for value in answered]
    return answer_to(cer, avps, error=3000 <= result_code < 4000)


def _offered_security(message: Message) -> set[int] | None:
    """The Inband-Security-Id values a CER or CEA carries; None when it carries none."""
    values = {item.value for item in message.avps if item.code == 299 and isinstance(item.value, int)}
    return values or None


def choose_inband_security(message: Message, identity: LocalIdentity) -> InbandSecurity | None:
    """The first mechanism we accept that the peer offers (absent AVP: NO_INBAND_SECURITY,
    RFC 6733 section 6.10); None when there is none in common. On a connection that is already
    TLS (we accept nothing inband) the answer is NO_INBAND_SECURITY: no second handshake."""
    if not identity.inband_security:
        return InbandSecurity.NO_INBAND_SECURITY
    offered = _offered_security(message) or {InbandSecurity.NO_INBAND_SECURITY}
    return next((value for value in identity.inband_security if value in offered), None)


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
    refusal = policy.refusal(origin_host, origin_realm)
    if refusal:
        return CapabilitiesVerdict(ResultCode.DIAMETER_UNKNOWN_PEER, None, refusal)
    ours = set(identity.auth_application_ids)
    theirs = advertised_applications(message)
    common = ours if ApplicationId.RELAY in theirs else ours & theirs
    if not common:
        return CapabilitiesVerdict(
            ResultCode.DIAMETER_NO_COMMON_APPLICATION, None, f"peer offers {sorted(theirs)}, we serve {sorted(ours)}"
        )
    security = choose_inband_security(message, identity)
    if security is None:
        # RFC 6733 section 5.3: no security mechanism in common MUST be answered 5017.
        offered = sorted(_offered_security(message) or {InbandSecurity.NO_INBAND_SECURITY})
        accepted = [int(value) for value in identity.inband_security]
        return CapabilitiesVerdict(
            ResultCode.DIAMETER_NO_COMMON_SECURITY, None, f"peer offers security {offered}, we accept {accepted}"
        )
    state = message.get("Origin-State-Id")
    product = message.get("Product-Name")
    capabilities = PeerCapabilities(
        origin_host=origin_host,
        origin_realm=origin_realm,
        applications=frozenset(common | {ApplicationId.DIAMETER_COMMON_MESSAGES}),
        product_name=product if isinstance(product, str) else "",
        origin_state_id=state if isinstance(state, int) else None,
        inband_security=security,
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
