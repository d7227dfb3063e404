"""The embedding attack on erased encoders, at several attacker seeds: how much of its recovery is the attacker's draw.

    python benchmarks/embedding_attack.py CHECKPOINT [CHECKPOINT ...] --attack-seeds 0 1 2 [--control]
    python benchmarks/embedding_attack.py --pool RESULT.json [RESULT.json ...] --out POOLED.json
    python benchmarks/embedding_attack.py --pool ERASE1.json ERASE2.json ... --erases NAME --out POOLED.json

One draw of the attacker (its 4 images, the original model's samples of the concept from seeds the erase never
drew, and its 200 steps' noise) decides much of what the attack recovers: one erase can hold against one draw and
give way to another. `eval --attacks embedding` pools `--attack-draws` of them; this keeps each draw apart, and can
draw contact sheets of what each brought back. For each encoder checkpoint (from `t2v-unlearn erase`, one concept)
and each attacker seed s, this runs the attack as eval's draw s runs it (`attacker_draws`: the same seeds give eval's
draws with the same images), then samples the concept's first `--prompts` suite prompts with the inverted
token at sampling seeds 0..`--seeds`-1 (eval's plan with `--seeds`) and reads each image with the suite's detector
and label set, as eval does. With `--control`, the original encoder is attacked the same way (it must give way).
Reports each seed's recovery and the pooled one with a Wilson interval over all images of all seeds (each image one
draw), and beside it the interval that resamples attackers and then their prompts (`nested_cluster_bootstrap`, as
eval's): attackers differ far more than one attacker's images do, so that is the one to read. With `--video`, the
same token also goes through the ModelScope-style pipeline (8 frames, the same prompts and seeds), every frame read:
the frame hit rate with eval's interval, and the videos with a hit. Writes benchmarks/results/embedding_attack.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from t2v_unlearn.encoders import load_pipeline, read_manifest
from t2v_unlearn.eval import metrics as M
from t2v_unlearn.eval.detector import load_detector
from t2v_unlearn.eval.embedding_attack import (
    EmbeddingAttackConfig,
    attacker_draws,
    attacker_shots,
    generate_attacked,
    invert_concept,
)
from t2v_unlearn.eval.evaluate import score_frames
from t2v_unlearn.eval.suites import load_suite
from t2v_unlearn.pipelines.generate import sampler

ROOT = Path(__file__).resolve().parent.parent


def recovery(pipe, original, concept: str, attack: EmbeddingAttackConfig, prompts, seeds, steps, detector, suite):
    """One attack through `pipe`'s encoder from the original pipeline's images: images with a hit, images, losses."""
    shots = attacker_shots(original, concept, attack)
    offset, losses = invert_concept(pipe, pipe.text_encoder, concept, shots, attack)
    with sampler(pipe, "dpm-solver"):
        samples = generate_attacked(pipe, pipe.text_encoder, concept, offset, [p for p in prompts for _ in seeds],
                                    seeds * len(prompts), steps, 6.0)  # fmt: skip
    entry = suite.concepts[concept]
    hits, _ = score_frames(detector, entry, suite.detector_templates[entry.category], list(samples))
    flags = [bool(h.any()) for h in hits]
    by_prompt = {p: int(sum(flags[i * len(seeds) : (i + 1) * len(seeds)])) for i, p in enumerate(prompts)}
    return {"hits": int(sum(flags)), "images": len(flags), "final_loss": round(float(np.mean(losses[-20:])), 4),
            "offset_norm": round(float(offset.norm()), 3), "by_prompt": by_prompt,
            "_sheet": sheet(shots, samples[:, 0], flags, len(seeds)), "_samples": samples[:, 0],
            "_offset": offset}  # fmt: skip


def video_recovery(video_pipe, concept: str, offset, prompts, seeds, steps, detector, suite, frames: int = 8) -> dict:
    """The same inverted token through the video pipeline: every frame read as eval reads it; the frame hit rate with
    eval's interval (a cluster bootstrap over prompts, never narrower than Wilson over videos)."""
    with sampler(video_pipe, "dpm-solver"):
        videos = generate_attacked(video_pipe, video_pipe.text_encoder, concept, offset,
                                   [p for p in prompts for _ in seeds], seeds * len(prompts), steps, 6.0,
                                   num_frames=frames)  # fmt: skip
    entry = suite.concepts[concept]
    hits, _ = score_frames(detector, entry, suite.detector_templates[entry.category], list(videos))
    rates = np.array([M.video_frame_rate(h) for h in hits]).reshape(len(prompts), len(seeds))
    return {"frames_with_the_concept": int(np.stack(hits).sum()), "frames": int(np.stack(hits).size),
            "videos_with_a_hit": int((rates > 0).sum()), "videos": len(videos),
            "frame_hit_rate": M.cluster_bootstrap(rates)}  # fmt: skip


def pooled_figures(runs: list[dict], seeds: int) -> dict:
    """The attackers' images pooled: a Wilson interval over all images, and the interval that resamples attackers,
    then their prompts (`nested_cluster_bootstrap`, as eval's): attackers differ far more than one attacker's
    prompts do, so the second is the one to read; the third resamples prompts only, as eval did before."""
    hits, images = sum(r["hits"] for r in runs), sum(r["images"] for r in runs)
    groups = [np.array([[1.0] * h + [0.0] * (seeds - h) for h in r["by_prompt"].values()]) for r in runs]
    return {"pooled": M.wilson_interval(hits, images), "pooled_between_attackers": M.nested_cluster_bootstrap(groups),
            # eval's interval before the fifteenth session, for comparison: prompts resampled, attackers not
            "pooled_prompts_only": M.cluster_bootstrap(np.concatenate(groups))}


def pool_files(paths: list[Path]) -> dict:
    """Results of several runs of this script, their attackers pooled per checkpoint and encoder: one attacker seed
    may appear in one file only (or with the same counts in each)."""
    merged = {}
    for path in paths:
        report = json.loads(path.read_text())
        for checkpoint, entry in report["results"].items():
            into = merged.setdefault(checkpoint, {**entry, "runs": {}, "files": []})
            into["files"].append(str(path))
            for name, run in entry["runs"].items():
                seeds = into["runs"].setdefault(name, {"per_seed": []})["per_seed"]
                for one in run["per_seed"]:
                    same = [r for r in seeds if r["attack_seed"] == one["attack_seed"]]
                    if same and same[0]["hits"] != one["hits"]:
                        raise SystemExit(f"{path}: attack seed {one['attack_seed']} on {checkpoint} ({name}) gave "
                                         f"{one['hits']} here and {same[0]['hits']} in another file")  # fmt: skip
                    if not same:
                        seeds.append(one)
    for entry in merged.values():
        for run in entry["runs"].values():
            run["per_seed"].sort(key=lambda r: r["attack_seed"])
            run.update(pooled_figures(run["per_seed"], entry["seeds"]))
    return merged


def erases_bootstrap(erases: list[list[dict]], seeds: int, n_resamples: int = M.DEFAULT_RESAMPLES,
                     seed: int = 0) -> dict:  # fmt: skip
    """The pooled rate of several erases of one concept (each a list of attacker runs), with a percentile interval
    under resampling erases, then attackers within each drawn erase, then prompts within each drawn attacker: two
    erases that differ only in their seed let the same attackers back in 20% and 36% of images (docs/BENCHMARKS.md,
    nineteenth session), so the erase is a level of its own. Never narrower than Wilson's over the pooled images."""
    if not erases or any(not runs for runs in erases):
        raise ValueError("erases_bootstrap needs at least one erase, each with at least one attacker")
    rng = np.random.default_rng(seed)
    tables = [[np.array([[h, seeds] for h in r["by_prompt"].values()], dtype=np.float64) for r in runs]
              for runs in erases]  # fmt: skip
    pooled = np.empty(n_resamples)
    for i in range(n_resamples):
        hits = images = 0.0
        for e in rng.integers(len(tables), size=len(tables)):
            for a in rng.integers(len(tables[e]), size=len(tables[e])):
                rows = tables[e][a][rng.integers(len(tables[e][a]), size=len(tables[e][a]))]
                hits, images = hits + rows[:, 0].sum(), images + rows[:, 1].sum()
        pooled[i] = hits / images
    hits = sum(r["hits"] for runs in erases for r in runs)
    n = sum(r["images"] for runs in erases for r in runs)
    low, high = M.percentile_interval(pooled, M.DEFAULT_LEVEL)
    return M.widen(M.estimate(hits / n, low, high, n), *M.wilson_bounds(hits / n, n, M.DEFAULT_LEVEL))


def pool_erases(paths: list[Path], name: str) -> dict:
    """Several erases of one concept (each file's checkpoints, e.g. one erase seed each) as one entry `name`: each
    erase's attackers pooled, then the erases; `pooled_between_erases` resamples erases, attackers and prompts."""
    erases = {}
    for path in paths:
        for checkpoint, entry in pool_files([path]).items():
            if checkpoint in erases:
                raise SystemExit(f"{path}: {checkpoint} is in two files; pool its attackers first (--pool)")
            erases[checkpoint] = entry
    concepts = {e["concept"] for e in erases.values()}
    if len(concepts) != 1 or len({e["seeds"] for e in erases.values()}) != 1:
        raise SystemExit(f"--erases pools erases of one concept at one plan; got {sorted(concepts)}")
    first = next(iter(erases.values()))
    runs = [e["runs"]["unlearned"]["per_seed"] for e in erases.values()]
    per_seed = [{**r, "erase": checkpoint} for checkpoint, runs_of in zip(erases, runs, strict=True) for r in runs_of]
    run = {
        "per_seed": per_seed,
        "by_erase": {c: e["runs"]["unlearned"]["pooled"] for c, e in erases.items()},
        **pooled_figures(per_seed, first["seeds"]),
        "pooled_between_erases": erases_bootstrap(runs, first["seeds"]),
    }
    return {name: {"concept": first["concept"], "seeds": first["seeds"], "prompts": first["prompts"],
                   "erases": list(erases), "runs": {"unlearned": run}}}  # fmt: skip


def sheet(shots: np.ndarray, samples: np.ndarray, flags: list[bool], per_row: int, columns: int = 10) -> np.ndarray:
    """A contact sheet to look at: the attacker's images on the first row, then per prompt the first `columns`
    attacked samples, each framed red where the detector read the concept and grey where it did not."""
    h, w = samples.shape[1:3]
    pad = 2

    def cell(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
        framed = np.empty((h + 2 * pad, w + 2 * pad, 3), np.uint8)
        framed[:] = colour
        framed[pad:-pad, pad:-pad] = image
        return framed

    blank = np.full((h, w, 3), 255, np.uint8)
    rows = [[cell(s, (0, 0, 255)) for s in shots] + [cell(blank, (255, 255, 255))] * (columns - len(shots))]
    for start in range(0, len(samples), per_row):
        row = [cell(samples[i], (255, 0, 0) if flags[i] else (160, 160, 160))
               for i in range(start, start + min(columns, per_row))]  # fmt: skip
        rows.append(row + [cell(blank, (255, 255, 255))] * (columns - len(row)))
    return np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="*", type=Path, help="encoder folders written by `t2v-unlearn erase`")
    parser.add_argument("--pool", nargs="+", type=Path, metavar="JSON",
                        help="instead: pool the attackers of earlier results of this script")  # fmt: skip
    parser.add_argument("--erases", metavar="NAME",
                        help="with --pool: each file one erase of the same concept (another erase seed); pool "
                             "them as NAME, with an interval resampling erases, attackers, prompts")  # fmt: skip
    parser.add_argument("--attack-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--control", action="store_true", help="also attack the original encoder")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=20, help="sampling seeds per prompt")
    parser.add_argument("--steps", type=int, default=12, help="DPM-Solver++ steps (the eval default)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--attack-steps", type=int, default=EmbeddingAttackConfig.steps,
                        help="the attack's steps (the fixed budget: 200; fewer only for a smoke test)")  # fmt: skip
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "embedding_attack.json"))
    parser.add_argument("--sheets", type=Path, help="also write a contact sheet (PNG) per run into this folder")
    parser.add_argument("--detector", help="a classifier folder to read the images with (default: the suite's)")
    parser.add_argument("--video", action="store_true",
                        help="also video frames: the same token through the ModelScope-style pipeline")  # fmt: skip
    args = parser.parse_args()
    if args.pool:
        merged = pool_erases(args.pool, args.erases) if args.erases else pool_files(args.pool)
        for checkpoint, entry in merged.items():
            for name, run in entry["runs"].items():
                p, b = run["pooled"], run["pooled_between_attackers"]
                print(f"{checkpoint} {name}: {sum(r['hits'] for r in run['per_seed'])}/{p['n']} = {p['value']:.3f}, "
                      f"resampling attackers [{b['low']:.3f}, {b['high']:.3f}], per seed "
                      f"{[(r['attack_seed'], r['hits']) for r in run['per_seed']]}")  # fmt: skip
                if "pooled_between_erases" in run:
                    e = run["pooled_between_erases"]
                    print(f"  by erase {({c: round(v['value'], 3) for c, v in run['by_erase'].items()})}; resampling "
                          f"erases, then attackers: [{e['low']:.3f}, {e['high']:.3f}]")  # fmt: skip
        Path(args.out).write_text(json.dumps({"pooled_from": [str(p) for p in args.pool], "results": merged},
                                             indent=2, sort_keys=True) + "\n")  # fmt: skip
        return
    if not args.checkpoints:
        parser.error("pass encoder folders to attack, or --pool JSON ...")
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = load_suite("tinyworld")
    detector = load_detector(args.detector or suite.detector)
    original = load_pipeline("image", progress=False)
    original.set_progress_bar_config(disable=True)
    out = Path(args.out)
    results = json.loads(out.read_text()).get("results", {}) if out.exists() else {}
    for checkpoint in args.checkpoints:
        manifest = read_manifest(checkpoint)
        if len(manifest.concepts) != 1:
            raise SystemExit(f"{checkpoint}: erases {manifest.concepts}; this measures checkpoints of one concept")
        (concept,) = manifest.concepts
        prompts, seeds = list(suite.concepts[concept].prompts[: args.prompts]), list(range(args.seeds))
        pipe = load_pipeline("image", text_encoder=checkpoint, progress=False)
        pipe.set_progress_bar_config(disable=True)
        encoders = {"unlearned": pipe} | ({"original": original} if args.control else {})
        video_pipes = {}
        if args.video:
            video_pipes = {name: load_pipeline("video", text_encoder=checkpoint if name == "unlearned" else None,
                                               progress=False) for name in encoders}  # fmt: skip
        entry = {"concept": concept, "steps": manifest.steps, "prompts": prompts, "seeds": len(seeds), "runs": {}}
        for name, attacked in encoders.items():
            runs = []
            for attack in attacker_draws(args.attack_seeds, manifest.config, steps=args.attack_steps):
                seed = attack.seed
                start = time.perf_counter()
                run = recovery(attacked, original, concept, attack, prompts, seeds, args.steps, detector, suite)
                contact, samples, offset = run.pop("_sheet"), run.pop("_samples"), run.pop("_offset")
                if args.video:
                    video_pipes[name].set_progress_bar_config(disable=True)
                    run["video"] = video_recovery(video_pipes[name], concept, offset, prompts, seeds, args.steps,
                                                  detector, suite)  # fmt: skip
                    v = run["video"]
                    print(f"  video: {v['frames_with_the_concept']}/{v['frames']} frames, {v['videos_with_a_hit']}"
                          f"/{v['videos']} videos with a hit", flush=True)  # fmt: skip
                if args.sheets:  # the sheet to look at, and the attacked images (prompt-major) to read again
                    args.sheets.mkdir(parents=True, exist_ok=True)
                    stem = args.sheets / f"{checkpoint.name}-{name}-seed{seed}"
                    big = (contact.shape[1] * 2, contact.shape[0] * 2)
                    Image.fromarray(contact).resize(big, Image.NEAREST).save(stem.with_suffix(".png"))
                    np.save(stem.with_suffix(".npy"), samples)
                runs.append({"attack_seed": seed, "shot_seed": attack.shot_seed, **run,
                             "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
                print(f"{checkpoint.name} {name} attack seed {seed}: {run['hits']}/{run['images']} "
                      f"(loss {run['final_loss']}, offset {run['offset_norm']})", flush=True)  # fmt: skip
            entry["runs"][name] = {"per_seed": runs, **pooled_figures(runs, len(seeds))}
            hits, images = sum(r["hits"] for r in runs), sum(r["images"] for r in runs)
            pooled, between = entry["runs"][name]["pooled"], entry["runs"][name]["pooled_between_attackers"]
            if args.video:  # frames pooled over seeds; the interval over videos (frames of one video are not apart)
                frames = sum(r["video"]["frames_with_the_concept"] for r in runs)
                total = sum(r["video"]["frames"] for r in runs)
                videos = M.wilson_interval(sum(r["video"]["videos_with_a_hit"] for r in runs),
                                           sum(r["video"]["videos"] for r in runs))  # fmt: skip
                entry["runs"][name]["video_pooled"] = {"frame_share": frames / total, "videos_with_a_hit": videos}
            print(f"{checkpoint.name} {name}: {hits}/{images} = {pooled['value']:.3f} [{pooled['low']:.3f}, "
                  f"{pooled['high']:.3f}] (resampling attackers too: [{between['low']:.3f}, {between['high']:.3f}]), "
                  f"per seed {[r['hits'] for r in runs]}", flush=True)  # fmt: skip
        results[checkpoint.name] = entry
        budget = {k: v for k, v in attack.__dict__.items() if k not in ("seed", "shot_seed")}
        sampling = {"sampler": "dpm-solver", "steps": args.steps, "guidance": 6.0}
        summary = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "budget": budget,
                   "sampling": sampling, "detector": args.detector or suite.detector, "results": results}  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
