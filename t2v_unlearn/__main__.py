"""The `t2v-unlearn` script and `python -m t2v_unlearn COMMAND ...` (also `accelerate launch -m t2v_unlearn ...`)."""

import gc
import logging
import os
import sys


def run() -> int:
    # The libraries' imports build about 400,000 objects that live as long as the process. The cyclic collector would
    # scan them over and over while they load, in every full collection after, and again as the interpreter shuts
    # down: about 1.5 s of a 12 s erase (docs/BENCHMARKS.md). So nothing is collected while they load; then they are
    # frozen (left out of every later collection: `gc.freeze`), and collection resumes for what the command builds.
    # Here, not in `t2v_unlearn.commands`, so that a program importing that module keeps its own collector as it was.
    gc.disable()
    from .commands import main

    gc.freeze()
    gc.enable()
    return main()


def script() -> None:
    """`run`, then leave without the interpreter's teardown once the command has finished and said so.

    Tearing down what the libraries loaded (their modules, some 400,000 objects) takes 0.15-0.2 s after every command
    and does nothing a finished command needs (docs/BENCHMARKS.md, thirteenth session): the output is flushed and the
    logs closed first, and every file the command wrote is closed by then. An error (an exception, or argparse's
    exit) still leaves the ordinary way, with its message.
    """
    code = run()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    os._exit(code or 0)


if __name__ == "__main__":
    script()
