"""What the schema expects at a key: the loader asks it to place environment overrides, to
anchor relative paths, and to suggest the key a typo meant. Walks annotations, nothing else."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

_UNIONS = (Union, types.UnionType)


def _strip(annotation: Any) -> Any:
    """The annotation without `Annotated[...]` metadata and without `| None`."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in _UNIONS:
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def sections(annotation: Any) -> list[type[BaseModel]]:
    """The models a value of `annotation` may be: one, several for a keyed union, or none."""
    return _tables(annotation)[0]


def fields(annotation: Any) -> dict[str, FieldInfo]:
    """The keys of the table(s) `annotation` stands for; empty when it is no table of ours."""
    return _tables(annotation)[1]


_SEEN: dict[int, tuple[Any, list[type[BaseModel]], dict[str, FieldInfo]]] = {}


def _tables(annotation: Any) -> tuple[list[type[BaseModel]], dict[str, FieldInfo]]:
    # Cached by identity (a union's Discriminator is unhashable): the schema's annotations live
    # as long as the process, and keeping each one here keeps its id from being reused.
    seen = _SEEN.get(id(annotation))
    if seen is None or seen[0] is not annotation:
        inner = _strip(annotation)
        options = get_args(inner) if get_origin(inner) in _UNIONS else (inner,)
        found = [_strip(o) for o in options]
        models = [m for m in found if isinstance(m, type) and issubclass(m, BaseModel)]
        merged: dict[str, FieldInfo] = {}
        for model in models:
            for name, info in model.model_fields.items():
                merged.setdefault(name, info)
        seen = _SEEN[id(annotation)] = (annotation, models, merged)
    return seen[1], seen[2]


def child(annotation: Any, key: str | int) -> Any:
    """The annotation of `key` inside a value of `annotation`; None when not known (Any).

    A union tag such as `accelerator=npu` (as pydantic puts it in error locations) selects the
    member whose `accelerator` is "npu".
    """
    models = sections(annotation)
    if models:
        name, _, value = str(key).partition("=")
        if value:
            chosen = [m for m in models if name in m.model_fields]
            return next((m for m in chosen if m.model_fields[name].default == value), None)
        info = fields(annotation).get(str(key))
        return info.annotation if info is not None else None
    inner = _strip(annotation)
    if get_origin(inner) is list:
        return get_args(inner)[0]
    if get_origin(inner) is dict:
        return get_args(inner)[1]
    return None


def keys_at(root: Any, loc: tuple[str | int, ...]) -> list[str]:
    """The keys the table at `loc` may hold (for did-you-mean); empty when unknown."""
    annotation = root
    for key in loc:
        if annotation is None:
            return []
        annotation = child(annotation, key)
    return list(fields(annotation))


def is_path(annotation: Any) -> bool:
    """True for `Path` fields (optional or constrained ones too)."""
    return _strip(annotation) is Path


def is_list(annotation: Any) -> bool:
    """True when the schema expects a list here."""
    return get_origin(_strip(annotation)) is list


def is_table(annotation: Any) -> bool:
    """True when the schema expects a section, a list or a free-form table here."""
    return bool(sections(annotation)) or get_origin(_strip(annotation)) in (list, dict)


def is_text(annotation: Any) -> bool:
    """True for fields whose value is text: str, Path, or a choice among strings."""
    inner = _strip(annotation)
    if inner in (str, Path):
        return True
    if get_origin(inner) is Literal:
        return all(isinstance(a, str) for a in get_args(inner))
    return False
