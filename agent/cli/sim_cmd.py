"""`edge-agent sim eval DOMAIN`: closed-loop evaluation of a domain against its simulator."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

DOMAINS = ("smart_home", "energy", "robot")


def _episodes(text: str) -> int:
    """`--episodes`: a whole number of at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number (got {text!r})") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"at least 1 episode is needed (got {n})")
    return n


def register(sub: Any) -> None:
    """Add the `sim` command group."""
    sim = sub.add_parser("sim", help="simulators: closed-loop evaluations")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    ev = sim_sub.add_parser(
        "eval",
        help="run the real plugin and models against a simulator",
        description="Every variant runs the same seeded episodes; int8 against float and the "
        "model against the baseline are compared per episode, with a 95 % bootstrap interval "
        "(10,000 resamples, seeded) of the difference, signed so that positive means better.",
    )
    ev.add_argument("domain", choices=DOMAINS)
    ev.add_argument("--episodes", type=_episodes, default=None, help="episodes (domain default)")
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
    print("\n".join(report_lines(result)))
    return 0


def report_lines(result: dict[str, Any]) -> list[str]:
    """The evaluation as text: means, paired differences with their intervals, plot files."""
    better = "higher" if result["higher_is_better"] else "lower"
    lines = [
        f"{result['domain']}: {result['metric']} ({better} is better), "
        f"{result['episodes']} episodes from seed {result['seed']}"
    ]
    for variant, value in result["results"].items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"  {variant:<14} {shown}")
    compare = result.get("compare", {})
    if compare:
        lines.append(
            f"paired differences of {result['metric']} over the same episodes "
            "(positive = the first is better; 95 % bootstrap interval):"
        )
    for key, c in compare.items():
        lo, hi = c["ci95"]
        lines.append(f"  {key:<22} {c['mean_diff']:+.4f}  [{lo:+.4f}, {hi:+.4f}]  {c['verdict']}")
    plots = result.get("extra", {}).get("plots", [])
    if plots:
        lines.append("plots written: " + ", ".join(plots))
    return lines
