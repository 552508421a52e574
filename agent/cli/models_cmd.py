"""`edge-agent models list | verify | info`: what models there are, whether they are intact, and
where one runs on a given board."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the `models` command and its sub-commands."""
    parser = sub.add_parser("models", help="list, verify and inspect models")
    cmds = parser.add_subparsers(dest="models_command", required=True)

    p = cmds.add_parser("list", help="list the models and their active versions")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, help="agent config (its models_dir and state_dir)")
    where.add_argument("--dir", type=Path, help="models directory (default: the shipped models)")
    p.set_defaults(handler=_list)

    p = cmds.add_parser("verify", help="check sha256, load every file, run the golden vectors")
    p.add_argument("dir", nargs="?", type=Path, help="models dir or folder (default: the shipped)")
    p.add_argument("--edgetpu-library", default="libedgetpu.so.1", help="to run edgetpu files")
    p.set_defaults(handler=_verify)

    p = cmds.add_parser("info", help="load a model as the agent would on a board and describe it")
    p.add_argument("name", help="model name")
    p.add_argument("--config", type=Path, required=True, help="the board's agent config")
    p.add_argument("--format", choices=("tflite", "onnx"), help="force a file format")
    p.set_defaults(handler=_info)

    from agent.modelimport.cli import register as register_import

    register_import(cmds, Path("models"))


def _list(args: argparse.Namespace) -> int:
    from agent.errors import ConfigError, ModelError

    try:
        store = _store(args.config, args.dir)
    except ConfigError as exc:
        return _config_failed(exc)
    rows: list[Sequence[object]] = []
    code = 0
    for name in store.names():
        try:
            folder = store.resolve(name)
            m = store.manifest(name)
        except ModelError as exc:
            rows.append((name, "-", "-", "-", f"invalid: {exc}"))
            code = 1
            continue
        files = " ".join(f"{f.format}/{f.io}" + _variant(f.accelerator) for f in m.files)
        rows.append((name, m.version, m.task, files, str(folder)))
    if not rows:
        print(f"no models in {store.models_dir}", file=sys.stderr)
        return 1
    print(_table(("name", "version", "task", "files", "folder"), rows))
    return code


def _verify(args: argparse.Namespace) -> int:
    from agent.runtime.verify import verify_path
    from agent.shipped import shipped_models_dir

    args.dir = args.dir or shipped_models_dir()
    if not args.dir.exists():
        print(f"error: {args.dir}: no such directory", file=sys.stderr)
        return 1
    rows = verify_path(args.dir, edgetpu_library=args.edgetpu_library)
    if not rows:
        print(f"error: no manifest.json under {args.dir}", file=sys.stderr)
        return 1
    print(
        _table(
            ("name", "version", "file", "format", "io", "size", "result", "max error", "note"),
            [
                (
                    r.name,
                    r.version,
                    Path(r.file).name,
                    r.format,
                    r.io,
                    r.size,
                    r.result,
                    "-" if r.max_error is None else f"{r.max_error:.3g}",
                    r.reason if r.result != "FAIL" else "see below",
                )
                for r in rows
            ],
        )
    )
    _print_tolerances(rows)
    failed = [r for r in rows if r.result == "FAIL"]
    for r in failed:
        print(f"FAIL {r.file}: {r.reason}", file=sys.stderr)
    return 1 if failed else 0


TOLERANCE_NOTE = """\
tolerance per output, from each model's manifest.json golden vectors: `make train` sets it to
max(2 x the largest difference between the model's files on those inputs, 2 % of the largest
output, 0.001); `models import` to 1.5 x the largest int8-vs-float difference."""


def _print_tolerances(rows: Sequence[Any]) -> None:
    """Per file and output: the worst error against the tolerance it met, and where it is set."""
    lines = [
        f"  {r.name} {Path(r.file).name} output {o.index}: max error {o.max_error:.3g} "
        f"{'<=' if o.max_error <= o.tolerance else '>'} tolerance {o.tolerance:.3g} "
        f"({o.source}); outputs up to {o.largest_output:.3g}{_share(o)}"
        for r in rows
        for o in r.outputs
    ]
    if lines:
        print()
        print(TOLERANCE_NOTE)
        print("\n".join(lines))


def _info(args: argparse.Namespace) -> int:
    from agent.config import load_config
    from agent.errors import ConfigError, ModelError
    from agent.runtime.folders import ModelStore
    from agent.runtime.loader import load_model

    try:
        # Board files name TLS and key files that exist on the board, not on this machine.
        cfg = load_config(args.config, check_files=False)
    except ConfigError as exc:
        return _config_failed(exc)
    try:
        folder = ModelStore(cfg.models_dir, cfg.state_dir).resolve(args.name)
        model = load_model(folder, cfg.runtime, fmt=args.format)
    except ModelError as exc:
        print(f"error: cannot load {args.name}: {exc}", file=sys.stderr)
        return 1
    with model:
        print(f"model        {model.name} {model.version}")
        print(f"file         {model.path}")
        print(f"backend      {model.backend}")
        print(f"accelerator  {model.accelerator} (requested {cfg.runtime.accelerator})")
        print(f"threads      {cfg.runtime.threads}")
        rows = [_spec_row("input", i, s) for i, s in enumerate(model.inputs)]
        rows += [_spec_row("output", i, s) for i, s in enumerate(model.outputs)]
        print(_table(("tensor", "#", "name", "shape", "dtype", "scale", "zero point"), rows))
    return 0


def _spec_row(role: str, index: int, spec: Any) -> tuple[object, ...]:
    quant = (f"{spec.scale:.6g}", spec.zero_point) if spec.quantized else ("-", "-")
    return (role, index, spec.name, list(spec.shape), spec.dtype, *quant)


def _store(config: Path | None, directory: Path | None) -> Any:
    from agent.runtime.folders import ModelStore
    from agent.shipped import shipped_models_dir

    if config is None:
        return ModelStore(directory or shipped_models_dir(), None)
    from agent.config import load_config

    cfg = load_config(config, check_files=False)
    return ModelStore(cfg.models_dir, cfg.state_dir)


def _config_failed(exc: Exception) -> int:
    print(str(exc), file=sys.stderr)
    return 2


def _variant(accelerator: str) -> str:
    return "" if accelerator == "cpu" else f"({accelerator})"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _share(check: Any) -> str:
    if not check.largest_output or check.max_error != check.max_error:
        return ""
    return f", error {100 * check.max_error / check.largest_output:.1f} % of that"
