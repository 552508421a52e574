"""Loading the agent configuration: built-in defaults, a TOML file, then environment overrides."""

from __future__ import annotations

import copy
import datetime
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.config import schema
from agent.config.errors import ErrorEntry, Loc, from_validation, key_path
from agent.config.sections import CHECK_FILES, AgentConfig, MqttConfig
from agent.errors import ConfigError, EdgeAgentError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "EDGE_AGENT__"
"""Environment variables starting with this override single keys; `__` separates levels."""
log = logging.getLogger(__name__)

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
"""Set by systemd for a unit with LoadCredential=: the folder holding one file per credential."""
_TOML_POSITION = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def load_config(
    path: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    check_files: bool = True,
) -> AgentConfig:
    """Load and validate the configuration; raise ConfigError listing every problem.

    Precedence, lowest first:
      1. built-in defaults (the pydantic models in agent.config.sections);
      2. the TOML file at `path` (none when `path` is None);
      3. environment variables `EDGE_AGENT__SECTION__KEY` from `env` (os.environ when None).

    An environment variable names one key by its levels, separated by `__` and matched without
    regard to case: `EDGE_AGENT__MQTT__PORT=1884`, `EDGE_AGENT__MQTT__TLS__CA_FILE=/etc/ca.pem`.
    A list entry is chosen by index or, for a list of named tables, by name:
    `EDGE_AGENT__PLUGINS__energy__RATE_HZ=50` or `EDGE_AGENT__PLUGINS__1__RATE_HZ=50`; the entry
    must exist in the file. The value is read as a TOML value (`1884`, `true`, `["a", "b"]`,
    `{ca_file = "x"}`) when it parses as one, else as a string; a key whose type is text (ids,
    names, paths, choices) always takes the raw string, so `EDGE_AGENT__DEVICE__ID=42` is "42".
    A new key inside a free-form table (plugin params, delegate options) keeps its spelling.

    Relative paths become absolute: those from the environment against the current directory,
    the others (the file's and built-in defaults like `models_dir = "models"`) against the
    config file's folder, or the current directory when there is no file.

    With `check_files`, files read at start (TLS files, password_file, OTA trusted keys) must
    exist; board files validated away from their board pass `check_files=False`.
    """
    source = str(path) if path is not None else "<defaults>"
    base = path.absolute().parent if path is not None else Path.cwd()
    data: dict[str, Any] = {}
    if path is not None:
        data = _resolve_paths(_read_toml(path), AgentConfig, base)
    errors, origins = _apply_env(data, os.environ if env is None else env, Path.cwd())
    context = {CHECK_FILES: check_files}
    try:
        config = AgentConfig.model_validate(data, context=context)
    except ValidationError as exc:
        errors += from_validation(
            exc, data=data, origins=origins, known_keys=lambda loc: schema.keys_at(AgentConfig, loc)
        )
        raise ConfigError(errors, source=source) from None
    if errors:
        raise ConfigError(errors, source=source)
    # Only built-in defaults can still be relative; anchor them like the file's own paths.
    effective = _resolve_paths(config.model_dump(), AgentConfig, base)
    return AgentConfig.model_validate(effective, context=context)


def reload_from_file(
    path: Path, apply: Callable[[AgentConfig], dict[str, Any]], *, remote: bool = False
) -> dict[str, Any]:
    """Load `path` and hand it to `apply` (SIGHUP and the `config.reload` command both do);
    the outcome is logged once, a failure naming the bad key, then re-raised: the config in
    force stays, and what the caller tells its requester is the caller's."""
    origin = " (remote)" if remote else ""
    try:
        result = apply(load_config(path))
    except EdgeAgentError as exc:
        one_line = "; ".join(str(exc).splitlines())
        log.error("config reload%s failed, config unchanged: %s", origin, one_line)
        raise
    log.info("config reloaded%s: %s", origin, json.dumps(result, default=str, sort_keys=True))
    return result


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [(str(path), f"cannot read config file: {reason}", None)], str(path)
        ) from None
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        entry = (str(path), f"not UTF-8 text (byte {exc.start})", None)
        raise ConfigError([entry], str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_error(path, raw, exc)], str(path)) from None
    return data


def _syntax_error(path: Path, raw: bytes, exc: tomllib.TOMLDecodeError) -> ErrorEntry:
    text = str(exc)
    found = _TOML_POSITION.match(text)
    if found is None:
        return (str(path), f"TOML syntax error: {text}", None)
    line, col = int(found["line"]), int(found["col"])
    lines = raw.decode("utf-8").splitlines()
    source_line = lines[line - 1].strip() if 0 < line <= len(lines) else None
    return (f"{path}:{line}:{col}", f"TOML syntax error: {found['msg']}", source_line)


def _resolve_paths(value: Any, annotation: Any, base: Path) -> Any:
    """`value` with every relative path (as the schema types them) made absolute against base."""
    if annotation is None:
        return value
    if schema.is_path(annotation) and isinstance(value, (str, Path)):
        if isinstance(value, str) and not value.strip():
            return value  # left for the schema to refuse: "" is not the working directory
        return _absolute(str(value), base)
    if isinstance(value, dict):
        return {k: _resolve_paths(v, schema.child(annotation, k), base) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_paths(v, schema.child(annotation, i), base) for i, v in enumerate(value)]
    return value


def _absolute(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    # normpath keeps "firmware-configs/../state" readable in errors and in `config check`.
    return os.path.normpath(path if path.is_absolute() else base / path)


def _apply_env(
    data: dict[str, Any], env: Mapping[str, str], cwd: Path
) -> tuple[list[ErrorEntry], dict[Loc, str]]:
    """Write every EDGE_AGENT__ override into `data`; return the errors and where each went."""
    errors: list[ErrorEntry] = []
    origins: dict[Loc, str] = {}
    # Shallow keys first, so `EDGE_AGENT__MQTT__TLS={...}` is refined by `..__TLS__VERIFY`.
    names = sorted((n for n in env if n.startswith(ENV_PREFIX)), key=lambda n: (n.count("__"), n))
    for name in names:
        # On a copy, so a variable that fails half-way leaves no half-built tables behind.
        trial = copy.deepcopy(data)
        try:
            loc = _set_override(trial, name, env[name], cwd)
        except _OverrideError as exc:
            errors.append((key_path(exc.loc, data), f"{name}: {exc}", env[name]))
        else:
            data.clear()
            data.update(trial)
            origins[loc] = name
    return errors, origins


class _OverrideError(Exception):
    def __init__(self, message: str, loc: Loc) -> None:
        super().__init__(message)
        self.loc = loc


def _set_override(data: dict[str, Any], name: str, raw: str, cwd: Path) -> Loc:
    segments = name[len(ENV_PREFIX) :].split("__")
    if not all(segments):
        raise _OverrideError("empty level in the variable name (three or more '_' in a row?)", ())
    node: dict[str, Any] | list[Any] = data
    annotation: Any = AgentConfig
    loc: Loc = ()
    for i, segment in enumerate(segments):
        key = _pick(node, annotation, segment, loc)
        loc += (key,)
        annotation = schema.child(annotation, key)
        if i == len(segments) - 1:
            _put(node, key, _resolve_paths(_env_value(raw, annotation), annotation, cwd))
            return loc
        node = _descend(node, key, annotation, loc)
    raise AssertionError("unreachable: segments is never empty")


def _pick(node: dict[str, Any] | list[Any], annotation: Any, segment: str, loc: Loc) -> str | int:
    """The key or index `segment` names: schema fields and existing keys match without case."""
    if isinstance(node, list):
        return _pick_entry(node, segment, loc)
    section = schema.fields(annotation)
    known = list(section) if section else list(node)
    if segment in known:
        return segment
    folded = segment.casefold()
    for candidate in known:
        if candidate.casefold() == folded:
            return candidate
    # An unknown field of a section is lower-cased like every field, so errors read `mqtt.hots`.
    return segment.lower() if section else segment


def _pick_entry(node: list[Any], segment: str, loc: Loc) -> int:
    if segment.isdigit():
        index = int(segment)
        if index < len(node):
            return index
        raise _OverrideError(f"no entry {index}: the list has {len(node)}", loc)
    names = [e.get("name") if isinstance(e, dict) else None for e in node]
    if segment in names:
        return names.index(segment)
    folded = segment.casefold()
    for index, entry_name in enumerate(names):
        if isinstance(entry_name, str) and entry_name.casefold() == folded:
            return index
    have = ", ".join(str(n) for n in names if isinstance(n, str)) or "none"
    raise _OverrideError(f"no entry named {segment!r} (have: {have})", loc)


def _descend(
    node: dict[str, Any] | list[Any], key: str | int, annotation: Any, loc: Loc
) -> dict[str, Any] | list[Any]:
    current = node[int(key)] if isinstance(node, list) else node.get(str(key))
    if annotation is not None and not schema.is_table(annotation):
        raise _OverrideError("is a single value, not a table", loc)
    if current is None:
        if schema.is_list(annotation):
            raise _OverrideError("the file has no such list to pick an entry from", loc)
        current = {}
        _put(node, key, current)
    if not isinstance(current, (dict, list)):
        raise _OverrideError("is a single value, not a table", loc)
    return current


def _put(node: dict[str, Any] | list[Any], key: str | int, value: Any) -> None:
    if isinstance(node, list):
        node[int(key)] = value
    else:
        node[str(key)] = value


def _env_value(raw: str, annotation: Any) -> Any:
    """The value of a variable: raw text for text fields, else a TOML value when it is one."""
    if schema.is_text(annotation):
        return raw
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        return raw
    value = parsed.get("v")
    # "2024-01-01" or "a\nb = 1" parse as TOML, but nothing here means a date or two keys.
    if len(parsed) != 1 or isinstance(value, (datetime.date, datetime.time)):
        return raw
    return value


def read_mqtt_password(cfg: MqttConfig, env: Mapping[str, str] | None = None) -> str | None:
    """The broker password from `password_file` or the systemd credential; None when neither."""
    if cfg.password_file is not None:
        return _read_secret(cfg.password_file, "mqtt.password_file")
    if cfg.password_credential is None:
        return None
    env = os.environ if env is None else env
    folder = env.get(CREDENTIALS_ENV)
    if not folder:
        reason = (
            f"${CREDENTIALS_ENV} is not set: run under systemd with "
            f"LoadCredential={cfg.password_credential}:/path/to/secret"
        )
        raise ConfigError([("mqtt.password_credential", reason, cfg.password_credential)])
    return _read_secret(Path(folder) / cfg.password_credential, "mqtt.password_credential")


def _read_secret(path: Path, key: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([(key, "file not found", str(path))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([(key, f"cannot read: {exc}", str(path))]) from None
    # Files written by `echo` end with a newline that is not part of the password.
    return text.rstrip("\r\n")


def format_config(cfg: AgentConfig) -> str:
    """The configuration as TOML that `load_config` reads back to an equal config."""
    import tomli_w  # only `config check` and tests write TOML; a running agent never does

    # TOML has no null: unset optional keys are left out, which is what their default means.
    return tomli_w.dumps(_toml_ready(cfg.model_dump(exclude_none=True)))


def _toml_ready(value: Any) -> Any:
    # Paths as text; everything else (dates in plugin params included) as TOML types it.
    if isinstance(value, dict):
        return {k: _toml_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_toml_ready(v) for v in value]
    return str(value) if isinstance(value, Path) else value
