"""A Mosquitto locked down with the shipped per-device ACL (firmware-configs/mosquitto/)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import acl

OPERATOR = acl.OPERATOR


@dataclass
class Fleet:
    """A locked-down broker and its accounts: two devices in one group and an operator."""

    broker: Any
    a: str
    b: str
    group: str
    passwords: dict[str, str]
    password_files: dict[str, Path]

    def probe(self, factory: Callable[..., Any], user: str) -> Any:
        """A client logged in as `user`."""
        return factory(self.broker, username=user, password=self.passwords[user])


def acl_text(devices: dict[str, str]) -> str:
    """The shipped ACL: its `pattern` rules and operator block, with blocks for `devices`."""
    patterns, operator = acl.shipped_rules()
    lines = [*patterns, f"user {OPERATOR}", *operator]
    for device, group in devices.items():
        lines += acl.device_block(device, group)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's update signing key pair (private.pem, public.pem)."""
    from agent.ota import generate_keypair

    folder = tmp_path_factory.mktemp("keys")
    generate_keypair(folder)
    return folder


@pytest.fixture
def fleet(broker_factory: Callable[..., Any], tmp_path: Path, mosquitto_bin: str) -> Fleet:
    """A broker with the shipped ACL, password-only, and accounts for two devices."""
    uid = uuid.uuid4().hex[:6]
    a, b, group = f"dev-a-{uid}", f"dev-b-{uid}", f"g{uid}"
    passwords = {user: uuid.uuid4().hex for user in (a, b, OPERATOR)}
    passwd = tmp_path / "passwd"
    tool = shutil.which("mosquitto_passwd") or str(
        Path(mosquitto_bin).with_name("mosquitto_passwd")
    )
    for n, (user, secret) in enumerate(passwords.items()):
        flags = ["-b", "-c"] if n == 0 else ["-b"]
        subprocess.run([tool, *flags, str(passwd), user, secret], check=True)
    acl = tmp_path / "acl"
    acl.write_text(acl_text({a: group, b: group}))
    files = {}
    for user, secret in passwords.items():
        files[user] = tmp_path / f"{user}.secret"
        files[user].write_text(secret + "\n")
    broker = broker_factory(
        anonymous=False, extra_lines=[f"password_file {passwd}", f"acl_file {acl}"]
    )
    return Fleet(broker, a, b, group, passwords, files)
