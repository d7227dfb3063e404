"""The evaluation procedure: plan rows from a suite, generate them, score their frames, compute the metrics.

`evaluate(config, root)` runs the whole thing for an encoder checkpoint against its base model;
`evaluate_video_files(config, root)` scores existing video files. Both return the metrics dict that
`metrics.json` holds and the material the HTML report shows. Generation and IO live here; the numbers
come from the pure functions in `metrics.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..encoders.checkpoint import Manifest, read_manifest
from ..pipelines.generate import SAMPLERS, sampler
from ..pipelines.load import TINYWORLD_ANIMATEDIFF
from ..pipelines.registry import TINYWORLD_ANIMATEDIFF_MODEL, TINYWORLD_MODEL, animatediff_for, model_entry
from . import metrics as M
from .attacks import ATTACKS, PROMPT_ATTACKS, attack_concept, attack_prompts, base_concept, parse_attacks
from .detector import load_detector
from .runner import (
    ORIGINAL,
    PIPELINE_KIND,
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

KIND_CHOICES = ("image", "video", "animatediff", "both", "all")  # both: image and video; all: the three


@dataclass
class EvalConfig:
    """Everything an evaluation depends on; saved as eval_config.json beside its results."""

    text_encoder: str | None = field(
        default=None, metadata={"help": "encoder checkpoint folder from `erase`", "metavar": "DIR"}
    )
    model: str | None = field(
        default=None,
        metadata={"help": "base model; default: the checkpoint's base_model", "metavar": "tinyworld|FOLDER"},
    )
    video_model: str | None = field(
        default=None,
        metadata={"help": "video pipeline when --model is an image one (e.g. ModelScope for SD 2.1)",
                  "metavar": "NAME|FOLDER"},
    )  # fmt: skip
    kind: str = field(
        default="both",
        metadata={"help": "image, video (ModelScope-style), animatediff (AnimateDiff video), both (image and video) "
                          "or all (the three pipelines in one report)"},
    )  # fmt: skip
    animatediff_model: str | None = field(
        default=None,
        metadata={"help": "AnimateDiff pipeline for --kind animatediff/all; default for TinyWorld: "
                          "tinyworld-animatediff", "metavar": "NAME|FOLDER"},
    )  # fmt: skip
    suite: str | None = field(
        default=None,
        metadata={"help": "suite name (tinyworld, sd2) or JSON file; default by model", "metavar": "NAME|FILE"},
    )
    quick: bool = field(
        default=False,
        metadata={"help": "fewer prompts, seeds and retained concepts (about 100 s on 2 CPU cores)"},
    )
    concepts: list[str] = field(
        default_factory=list,
        metadata={"help": "a target (repeat for several); default: the checkpoint's", "metavar": "NAME"},
    )
    detector: str | None = field(
        default=None, metadata={"help": "detector folder; default: the suite's detector", "metavar": "FOLDER"}
    )
    videos: str | None = field(
        default=None, metadata={"help": "score the video files in this folder instead", "metavar": "DIR"}
    )
    seed: int = field(default=0, metadata={"help": "offset added to the suite's seeds; also the bootstrap seed"})
    seeds: int | None = field(
        default=None,
        metadata={
            "help": "seeds per prompt, 0 to N-1 (default: the plan's); more narrow the intervals",
            "metavar": "N",
        },
    )
    # DPM-Solver++ at 12 steps: the hit rates of the pipeline's DDIM at 25, in 40% of the time (docs/BENCHMARKS.md)
    steps: int = field(default=12, metadata={"help": "denoising steps"})
    sampler: str = field(default="dpm-solver", metadata={"help": f"scheduler: {', '.join(SAMPLERS)}"})
    guidance: float = field(default=6.0, metadata={"help": "classifier-free guidance scale"})
    num_frames: int = field(default=8, metadata={"help": "frames per generated video"})
    frames_scored: int | None = field(
        default=None,
        metadata={"help": "score m evenly spaced frames per video (METHOD.md section 3); default all", "metavar": "M"},
    )
    device: str = field(default="cpu", metadata={"help": "torch device"})
    score_decoded: bool = field(default=True, metadata={"help": "also score generated videos after an mp4 round trip"})
    bootstrap_resamples: int = field(default=M.DEFAULT_RESAMPLES, metadata={"help": "bootstrap resamples"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    attacks: list[str] = field(
        default_factory=list,
        metadata={"help": f"attacks on the erased concepts, comma-separated: {', '.join(ATTACKS)}", "metavar": "LIST"},
    )  # fmt: skip
    attack_draws: int = field(
        default=3,
        metadata={"help": "the embedding attack's draws of the attacker's images and noise (eval seed + 0, 1, ...), "
                          "pooled: one draw's recovery can be anywhere from 0 to 70% (docs/BENCHMARKS.md)"},
    )  # fmt: skip
    attack_max_norm: float | None = field(
        default=None,
        metadata={"help": "a bounded embedding attack: its token offset held within this many token-embedding "
                          "lengths (--robust's inner attack searches 1); default unbounded, the fixed budget",
                  "metavar": "LENGTHS"},
    )  # fmt: skip

    def __post_init__(self):
        self.attacks = parse_attacks(self.attacks)
        if self.attack_draws < 1:
            raise ValueError(f"--attack-draws must be at least 1 (got {self.attack_draws})")
        if self.attack_max_norm is not None and not self.attack_max_norm > 0:  # also refuses NaN
            raise ValueError(f"--attack-max-norm must be positive (got {self.attack_max_norm}); omit it for no bound")
        if self.frames_scored is not None and self.frames_scored < 1:
            raise ValueError(f"--frames-scored must be at least 1 (got {self.frames_scored}); omit it to score all")
        if self.seeds is not None and self.seeds < 1:
            raise ValueError(f"--seeds must be at least 1 (got {self.seeds}); omit it for the plan's seeds")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")

    def model_for(self, kind: str) -> str:
        """The pipeline of one kind: --video-model for videos when given; TinyWorld-style folders hold both."""
        if kind == "video" and self.video_model is not None:
            return self.video_model
        if kind == "animatediff":
            if self.animatediff_model is not None:
                return self.animatediff_model
            if model_entry(self.model) in (TINYWORLD_MODEL, TINYWORLD_ANIMATEDIFF_MODEL):
                return TINYWORLD_ANIMATEDIFF
            pair = animatediff_for(self.model)  # sd-1.5 -> animatediff-sd-1.5
            if pair is not None:
                return pair
            raise ValueError(f"--kind {self.kind} needs --animatediff-model: an AnimateDiffPipeline folder whose text "
                             f"encoder is {self.model}'s (with --model sd-1.5: animatediff-sd-1.5)")  # fmt: skip
        path = Path(str(self.model)).expanduser()
        sibling = path.parent / kind
        if path.name in ("image", "video") and path.name != kind and (sibling / "model_index.json").is_file():
            return str(sibling)  # a checkpoint's base_model .../image: its video pipeline is .../video
        return model_for_kind(str(self.model), kind)

    def kinds(self) -> list[str]:
        if self.kind not in KIND_CHOICES:
            raise ValueError(f"kind must be one of {KIND_CHOICES}, got {self.kind!r}")
        return {"both": ["image", "video"], "all": ["image", "video", "animatediff"]}.get(self.kind, [self.kind])


def correction_target(config: EvalConfig, suite: Suite) -> str | None:
    """The concept an `erase --to TARGET` checkpoint replaced its concepts with, if the suite knows it (none for an
    erase toward several anchors, `--to "a, b"`: no one of them replaced the concept)."""
    if config.text_encoder is None:
        return None
    anchor = read_checkpoint_manifest(config.text_encoder).config.get("anchor")
    if not anchor:
        return None
    try:
        return suite.concept(anchor).name
    except ValueError:
        return None


def read_checkpoint_manifest(folder: str | Path) -> Manifest:
    """The unlearn.json of an encoder checkpoint (concepts, base_model, ...), checked by the one reader."""
    return read_manifest(Path(folder).expanduser())


def resolve_config(config: EvalConfig) -> EvalConfig:
    """Fill model and concepts from the checkpoint's unlearn.json where the user left them out."""
    if config.videos is None and config.text_encoder is not None:
        manifest = read_checkpoint_manifest(config.text_encoder)
        if config.model is None:
            config.model = manifest.base_model or "tinyworld"
        if not config.concepts:
            config.concepts = list(manifest.concepts)
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
    detector,
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
    detector,
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
        entry = suite.concepts[base_concept(concept)]
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
    notes = []
    few = min((e["n_prompts"] for c, e in concepts.items() if c in targets), default=0)
    if few < FEW_PROMPTS:
        notes.append(f"only {few} prompt(s) per target concept: the bootstrap over prompts has few clusters, so "
                     "every interval is widened to at least the Wilson interval of the pooled samples")  # fmt: skip
    if (summary["retention"].get("value") or 0) > 1:
        notes.append("retention is above 1 (retained concepts shown more often than before); the harmonic mean "
                     "uses min(retention, 1)")  # fmt: skip
    return {**summary, "undefined_concepts": undefined, "notes": notes, "concepts": concepts}


FEW_PROMPTS = 5


def false_hit_floors(
    rows: list[Row], root: Path, detector, suite: Suite, concepts: list[str], frames_scored: int | None = None
) -> dict[str, dict]:
    """Each concept's hit rate on the original model's samples of the other concepts whose prompts exclude it
    (`Suite.excludes`; docs/METHOD.md)."""
    videos: list[tuple[Row, np.ndarray]] = []
    for row in rows:
        if row.encoder == ORIGINAL and row.concept in concepts:
            sample = load_sample(row, root)
            videos.append((row, sample[M.evenly_spaced_frames(len(sample), frames_scored)]))
    floors = {}
    for concept in concepts:
        others = [v for row, v in videos if suite.excludes(row.prompt, row.concept, concept)]
        entry = suite.concepts[concept]
        if not others:
            floors[concept] = M.false_hit_floor(np.zeros(0))
            continue
        hits, _ = score_frames(detector, entry, suite.detector_templates[entry.category], others)
        floors[concept] = M.false_hit_floor(np.array([M.video_frame_rate(h) for h in hits]))
    return floors


def correction_rates(rows: list[Row], root: Path, detector, suite: Suite, targets: list[str], anchor: str,
                     n_resamples: int, seed: int) -> dict:  # fmt: skip
    """With `erase --to ANCHOR`: how often the target's prompts show the anchor, original vs unlearned."""
    entry = suite.concepts[anchor]
    out = {"to": anchor}
    for encoder in (ORIGINAL, UNLEARNED):
        grid: dict[int, dict[int, np.ndarray]] = {}
        for row in rows:
            if row.encoder == encoder and row.concept in targets:
                grid.setdefault(hash((row.concept, row.prompt_index)), {})[row.seed] = load_sample(row, root)
        seeds = sorted({s for videos in grid.values() for s in videos})
        videos = [videos[s] for videos in grid.values() for s in seeds]
        hits, _ = score_frames(detector, entry, suite.detector_templates[entry.category], videos)
        rates = np.array([M.video_frame_rate(h) for h in hits]).reshape(len(grid), len(seeds))
        out[encoder] = M.cluster_bootstrap(rates, M.m_score, n_resamples, seed)
    return out


def sample_distance(rows: list[Row], root: Path, concepts: list[str], n_resamples: int, seed: int) -> dict:
    """Detector-free collateral: how far same-prompt, same-seed samples of `concepts` move (original vs unlearned).

    Mean absolute pixel difference in [0, 1] per video, cluster-bootstrapped over prompts of all the concepts.
    """
    grid: dict[tuple[str, int], dict[int, float]] = {}
    by_key = {(r.encoder, r.concept, r.prompt_index, r.seed): r for r in rows}
    for (encoder, concept, prompt, sample_seed), row in by_key.items():
        if encoder != ORIGINAL or concept not in concepts or (UNLEARNED, concept, prompt, sample_seed) not in by_key:
            continue
        unlearned = by_key[(UNLEARNED, concept, prompt, sample_seed)]
        distance = M.output_distance(load_sample(row, root)[None], load_sample(unlearned, root)[None])[0]
        grid.setdefault((concept, prompt), {})[sample_seed] = float(distance)
    if not grid:
        return M.estimate(float("nan"), None, None, 0)
    seeds = sorted({s for values in grid.values() for s in values})
    table = np.array([[values.get(s, np.nan) for s in seeds] for values in grid.values()])
    table = table[~np.isnan(table).any(1)]
    return M.cluster_bootstrap(table, lambda x: float(np.mean(x)), n_resamples, seed)


def encoder_distance(model: str, text_encoder: str, prompts: list[str]) -> dict:
    """Mean squared difference of the encoder's last hidden states, original vs unlearned, over `prompts`."""
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

    from ..pipelines.load import resolve_model

    folder = resolve_model(model, "image")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    original = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32).eval()
    unlearned = CLIPTextModel.from_pretrained(Path(text_encoder) / "text_encoder", dtype=torch.float32).eval()
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids  # fmt: skip
    with torch.no_grad():
        difference = (original(ids)[0] - unlearned(ids)[0]).pow(2).mean((1, 2)).numpy()
    return {"mean_squared_difference": float(difference.mean()), "max": float(difference.max()),
            "n_prompts": len(prompts)}  # fmt: skip


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
    attack_plan = {}
    for kind in config.kinds():
        concepts, prompts, seeds = suite.plan(targets, quick=config.quick, kind=PIPELINE_KIND[kind])
        seeds = range(config.seeds) if config.seeds else seeds
        plans[kind] = (concepts, prompts, [config.seed + s for s in seeds])
        rows += make_rows(kind, config.model_for(kind), encoders, prompts, plans[kind][2])
        count = len(next(iter(prompts.values())))
        attack_plan[kind] = {attack_concept(t, family): tuple(attack_prompts(suite.concepts[t], family, count,
                                                                             suite.concepts[t].attacks))
                             for t in targets for family in config.attacks if family in PROMPT_ATTACKS}  # fmt: skip
        rows += make_rows(kind, config.model_for(kind), encoders, attack_plan[kind], plans[kind][2])
    generation = GenerationConfig(
        steps=config.steps, sampler=config.sampler, guidance=config.guidance, num_frames=config.num_frames,
        device=config.device, progress=config.progress,
    )  # fmt: skip
    generate_distributed(rows, root, generation)
    if not distributed_state(config.device).is_main_process:
        return {}, {}
    detector = load_detector(config.detector or suite.detector, device=config.device)
    scores = score_rows(rows, root, detector, suite, keep_frames=gallery_concepts, progress=config.progress,
                        frames_scored=config.frames_scored)  # fmt: skip
    metrics = {"targets": targets, "suite": suite.name, "model": config.model, "text_encoder": config.text_encoder}
    anchor = correction_target(config, suite)
    metrics["models"] = {kind: config.model_for(kind) for kind in plans}
    gallery = {}
    for kind, (concepts, prompts, seeds) in plans.items():
        categories = {c: suite.concepts[c].category for c in concepts}
        pairs = {c: (scores[(kind, ORIGINAL, c)], scores[(kind, UNLEARNED, c)]) for c in concepts}
        metrics[kind] = kind_metrics(pairs, categories, targets, config.bootstrap_resamples, config.seed)
        kind_rows = [r for r in rows if r.kind == kind]
        metrics[kind]["floor"] = false_hit_floors(kind_rows, root, detector, suite, concepts, config.frames_scored)
        if anchor is not None:
            metrics[kind]["correction"] = correction_rates(kind_rows, root, detector, suite, targets, anchor,
                                                           config.bootstrap_resamples, config.seed)  # fmt: skip
        retained = [c for c in concepts if c not in targets]
        metrics[kind]["collateral"] = {
            "sample_distance": sample_distance(kind_rows, root, retained, config.bootstrap_resamples, config.seed),
            "measure": "mean absolute pixel difference in [0, 1], same prompt and seed, original vs unlearned, "
                       "over the retained concepts' samples",
        }  # fmt: skip
        gallery[kind] = gallery_items(pairs, prompts, seeds)
        if kind == "video" and config.score_decoded:  # METHOD.md §3: score decoded files separately
            video_rows = [r for r in rows if r.kind == "video" and r.concept in concepts]  # attack rows aside
            decoded = score_rows(video_rows, root, detector, suite, progress=config.progress, decoded=True,
                                 frames_scored=config.frames_scored)  # fmt: skip
            pairs = {c: (decoded[(kind, ORIGINAL, c)], decoded[(kind, UNLEARNED, c)]) for c in concepts}
            metrics["video_mp4"] = kind_metrics(pairs, categories, targets, config.bootstrap_resamples, config.seed)
    if config.attacks:
        metrics["attacks"] = attack_metrics(scores, attack_plan, targets, config)
    if "embedding" in config.attacks and config.text_encoder is not None:
        metrics.setdefault("attacks", {})["embedding"] = embedding_attack_metrics(config, suite, targets, detector,
                                                                                  plans)  # fmt: skip
    if config.text_encoder is not None:
        retained_prompts = sorted({p for kind, (concepts, prompts, _) in plans.items() for c in concepts
                                   if c not in targets for p in prompts[c]})  # fmt: skip
        metrics["collateral_encoder"] = encoder_distance(config.model_for("image"), config.text_encoder,
                                                         retained_prompts)  # fmt: skip
    metrics["config"] = asdict(config)
    return metrics, gallery


def attack_metrics(scores: dict, attack_plan: dict, targets: list[str], config: EvalConfig) -> dict:
    """Per attack family and kind: the erased concepts' hit rate under the unlearned (leakage) and original model."""
    out = {}
    for family in [a for a in config.attacks if a in PROMPT_ATTACKS]:
        entry = {}
        for kind, plan in attack_plan.items():
            names = [attack_concept(t, family) for t in targets if attack_concept(t, family) in plan and plan[
                attack_concept(t, family)]]  # fmt: skip
            if not names:
                continue
            pooled = {}
            for encoder in (ORIGINAL, UNLEARNED):
                rates = np.concatenate([scores[(kind, encoder, name)].rates() for name in names])
                pooled[encoder] = M.cluster_bootstrap(rates, M.m_score, config.bootstrap_resamples, config.seed)
            entry[kind] = {"leakage": pooled[UNLEARNED], "original": pooled[ORIGINAL],
                           "prompts": {name: list(plan[name]) for name in names}}  # fmt: skip
        out[family] = entry
    return out


def embedding_attack_metrics(config: EvalConfig, suite: Suite, targets: list[str], detector, plans: dict) -> dict:
    """Textual inversion against the unlearned encoder and, as the control, the original: recovery per kind.

    The token is inverted per encoder on the image pipeline (its UNet, 200 steps) from the same 4 images of the
    concept, the attacker's: the original model's, from seeds the erase never drew. It is then used for images and for
    videos of the target's suite prompts and seeds. `attack_draws` attackers (other images, other noise) are pooled,
    the interval resampling attackers and then each one's prompts (`nested_cluster_bootstrap`): one draw's recovery
    varies too much to stand alone, and its prompts are not independent of each other. `by_draw` has each one's.
    """
    from ..encoders.checkpoint import load_pipeline
    from .embedding_attack import attacker_draws, attacker_shots, generate_attacked, invert_concept

    erase_config = read_checkpoint_manifest(config.text_encoder).config
    draws = attacker_draws([config.seed + d for d in range(config.attack_draws)], erase_config,
                           max_norm=config.attack_max_norm)  # fmt: skip
    encoders = ((ORIGINAL, None), (UNLEARNED, config.text_encoder))
    pipes = {encoder: load_pipeline("image", config.model_for("image"), device=config.device, progress=False,
                                    text_encoder=path) for encoder, path in encoders}  # fmt: skip
    # the attacker's images of each concept: the original model's, so that both encoders are attacked with the same
    # pictures of the concept (the unlearned pipeline's own would show the anchor instead)
    shots = {(target, d): attacker_shots(pipes[ORIGINAL], target, attack)
             for target in targets for d, attack in enumerate(draws)}  # fmt: skip
    offsets = {}
    for encoder, pipe in pipes.items():
        for target, d in tqdm(shots, desc=f"inverting ({encoder} encoder)", disable=not config.progress):
            offsets[(encoder, target, d)] = invert_concept(pipe, pipe.text_encoder, target, shots[(target, d)],
                                                           draws[d])[0]  # fmt: skip
    budget = {k: v for k, v in asdict(draws[0]).items() if k not in ("seed", "shot_seed")}
    out = {"budget": {**budget, "draws": [{"seed": a.seed, "shot_seed": a.shot_seed} for a in draws]}}
    for kind, (_, prompts, seeds) in plans.items():
        figures, by_draw = {}, {}
        for encoder, path in encoders:
            pipe = (
                pipes[encoder]
                if kind == "image"
                else load_pipeline(
                    "video", config.model_for(kind), device=config.device, progress=False, text_encoder=path
                )
            )
            pipe.set_progress_bar_config(disable=True)
            rates = []  # per (target, draw): its (prompts, seeds) rates; the attacker is the top-level cluster
            for target, d in shots:
                entry = suite.concepts[target]
                with sampler(pipe, config.sampler):
                    samples = generate_attacked(pipe, pipe.text_encoder, target, offsets[(encoder, target, d)],
                                                [p for p in prompts[target] for _ in seeds],
                                                seeds * len(prompts[target]), config.steps, config.guidance,
                                                config.num_frames if kind != "image" else None)  # fmt: skip
                hits, _ = score_frames(detector, entry, suite.detector_templates[entry.category], list(samples),
                                       config.frames_scored)  # fmt: skip
                rates.append(np.array([M.video_frame_rate(h) for h in hits]).reshape(len(prompts[target]), len(seeds)))
            # attackers differ far more than one attacker's prompts do: resampled as clusters of their own
            figures[encoder] = M.nested_cluster_bootstrap(rates, config.bootstrap_resamples, config.seed)
            by_draw[encoder] = [round(float(r.mean()), 4) for r in rates]
        out[kind] = {"leakage": figures[UNLEARNED], "original": figures[ORIGINAL],
                     "by_draw": [{"target": t, "seed": draws[d].seed, "leakage": by_draw[UNLEARNED][i],
                                  "original": by_draw[ORIGINAL][i]} for i, (t, d) in enumerate(shots)],
                     "prompts": {t: ["<inverted token> in: " + p for p in prompts[t]] for t in targets}}  # fmt: skip
    return out


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
    detector = load_detector(config.detector or suite.detector, device=config.device)
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
