"""The evaluation procedure: plan rows from a suite, generate them, score their frames, compute the metrics.

`evaluate(config, root)` runs the whole thing for an encoder checkpoint against its base model;
`evaluate_video_files(config, root)` scores existing video files. Both return the metrics dict that
`metrics.json` holds and the material the HTML report shows. Generation and IO live here; the numbers
come from the pure functions in `metrics.py`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import metrics as M
from .detector import ZeroShotDetector
from .runner import (
    ORIGINAL,
    UNLEARNED,
    GenerationConfig,
    Row,
    distributed_state,
    generate_distributed,
    load_sample,
    make_rows,
    model_for_kind,
)
from .suites import Suite, SuiteConcept, load_suite, suite_for_model

KIND_CHOICES = ("image", "video", "both")


@dataclass
class EvalConfig:
    """Everything an evaluation depends on; saved as eval_config.json beside its results."""

    text_encoder: str | None = field(default=None, metadata={"help": "encoder checkpoint folder from `erase`"})
    model: str | None = field(default=None, metadata={"help": "base model; default: the checkpoint's base_model"})
    video_model: str | None = field(
        default=None, metadata={"help": "video pipeline when --model is an image one (e.g. ModelScope for SD 2.1)"}
    )
    kind: str = field(default="both", metadata={"help": "image, video or both"})
    suite: str | None = field(default=None, metadata={"help": "suite name or JSON file; default by model"})
    quick: bool = field(default=False, metadata={"help": "fewer prompts, seeds and retained concepts"})
    concepts: list[str] = field(default_factory=list, metadata={"help": "targets; default: the checkpoint's"})
    detector: str | None = field(default=None, metadata={"help": "CLIP folder; default: the suite's detector"})
    videos: str | None = field(default=None, metadata={"help": "score the video files in this folder instead"})
    seed: int = field(default=0, metadata={"help": "offset added to the suite's seeds; also the bootstrap seed"})
    steps: int = field(default=25, metadata={"help": "denoising steps"})
    guidance: float = field(default=6.0, metadata={"help": "classifier-free guidance scale"})
    num_frames: int = field(default=8, metadata={"help": "frames per generated video"})
    frames_scored: int | None = field(
        default=None, metadata={"help": "score m evenly spaced frames per video (METHOD.md section 3); default all"}
    )
    device: str = field(default="cpu", metadata={"help": "torch device"})
    score_decoded: bool = field(default=True, metadata={"help": "also score generated videos after an mp4 round trip"})
    bootstrap_resamples: int = field(default=M.DEFAULT_RESAMPLES, metadata={"help": "bootstrap resamples"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self):
        if self.frames_scored is not None and self.frames_scored < 1:
            raise ValueError(f"--frames-scored must be at least 1 (got {self.frames_scored}); omit it to score all")

    def model_for(self, kind: str) -> str:
        """The pipeline of one kind: --video-model for videos when given; TinyWorld-style folders hold both."""
        if kind == "video" and self.video_model is not None:
            return self.video_model
        path = Path(str(self.model)).expanduser()
        sibling = path.parent / kind
        if path.name in ("image", "video") and path.name != kind and (sibling / "model_index.json").is_file():
            return str(sibling)  # a checkpoint's base_model .../image: its video pipeline is .../video
        return model_for_kind(str(self.model), kind)

    def kinds(self) -> list[str]:
        if self.kind not in KIND_CHOICES:
            raise ValueError(f"kind must be one of {KIND_CHOICES}, got {self.kind!r}")
        return ["image", "video"] if self.kind == "both" else [self.kind]


def read_checkpoint_manifest(folder: str | Path) -> dict:
    """The unlearn.json of an encoder checkpoint (concepts, base_model, ...)."""
    path = Path(folder).expanduser() / "unlearn.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"--text-encoder {folder} is not an encoder checkpoint (no unlearn.json); pass a folder written by "
            "`t2v-unlearn erase`"
        )
    manifest = json.loads(path.read_text())
    if not isinstance(manifest.get("concepts"), list) or not manifest["concepts"]:
        raise ValueError(f"{path} lists no erased concepts ('concepts'); pass --concept NAME")
    return manifest


def resolve_config(config: EvalConfig) -> EvalConfig:
    """Fill model and concepts from the checkpoint's unlearn.json where the user left them out."""
    if config.videos is None and config.text_encoder is not None:
        manifest = read_checkpoint_manifest(config.text_encoder)
        if config.model is None:
            config.model = str(manifest.get("base_model", "tinyworld"))
        if not config.concepts:
            config.concepts = [str(c) for c in manifest["concepts"]]
    if config.model is None:
        config.model = "tinyworld"
    if not config.concepts:
        raise ValueError("no concept to evaluate: pass --concept NAME (or --text-encoder with an unlearn.json)")
    if config.suite is None:
        config.suite = suite_for_model(config.model)
    return config


# --- scoring ---------------------------------------------------------------------------------------------


@dataclass
class ConceptScores:
    """Detector output for one concept under one model: hard hits and soft scores per prompt, seed and frame."""

    hits: list[list[np.ndarray]]  # [prompt][seed] -> (F,) bool
    soft: list[list[np.ndarray]]  # [prompt][seed] -> (F,) float
    frames: list[list[np.ndarray]] | None = None  # kept only for the report's gallery

    def rates(self) -> np.ndarray:
        """(P, S) per-video frame rates M_c(v)."""
        return np.array([[M.video_frame_rate(h) for h in row] for row in self.hits])

    def soft_rates(self) -> np.ndarray:
        return np.array([[float(np.mean(s)) for s in row] for row in self.soft])

    def any_frame(self) -> np.ndarray:
        return np.array([[M.any_frame_hit(h) for h in row] for row in self.hits])

    def per_frame_rate(self) -> list[float]:
        """Hit rate at each frame index over all videos (up to the shortest video)."""
        flat = [h for row in self.hits for h in row]
        length = min(len(h) for h in flat)
        return np.mean([h[:length] for h in flat], axis=0).astype(float).tolist()


def score_frames(
    detector: ZeroShotDetector,
    concept: SuiteConcept,
    templates: tuple[str, ...],
    videos: list[np.ndarray],
    frames_scored: int | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hits and soft scores for a list of videos (each uint8 (F, H, W, 3)), in one batched detector pass.

    With `frames_scored` m, only m evenly spaced frames of each video are scored.
    """
    videos = [v[M.evenly_spaced_frames(len(v), frames_scored)] for v in videos]
    labels = concept.label_set()
    lengths = [len(v) for v in videos]
    probabilities = detector.probabilities(np.concatenate(videos), labels, templates)
    hits = M.frame_hits(probabilities, labels.mask)
    soft = M.soft_scores(probabilities, labels.mask)
    spans = list(zip(np.cumsum([0, *lengths[:-1]]), np.cumsum(lengths), strict=True))
    return [hits[a:b] for a, b in spans], [soft[a:b] for a, b in spans]


def mp4_roundtrip(row: Row, root: Path) -> np.ndarray:
    """A generated video as a viewer would get it: encoded to H.264 mp4 (PyAV), then decoded again."""
    from ..pipelines.video_io import read_video, write_mp4

    path = root / "decoded" / row.path(root).relative_to(root / "samples").with_suffix(".mp4")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.mp4")
        write_mp4(load_sample(row, root), tmp)
        tmp.replace(path)
    return read_video(path)


def score_rows(
    rows: list[Row],
    root: Path,
    detector: ZeroShotDetector,
    suite: Suite,
    keep_frames: int = 0,
    progress: bool = True,
    decoded: bool = False,
    frames_scored: int | None = None,
) -> dict[tuple[str, str, str], ConceptScores]:
    """(kind, encoder, concept) -> ConceptScores, reading each row's lossless frames (or, with `decoded`, its mp4)."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.kind, row.encoder, row.concept), []).append(row)
    out = {}
    description = "scoring decoded mp4s" if decoded else "scoring"
    for (kind, encoder, concept), group in tqdm(groups.items(), desc=description, disable=not progress):
        entry = suite.concepts[concept]
        prompts = sorted({r.prompt_index for r in group})
        seeds = sorted({r.seed for r in group})
        grid = {(r.prompt_index, r.seed): mp4_roundtrip(r, root) if decoded else load_sample(r, root) for r in group}
        videos = [grid[(p, s)] for p in prompts for s in seeds]
        hits, soft = score_frames(detector, entry, suite.detector_templates[entry.category], videos, frames_scored)
        shape = (len(prompts), len(seeds))

        def nest(items, shape=shape):
            return [[items[p * shape[1] + s] for s in range(shape[1])] for p in range(shape[0])]

        frames = nest(videos) if keep_frames and concept in keep_concepts(suite, rows, keep_frames) else None
        out[(kind, encoder, concept)] = ConceptScores(nest(hits), nest(soft), frames)
    return out


def keep_concepts(suite: Suite, rows: list[Row], n: int) -> list[str]:
    seen = []
    for row in rows:
        if row.concept not in seen:
            seen.append(row.concept)
    return seen[:n]


# --- metrics ---------------------------------------------------------------------------------------------


def model_summary(scores: ConceptScores, n_resamples: int, seed: int) -> dict:
    """M-Score, soft score (cluster bootstrap over prompts) and any-frame rate (Wilson) of one concept/model."""
    rates, any_frame = scores.rates(), scores.any_frame()
    return {
        "m_score": M.cluster_bootstrap(rates, M.m_score, n_resamples, seed),
        "soft_score": M.cluster_bootstrap(scores.soft_rates(), M.m_score, n_resamples, seed),
        "any_frame": M.wilson_interval(int(any_frame.sum()), any_frame.size),
        "per_frame_hit_rate": scores.per_frame_rate(),
    }


def kind_metrics(
    scores: dict[str, tuple[ConceptScores, ConceptScores | None]],
    categories: dict[str, str],
    targets: list[str],
    n_resamples: int,
    seed: int,
) -> dict:
    """Headline numbers and per-concept detail for one kind; `scores` maps concept -> (original, unlearned)."""
    concepts = {}
    for concept, (original, unlearned) in scores.items():
        entry = {
            "category": categories[concept],
            "role": "target" if concept in targets else "retained",
            "n_prompts": len(original.hits),
            "n_seeds": len(original.hits[0]),
            "frames_per_video": int(np.median([len(h) for row in original.hits for h in row])),
            ORIGINAL: model_summary(original, n_resamples, seed),
        }
        if unlearned is not None:
            entry[UNLEARNED] = model_summary(unlearned, n_resamples, seed)
            entry["normalised_m_score"] = M.paired_bootstrap(
                original.rates(), unlearned.rates(), n_resamples=n_resamples, seed=seed
            )
        concepts[concept] = entry
    paired = {c: (o.rates(), u.rates()) for c, (o, u) in scores.items() if u is not None}
    if paired and all(t in paired for t in targets):
        summary = M.erasure_summary(paired, targets, categories, n_resamples, seed)
    else:
        empty = M.estimate(float("nan"), None, None, 0)
        names = ("erasure", "retention", "retention_same_category", "retention_other_categories", "harmonic_mean")
        summary = {name: dict(empty) for name in names}
    undefined = [c for c, e in concepts.items() if e[ORIGINAL]["m_score"]["value"] == 0]
    return {**summary, "undefined_concepts": undefined, "concepts": concepts}


# --- the two entry points --------------------------------------------------------------------------------


def evaluate(config: EvalConfig, root: Path, gallery_concepts: int = 2) -> tuple[dict, dict]:
    """Generate (resumably, sharded under accelerate) and score; returns (metrics, gallery) on the main process.

    Other processes return ({}, {}) once their share of the generation is written.
    """
    config = resolve_config(config)
    suite = load_suite(config.suite)
    targets = [suite.concept(c).name for c in config.concepts]
    encoders = {ORIGINAL: None, UNLEARNED: config.text_encoder}
    plans, rows = {}, []
    for kind in config.kinds():
        concepts, prompts, seeds = suite.plan(targets, quick=config.quick, kind=kind)
        plans[kind] = (concepts, prompts, [config.seed + s for s in seeds])
        rows += make_rows(kind, config.model_for(kind), encoders, prompts, plans[kind][2])
    generation = GenerationConfig(
        steps=config.steps, guidance=config.guidance, num_frames=config.num_frames, device=config.device,
        progress=config.progress,
    )  # fmt: skip
    generate_distributed(rows, root, generation)
    if not distributed_state(config.device).is_main_process:
        return {}, {}
    detector = ZeroShotDetector.from_pretrained(config.detector or suite.detector, device=config.device)
    scores = score_rows(rows, root, detector, suite, keep_frames=gallery_concepts, progress=config.progress,
                        frames_scored=config.frames_scored)  # fmt: skip
    metrics = {"targets": targets, "suite": suite.name, "model": config.model, "text_encoder": config.text_encoder}
    metrics["models"] = {kind: config.model_for(kind) for kind in plans}
    gallery = {}
    for kind, (concepts, prompts, seeds) in plans.items():
        categories = {c: suite.concepts[c].category for c in concepts}
        pairs = {c: (scores[(kind, ORIGINAL, c)], scores[(kind, UNLEARNED, c)]) for c in concepts}
        metrics[kind] = kind_metrics(pairs, categories, targets, config.bootstrap_resamples, config.seed)
        gallery[kind] = gallery_items(pairs, prompts, seeds)
        if kind == "video" and config.score_decoded:  # METHOD.md §3: score decoded files separately
            video_rows = [r for r in rows if r.kind == "video"]
            decoded = score_rows(video_rows, root, detector, suite, progress=config.progress, decoded=True,
                                 frames_scored=config.frames_scored)  # fmt: skip
            pairs = {c: (decoded[(kind, ORIGINAL, c)], decoded[(kind, UNLEARNED, c)]) for c in concepts}
            metrics["video_mp4"] = kind_metrics(pairs, categories, targets, config.bootstrap_resamples, config.seed)
    metrics["config"] = asdict(config)
    return metrics, gallery


def gallery_items(pairs: dict[str, tuple[ConceptScores, ConceptScores | None]], prompts, seeds, per_concept: int = 4):
    """Before/after frames for the report: the first prompts of each kept concept, first seed."""
    items = []
    for concept, (original, unlearned) in pairs.items():
        if original.frames is None:
            continue
        for p in range(min(per_concept, len(original.frames))):
            items.append(
                {
                    "concept": concept,
                    "prompt": prompts[concept][p],
                    "seed": seeds[0],
                    ORIGINAL: original.frames[p][0],
                    UNLEARNED: None if unlearned is None or unlearned.frames is None else unlearned.frames[p][0],
                }
            )
    return items


def evaluate_video_files(config: EvalConfig, folder: Path) -> tuple[dict, dict]:
    """Score existing videos (mp4, webm, gif, ...) decoded with PyAV.

    Layouts: `DIR/{original,unlearned}/[<concept>/]*.mp4` (paired by file name: erasure and retention) or
    `DIR/[<concept>/]*.mp4` (one model: M-Scores only). Files directly in a model folder belong to the
    first --concept. Each video is its own cluster for the bootstrap.
    """
    from ..pipelines.video_io import VIDEO_SUFFIXES, read_video

    if not config.concepts:
        raise ValueError("--videos needs --concept NAME: which concept the videos should (not) show")
    suite = load_suite(config.suite or suite_for_model(config.model or "tinyworld"))
    targets = [suite.concept(c).name for c in config.concepts]
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"--videos {folder} is not a folder")
    paired = (folder / ORIGINAL).is_dir() and (folder / UNLEARNED).is_dir()
    models = [ORIGINAL, UNLEARNED] if paired else [ORIGINAL]

    def videos_of(model_folder: Path) -> dict[str, dict[str, Path]]:
        found: dict[str, dict[str, Path]] = {}
        for path in sorted(model_folder.rglob("*")):
            if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
                relative = path.relative_to(model_folder)
                concept = targets[0] if len(relative.parts) == 1 else suite.concept(relative.parts[0]).name
                found.setdefault(concept, {})[path.name] = path
        return found

    files = {m: videos_of(folder / m if paired else folder) for m in models}
    if not files[ORIGINAL]:
        raise FileNotFoundError(f"--videos {folder} holds no video files ({', '.join(VIDEO_SUFFIXES)})")
    detector = ZeroShotDetector.from_pretrained(config.detector or suite.detector, device=config.device)
    concepts = sorted(files[ORIGINAL], key=lambda c: (c not in targets, c))
    scores: dict[str, tuple[ConceptScores, ConceptScores | None]] = {}
    names = {}
    for concept in tqdm(concepts, desc="scoring videos", disable=not config.progress):
        entry = suite.concepts[concept]
        common = sorted(set.intersection(*(set(files[m].get(concept, {})) for m in models)))
        if not common:
            raise FileNotFoundError(f"no video of {concept!r} is present under both {' and '.join(models)}")
        per_model = []
        for model in models:
            videos = [read_video(files[model][concept][name]) for name in common]
            hits, soft = score_frames(detector, entry, suite.detector_templates[entry.category], videos,
                                      config.frames_scored)  # fmt: skip
            per_model.append(ConceptScores([[h] for h in hits], [[s] for s in soft], [[v] for v in videos[:4]]))
        scores[concept] = (per_model[0], per_model[1] if paired else None)
        names[concept] = common
    categories = {c: suite.concepts[c].category for c in concepts}
    metrics = {"targets": targets, "suite": suite.name, "videos": str(folder), "paired": paired}
    metrics["video"] = kind_metrics(scores, categories, targets, config.bootstrap_resamples, config.seed)
    gallery = [
        {"concept": c, "prompt": names[c][p], "seed": None, ORIGINAL: o.frames[p][0],
         UNLEARNED: None if u is None else u.frames[p][0]}
        for c, (o, u) in scores.items() if c in targets[:2] for p in range(len(o.frames))
    ]  # fmt: skip
    metrics["config"] = asdict(config)
    return metrics, {"video": gallery}
