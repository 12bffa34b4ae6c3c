"""A realistic Gy CCR-UPDATE and its CCA, built with our codec (shared by the benchmarks)."""

from __future__ import annotations

from ipaddress import IPv4Address

from protocol.message import Avp, Message, answer_to, avp, request


def gy_ccr_update() -> Message:
    def mscc(rating_group: int, used_octets: int) -> Avp:
        return avp(
            "Multiple-Services-Credit-Control",
            [
                avp("Requested-Service-Unit", []),
                avp(
                    "Used-Service-Unit",
                    [
                        avp("CC-Total-Octets", used_octets),
                        avp("CC-Input-Octets", used_octets // 4),
                        avp("CC-Output-Octets", used_octets - used_octets // 4),
                        avp("Reporting-Reason", 2),
                    ],
                ),
                avp("Rating-Group", rating_group),
            ],
        )

    return request(
        272,
        4,
        [
            avp("Session-Id", "pgw01.operator.net;1690000000;42;0"),
            avp("Origin-Host", "pgw01.operator.net"),
            avp("Origin-Realm", "operator.net"),
            avp("Destination-Realm", "ocs.operator.net"),
            avp("Auth-Application-Id", 4),
            avp("Service-Context-Id", "32251@3gpp.org"),
            avp("CC-Request-Type", 2),
            avp("CC-Request-Number", 3),
            avp("Subscription-Id", [avp("Subscription-Id-Type", 0), avp("Subscription-Id-Data", "491700000042")]),
            avp("Subscription-Id", [avp("Subscription-Id-Type", 1), avp("Subscription-Id-Data", "262010000000042")]),
            avp("Multiple-Services-Indicator", 1),
            mscc(10, 1_500_000),
            mscc(20, 250_000),
            avp(
                "Service-Information",
                [
                    avp(
                        "PS-Information",
                        [
                            avp("3GPP-Charging-Id", b"\x00\x01\x02\x03"),
                            avp("3GPP-PDP-Type", 0),
                            avp("PDP-Address", IPv4Address("10.1.2.3")),
                            avp("SGSN-Address", IPv4Address("192.0.2.10")),
                            avp("GGSN-Address", IPv4Address("192.0.2.20")),
                            avp("3GPP-SGSN-MCC-MNC", "26201"),
                            avp("Called-Station-Id", "internet"),
                            avp("3GPP-RAT-Type", b"\x06"),
                            avp("3GPP-User-Location-Info", bytes.fromhex("8262f2100001a262f210001b2c01")),
                        ],
                    )
                ],
            ),
        ],
        hop_by_hop=0x1234,
        end_to_end=0x5678,
    )


def gy_cca_update(ccr: Message) -> Message:
    def mscc(rating_group: int) -> Avp:
        return avp(
            "Multiple-Services-Credit-Control",
            [
                avp("Granted-Service-Unit", [avp("CC-Total-Octets", 10_000_000)]),
                avp("Rating-Group", rating_group),
                avp("Validity-Time", 3600),
                avp("Result-Code", 2001),
                avp("Volume-Quota-Threshold", 1_000_000),
            ],
        )

    return answer_to(
        ccr,
        [
            avp("Session-Id", "pgw01.operator.net;1690000000;42;0"),
            avp("Result-Code", 2001),
            avp("Origin-Host", "ocs.operator.net"),
            avp("Origin-Realm", "operator.net"),
            avp("Auth-Application-Id", 4),
            avp("CC-Request-Type", 2),
            avp("CC-Request-Number", 3),
            mscc(10),
            mscc(20),
        ],
    )
