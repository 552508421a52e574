"""What the package ships besides code: the models and the board files, found without a checkout.

The wheel carries the repository's `models/` as the data package `edge_agent_models` and
`firmware-configs/` as `edge_agent_boards` (see setup.py); an editable install maps both names
onto the checkout's folders. Nothing here imports those packages: their location is enough.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

MODELS_PACKAGE = "edge_agent_models"
BOARDS_PACKAGE = "edge_agent_boards"
_CHECKOUT = Path(__file__).resolve().parents[2]
"""The repository root when the agent runs from a checkout that was never installed."""


class ShippedError(LookupError):
    """A shipped folder or board file cannot be found."""


def shipped_models_dir() -> Path:
    """The folder of the models shipped with the package (one folder per model); read-only."""
    return _package_dir(MODELS_PACKAGE, _CHECKOUT / "models")


def boards_dir() -> Path:
    """The folder of the shipped board files (`<board>.toml`) and the rendered unit."""
    return _package_dir(BOARDS_PACKAGE, _CHECKOUT / "firmware-configs")


def board_names() -> list[str]:
    """Names of the shipped board files, sorted."""
    return sorted(p.stem for p in boards_dir().glob("*.toml"))


def board_file(name: str) -> Path:
    """The shipped board file for `name`; ShippedError naming the known boards otherwise."""
    path = boards_dir() / f"{name}.toml"
    if "/" in name or not path.is_file():
        known = ", ".join(board_names()) or "none"
        raise ShippedError(f"no board named {name!r} (known: {known})")
    return path


def _package_dir(package: str, fallback: Path) -> Path:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    # An editable install's namespace path also lists a path hook entry: keep real folders only.
    for entry in (spec.submodule_search_locations or []) if spec is not None else []:
        if Path(entry).is_dir():
            return Path(entry)
    if fallback.is_dir():
        return fallback
    raise ShippedError(f"the package {package} is not installed and {fallback} does not exist")
