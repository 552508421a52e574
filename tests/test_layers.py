"""Imports point down: the package dependency graph of agent/, plugins/ and sim/ has no cycle and
no edge going up against the declared layer order.

One node per subpackage of agent/ (`agent.engine`) or top module (`agent.errors`), and one each
for plugins/ and sim/. Every import counts, also one inside a function or under TYPE_CHECKING:
a lazy import still makes the importer depend on what it imports. The order, lowest first (a
layer may import only layers listed before it):

    agent.errors, agent.events, agent.backoff   shared leaves: error types, the event, back-off
    agent.children                               the one multiprocessing context for children
    agent.shipped                                where the packaged models and board files lie
    agent.config                                 config sections and loading
    agent.transport                              the message transport seam and message types
    agent.runtime                                inference backends, model folders, model slot
    agent.modelimport                            a user's model made a model folder
    agent.hal                                    sensors and actuators, the simulator seam
    agent.plugin                                 the plugin seam: base, output channel, registry
    agent.engine                                 loops, runners, the plugin host
    agent.testing                                the plugin contract suite, for plugin authors
    agent.scheduler                              schedules
    agent.sync                                   MQTT sync and remote commands
    agent.ota                                    over-the-air model updates
    agent.service                                the composed agent, systemd, metrics
    agent.bench                                  `edge-agent bench`
    agent.cli                                    the command line
    plugins                                      the built-in plugins (found through entry points)
    sim                                          simulators, fleet and soak tools

Run with `-s` to print the graph, one line per package: what it imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("agent", "plugins", "sim")
LAYERS = (
    "agent.errors",
    "agent.events",
    "agent.backoff",
    "agent.children",
    "agent.shipped",
    "agent.config",
    "agent.transport",
    "agent.runtime",
    "agent.modelimport",
    "agent.hal",
    "agent.plugin",
    "agent.engine",
    "agent.testing",
    "agent.scheduler",
    "agent.sync",
    "agent.ota",
    "agent.service",
    "agent.bench",
    "agent.cli",
    "plugins",
    "sim",
)


def node_of(module: str) -> str | None:
    """The graph node a dotted module name belongs to; None outside the three trees."""
    parts = module.split(".")
    if parts[0] == "agent":
        return ".".join(parts[:2]) if len(parts) > 1 else None  # `agent` itself: the version
    return parts[0] if parts[0] in TREES else None


def imported_modules(path: Path, module: str) -> Iterator[str]:
    """Every module `path` (the module `module`) imports, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join([*base, *([node.module] if node.module else [])])
            elif node.module:
                yield node.module
            if node.module in TREES:  # `from agent import errors` imports agent.errors
                folder = ROOT / node.module
                for alias in node.names:
                    if (folder / alias.name).is_dir() or (folder / f"{alias.name}.py").is_file():
                        yield f"{node.module}.{alias.name}"


def import_graph() -> dict[str, set[str]]:
    """Node -> the other nodes it imports."""
    graph: dict[str, set[str]] = {}
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            source = node_of(module)
            if source is None:
                continue
            targets = graph.setdefault(source, set())
            for imported in imported_modules(path, module):
                target = node_of(imported)
                if target is not None and target != source:
                    targets.add(target)
    return graph


def rank(node: str) -> int:
    """Position in LAYERS; an undeclared node ranks above all (its own test names it)."""
    return LAYERS.index(node) if node in LAYERS else len(LAYERS)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def print_graph(graph: dict[str, set[str]]) -> None:
    """One line per package, lowest layer first: what it imports."""
    for node in sorted(graph, key=lambda n: (rank(n), n)):
        print(f"{node:16} -> {', '.join(sorted(graph[node], key=rank)) or '-'}")


def test_every_package_has_a_declared_layer() -> None:
    graph = import_graph()
    print_graph(graph)
    nodes = set(graph).union(*graph.values())
    assert sorted(nodes - set(LAYERS)) == []


def test_the_package_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert find_cycle(graph) is None


def test_no_import_points_up() -> None:
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in import_graph().items()
        for target in targets
        if rank(target) > rank(source)
    )
    assert upward == []


def test_the_checker_sees_cycles_and_relative_imports(tmp_path: Path) -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    module = tmp_path / "mod.py"
    module.write_text("from ..hal import base\nfrom . import x\nimport sim.base\n")
    found = set(imported_modules(module, "agent.engine.mod"))
    assert found == {"agent.hal", "agent.engine", "sim.base"}
