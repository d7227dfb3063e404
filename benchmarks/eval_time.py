"""How long `t2v-unlearn eval` takes: `--quick`, and the full suite, on this machine.

    python benchmarks/eval_time.py --text-encoder outputs/zorbo-erased [--video-budget 600]

Each part is a fresh `t2v-unlearn eval` process writing into a new folder (nothing generated earlier is
reused), timed from process start to metrics.json:
1. `--quick` (images and videos), run to the end;
2. the full suite for images (`--kind image`), run to the end;
3. the full suite for videos (`--kind video`): run for `--video-budget` seconds, then stopped; the rate
   of video samples written (.npy files, counted) is measured and the whole video plan extrapolated
   from it: (start to first batch) + rows left x (seconds per row); scoring is not included.
   With `--video-budget 0` the video part runs to the end (hours on a 2-core CPU).
Prints and writes benchmarks/results/eval_time.json, with what was measured and what was extrapolated.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def eval_command(text_encoder: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "t2v_unlearn", "eval", "--text-encoder", text_encoder, "--out", str(out),
            "--no-progress", "--device", "cpu", *extra]  # fmt: skip


def samples(out: Path, kind: str) -> int:
    """Samples written so far: `eval` works in a hidden `.<out>.partial` folder and renames it when done."""
    for folder in (out, out.with_name(f".{out.name}.partial")):
        if (folder / "samples" / kind).is_dir():
            return sum(1 for _ in (folder / "samples" / kind).rglob("*.npy"))
    return 0


def run_to_end(command: list[str], out: Path, kind: str | None = None) -> dict:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True, env=ENV)
    seconds = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    record = {"seconds": round(seconds, 1), "command": " ".join(command[2:]), "measured": True}
    for k in ("image", "video"):
        if k in metrics:
            record[f"{k}_samples"] = samples(out, k)
            record[f"{k}_erasure"] = metrics[k]["erasure"]
    return record


def run_for(command: list[str], out: Path, budget: float) -> dict:
    """Run for `budget` seconds, then stop; count the video samples written meanwhile."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    first = None
    while time.perf_counter() - start < budget and process.poll() is None:
        time.sleep(2)
        if first is None and samples(out, "video"):  # the first batch written: load and set-up are behind
            first = (time.perf_counter() - start, samples(out, "video"))
    seconds = time.perf_counter() - start
    process.terminate()
    process.wait()
    return {"seconds": round(seconds, 1), "written": samples(out, "video"), "first_batch": first,
            "finished": process.returncode == 0}  # fmt: skip


def full_plan_rows(kind: str, target: str) -> int:
    from t2v_unlearn.eval.suites import load_suite

    concepts, prompts, seeds = load_suite("tinyworld").plan([target], quick=False, kind=kind)
    return 2 * sum(len(p) for p in prompts.values()) * len(seeds)  # original and unlearned encoder


def time_full_video(text_encoder: str, out: Path, target: str, budget: float) -> dict:
    """The full suite's videos: run to the end (budget 0), or for `budget` seconds and extrapolated."""
    command = eval_command(text_encoder, out, "--kind", "video")
    if budget <= 0:
        return run_to_end(command, out)
    run = run_for(command, out, budget)
    if run["first_batch"] is None or run["written"] <= run["first_batch"][1]:
        raise SystemExit(f"--video-budget {budget} s was too short to measure a rate; raise it")
    (t0, n0), n1, rows = run["first_batch"], run["written"], full_plan_rows("video", target)
    per_row = (run["seconds"] - t0) / (n1 - n0)
    return {
        "measured": False, "rows": rows, "budget_run": run, "seconds_per_row": round(per_row, 2),
        "seconds": round(t0 + per_row * (rows - n0), 0),
        "how": "t0 (start to first batch written) + seconds per row x the rows left; the scoring and mp4 round "
               "trip after generation are not included",
        "command": " ".join(command[2:]),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-encoder", required=True, help="a checkpoint from `t2v-unlearn erase`")
    parser.add_argument("--video-budget", type=float, default=600, help="seconds of the full video run (0: all)")
    parser.add_argument("--parts", default="quick,image,video", help="which of quick, image, video to run; "
                        "results of earlier runs in --out are kept for the others")  # fmt: skip
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_time.json"))
    args = parser.parse_args()
    target = json.loads((Path(args.text_encoder) / "unlearn.json").read_text())["concepts"][0]
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"quick", "image", "video"}:
        parser.error(f"--parts takes quick, image and/or video, got {args.parts!r}")
    result = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    result |= {"text_encoder": args.text_encoder, "target": target, "threads": os.environ.get("OMP_NUM_THREADS"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "date": datetime.date.today().isoformat()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "quick" in parts:
            result["quick"] = run_to_end(eval_command(args.text_encoder, tmp / "quick", "--quick"), tmp / "quick")
            print("quick:", json.dumps(result["quick"]))
        if "image" in parts:
            out = tmp / "full-image"
            result["full_image"] = run_to_end(eval_command(args.text_encoder, out, "--kind", "image"), out)
            print("full suite, images:", json.dumps(result["full_image"]))
        if "video" in parts:
            result["full_video"] = time_full_video(args.text_encoder, tmp / "full-video", target, args.video_budget)
            print("full suite, videos:", json.dumps(result["full_video"]))
    if "full_image" in result and "full_video" in result:
        total = result["full_image"]["seconds"] + result["full_video"]["seconds"]
        result["full_total_seconds"] = round(total)
        print(f"full suite (images + videos): {total / 3600:.1f} h"
              f"{'' if result['full_video']['measured'] else ' (videos extrapolated)'}")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
