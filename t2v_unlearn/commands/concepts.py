"""`t2v-unlearn concepts`: the TinyWorld taxonomy, one concept per line."""

from __future__ import annotations

import argparse

from ..tinyworld.taxonomy import load_taxonomy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tinyworld")


def run(args) -> int:
    if args.model != "tinyworld":
        raise SystemExit("error: the concept taxonomy is known for --model tinyworld only; for real models see "
                         "the concept suite t2v_unlearn/eval/suites/sd2.json")  # fmt: skip
    for concept in load_taxonomy().concepts:
        print(f"{concept.category}\t{concept.name}\t{','.join(concept.synonyms)}")
    return 0
