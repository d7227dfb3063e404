"""`t2v-unlearn inspect`: what a text encoder is, whether two bases share it, whether a checkpoint fits.

The questions and their answers are `t2v_unlearn.encoders.inspect`'s; this is the command around them.
"""

from __future__ import annotations

import argparse
import json

from ..encoders.inspect import __doc__ as inspect_doc
from ..encoders.inspect import exit_status, format_report, inspect_sources, resolve_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `inspect` subcommand's arguments."""
    parser.description = inspect_doc.split("\n\n")[0]
    parser.add_argument("model", help="tinyworld[:video], a registered base name, a pipeline folder, or a "
                        "checkpoint folder from `erase`")  # fmt: skip
    parser.add_argument("model2", nargs="?", help="a second one: do the two share an identical encoder, or does the "
                        "checkpoint fit this base?")  # fmt: skip
    parser.add_argument("--kind", choices=["image", "video"],
                        help="which TinyWorld or registered model (default: image for tinyworld, the base's own "
                             "kind otherwise); a :kind suffix on an argument wins")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    """Resolve the arguments, print the report, return 1 when the answer is no."""
    first = resolve_source(args.model, args.kind)
    second = resolve_source(args.model2, args.kind) if args.model2 else None
    report = inspect_sources(first, second)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(format_report(report), end="")
    return exit_status(report)
