"""Do multistep solvers at 10-15 steps keep TinyWorld's figures? Hit rates and time per sampler, side by side.

    python benchmarks/sampler_quality.py [--configs pipeline:25 dpm-solver:12 dpm-solver:10 unipc:12]

For each sampler (name:steps) on the shipped pipelines: the image hit rate and video frame hit rate per category
(the same prompts and seeds as benchmarks/tinyworld_quality.py), the video motion figures, and the seconds per
image and per 8-frame video. Also how often each sampler's image of a (prompt, seed) gets the same detector label
as the first config's: the same noise through two solvers should draw the same thing. Writes
benchmarks/results/sampler_quality.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from tinyworld_quality import generation_speed, hit_rates

from t2v_unlearn.eval.detector import load_detector
from t2v_unlearn.pipelines import load_pipeline
from t2v_unlearn.pipelines.generate import sampler

ROOT = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["pipeline:25", "dpm-solver:12", "dpm-solver:10", "unipc:12"])
    parser.add_argument("--templates", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--video-seeds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampler_quality.json"))
    args = parser.parse_args()

    detector = load_detector("tinyworld")
    image_pipe = load_pipeline("image", progress=False)
    video_pipe = load_pipeline("video", progress=False)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "weights": json.loads((ROOT / "t2v_unlearn/tinyworld/weights/training.json").read_text()).get("version", 1),
        "command": "python benchmarks/sampler_quality.py --configs " + " ".join(args.configs),
        "configs": {},
    }
    reference = None
    for config in args.configs:
        name, steps = config.split(":")
        steps = int(steps)
        start = time.perf_counter()
        with sampler(image_pipe, name), sampler(video_pipe, name):
            image, labels = hit_rates(detector, image_pipe, "image", args.templates, args.seeds, steps)
            video, _ = hit_rates(detector, video_pipe, "video", args.templates, args.video_seeds, steps)
            speed = generation_speed(image_pipe, video_pipe, steps)
        reference = labels if reference is None else reference
        entry = {"image": image, "video": video, "speed": speed, "seconds": round(time.perf_counter() - start, 1),
                 "same_label_as_first": float((labels == reference).mean())}  # fmt: skip
        result["configs"][config] = entry
        print(config, json.dumps(image["by_category"]), json.dumps(video["by_category"]), json.dumps(speed),
              f"agreement {entry['same_label_as_first']:.2f}", flush=True)  # fmt: skip
        Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
