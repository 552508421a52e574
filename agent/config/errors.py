"""Turning pydantic's errors into `key.path: message (got VALUE)`, with the key a typo meant and
the environment variable to blame."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from agent.config.base import UNKNOWN_CHOICE
from agent.errors import ConfigError

Loc = tuple[str | int, ...]
ErrorEntry = tuple[str, str, object]
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME_IN_PATH = re.compile(r"^[A-Za-z0-9_.-]+$")


def _is_tag(key: str | int, node: object) -> bool:
    # pydantic puts the chosen member of a keyed union in the location (`accelerator=npu`);
    # it is no key the user wrote (a real key with "=" would be one of the table's keys).
    return isinstance(key, str) and "=" in key and not (isinstance(node, dict) and key in node)


def key_path(loc: Sequence[str | int], data: object) -> str:
    """Dotted key path for `loc`; a list entry with a `name` shows as `plugins[energy]`."""
    out = ""
    node: object = data
    for key in loc:
        if _is_tag(key, node):
            continue
        if isinstance(key, int):
            name = _entry_name(node, key)
            out += f"[{name if name is not None else key}]"
        else:
            shown = key if _BARE_KEY.match(key) else json.dumps(key)
            out = f"{out}.{shown}" if out else shown
        node = _step(node, key)
    return out or "<config>"


def _entry_name(node: object, index: int) -> str | None:
    if isinstance(node, list) and 0 <= index < len(node) and isinstance(node[index], dict):
        name = node[index].get("name")
        if isinstance(name, str) and _NAME_IN_PATH.match(name):
            return name
    return None


def _step(node: object, key: str | int) -> object:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return None


def from_validation(
    exc: ValidationError,
    *,
    data: Mapping[str, Any],
    origins: Mapping[Loc, str],
    known_keys: Callable[[Loc], Collection[str]],
) -> list[ErrorEntry]:
    """One (key_path, message, value) per pydantic error, naming env variables that set values.

    `known_keys(loc)` lists the keys the table at `loc` may hold, for did-you-mean.
    """
    entries = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        value = None if err["type"] == "missing" else plain(err["input"])
        if err["type"] == UNKNOWN_CHOICE:  # reported on the key that chose, not its table
            key = err.get("ctx", {})["key"]
            loc += (key,)
            value = value.get(key) if isinstance(value, dict) else value
        message = _message(err, loc, known_keys) + _blame(loc, origins)
        entries.append((key_path(loc, data), message, value))
    return entries


def _blame(loc: Loc, origins: Mapping[Loc, str]) -> str:
    plain_loc = tuple(k for k in loc if not _is_tag(k, None))
    note = origin_note(plain_loc, origins)
    tags = [i for i, k in enumerate(loc) if _is_tag(k, None)]
    if note or not tags:
        return note
    # Inside a keyed union: the variable that chose the member explains a key it lacks.
    chooser = str(loc[tags[-1]]).partition("=")[0]
    where = (*(k for k in loc[: tags[-1]] if not _is_tag(k, None)), chooser)
    return f" ({chooser} set by {origins[where]})" if where in origins else ""


def origin_note(loc: Loc, origins: Mapping[Loc, str]) -> str:
    """` (set by VAR)` when an environment variable set `loc` or a table holding it, else ``."""
    for where, variable in origins.items():
        if loc[: len(where)] == where:
            return f" (set by {variable})"
    # An error on a whole table (a cross-field check) may come from a key the environment set.
    inside = [v for where, v in origins.items() if loc and where[: len(loc)] == loc]
    return f" (involves {', '.join(sorted(inside))})" if inside else ""


def _message(err: ErrorDetails, loc: Loc, known_keys: Callable[[Loc], Collection[str]]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
        if len(loc) > 1 and _is_tag(loc[-2], None):  # `accelerator=cpu` -> "for accelerator 'cpu'"
            chooser, _, choice = str(loc[-2]).partition("=")
            message += f" for {chooser} '{choice}'"
        import difflib  # only a config with an unknown key pays for it, not every start

        close = difflib.get_close_matches(str(loc[-1]), known_keys(loc[:-1]), n=1)
        return message + (f" (did you mean '{close[0]}'?)" if close else "")
    if kind == "missing":
        return "required key missing"
    # pydantic prefixes the message of every ValueError raised in a validator.
    return err["msg"].removeprefix("Value error, ")


def plain(value: object) -> object:
    """A value as the user wrote it: models become their name or their non-default keys."""
    if isinstance(value, BaseModel):
        name = getattr(value, "name", None)
        if isinstance(name, str):
            return name
        return value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def show_value(value: object, *, limit: int = 120) -> str:
    """A value for an error line, JSON-like and cut to `limit` characters."""
    if value is None:
        return "nothing"
    text = json.dumps(plain(value), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_lines(err: ConfigError) -> list[str]:
    """Every error as `key.path: message (got VALUE)`."""
    return [f"{path}: {msg} (got {show_value(value)})" for path, msg, value in err.errors]
