"""The sync service's credentials against a real Mosquitto: TLS with a test CA and a client
certificate, a refused CA, verify off, a password file and a systemd credential."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.pki import make_pki

Until = Callable[..., bool]


@pytest.fixture
def tls_broker(broker_factory: Any, tmp_path: Path) -> tuple[Any, dict[str, Path]]:
    pki = make_pki(tmp_path)
    b = broker_factory(
        listener_lines=[
            f"cafile {pki['ca']}",
            f"certfile {pki['server']}",
            f"keyfile {pki['server_key']}",
            "require_certificate true",
            "tls_version tlsv1.2",
        ]
    )
    return b, pki


def _client_tls(pki: dict[str, Path], *, ca: str) -> dict[str, str]:
    """The mqtt.tls section: trust `ca`, present the test client certificate."""
    return {
        "ca_file": str(pki[ca]),
        "cert_file": str(pki["client"]),
        "key_file": str(pki["client_key"]),
    }


def test_tls_with_a_test_ca_and_client_certificate(
    tls_broker: tuple[Any, dict[str, Path]], make_config: Any, start_service: Any, until: Until
) -> None:
    b, pki = tls_broker
    tls = _client_tls(pki, ca="ca")
    service, _ = start_service(make_config(b, mqtt={"tls": tls}))
    assert until(lambda: service.link.connected, 15), service.status()["last_error"]
    assert service.status()["tls"] is True


def test_tls_refuses_a_broker_signed_by_another_ca_unless_verify_is_off(
    tls_broker: tuple[Any, dict[str, Path]], make_config: Any, start_service: Any, until: Until
) -> None:
    b, pki = tls_broker
    tls = _client_tls(pki, ca="other-ca")
    service, _ = start_service(make_config(b, mqtt={"tls": tls}))
    assert until(lambda: bool(service.link.last_error), 10)
    # Not a first-try fluke: it tried again, and was refused again.
    assert until(lambda: service.link.connect_failures >= 2, 10), service.link.connect_failures
    assert not service.link.connected
    assert service.status()["last_error"]


def test_tls_verify_off_connects_despite_the_unknown_ca(
    tls_broker: tuple[Any, dict[str, Path]], make_config: Any, start_service: Any, until: Until
) -> None:
    b, pki = tls_broker
    tls = {
        "ca_file": str(pki["other-ca"]),
        "cert_file": str(pki["client"]),
        "key_file": str(pki["client_key"]),
        "verify": False,
    }
    service, _ = start_service(make_config(b, mqtt={"tls": tls}))
    assert until(lambda: service.link.connected, 15)


def test_username_and_password_file(
    broker_factory: Any, tmp_path: Path, make_config: Any, start_service: Any, until: Until
) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "edge", "s3cret"],
        check=True,
        capture_output=True,
    )
    passwd.chmod(0o600)
    b = broker_factory(anonymous=False, extra_lines=[f"password_file {passwd}"])
    good = tmp_path / "good.pw"
    good.write_text("s3cret\n")
    bad = tmp_path / "bad.pw"
    bad.write_text("wrong\n")
    service, _ = start_service(
        make_config(b, mqtt={"username": "edge", "password_file": str(good)})
    )
    assert until(lambda: service.link.connected, 10), service.link.last_error
    cfg = make_config(
        b,
        mqtt={"username": "edge", "password_file": str(bad)},
        device={"id": "wrong-pw"},
        state_dir=str(tmp_path / "other"),
    )
    refused, _ = start_service(cfg)
    assert until(lambda: "refused" in refused.link.last_error, 10), refused.link.last_error
    assert not refused.link.connected


def test_password_from_a_systemd_credential(
    broker_factory: Any,
    tmp_path: Path,
    make_config: Any,
    start_service: Any,
    until: Until,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "edge", "fr0m-systemd"],
        check=True,
        capture_output=True,
    )
    b = broker_factory(anonymous=False, extra_lines=[f"password_file {passwd}"])
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mqtt-password").write_text("fr0m-systemd")
    cfg = make_config(b, mqtt={"username": "edge", "password_credential": "mqtt-password"})
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    from agent.errors import ConfigError

    with pytest.raises(ConfigError, match=r"mqtt\.password_credential"):
        start_service(cfg)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    service, _ = start_service(cfg)
    assert until(lambda: service.link.connected, 10), service.link.last_error
