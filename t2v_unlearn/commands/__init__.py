"""The `t2v-unlearn` command: erase, generate, eval, inspect, export, concepts.

t2v-unlearn erase --concept zorbo --out zorbo-erased
t2v-unlearn generate --kind video --prompt "zorbo moving left" --text-encoder zorbo-erased
t2v-unlearn eval --text-encoder zorbo-erased --quick
"""

from __future__ import annotations

import os

from . import clock  # noqa: F401  (first: the command's clock starts before the libraries load)

# Library notices that say nothing to a user of this command (e.g. that torchvision is absent, printed while
# diffusers imports its pipelines) stay hidden; set before those imports, and only where the user has not.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import argparse  # noqa: E402
import sys  # noqa: E402

from diffusers.utils import logging as diffusers_logging  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from . import concepts, erase, export, generate, inspect  # noqa: E402
from . import eval as eval_command  # noqa: E402

# name, module, help: each module has add_arguments(parser) and run(args) -> exit code
COMMANDS = (
    ("erase", erase, "unlearn concepts from the shared text encoder, write an encoder checkpoint"),
    ("generate", generate, "generate images or videos, optionally with an unlearned encoder"),
    ("concepts", concepts, "list the concept taxonomy: category, name, synonyms (tab-separated)"),
    ("export", export, "write a checkpoint's encoder for Automatic1111, ComfyUI or as a diffusers LoRA"),
    ("eval", eval_command, "frame-level M-Score of an unlearned encoder on images and videos"),
    ("inspect", inspect, "what an encoder is, whether bases share it, whether a checkpoint fits"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t2v-unlearn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module, summary in COMMANDS:
        command = sub.add_parser(name, help=summary)
        module.add_arguments(command)
        command.set_defaults(func=module.run)
    return parser


def _quiet_libraries() -> None:
    """Library notices that say nothing to a user of this command (e.g. torchvision is absent) stay hidden."""
    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()  # "Writing model shards" for a 2 MB encoder: our own bars tell


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        if args.debug:
            raise
        print(f"error: {args.command}: {error}", file=sys.stderr)
        return 2
    except SystemExit as error:
        if not isinstance(error.code, str):
            raise
        print(error.code, file=sys.stderr)  # an input error raised as SystemExit("error: ..."): exit 2 like the rest
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\n{args.command}: interrupted; no output was replaced (outputs are swapped in only when complete)",
              file=sys.stderr)  # fmt: skip
        return 130
    except OSError as error:  # the disk is full, a folder is not writable, ...: the system's words and the path
        if args.debug:
            raise
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: {args.command}: {error.strerror or error}{where}; rerun with --debug for the traceback",
              file=sys.stderr)  # fmt: skip
        return 1
