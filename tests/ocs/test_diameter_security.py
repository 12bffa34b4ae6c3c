"""The OCS's Diameter security settings ([diameter] in config/ocs.toml): loading and refusal,
and the whole server with TLS and admission by address over real TCP."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocs.config import ConfigError, load_settings
from tests.protocol.tls_support import Authority, make_authority


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("pki"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ocs.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_tls_and_address_settings_load_from_file_and_environment(tmp_path: Path, authority: Authority) -> None:
    path = write(
        tmp_path,
        f"""[diameter]
tls_certificate = "{authority.server.certificate}"
tls_private_key = "{authority.server.key}"
tls_ca_file = "{authority.ca_file}"
allowed_addresses = ["127.0.0.1", "10.0.0.0/8"]
peer_addresses = ["pgw.test=127.0.0.1/32"]
""",
    )
    settings = load_settings(path, {"OCS_DIAMETER_REQUIRE_TLS": "true", "OCS_DIAMETER_TLS_PORT": "15868"})
    diameter = settings.diameter
    assert diameter.require_tls and diameter.tls_port == 15868 and diameter.clear_port_enabled
    assert diameter.allowed_addresses == ("127.0.0.1", "10.0.0.0/8")
    assert load_settings(write(tmp_path, ""), {}).diameter.tls_port == 5868  # RFC 6733 section 11.4


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("allowed_addresses = ['10.0.0.300']", "diameter.allowed_addresses: '10.0.0.300' is not an IP"),
        ("peer_addresses = ['pgw.test']", "diameter.peer_addresses: 'pgw.test' is not host=network"),
        ("peer_addresses = ['pgw.test=nowhere']", "diameter.peer_addresses: 'nowhere' is not an IP"),
        ("require_tls = true", "diameter.require_tls needs diameter.tls_certificate"),
        ("clear_port_enabled = false", "diameter.clear_port_enabled = false needs diameter.tls_certificate"),
        ("tls_certificate = 'x.pem'", "diameter.tls_ca_file is required with diameter.tls_certificate"),
        ("tls_certificate = 'x.pem'\ntls_ca_file = 'ca.pem'", "diameter.tls_certificate: no file 'x.pem'"),
        ("tls_port = 70000", "diameter.tls_port is out of range"),
    ],
)
def test_bad_security_settings_are_refused_naming_the_field(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(write(tmp_path, f"[diameter]\n{text}\n"), {})
    assert fragment in str(refused.value)
