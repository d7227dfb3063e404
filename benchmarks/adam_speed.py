"""Does the Adam implementation change erase's speed on TinyWorld? Fused vs foreach, alternated in one process.

    python benchmarks/adam_speed.py [--rounds 2]

The same shots (generated once) and the default EraseConfig; each round erases zorbo once with fused Adam
(what erase uses) and once with foreach Adam, so both see the same machine load. Prints the optimisation
times and writes benchmarks/results/adam_speed.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import t2v_unlearn.encoders.erase as erase_module
from t2v_unlearn.encoders import EraseConfig, erase_concept
from t2v_unlearn.pipelines import load_pipeline

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concept", default="zorbo")
    args = parser.parse_args()
    pipe = load_pipeline("image", progress=False)
    shots = {args.concept: erase_concept(pipe, [args.concept], EraseConfig(max_steps=1, stop_rule="max-steps"),
                                         progress=False).shots[args.concept]}  # fmt: skip
    adam = torch.optim.Adam
    variants = {"fused": adam, "foreach": lambda *a, **k: adam(*a, **{**k, "fused": False, "foreach": True})}
    result = {name: [] for name in variants}
    try:
        for _ in range(args.rounds):
            for name, optimizer in variants.items():
                erase_module.torch.optim.Adam = optimizer
                run = erase_concept(pipe, [args.concept], EraseConfig(), progress=False, shots=shots)
                result[name].append({"optimise_seconds": run.timings["optimise"], "steps": run.steps})
                print(f"{name:8} {run.steps} steps, optimise {run.timings['optimise']:.1f} s", flush=True)
    finally:
        erase_module.torch.optim.Adam = adam
    out = ROOT / "benchmarks" / "results" / "adam_speed.json"
    out.write_text(json.dumps({"threads": torch.get_num_threads(), **result}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
