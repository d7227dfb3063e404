"""End-to-end `t2v-unlearn erase` of one TinyWorld concept: process start to checkpoint written.

    python benchmarks/erase_speed.py [--concept zorbo] [--repeats 3] [--trainable ffn+last-attn]

Each repeat is a fresh `t2v-unlearn erase ... --no-preview` process; its wall time includes interpreter
start, imports, loading, shot generation, optimisation and saving. Prints and writes
benchmarks/results/erase_speed.json with the median, the split from unlearn.json and the peak RSS.
Target (issue "Erase"): 20 s or less on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(concept: str, trainable: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ckpt"
        cli = [sys.executable, "-m", "t2v_unlearn.cli", "erase", "--concept", concept, "--out", str(out),
               "--no-preview", "--quiet", "--device", "cpu", "--trainable", trainable, *extra]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        manifest = json.loads((out / "unlearn.json").read_text())
    return {
        "wall_seconds": round(wall, 2),
        "split": manifest["timings"],
        "steps": manifest["steps"],
        "stopped_by": manifest["stopped_by"],
        "peak_rss_mib": round(max(peak, before) / 1024, 1),
        "sizes": manifest["sizes"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="zorbo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trainable", default="ffn+last-attn")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "erase_speed.json"))
    args, extra = parser.parse_known_args()
    runs = [run_once(args.concept, args.trainable, extra) for _ in range(args.repeats)]
    for r in runs:
        print(json.dumps(r))
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": f"t2v-unlearn erase --concept {args.concept} --no-preview --trainable {args.trainable} "
        + " ".join(extra),
        "median_wall_seconds": statistics.median(r["wall_seconds"] for r in runs),
        "runs": runs,
        "target_seconds": 20,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"median {result['median_wall_seconds']:.1f} s from process start to checkpoint written "
          f"(target 20 s); peak RSS {max(r['peak_rss_mib'] for r in runs):.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
