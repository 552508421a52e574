"""What every config section shares: the strict base model, checked files, and keyed unions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, ValidationInfo
from pydantic_core import PydanticCustomError

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CHECK_FILES = "check_files"
"""Validation context key: when true, files the agent must read at start are checked to exist."""
UNKNOWN_CHOICE = "unknown_choice"
"""Error type of a keyed union whose key names no member; its context names the key."""


def _file_present(path: Path, info: ValidationInfo) -> Path:
    # Only when the loader asks: board files name paths that exist on the board, not here.
    if info.context and info.context.get(CHECK_FILES):
        if not path.exists():
            raise PydanticCustomError("file_missing", "file not found")
        if not path.is_file():
            raise PydanticCustomError("file_not_regular", "not a regular file")
    return path


RequiredFile = Annotated[Path, AfterValidator(_file_present)]
"""A path to a file read at start; checked to exist when validated with CHECK_FILES."""


class Section(BaseModel):
    """Base of every config section: strict about unknown keys, immutable once loaded.

    No number may be infinite or NaN: `inf` parses as a float and used to pass every `gt=0`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def tag(key: str, value: str) -> str:
    """The tag of a keyed-union member in error locations: `accelerator=npu`."""
    return f"{key}={value}"


def by_key(key: str, default: str, choices: tuple[str, ...]) -> Discriminator:
    """Choose the member of a keyed union (members tagged `tag(key, choice)`) by `key`'s value.

    `default` applies when the key is absent. Errors inside a member carry the tag in their
    location (config.errors drops it from the key path); a value naming no member is one
    `unknown_choice` error whose context names the key.
    """

    def choose(value: Any) -> str:
        if isinstance(value, dict):
            chosen = value.get(key, default)
        else:  # a model instance, or a non-table that the default member then rejects
            chosen = getattr(value, key, default)
        return tag(key, chosen) if chosen in choices else "?"

    return Discriminator(
        choose,
        custom_error_type=UNKNOWN_CHOICE,
        custom_error_message="Input should be " + " or ".join(repr(c) for c in choices),
        custom_error_context={"key": key},
    )
