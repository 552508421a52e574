"""Every TOML example in README.md and docs/ is a valid agent config (board files: see
test_firmware_configs.py), but for a package's pyproject.toml, which must at least parse. An
example that is no config of its own belongs in a ```text block."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from agent.config import load_config

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _examples() -> list[tuple[str, str]]:
    found = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{doc.relative_to(REPO)}:{line}", match.group(1)))
    return found


EXAMPLES = _examples()


def test_the_docs_have_toml_examples() -> None:
    assert EXAMPLES  # the hal.devices example in docs/mqtt.md at least


@pytest.mark.parametrize(("where", "toml"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_documented_example_validates(where: str, toml: str, tmp_path: Path) -> None:
    if re.search(r"^\[(project|build-system)[.\]]", toml, re.MULTILINE):
        tomllib.loads(toml)  # a plugin package's pyproject.toml, not an agent config
        return
    path = tmp_path / "example.toml"
    path.write_text(toml)
    load_config(path, env={}, check_files=False)  # raises ConfigError naming the bad key
