"""Naming what is wrong in a configuration: key paths, messages and the values that were given."""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from agent.errors import ConfigError

Loc = tuple[str | int, ...]
ErrorEntry = tuple[str, str, object]
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME_IN_PATH = re.compile(r"^[A-Za-z0-9_.-]+$")


def unwrap(annotation: Any) -> Any:
    """The annotation without `Annotated[...]` metadata and without `| None`."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model class an annotation stands for, if it is one."""
    inner = unwrap(annotation)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner
    return None


def child_annotation(annotation: Any, key: str | int) -> Any:
    """The annotation of `key` inside a value of `annotation`; None when not known (Any)."""
    model = model_of(annotation)
    if model is not None:
        field = model.model_fields.get(str(key))
        return field.annotation if field is not None else None
    inner = unwrap(annotation)
    origin = get_origin(inner)
    if origin is list:
        return get_args(inner)[0]
    if origin is dict:
        return get_args(inner)[1]
    return None


def annotation_at(root: Any, loc: Sequence[str | int]) -> Any:
    """The annotation found by following `loc` from `root`; None when the walk leaves the schema."""
    annotation = root
    for key in loc:
        if annotation is None:
            return None
        annotation = child_annotation(annotation, key)
    return annotation


def is_path(annotation: Any) -> bool:
    """True for `Path` fields (optional or constrained ones too)."""
    return unwrap(annotation) is Path


def is_list(annotation: Any) -> bool:
    """True when the schema expects a list here."""
    return get_origin(unwrap(annotation)) is list


def is_container(annotation: Any) -> bool:
    """True when the schema expects a list or a table (dict) here."""
    return get_origin(unwrap(annotation)) in (list, dict)


def is_text(annotation: Any) -> bool:
    """True for fields whose value is text: str, Path, or a choice among strings."""
    inner = unwrap(annotation)
    if inner in (str, Path):
        return True
    if get_origin(inner) is Literal:
        return all(isinstance(a, str) for a in get_args(inner))
    return False


def key_path(loc: Sequence[str | int], data: object) -> str:
    """Dotted key path for `loc`; a list entry with a `name` shows as `plugins[energy]`."""
    out = ""
    node: object = data
    for key in loc:
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
    root: type[BaseModel],
    data: Mapping[str, Any],
    origins: Mapping[Loc, str],
) -> list[ErrorEntry]:
    """One (key_path, message, value) per pydantic error, naming env variables that set values."""
    entries = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        message = _message(err, root, loc) + origin_note(loc, origins)
        entries.append((key_path(loc, data), message, _shown_input(err)))
    return entries


def origin_note(loc: Loc, origins: Mapping[Loc, str]) -> str:
    """` (set by VAR)` when an environment variable set `loc` or a table holding it, else ``."""
    for where, variable in origins.items():
        if loc[: len(where)] == where:
            return f" (set by {variable})"
    # An error on a whole table (a cross-field check) may come from a key the environment set.
    inside = [v for where, v in origins.items() if loc and where[: len(loc)] == loc]
    return f" (involves {', '.join(sorted(inside))})" if inside else ""


def _message(err: ErrorDetails, root: type[BaseModel], loc: Loc) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        model = model_of(annotation_at(root, loc[:-1]))
        known = list(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        return "unknown key" + (f" (did you mean '{close[0]}'?)" if close else "")
    if kind == "missing":
        return "required key missing"
    message = err["msg"]
    # pydantic prefixes the message of every ValueError raised in a validator.
    return message.removeprefix("Value error, ")


def _shown_input(err: ErrorDetails) -> object:
    if err["type"] == "missing":
        return None
    return plain(err["input"])


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
