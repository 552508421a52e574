"""`edge-agent sim eval DOMAIN`: closed-loop evaluation of a domain against its simulator."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

DOMAINS = ("smart_home", "energy", "robot")


def register(sub: Any) -> None:
    """Add the `sim` command group."""
    sim = sub.add_parser("sim", help="simulators: closed-loop evaluations")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    ev = sim_sub.add_parser("eval", help="run the real plugin and models against a simulator")
    ev.add_argument("domain", choices=DOMAINS)
    ev.add_argument("--episodes", type=int, default=None, help="episodes (domain default)")
    ev.add_argument("--seed", type=int, default=10_000, help="first held-out evaluation seed")
    ev.add_argument("--plot", type=Path, default=None, metavar="DIR", help="write PNG plots here")
    ev.add_argument("--quick", action="store_true", help="short run (seconds), as in the tests")
    ev.add_argument("--json", action="store_true", help="print one JSON object only")
    ev.set_defaults(handler=_eval)


def _eval(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"sim.{args.domain}.eval")
    kwargs: dict[str, Any] = {"seed": args.seed, "plot_dir": args.plot, "quick": args.quick}
    if args.episodes is not None:
        kwargs["episodes"] = args.episodes
    result: dict[str, Any] = module.evaluate(**kwargs)
    if args.json:
        print(json.dumps(result))
        return 0
    better = "higher" if result["higher_is_better"] else "lower"
    print(
        f"{result['domain']}: {result['metric']} ({better} is better), "
        f"{result['episodes']} episodes from seed {result['seed']}"
    )
    for variant, value in result["results"].items():
        print(
            f"  {variant:<14} {value:.4f}"
            if isinstance(value, float)
            else f"  {variant:<14} {value}"
        )
    return 0
