"""Which libraries the agent's memory goes to: RSS added by each top-level package it imported.

A fresh interpreter imports the agent's library modules package by package, in the order the
agent first imported them, and reads its RSS after each package: the delta is what that package
(with whatever it pulls in that was not loaded yet) costs. Order matters (numpy is paid by the
first package that needs it), so the agent's own order is kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import importlib, json, sys
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0
groups = json.loads(sys.argv[1])
out = [["python", rss()]]
for top, names in groups:
    before = rss()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    out.append([top, rss() - before])
print(json.dumps(out))
"""


def import_order(modules: list[str]) -> list[tuple[str, list[str]]]:
    """`modules` grouped by top-level package, packages in the order `sys.modules` met them."""
    wanted = set(modules)
    groups: dict[str, list[str]] = {}
    for name in list(sys.modules):
        if name in wanted:
            groups.setdefault(name.partition(".")[0], []).append(name)
    return list(groups.items())


def import_breakdown(modules: list[str], *, min_mb: float = 0.1) -> dict[str, float]:
    """MB of RSS per top-level package (those adding at least `min_mb`), largest first;
    "python" is the bare interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(import_order(modules))],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=str(Path(sys.executable).parent),
    )
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    kept = [(name, round(float(mb), 1)) for name, mb in rows if float(mb) >= min_mb]
    return dict(sorted(kept, key=lambda row: -row[1]))
