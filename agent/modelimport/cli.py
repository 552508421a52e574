"""The `models import` sub-command: arguments in, table or every problem out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_PROBLEMS = 2


def register(cmds: Any, default_dir: Path) -> None:
    """Add `import` to the `models` sub-commands."""
    p = cmds.add_parser("import", help="import your own ONNX or TFLite model (quantize, measure)")
    p.add_argument("file", type=Path, help="float or int8 .onnx, or int8 .tflite")
    p.add_argument("--name", required=True, help="model name (lower-case, digits, _)")
    p.add_argument("--calibration", type=Path, help=".npz: one array per input name, optional y")
    p.add_argument("--version", default="1.0.0", help="MAJOR.MINOR.PATCH (default 1.0.0)")
    p.add_argument("--out", type=Path, default=default_dir, help=f"models dir ({default_dir})")
    p.add_argument("--float", dest="keep_float", action="store_true", help="keep a float model")
    p.add_argument("--rate-hz", type=float, default=100.0, help="paced latency rate (100)")
    p.add_argument("--config", type=Path, help="board config: whose accelerator to check ops for")
    p.add_argument("--force", action="store_true", help="replace an existing DIR/NAME")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Import, print the table; exit 2 naming every problem."""
    from agent.config.sections import RuntimeConfig
    from agent.errors import ConfigError, ModelError
    from agent.modelimport.errors import ImportProblems
    from agent.modelimport.importer import ImportRequest, import_model
    from agent.modelimport.report import render

    runtime = RuntimeConfig()
    if args.config is not None:
        from agent.config import load_config

        try:
            runtime = load_config(args.config, check_files=False).runtime
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_PROBLEMS
    request = ImportRequest(
        file=args.file,
        name=args.name,
        out_dir=args.out,
        calibration=args.calibration,
        version=args.version,
        keep_float=args.keep_float,
        rate_hz=args.rate_hz,
        runtime=runtime,
        force=args.force,
    )
    try:
        result = import_model(request)
    except ImportProblems as exc:
        print(f"error: cannot import {args.file}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_PROBLEMS
    except ModelError as exc:
        print(f"error: cannot import {args.file}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(render(result))
    return 0
