"""How much of an erased concept is left in video frames, on enough videos for the interval to fall under 5%.

    python benchmarks/video_leak.py CHECKPOINT [CHECKPOINT ...] [--prompts 4] [--seeds 20] [--threads 1]

The eval's video interval is never narrower than the Wilson interval over whole videos (frames of one video are
not independent), so "under 5% of video frames" needs at least 74 videos without a hit: `eval --quick --seeds 10`
gives 20 videos of the target, whose interval reaches 16% with no hit at all. This samples only the erased
concept: for each encoder checkpoint (from `t2v-unlearn erase`), the first `--prompts` prompts of the concept in
the TinyWorld suite with `--seeds` seeds each, through the ModelScope-style pipeline with the checkpoint swapped
in (the eval sampler: DPM-Solver++ at 12 steps, 8 frames), scored frame by frame with the suite's detector and
label set, as `eval` scores them. The unerased model is not sampled here: the eval runs show it at 1.00 for each
of these concepts. Writes benchmarks/results/video_leak.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from t2v_unlearn.encoders import load_pipeline, read_manifest
from t2v_unlearn.eval import metrics as M
from t2v_unlearn.eval.detector import load_detector
from t2v_unlearn.eval.evaluate import score_frames
from t2v_unlearn.eval.suites import load_suite
from t2v_unlearn.pipelines.generate import generate_videos, sampler

ROOT = Path(__file__).resolve().parent.parent


def leak(checkpoint: Path, n_prompts: int, n_seeds: int, steps: int, detector, suite) -> dict:
    manifest = read_manifest(checkpoint)
    if len(manifest.concepts) != 1:
        raise SystemExit(f"{checkpoint}: erases {manifest.concepts}; video_leak measures checkpoints of one concept")
    (concept,) = manifest.concepts
    entry = suite.concepts[concept]
    prompts = list(entry.prompts[:n_prompts])
    seeds = list(range(n_seeds))
    pipe = load_pipeline("video", text_encoder=checkpoint, progress=False)
    start = time.perf_counter()
    with sampler(pipe, "dpm-solver"):
        videos = generate_videos(pipe, [p for p in prompts for _ in seeds], seeds * len(prompts), steps)
    seconds = time.perf_counter() - start
    hits, _ = score_frames(detector, entry, suite.detector_templates[entry.category], list(videos))
    rates = np.array([M.video_frame_rate(h) for h in hits]).reshape(len(prompts), len(seeds))
    per_frame = np.mean(np.stack(hits), axis=0)
    return {
        "concept": concept,
        "prompts": prompts,
        "seeds": len(seeds),
        "videos": len(videos),
        "frames_with_the_concept": int(np.stack(hits).sum()),
        "videos_with_a_hit": int((rates > 0).sum()),
        "frame_hit_rate": M.cluster_bootstrap(rates),
        "by_frame_index": [round(float(r), 3) for r in per_frame],
        "by_prompt": {p: round(float(r), 4) for p, r in zip(prompts, rates.mean(1), strict=True)},
        # frames with the concept in each video, prompt-major (video i: prompt i // seeds, seed i % seeds)
        "frames_per_video": [int(h.sum()) for h in hits],
        "sampling_seconds": round(seconds, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="encoder folders written by `t2v-unlearn erase`")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=12, help="DPM-Solver++ steps (the eval default)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "video_leak.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = load_suite("tinyworld")
    detector = load_detector(suite.detector)
    out = Path(args.out)
    results = json.loads(out.read_text()).get("results", {}) if out.exists() else {}
    for checkpoint in args.checkpoints:
        entry = leak(checkpoint, args.prompts, args.seeds, args.steps, detector, suite)
        results[checkpoint.name] = entry
        r = entry["frame_hit_rate"]
        print(f"{checkpoint.name}: {entry['concept']} in {entry['frames_with_the_concept']} frames of "
              f"{entry['videos']} videos ({entry['videos_with_a_hit']} videos with a hit): {r['value']:.3f} "
              f"[{r['low']:.3f}, {r['high']:.3f}]", flush=True)  # fmt: skip
        summary = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                   "sampling": {"sampler": "dpm-solver", "steps": args.steps}, "results": results}  # fmt: skip
        out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
