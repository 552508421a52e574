"""`python -m models.train [all|NAME ...]`: run the training scripts in models/train."""

from __future__ import annotations

import importlib
import sys

SCRIPTS = ("waveform", "energy", "robot", "smart_home")


def main(argv: list[str]) -> None:
    """Run the named scripts (all by default) one after another."""
    names = SCRIPTS if not argv or argv == ["all"] else tuple(argv)
    for name in names:
        print(f"== models/train/{name}.py")
        importlib.import_module(f"models.train.{name}").main()


if __name__ == "__main__":
    main(sys.argv[1:])
