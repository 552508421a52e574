"""`service install | uninstall` into a --prefix folder: layout, idempotence, edits, refusals."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.config import load_config
from agent.errors import ConfigError
from agent.runtime.shipped import ShippedError, shipped_models_dir
from agent.service.install import (
    CONFIG_PATH,
    STATE_DIR,
    UNIT_PATH,
    plan_install,
    uninstall,
    write_install,
)
from agent.service.venv import MARKER, InstallRefused, RunningCode, plan_code

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Where a packager or an operator would put the agent: outside every folder the unit hides.
OPT = RunningCode(
    prefix=Path("/opt/edge-agent"),
    base_python=Path("/usr/bin/python3.11"),
    version="0.1.0",
    source=None,
    editable_dir=None,
)
HIDDEN = {Path("/home"): "ProtectHome=yes", Path("/root"): "ProtectHome=yes"}


def _install(root: Path, **kwargs: object) -> list[str]:
    plan = plan_install(root=root, running=kwargs.pop("running", OPT), **kwargs)  # type: ignore[arg-type]
    return write_install(plan, root)


def _etc(root: Path) -> Path:
    return root / CONFIG_PATH.relative_to("/")


def test_install_lays_out_config_and_unit(tmp_path: Path) -> None:
    done = _install(tmp_path, board="generic-x86")
    assert done == [f"wrote {_etc(tmp_path)}", f"wrote {tmp_path / UNIT_PATH.relative_to('/')}"]
    unit = (tmp_path / UNIT_PATH.relative_to("/")).read_text()
    assert (
        "ExecStart=/opt/edge-agent/bin/edge-agent run --config /etc/edge-agent/agent.toml" in unit
    )
    assert "LoadCredential=" not in unit  # generic-x86 names no credential
    text = _etc(tmp_path).read_text()
    data = tomllib.loads(text)
    assert data["state_dir"] == str(STATE_DIR)
    assert "models_dir" not in data  # omitted: the package's shipped models
    cfg = load_config(_etc(tmp_path), env={})
    assert cfg.models_dir == shipped_models_dir() and cfg.device.board == "generic-x86"


def test_every_written_path_is_absolute(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A config with relative paths of its own, as a user writes next to their files.
    work = tmp_path_factory.mktemp("work")
    (work / "ca.pem").write_text("ca")
    (work / "ota.pem").write_text("key")
    (work / "my.toml").write_text(
        'state_dir = "state"\nmodels_dir = "mine"\n'
        '[mqtt.tls]\nca_file = "ca.pem"\n[ota]\ntrusted_keys = ["ota.pem"]\n'
    )
    _install(tmp_path, config=work / "my.toml")
    data = tomllib.loads(_etc(tmp_path).read_text())
    paths = [data["state_dir"], data["models_dir"], data["mqtt"]["tls"]["ca_file"]]
    paths += data["ota"]["trusted_keys"]
    assert all(Path(p).is_absolute() for p in paths), paths
    assert data["models_dir"] == str(work / "mine")


def test_second_install_changes_nothing(tmp_path: Path) -> None:
    _install(tmp_path, board="generic-x86")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    done = _install(tmp_path, board="generic-x86")
    assert all(line.startswith("unchanged ") for line in done), done
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_an_edited_config_is_kept_and_the_new_one_written_beside(tmp_path: Path) -> None:
    _install(tmp_path, board="generic-x86")
    etc = _etc(tmp_path)
    edited = etc.read_text().replace('id = "edge-dev-1"', 'id = "kitchen-1"')
    etc.write_text(edited)
    done = _install(tmp_path, board="raspberry-pi-4", check_files=False)
    assert etc.read_text() == edited
    new = etc.with_name("agent.toml.new")
    assert done[0] == f"kept {etc} (edited by hand); the new one is {new} (wrote)"
    assert 'board = "raspberry-pi-4"' in new.read_text()
    # Unedited, a config follows the new install (an upgrade, another board).
    etc.unlink()
    _install(tmp_path, board="generic-x86")
    assert _install(tmp_path, board="raspberry-pi-4", check_files=False)[0] == f"wrote {etc}"


def test_credentials_only_for_what_the_config_names(tmp_path: Path) -> None:
    plan = plan_install(board="raspberry-pi-5", root=tmp_path, check_files=False, running=OPT)
    assert plan.credentials == [
        ("mqtt-password", Path("/etc/edge-agent/credentials/mqtt-password"))
    ]
    loads = [x for x in plan.unit_text.splitlines() if x.startswith("LoadCredential=")]
    assert loads == ["LoadCredential=mqtt-password:/etc/edge-agent/credentials/mqtt-password"]
    assert "CapabilityBoundingSet=CAP_SYS_NICE" in plan.unit_text  # robot asks for SCHED_FIFO


def test_a_password_file_becomes_a_credential(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    config = tmp_path / "c.toml"
    config.write_text(f'[mqtt]\nusername = "u"\npassword_file = "{secret}"\n')
    plan = plan_install(config=config, root=tmp_path / "root", running=OPT)
    assert f"LoadCredential=mqtt-password:{secret}" in plan.unit_text
    data = tomllib.loads(plan.config_text)
    assert data["mqtt"]["password_credential"] == "mqtt-password"
    assert "password_file" not in data["mqtt"] and "s3cret" not in plan.config_text


def test_a_missing_credential_file_is_an_error_unless_no_file_check(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[mqtt]\nusername = "u"\npassword_credential = "mqtt-password"\n')
    with pytest.raises(ConfigError) as info:
        plan_install(config=config, root=tmp_path, running=OPT)
    assert str(info.value) == (
        "LoadCredential=mqtt-password: file not found "
        "(got '/etc/edge-agent/credentials/mqtt-password')"
    )
    plan_install(config=config, root=tmp_path, running=OPT, check_files=False)
    (tmp_path / "etc/edge-agent/credentials").mkdir(parents=True)
    (tmp_path / "etc/edge-agent/credentials/mqtt-password").write_text("pw")
    plan_install(config=config, root=tmp_path, running=OPT)


def test_board_only_files_need_no_file_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["service", "install", "--board", "raspberry-pi-5", "--prefix", str(tmp_path)]
    assert main([*argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "mqtt.tls.ca_file: file not found (got '/etc/edge-agent/ca.crt')" in err
    assert "--no-file-check" in err
    plan = plan_install(board="raspberry-pi-5", root=tmp_path, check_files=False, running=OPT)
    assert 'ca_file = "/etc/edge-agent/ca.crt"' in plan.config_text


def test_paths_the_hardening_hides_are_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'models_dir = "/home/me/models"\n'
        '[mqtt.tls]\nca_file = "/tmp/ca.pem"\n[ota]\ntrusted_keys = ["/root/ota.pem"]\n'
    )
    plan = plan_install(config=config, root=tmp_path, running=OPT, check_files=False)
    assert plan.warnings == [
        "mqtt.tls.ca_file = /tmp/ca.pem: hidden from the service by PrivateTmp=yes",
        "ota.trusted_keys[0] = /root/ota.pem: hidden from the service by ProtectHome=yes",
        "models_dir = /home/me/models: hidden from the service by ProtectHome=yes",
    ]
    assert plan_install(board="generic-x86", root=tmp_path, running=OPT).warnings == []


def test_files_the_dynamic_user_cannot_read_are_warned_about(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("ca")
    ca.chmod(0o600)
    config = tmp_path / "c.toml"
    config.write_text(f'[mqtt.tls]\nca_file = "{ca}"\n')
    plan = plan_install(config=config, root=tmp_path / "root", running=OPT)
    assert plan.warnings[-1] == (
        f"mqtt.tls.ca_file = {ca}: the service's dynamic user cannot read it (mode 0600)"
    )
    ca.chmod(0o644)
    assert not any("cannot read" in w for w in plan_install(config=config, running=OPT).warnings)


def test_a_hidden_venv_is_replaced_by_one_in_opt(tmp_path: Path) -> None:
    home = RunningCode(
        prefix=Path("/home/me/.venv"),
        base_python=Path("/usr/bin/python3.11"),
        version="0.1.0",
        source="/home/me/dist/edge_agent-0.1.0-py3-none-any.whl",
        editable_dir=None,
    )
    install = plan_install(board="generic-x86", root=tmp_path, running=home)
    assert install.warnings == []  # the shipped models move with the code
    plan = install.code
    assert plan.exec_path == Path("/opt/edge-agent/bin/edge-agent")
    make, pip = plan.commands()
    assert make[1:] == ["-m", "venv", str(tmp_path / "opt/edge-agent")]
    assert pip[-3:] == ["-c", str(tmp_path / "opt/edge-agent/constraints.txt"), home.source]
    assert "the running venv /home/me/.venv is hidden from the service" in plan.note

    # Made before (the marker): the same version is left alone, another one is installed.
    venv = tmp_path / "opt/edge-agent"
    (venv / "lib/python3.11/site-packages/edge_agent-0.1.0.dist-info").mkdir(parents=True)
    (venv / MARKER).write_text("made")
    again = plan_code(home, HIDDEN, root=tmp_path)
    assert again.commands() == [] and "already holds edge-agent 0.1.0" in again.note
    newer = replace(home, version="0.2.0", source=None)
    upgrade = plan_code(newer, HIDDEN, root=tmp_path)
    assert [c[-1] for c in upgrade.commands()] == ["edge-agent==0.2.0"]


def test_a_venv_in_opt_it_did_not_make_is_a_refusal(tmp_path: Path) -> None:
    home = replace(OPT, prefix=Path("/home/me/.venv"))
    (tmp_path / "opt/edge-agent").mkdir(parents=True)
    with pytest.raises(InstallRefused) as info:
        plan_code(home, HIDDEN, root=tmp_path)
    assert "/opt/edge-agent exists but was not made by `service install`" in str(info.value)


def test_no_visible_python_is_a_refusal_that_says_why(tmp_path: Path) -> None:
    pyenv = RunningCode(
        prefix=Path("/root/.venv"),
        base_python=Path("/root/.pyenv/versions/3.11.7/bin/python3.11"),
        version="0.1.0",
        source=None,
        editable_dir=None,
    )
    with pytest.raises(InstallRefused) as info:
        plan_code(pyenv, {Path("/root"): "ProtectHome=yes"}, system_python=tmp_path / "none")
    assert str(info.value).startswith(
        "the running venv /root/.venv is hidden from the service (ProtectHome=yes), and no "
        "Python outside /root can make /opt/edge-agent"
    )


def test_an_editable_checkout_in_home_cannot_be_reused(tmp_path: Path) -> None:
    dev = RunningCode(Path("/opt/venv"), Path("/usr/bin/python3"), "0.1.0", None, Path("/home/a"))
    plan = plan_install(board="generic-x86", root=tmp_path, running=dev).code
    assert plan.make_with is not None and "the editable checkout /home/a is hidden" in plan.note


def test_unknown_board_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ShippedError) as info:
        plan_install(board="raspberry-pi-9", root=tmp_path, running=OPT)
    assert str(info.value).startswith("no board named 'raspberry-pi-9' (known: coral-dev-board,")


def test_uninstall_keeps_config_and_state_unless_purged(tmp_path: Path) -> None:
    _install(tmp_path, board="generic-x86")
    venv = tmp_path / "opt/edge-agent"
    venv.mkdir(parents=True)
    (venv / MARKER).write_text("made")
    state = tmp_path / STATE_DIR.relative_to("/")
    state.mkdir(parents=True)
    assert uninstall(tmp_path) == [
        f"removed {tmp_path / UNIT_PATH.relative_to('/')}",
        f"removed {venv}",
    ]
    assert _etc(tmp_path).is_file() and state.is_dir()
    assert uninstall(tmp_path) == ["nothing to remove"]
    assert uninstall(tmp_path, purge=True) == [
        f"removed {tmp_path / 'etc/edge-agent'}",
        f"removed {state}",
    ]


def test_uninstall_leaves_a_venv_it_did_not_make(tmp_path: Path) -> None:
    venv = tmp_path / "opt/edge-agent"
    venv.mkdir(parents=True)
    assert uninstall(tmp_path, purge=True) == ["nothing to remove"]
    assert venv.is_dir()
