"""The command line of an experiment's benchmark script: its config's flags and ``--json``, run,
the table printed (and the timings where the result has them per stage), the result written."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Callable

from pipeline.cli import add_config_arguments, config_from_args


def run_experiment(description: str, config_cls: type, run: Callable[[Any], dict[str, Any]],
                   format_table: Callable[[dict[str, Any]], str], argv: list[str] | None = None) -> int:
    """Parse ``config_cls``'s flags and ``--json``, run, print the table (and the per-stage
    seconds when ``result["seconds"]`` is a dict of them), write the result as JSON if asked."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, config_cls)
    parser.add_argument("--json", default=None, help="also write the rows and timings here")
    args = parser.parse_args(argv)
    result = run(config_from_args(config_cls, args))
    print(format_table(result))
    if isinstance(result.get("seconds"), dict):
        print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items()))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2, default=str)
    return 0
