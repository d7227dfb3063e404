"""Is the TinyWorld detector right on the generator's own samples? A blind check against a person's labels.

    python benchmarks/evaluator_on_samples.py sheets [--per-concept 6] [--work runs/evaluator-on-samples]
    python benchmarks/evaluator_on_samples.py score LABELS.json [--work runs/evaluator-on-samples] [--detector DIR]
    python benchmarks/evaluator_on_samples.py images --images A.npy B.npy --take 80 40 --prompted square --work W

The instrument issue's target: the detector at least 90% right per category on the image generator's samples
of clearly rendered prompts. Rendered images have a ground truth; generated ones do not, so a person supplies
it, blind:

1. `sheets` samples the shipped image model (the eval sampler: DPM-Solver++ at 12 steps) on prompts of every
   concept of each category (objects, styles, characters; colours from coloured object prompts) and draws one
   numbered contact sheet per category, with the rendered look of every label in a key row above it. It
   writes the prompts and the detector's labels to `answers.json` in the work folder, which the labeller does
   not open.
2. The labeller writes, for each cell of each sheet, the label they see, or "unclear" where the sample shows no
   one label clearly (a blob between a circle and a hexagon, a colour between two), in a JSON
   `{"object": ["circle", "unclear", ...], "style": [...], "id": [...], "colour": [...]}`.
3. `score` compares: per category, the detector's accuracy on the cells labelled clearly (with a Wilson 95%
   interval), how many cells were unclear, and how often the clear label is the prompted one (the generator's
   hit rate as the person sees it). Writes benchmarks/results/evaluator_on_samples.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from t2v_unlearn.eval.detector import load_detector
from t2v_unlearn.eval.metrics import wilson_interval
from t2v_unlearn.pipelines import load_pipeline
from t2v_unlearn.pipelines.generate import generate_images, sampler
from t2v_unlearn.tinyworld.render import Scene, render
from t2v_unlearn.tinyworld.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parent.parent
HEADS = ("object", "style", "id", "colour")
COLUMNS, SCALE, GAP = 8, 2, 14
SEED = 7_000_000  # far from the seeds the suite and the quality benchmark sample with


def labels_of(head: str) -> list[str]:
    taxonomy = load_taxonomy()
    return list(taxonomy.colours) if head == "colour" else taxonomy.names(head)


def plan(head: str, per_concept: int) -> list[tuple[str, str, int]]:
    """(truth as prompted, prompt, seed) for each cell of a head's sheet, shuffled so rows do not give labels away."""
    taxonomy = load_taxonomy()
    rng = np.random.default_rng(SEED + HEADS.index(head))
    cells = []
    for label in labels_of(head):
        for k in range(per_concept):
            if head == "colour":
                shape = taxonomy.names("object")[rng.integers(len(taxonomy.names("object")))]
                prompt = f"a {label} {shape}"
            else:
                prompts = taxonomy.concept_prompts(label)
                prompt = prompts[rng.integers(len(prompts))]
            cells.append((label, prompt, int(SEED + 1000 * HEADS.index(head) + k)))
    order = rng.permutation(len(cells))
    return [cells[i] for i in order]


def key_row(head: str) -> np.ndarray:
    """The rendered look of each label, drawn plainly: a character, or a blue solid square with the label as its
    shape, style or colour, on gray."""
    plain = {"category": "object", "subject": "square", "background": "gray", "colour": "blue", "style": "solid"}
    field = {"object": "subject", "style": "style", "colour": "colour"}
    scenes = [Scene(category="id", subject=label, background="gray", size=0.7) if head == "id"
              else Scene(**{**plain, field[head]: label}, size=0.7) for label in labels_of(head)]  # fmt: skip
    return np.concatenate([render(scene)[0] for scene in scenes], axis=1)


def draw_sheet(images: np.ndarray, head: str) -> Image.Image:
    size = images.shape[1] * SCALE
    rows = -(-len(images) // COLUMNS)
    key = Image.fromarray(key_row(head))
    key = key.resize((key.width * SCALE, key.height * SCALE), Image.NEAREST)
    width = max(COLUMNS * (size + 4), key.width)
    sheet = Image.new("RGB", (width, key.height + 2 * GAP + rows * (size + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    sheet.paste(key, (0, GAP))
    for i, name in enumerate(labels_of(head)):
        draw.text((i * key.width // len(labels_of(head)) + 2, 0), name, fill="black")
    top = key.height + 2 * GAP
    for i, image in enumerate(images):
        x, y = (i % COLUMNS) * (size + 4), top + (i // COLUMNS) * (size + GAP)
        draw.text((x + 2, y), str(i), fill="black")
        sheet.paste(Image.fromarray(image).resize((size, size), Image.NEAREST), (x, y + GAP - 2))
    return sheet


def sheets(args) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline("image", progress=False)
    detector = load_detector(args.detector)
    answers = {}
    with sampler(pipe, "dpm-solver"):
        for head in HEADS:
            cells = plan(head, args.per_concept)
            images = generate_images(pipe, [c[1] for c in cells], [c[2] for c in cells], 12)
            probabilities = detector.head_probabilities(images)[head]
            classes = detector.model.classes[head]
            said = [classes[int(j)] for j in probabilities.argmax(-1)]
            answers[head] = [{"prompted": truth, "prompt": prompt, "seed": seed, "detector": label}
                             for (truth, prompt, seed), label in zip(cells, said, strict=True)]  # fmt: skip
            draw_sheet(images, head).save(work / f"sheet_{head}.png")
            np.save(work / f"images_{head}.npy", images)  # for `score --detector`: another detector, same cells
            print(f"{work / f'sheet_{head}.png'}: {len(cells)} cells")
    (work / "answers.json").write_text(json.dumps(answers, indent=1) + "\n")


def image_cells(args) -> None:
    """A blind sheet of images made elsewhere (e.g. `embedding_attack.py --sheets`' .npy files), shuffled together so
    that the labeller cannot tell the files apart: mix an attack's images with a control's."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    takes = args.take or [None] * len(args.images)
    if len(takes) != len(args.images):
        raise SystemExit(f"--take gives {len(takes)} counts for {len(args.images)} files")
    cells, images = [], []
    for path, take in zip(args.images, takes, strict=True):
        array = np.load(path)
        chosen = range(len(array))
        if take:
            chosen = sorted(rng.choice(len(array), size=min(take, len(array)), replace=False))
        cells += [(Path(path).stem, int(i)) for i in chosen]
        images += [array[i] for i in chosen]
    order = rng.permutation(len(cells))
    cells, images = [cells[i] for i in order], np.stack([images[i] for i in order])
    detector = load_detector(args.detector)
    classes = detector.model.classes[args.head]
    said = [classes[int(j)] for j in detector.head_probabilities(images)[args.head].argmax(-1)]
    rows = [{"prompted": args.prompted, "prompt": source, "seed": index, "source": source, "detector": label}
            for (source, index), label in zip(cells, said, strict=True)]  # fmt: skip
    answers = {args.head: rows}
    draw_sheet(images, args.head).save(work / f"sheet_{args.head}.png")
    np.save(work / f"images_{args.head}.npy", images)
    (work / "answers.json").write_text(json.dumps(answers, indent=1) + "\n")
    print(f"{work / f'sheet_{args.head}.png'}: {len(cells)} cells")


def by_source(cells: list[dict], person: list[str], prompted: str) -> dict:
    """Per source file of an `images` sheet: how often the person and the detector see the prompted label."""
    out = {}
    for source in sorted({c["source"] for c in cells}):
        rows = [(c, p) for c, p in zip(cells, person, strict=True) if c["source"] == source]
        out[source] = {
            "cells": len(rows),
            "unclear": sum(p == "unclear" for _, p in rows),
            "person_sees_it": wilson_interval(sum(p == prompted for _, p in rows), len(rows)),
            "detector_says_it": wilson_interval(sum(c["detector"] == prompted for c, _ in rows), len(rows)),
        }
    return out


def score(args) -> None:
    work = Path(args.work)
    answers = json.loads((work / "answers.json").read_text())
    seen = json.loads(Path(args.labels).read_text())
    heads = [head for head in HEADS if head in answers]  # an `images` sheet holds one head
    if args.detector != "tinyworld":  # another detector on the very cells the person labelled
        detector = load_detector(args.detector)
        for head in heads:
            probabilities = detector.head_probabilities(np.load(work / f"images_{head}.npy"))[head]
            classes = detector.model.classes[head]
            for cell, j in zip(answers[head], probabilities.argmax(-1), strict=True):
                cell["detector"] = classes[int(j)]
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads"
    result = {"machine": machine, "labels_file": args.labels, "detector": args.detector,
              "sampler": {"name": "dpm-solver", "steps": 12}, "by_category": {}}  # fmt: skip
    for head in heads:
        cells, person = answers[head], seen[head]
        if len(person) != len(cells):
            raise SystemExit(f"{args.labels}: {head} has {len(person)} labels for {len(cells)} cells")
        unknown = set(person) - {*labels_of(head), "unclear"}
        if unknown:
            raise SystemExit(f"{args.labels}: {head} labels {sorted(unknown)} are not {labels_of(head)} or unclear")
        clear = [(c, p) for c, p in zip(cells, person, strict=True) if p != "unclear"]
        right = sum(c["detector"] == p for c, p in clear)
        as_prompted = sum(c["prompted"] == p for c, p in clear)
        wrong = [{"seen": p, "detector": c["detector"], "prompt": c["prompt"], "seed": c["seed"]}
                 for c, p in clear if c["detector"] != p]  # fmt: skip
        result["by_category"][head] = {
            "accuracy": wilson_interval(right, len(clear)),
            "clear": len(clear),
            "unclear": len(cells) - len(clear),
            "prompted_label_seen": wilson_interval(as_prompted, len(cells)),
            "wrong": wrong,
        }
        if "source" in cells[0]:
            result["by_category"][head]["by_source"] = by_source(cells, person, cells[0]["prompted"])
        a = result["by_category"][head]["accuracy"]
        print(f"{head:7s} detector right on {right}/{len(clear)} clear samples: {a['value']:.2f} "
              f"[{a['low']:.2f}, {a['high']:.2f}]; unclear {len(cells) - len(clear)}; the prompted label seen "
              f"in {as_prompted}/{len(cells)}")  # fmt: skip
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["sheets", "images", "score"])
    parser.add_argument("labels", nargs="?", help="score: the person's labels (JSON)")
    parser.add_argument("--per-concept", type=int, default=6, help="samples per label of each category")
    parser.add_argument("--work", default=str(ROOT / "runs" / "evaluator-on-samples"))
    parser.add_argument("--detector", default="tinyworld",
                        help="the TinyWorld classifier to check: 'tinyworld' (shipped) or a classifier folder; "
                             "score re-reads the cells that sheets saved")  # fmt: skip
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "evaluator_on_samples.json"))
    parser.add_argument("--images", nargs="+", help="images: .npy files of uint8 images (N, H, W, 3) to mix")
    parser.add_argument("--take", nargs="+", type=int, help="images: how many of each file (a seeded draw)")
    parser.add_argument("--head", default="object", choices=HEADS, help="images: the category the person labels")
    parser.add_argument("--prompted", help="images: the label the images were asked to show")
    args = parser.parse_args()
    if args.action == "score" and not args.labels:
        parser.error("score needs the labels JSON")
    if args.action == "images" and not (args.images and args.prompted):
        parser.error("images needs --images and --prompted")
    {"sheets": sheets, "images": image_cells, "score": score}[args.action](args)


if __name__ == "__main__":
    main()
