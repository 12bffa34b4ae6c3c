"""The OCS's Diameter security settings ([diameter] in config/ocs.toml): loading and refusal,
and the whole server with TLS and admission by address over real TCP."""

from __future__ import annotations

import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from balance.embedded import EmbeddedRedis
from ocs.app import ServerState, new_state, shutdown, startup
from ocs.config import ConfigError, load_settings
from protocol.aio import DiameterClient
from protocol.aio.tls import client_context
from protocol.message import avp
from tests.ocs.conftest import CLIENT, RunningServer, server_settings
from tests.ocs.test_credit_control import EUR, ccr, code, events, sms_to
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


@contextlib.asynccontextmanager
async def secured_server(
    redis: EmbeddedRedis, tmp_path: Path, authority: Authority, **diameter: object
) -> AsyncIterator[ServerState]:
    """The whole OCS with TLS from the authority's server certificate and these [diameter] fields."""
    settings = server_settings(redis.url, tmp_path / "spool.sqlite3")
    tls = {
        "tls_port": 0,
        "tls_certificate": str(authority.server.certificate),
        "tls_private_key": str(authority.server.key),
        "tls_ca_file": str(authority.ca_file),
    }
    state = new_state(dataclasses.replace(settings, diameter=dataclasses.replace(settings.diameter, **tls, **diameter)))
    await startup(state)
    assert state.store is not None
    await state.store.flush_all()
    try:
        yield state
    finally:
        await shutdown(state)


def tls_client_of(authority: Authority) -> ssl.SSLContext:
    return client_context(str(authority.ca_file), str(authority.pgw.certificate), str(authority.pgw.key))


async def test_a_tls_peer_is_charged_and_a_clear_one_refused_when_tls_is_required(
    embedded_redis: EmbeddedRedis, tmp_path: Path, authority: Authority
) -> None:
    async with secured_server(embedded_redis, tmp_path, authority, require_tls=True) as state:
        assert state.diameter is not None and state.diameter_address is not None
        server = RunningServer(state, state.diameter_address[1])
        await server.subscriber("alice", "4915100000001", micros=EUR)
        assert state.diameter.tls_address is not None
        client = await DiameterClient.connect(
            "127.0.0.1", state.diameter.tls_address[1], CLIENT, tls=tls_client_of(authority), server_hostname="ocs.test"
        )
        sms = (avp("Requested-Action", "DIRECT_DEBITING"), events("Requested-Service-Unit", 1), sms_to("4917612345678"))
        answer = await client.request(ccr("tls-1", "EVENT_REQUEST", 0, *sms, context="32274@3gpp.org"))
        assert code(answer) == 2001
        await client.close()
        with pytest.raises(ConnectionError, match="5017"):  # clear port, no inband TLS offered
            await server.client()


async def test_a_peer_off_the_allowed_addresses_is_refused(
    embedded_redis: EmbeddedRedis, tmp_path: Path, authority: Authority
) -> None:
    async with secured_server(embedded_redis, tmp_path, authority, allowed_addresses=("127.0.0.1/32",)) as state:
        assert state.diameter_address is not None
        port = state.diameter_address[1]
        with pytest.raises(ConnectionError):
            await DiameterClient.connect("127.0.0.1", port, CLIENT, source_address="127.0.0.2")
        client = await DiameterClient.connect("127.0.0.1", port, CLIENT, source_address="127.0.0.1")
        await client.close()
