"""A private certificate authority made at test time with the openssl command line.

``make_authority(directory)`` writes a CA, the server's certificate (ocs.test) and client
certificates, each a PEM certificate and key, and returns their paths. Keys are P-256, valid
for a day; nothing leaves the test's temporary directory.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Credential:
    certificate: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    ca_file: Path
    server: Credential  # subjectAltName DNS:ocs.test
    pgw: Credential  # subjectAltName DNS:pgw.test
    other: Credential  # subjectAltName DNS:other.test
    stranger: Credential  # pgw.test, but from a CA nobody trusts


def _openssl(*arguments: str | Path) -> None:
    subprocess.run(["openssl", *map(str, arguments)], check=True, capture_output=True)


def _self_signed(directory: Path, name: str) -> Credential:
    credential = Credential(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", credential.key, "-out", credential.certificate, "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return credential


def _issued(directory: Path, authority: Credential, name: str, dns_name: str) -> Credential:
    credential = Credential(directory / f"{name}.pem", directory / f"{name}.key")
    request = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text(f"subjectAltName=DNS:{dns_name}\nbasicConstraints=CA:FALSE\n", encoding="ascii")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", credential.key, "-out", request, "-subj", f"/CN={dns_name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", request, "-CA", authority.certificate, "-CAkey", authority.key,
        "-CAcreateserial", "-out", credential.certificate, "-days", "1", "-extfile", extensions,
    )  # fmt: skip
    return credential


def make_authority(directory: Path) -> Authority:
    ca = _self_signed(directory, "test-ca")
    rogue = _self_signed(directory, "rogue-ca")
    return Authority(
        ca_file=ca.certificate,
        server=_issued(directory, ca, "server", "ocs.test"),
        pgw=_issued(directory, ca, "pgw", "pgw.test"),
        other=_issued(directory, ca, "other", "other.test"),
        stranger=_issued(directory, rogue, "stranger", "pgw.test"),
    )
