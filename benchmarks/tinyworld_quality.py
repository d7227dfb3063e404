"""How good are the shipped TinyWorld models? Evaluator accuracy, image and video hit rates, motion, speed.

    python benchmarks/tinyworld_quality.py [--seeds 4] [--video-seeds 4] [--record]

Targets (issue "A trustworthy instrument"): detector accuracy >= 95% per category on 1,000 fresh renders;
generated images labelled as the prompted concept >= 80% per category; video frames >= 70% per category,
with frames that visibly move. Writes benchmarks/results/tinyworld_quality.json; --record appends a line
to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from t2v_unlearn.eval.detector import load_detector
from t2v_unlearn.pipelines import load_pipeline
from t2v_unlearn.pipelines.generate import SAMPLERS, generate_images, generate_videos, sampler
from t2v_unlearn.tinyworld.classifier import NONE
from t2v_unlearn.tinyworld.render import frame_scene, render, sample_scene
from t2v_unlearn.tinyworld.taxonomy import CATEGORIES, load_taxonomy

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT_SEED = 987_654_321  # training batches use seeds below 5e7


def classify(detector, frames, category):
    """The label of each frame's argmax over the category's names, and "none" where the detector has that class."""
    taxonomy = load_taxonomy()
    names = list(taxonomy.colours) if category == "colour" else taxonomy.names(category)
    if hasattr(detector, "head_probabilities"):  # the TinyWorld classifier: "not this category" is an answer too
        names = [*names, NONE]
    templates = taxonomy.detector_templates.get(category, ("a picture of {label}",))
    probabilities = detector.probabilities(frames, names, templates)
    return np.asarray(names)[probabilities.argmax(-1)]


def evaluator_accuracy(detector, count: int) -> dict:
    """Accuracy per category on freshly rendered held-out scenes (still images and frames of moving scenes)."""
    rng = np.random.default_rng(HELD_OUT_SEED)
    scenes = [sample_scene(rng) if i % 2 else frame_scene(sample_scene(rng, video=True), float(rng.uniform()))
              for i in range(count)]  # fmt: skip
    frames = np.stack([render(s)[0] for s in scenes])
    out = {}
    for category in (*CATEGORIES, "colour"):
        if category == "colour":
            idx = [i for i, s in enumerate(scenes) if s.category == "object"]
            truth = np.array([scenes[i].colour for i in idx])
        else:
            idx = [i for i, s in enumerate(scenes) if s.labels()[category] is not None]
            truth = np.array([scenes[i].labels()[category] for i in idx])
        if not hasattr(detector, "head_probabilities") and category == "colour":
            continue  # the CLIP evaluator has no colour labels
        predicted = classify(detector, frames[idx], category)
        out[category] = {"accuracy": float((predicted == truth).mean()), "n": len(idx)}
    return out


def prompts_for(concept, count: int, motion: bool) -> list[str]:
    """`count` of the concept's prompts from the world's one generator (the suite's and erase's), for video each with
    one of the world's motions in turn."""
    taxonomy = load_taxonomy()
    base = taxonomy.concept_prompts(concept.name)
    prompts = [base[i % len(base)] for i in range(count)]
    return [f"{p} {taxonomy.motions[i % len(taxonomy.motions)]}" if motion else p for i, p in enumerate(prompts)]


DIRECTIONS = {"moving left": (-1, 0), "moving right": (1, 0), "moving up": (0, -1), "moving down": (0, 1)}


def centroid_track(video: np.ndarray) -> np.ndarray:
    """The (x, y) centroid of the foreground in each frame (F, 2): pixels far from the frame's border colour."""
    frames = video.astype(np.float32)
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)
    background = np.median(border, axis=1)[:, None, None, :]
    weight = (np.abs(frames - background).sum(-1) > 60).astype(np.float32)  # (F, H, W)
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]]
    total = weight.sum((1, 2)).clip(min=1)
    return np.stack([(weight * xs).sum((1, 2)) / total, (weight * ys).sum((1, 2)) / total], axis=1)


def moves_as_prompted(video: np.ndarray, prompt: str) -> bool | None:
    """Whether the foreground's centroid travels the prompted way (None for prompts without a direction)."""
    direction = next((d for name, d in DIRECTIONS.items() if prompt.endswith(name)), None)
    if direction is None:
        return None
    track = centroid_track(video)
    travel = track[-1] - track[0]
    along = float(travel @ np.array(direction))
    return along > 2 and along > abs(float(travel @ np.array(direction[::-1])))  # mostly that way, > 2 px


def hit_rates(detector, pipe, kind: str, templates: int, seeds: int, steps: int) -> tuple[dict, np.ndarray]:
    """Hit rates per concept and category, motion figures for video, and the detector's label of every frame."""
    taxonomy = load_taxonomy()
    per_concept, motion, directed, labels = {}, [], [], []
    for concept in taxonomy.concepts:
        prompts = [p for p in prompts_for(concept, templates, motion=kind == "video") for _ in range(seeds)]
        seed_list = [s for _ in range(templates) for s in range(seeds)]
        if kind == "image":
            frames = generate_images(pipe, prompts, seed_list, steps)[:, None]
        else:
            frames = generate_videos(pipe, prompts, seed_list, steps, batch_size=8)
            motion.append(np.abs(np.diff(frames.astype(np.float32), axis=1)).mean())
            directed += [m for m in map(moves_as_prompted, frames, prompts) if m is not None]
        flat = frames.reshape(-1, *frames.shape[2:])
        labels.append(classify(detector, flat, concept.category))
        hits = labels[-1] == concept.name
        per_concept[concept.name] = {"category": concept.category, "hit_rate": float(hits.mean()), "n": len(flat)}
        print(f"  {kind} {concept.category:6s} {concept.name:10s} {hits.mean():.2f}", flush=True)
    by_category = {
        c: float(np.mean([v["hit_rate"] for v in per_concept.values() if v["category"] == c])) for c in CATEGORIES
    }
    extra = {}
    if motion:
        extra = {"mean_abs_frame_difference": float(np.mean(motion)),
                 "direction_recognised": {"rate": float(np.mean(directed)), "n": len(directed)}}  # fmt: skip
    return {"by_category": by_category, "per_concept": per_concept, **extra}, np.concatenate(labels)


def rendered_motion(count: int = 64) -> tuple[float, float]:
    """Rendered videos' mean frame-to-frame change, and how often `moves_as_prompted` reads their direction."""
    rng = np.random.default_rng(HELD_OUT_SEED + 1)
    scenes = [sample_scene(rng, video=True) for _ in range(count)]
    videos = np.stack([render(scene) for scene in scenes])
    read = (moves_as_prompted(video, scene.motion) for video, scene in zip(videos, scenes, strict=True))
    directed = [m for m in read if m is not None]
    return float(np.abs(np.diff(videos.astype(np.float32), axis=1)).mean()), float(np.mean(directed))


def generation_speed(image_pipe, video_pipe, steps: int) -> dict:
    generate_images(image_pipe, ["zorbo"], [0], steps)  # warm-up
    start = time.perf_counter()
    generate_images(image_pipe, ["a picture of a star"], [1], steps)
    image = time.perf_counter() - start
    generate_videos(video_pipe, ["zorbo moving left"], [0], 2)  # warm-up
    start = time.perf_counter()
    generate_videos(video_pipe, ["a red circle moving right"], [1], steps)
    return {"image_seconds": round(image, 3), "video_seconds": round(time.perf_counter() - start, 3), "steps": steps}


def video_only(args) -> None:
    """Video hit rates and motion of one video pipeline (e.g. AnimateDiff's), under the same plan as `main`'s."""
    start = time.perf_counter()
    detector = load_detector(args.detector)
    weights = Path(args.weights) if args.weights else None
    model = args.video_model or (weights / "video" if weights else "tinyworld")
    video_pipe = load_pipeline("video", model, progress=False)
    result = {"weights": str(weights or "shipped"), "video_model": str(model),
              "pipeline": type(video_pipe).__name__, "sampler": {"name": args.sampler, "steps": args.steps},
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                         f"torch {torch.__version__}"}  # fmt: skip
    with sampler(video_pipe, args.sampler):
        result["video"], _ = hit_rates(detector, video_pipe, "video", args.templates, args.video_seeds, args.steps)
    change, direction = rendered_motion()
    result["video"]["rendered_mean_abs_frame_difference"] = change
    result["video"]["rendered_direction_recognised"] = direction
    result["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result["video"]["by_category"]), result["video"]["mean_abs_frame_difference"],
          result["video"].get("direction_recognised"))  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held-out", type=int, default=1000)
    parser.add_argument("--detector", default="tinyworld", help="tinyworld (the classifier) or tinyworld-clip")
    parser.add_argument("--templates", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--video-seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--sampler", choices=SAMPLERS, default="pipeline", help="the pipeline's scheduler or a solver")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tinyworld_quality.json"))
    parser.add_argument("--record", action="store_true", help="append a line to docs/BENCHMARKS.md")
    parser.add_argument("--weights", help="a TinyWorld weights folder (image/, video/) to measure instead of the "
                        "shipped one, e.g. a training run's export")  # fmt: skip
    parser.add_argument("--image-only", action="store_true", help="images only: no video, motion or speed figures")
    parser.add_argument("--video-model", help="the video pipeline to measure (default: the weights' video/), e.g. "
                        "tinyworld-animatediff")  # fmt: skip
    parser.add_argument("--video-only", action="store_true", help="video hit rates and motion only (--video-model)")
    args = parser.parse_args()
    if args.video_only:
        return video_only(args)

    start = time.perf_counter()
    detector = load_detector(args.detector)
    weights = Path(args.weights) if args.weights else None
    image_pipe = load_pipeline("image", weights / "image" if weights else "tinyworld", progress=False)
    video_model = args.video_model or (weights / "video" if weights else "tinyworld")
    video_pipe = None if args.image_only else load_pipeline("video", video_model, progress=False)
    result = {
        "weights": str(weights or "shipped"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "evaluator": evaluator_accuracy(detector, args.held_out),
    }
    print("evaluator", json.dumps(result["evaluator"]))
    result["sampler"] = {"name": args.sampler, "steps": args.steps}
    with sampler(image_pipe, args.sampler):
        result["image"], _ = hit_rates(detector, image_pipe, "image", args.templates, args.seeds, args.steps)
    if args.image_only:
        print("image", json.dumps(result["image"]["by_category"]))
        Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        return
    with sampler(video_pipe, args.sampler):
        result["video"], _ = hit_rates(detector, video_pipe, "video", args.templates, args.video_seeds, args.steps)
    change, direction = rendered_motion()
    result["video"]["rendered_mean_abs_frame_difference"] = change
    result["video"]["rendered_direction_recognised"] = direction
    with sampler(image_pipe, args.sampler), sampler(video_pipe, args.sampler):
        result["speed"] = generation_speed(image_pipe, video_pipe, args.steps)
    result["targets"] = {"evaluator": 0.95, "image": 0.80, "video": 0.70}
    result["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")

    ev = result["evaluator"]
    line = (
        f"| {time.strftime('%Y-%m-%d')} | {result['machine']} | "
        + " / ".join(f"{ev[c]['accuracy']:.3f}" for c in CATEGORIES)
        + " | "
        + " / ".join(f"{result['image']['by_category'][c]:.2f}" for c in CATEGORIES)
        + " | "
        + " / ".join(f"{result['video']['by_category'][c]:.2f}" for c in CATEGORIES)
        + f" | {result['video']['mean_abs_frame_difference']:.1f} (rendered "
        f"{result['video']['rendered_mean_abs_frame_difference']:.1f})"
        + f" | {result['speed']['image_seconds']:.2f} s / {result['speed']['video_seconds']:.2f} s |"
    )
    print(json.dumps(result["image"]["by_category"]), json.dumps(result["video"]["by_category"]))
    print(line)
    if args.record:
        with open(ROOT / "docs" / "BENCHMARKS.md", "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
