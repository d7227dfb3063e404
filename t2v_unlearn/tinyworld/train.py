"""Train the TinyWorld model family from nothing but the renderer.

    python -m t2v_unlearn.tinyworld.train --work runs/tinyworld --out t2v_unlearn/tinyworld/weights

Stages, in order: tokenizer, evaluator, vae, image (text encoder + image UNet, jointly), video (video UNet
from the image UNet, with the text encoder frozen), motion (AnimateDiff's motion adapter for the frozen image
UNet), export (pipeline folders, fp16 safetensors). Every
stage is seeded and writes checkpoints under `--work`; run the same command again to resume where it
stopped. Data is rendered on the fly from a per-step seed, so a resumed run sees the same batches.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel, compute_snr
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from ..config_args import add_config_arguments, config_from_args
from . import models
from .render import LANGUAGE_V1, LANGUAGE_V2, RESOLUTION, caption, frame_scene, render, sample_scene
from .taxonomy import load_taxonomy
from .tokenizer import build_tokenizer

STAGES = ("tokenizer", "vae", "image", "evaluator", "classifier", "video", "motion", "export")


# --- data --------------------------------------------------------------------------------------------------


EVALUATOR_CATEGORY_WEIGHTS = {"object": 0.5, "style": 0.25, "id": 0.25}  # shape is the hardest to see


def evaluator_batch(seed: int, batch_size: int, attribute_share: float = 0.8):
    """Rendered images with captions, and which caption is true of which image (B images x B captions).

    Most captions name one attribute (drawn with `EVALUATOR_CATEGORY_WEIGHTS`); such a caption is true of every
    image in the batch that has the attribute, not only of its own image, so "a picture of a star" pulls all
    stars together. (A contrastive target of the diagonal alone, or of identical captions, pushes a star away
    from every other star's differently worded caption: no consistent signal for the shape.)
    A full caption is true of its own image and of images with the very same caption.
    """
    rng = np.random.default_rng(seed)
    taxonomy = load_taxonomy()
    images, captions, labels, mentions = [], [], [], []
    for _ in range(batch_size):
        if rng.random() < 0.5:
            scene = frame_scene(sample_scene(rng, video=True), float(rng.integers(8)) / 7)
        else:
            scene = sample_scene(rng)
        scene_labels = {k: v for k, v in scene.labels().items() if v is not None}
        # every one-attribute wording of this scene (a full caption may happen to be one of them too)
        wordings = {template.format(label=label): {category: label} for category, label in scene_labels.items()
                    for template in taxonomy.detector_templates[category]}  # fmt: skip
        if rng.random() < attribute_share:
            present = list(scene_labels)
            weights = np.array([EVALUATOR_CATEGORY_WEIGHTS[c] for c in present])
            category = present[rng.choice(len(present), p=weights / weights.sum())]
            templates = taxonomy.detector_templates[category]
            text = templates[rng.integers(len(templates))].format(label=scene_labels[category])
        else:
            text = caption(scene, rng)
        mentions.append(wordings.get(text))
        images.append(render(scene)[0])
        captions.append(text)
        labels.append(scene_labels)
    true_of = torch.zeros(batch_size, batch_size)
    for i in range(batch_size):
        for j in range(batch_size):
            named = mentions[j]
            true_of[i, j] = float(i == j or captions[i] == captions[j] or (
                named is not None and all(labels[i].get(c) == v for c, v in named.items())))  # fmt: skip
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return pixels, captions, true_of


def classifier_batch(seed: int, batch_size: int, blank_share: float = 0.06, pair_share: float = 0.0,
                     blob_share: float = 0.0, blob_kind: str = "egg", waver_share: float = 0.0,
                     blob_waver: tuple[float, float] = (0.12, 0.22)):  # fmt: skip
    """Rendered images in [-1, 1] (B, 3, H, W) and their class index per head (TinyWorldClassifier's heads).

    Half are frames of moving scenes (anywhere along their path); a few are blank backgrounds, "none" for every
    head. A character's colour head is its body colour; its object and style heads are "none". With `blob_share`,
    that share of the shape scenes draw a shapeless blob (`render.blob_outline`) in the scene's style and colour
    instead of their shape: "none" for the object head, the style and colour for theirs. At 0 (the default) no
    random number is drawn for it, so batches are what they were before blobs existed. `blob_kind` 'lumpy' draws
    `render.lumpy_outline` blobs wavering by `blob_waver` instead of eggs. With `waver_share`, that
    share of the other shape scenes draw their shape by an unsteady hand (`render.wavering_shape`), under its label.
    """
    from .classifier import NONE, head_classes
    from .render import CHARACTER_COLOURS, blob_outline, lumpy_outline, wavering_shape

    rng = np.random.default_rng(seed)
    taxonomy = load_taxonomy()
    classes = head_classes()
    colour_of = {rgb: name for name, rgb in taxonomy.colours.items()}
    images, targets = [], {head: [] for head in classes}
    for _ in range(batch_size):
        if rng.random() < blank_share:
            background = list(taxonomy.backgrounds.values())[rng.integers(len(taxonomy.backgrounds))]
            images.append(np.broadcast_to(np.array(background, np.uint8), (RESOLUTION, RESOLUTION, 3)))
            labels = {head: NONE for head in classes}
        else:
            if rng.random() < 0.5:
                scene = frame_scene(sample_scene(rng, video=True, id_share=0.4), float(rng.uniform(0, 1)))
            else:
                scene = sample_scene(rng, id_share=0.4, pair_share=pair_share)
            single_shape = scene.category == "object" and scene.companion is None
            blob = blob_share and single_shape and rng.random() < blob_share
            waver = waver_share and single_shape and not blob and rng.random() < waver_share
            if blob:
                outline = lumpy_outline(rng, amount=blob_waver) if blob_kind == "lumpy" else blob_outline(rng)
            else:
                outline = wavering_shape(scene.subject, rng) if waver else None
            images.append(render(scene, outline=outline)[0])
            labels = {head: value or NONE for head, value in scene.labels().items()}
            if blob:
                labels["object"] = NONE
            body = colour_of.get(CHARACTER_COLOURS.get(scene.subject))  # a character's colour is its body's
            labels["colour"] = scene.colour if scene.category == "object" else body
            if scene.companion is not None and scene.companion.category == "object":  # a pair: the shape's colour
                labels["colour"] = scene.companion.colour
        for head, names in classes.items():
            targets[head].append(names.index(labels[head]))
    pixels = torch.from_numpy(np.stack(images).copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
    return pixels, {head: torch.tensor(values) for head, values in targets.items()}


def focused_subject(rng: np.random.Generator, focus: tuple[str, ...], focus_share: float) -> str | None:
    """One of `focus` with probability `focus_share`, else None (any subject). No random number is drawn when either
    is empty or 0, so the data of a recipe without a focus is what it was before focus existed."""
    if not focus or not focus_share or rng.random() >= focus_share:
        return None
    return focus[int(rng.integers(len(focus)))]


def image_batch(seed: int, batch_size: int, motion_share: float = 0.0, id_share: float = 0.3,
                language: dict | None = None, pair_share: float = 0.0, focus: tuple[str, ...] = (),
                focus_share: float = 0.0):  # fmt: skip
    """Rendered images in [-1, 1] (B, 3, H, W) with one caption each. Some are frames of moving scenes.

    `language` holds `caption`'s probabilities (render.LANGUAGE_V1 or LANGUAGE_V2). A `focus_share` of the still
    scenes show one of the `focus` subjects (concepts the model draws poorly), alone.
    """
    language = language or LANGUAGE_V1
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for _ in range(batch_size):
        if rng.random() < motion_share:
            moving = sample_scene(rng, video=True, id_share=id_share)
            text = caption(moving, rng, **language)
            scene = frame_scene(moving, float(rng.integers(8)) / 7)
        elif (subject := focused_subject(rng, focus, focus_share)) is not None:
            scene = sample_scene(rng, subject=subject)
            text = caption(scene, rng, **language)
        else:
            scene = sample_scene(rng, id_share=id_share, pair_share=pair_share)
            text = caption(scene, rng, **language)
        images.append(render(scene)[0])
        captions.append(text)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return pixels, captions


def video_batch(seed: int, batch_size: int, language: dict | None = None, focus: tuple[str, ...] = (),
                focus_share: float = 0.0):  # fmt: skip
    """Rendered videos in [-1, 1] (B, 3, F, H, W) with one caption each; a `focus_share` of them show a `focus`
    subject."""
    language = language or LANGUAGE_V1
    rng = np.random.default_rng(seed)
    videos, captions = [], []
    for _ in range(batch_size):
        scene = sample_scene(rng, video=True, subject=focused_subject(rng, focus, focus_share))
        videos.append(render(scene))
        captions.append(caption(scene, rng, **language))
    pixels = torch.from_numpy(np.stack(videos)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    return pixels, captions


def degrade(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur and noise half of a batch so the evaluator also recognises soft, generated-looking images."""
    kernel = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(pixels, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    noisy = blurred + 0.05 * torch.randn(pixels.shape, generator=generator)
    pick = (torch.rand(pixels.shape[0], generator=generator) < 0.5).view(-1, 1, 1, 1)
    return torch.where(pick, noisy.clamp(-1, 1), pixels)


def tokenize(tokenizer: CLIPTokenizer, captions: list[str], padding: str = "max_length") -> torch.Tensor:
    """Token ids padded as Stable Diffusion pads them (to 77), or to the longest caption for the evaluator."""
    return tokenizer(
        captions, padding=padding, max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


LANGUAGES = {"v1": LANGUAGE_V1, "v2": LANGUAGE_V2}


def caption_corpus(language: dict, count: int = 20_000, seed: int = 60_000_000) -> list[str]:
    """Captions as training draws them, for learning the tokenizer's merges (no rendering)."""
    rng = np.random.default_rng(seed)
    return [caption(sample_scene(rng, video=rng.random() < 0.3), rng, **language) for _ in range(count)]


def remap_text_encoder(source: CLIPTextModel, source_tokenizer: CLIPTokenizer, tokenizer: CLIPTokenizer):
    """`source`'s weights in a text encoder for another vocabulary: a token keeps its row where both vocabularies
    hold it; a new token starts at the mean row."""
    target = models.make_text_encoder(tokenizer)
    state = {k: v for k, v in source.state_dict().items() if "token_embedding" not in k}
    target.load_state_dict(state, strict=False)
    old_rows = source.get_input_embeddings().weight.detach()
    old_vocab = source_tokenizer.get_vocab()
    kept = 0
    with torch.no_grad():
        rows = target.get_input_embeddings().weight
        rows.copy_(old_rows.mean(0).expand_as(rows))
        for token, index in tokenizer.get_vocab().items():
            if token in old_vocab:
                rows[index] = old_rows[old_vocab[token]]
                kept += 1
    return target, kept


# --- resumable training loop ----------------------------------------------------------------------------


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Adam state as safetensors + JSON (no pickles)."""
    state = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "steps": {}}
    for idx, s in state["state"].items():
        for key, value in s.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"{idx}.{key}"] = value.contiguous()
            else:
                meta["steps"][f"{idx}.{key}"] = float(value)
    save_file(tensors, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps(meta))


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    tensors = load_file(str(path.with_suffix(".safetensors")))
    meta = json.loads(path.with_suffix(".json").read_text())
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["steps"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = torch.tensor(value)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class Trainer:
    """A seeded loop over `step_fn` with AdamW, warmup + cosine decay, EMA weights and resumable checkpoints."""

    def __init__(self, name, work, modules: dict[str, torch.nn.Module], params, steps, lr, ema_decay=0.999,
                 checkpoint_every=250, device="cpu"):  # fmt: skip
        self.name, self.dir, self.modules, self.steps = name, Path(work) / name, modules, steps
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            group["params"] = [p for p in group["params"] if p.requires_grad]
        self.params = [p for group in groups for p in group["params"]]
        self.optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), weight_decay=1e-4)
        warmup = max(1, min(200, steps // 10))
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, warmup, steps)
        self.ema_decay, self.checkpoint_every, self.device = ema_decay, checkpoint_every, device
        # diffusers' EMAModel; its default warm-up (decay (1 + s) / (10 + s), capped at ema_decay) is ours
        self.ema = EMAModel(self.params, decay=ema_decay)
        self.step, self.seconds = 0, 0.0
        self._resume()

    def _names(self) -> list[str]:
        """A name for each trainable parameter, in the order of `self.params` (and of the EMA's shadow copies)."""
        names = {id(p): f"{m}.{n}" for m, module in self.modules.items() for n, p in module.named_parameters()}
        return [names[id(p)] for p in self.params]

    def _resume(self):
        ckpt = self.dir / "checkpoint"
        if not (ckpt / "state.json").exists():
            return
        for m, module in self.modules.items():
            module.load_state_dict(load_file(str(ckpt / f"{m}.safetensors")))
        shadow = load_file(str(ckpt / "ema.safetensors"))
        self.ema.shadow_params = [shadow[n].to(self.device) for n in self._names()]
        load_optimizer(self.optimizer, ckpt / "optimizer")
        state = json.loads((ckpt / "state.json").read_text())
        self.step, self.seconds = state["step"], state["seconds"]
        self.ema.optimization_step = self.step
        self.scheduler.last_epoch = self.step
        for group, base_lr, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                          self.scheduler.lr_lambdas, strict=True):  # fmt: skip
            group["lr"] = base_lr * factor(self.step)
        print(f"[{self.name}] resumed at step {self.step}")

    def _checkpoint(self):
        tmp = self.dir / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for m, module in self.modules.items():
            save_file({k: v.contiguous().cpu() for k, v in module.state_dict().items()}, str(tmp / f"{m}.safetensors"))
        shadow = {n: t.detach().contiguous().cpu() for n, t in zip(self._names(), self.ema.shadow_params, strict=True)}
        save_file(shadow, str(tmp / "ema.safetensors"))
        save_optimizer(self.optimizer, tmp / "optimizer")
        (tmp / "state.json").write_text(json.dumps({"step": self.step, "seconds": self.seconds}))
        shutil.rmtree(self.dir / "checkpoint", ignore_errors=True)
        tmp.rename(self.dir / "checkpoint")

    def run(self, step_fn: Callable[[int], torch.Tensor], log_every: int = 50) -> dict[str, float]:
        for module in self.modules.values():
            module.train()
        bar = tqdm(total=self.steps, initial=self.step, desc=self.name, mininterval=5)
        running = None
        while self.step < self.steps:
            start = time.perf_counter()
            loss = step_fn(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.ema.step(self.params)
            self.step += 1
            self.seconds += time.perf_counter() - start
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(1)
            if self.step % log_every == 0:
                bar.set_postfix(loss=f"{running:.4f}")
            if self.step % self.checkpoint_every == 0 or self.step == self.steps:
                self._checkpoint()
        bar.close()
        # finish with the EMA weights in the modules
        self.ema.copy_to(self.params)
        for module in self.modules.values():
            module.eval()
        return {"steps": self.steps, "seconds": round(self.seconds, 1), "final_loss": running}


def save_module(module: torch.nn.Module, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    module.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


# --- stages ------------------------------------------------------------------------------------------------


def stage_evaluator(args, tokenizer, record):
    torch.manual_seed(args.seed + 1)
    clip = models.make_evaluator(tokenizer)
    if args.evaluator_init:  # fine-tune an earlier evaluator instead of starting from random weights
        clip.load_state_dict(models.CLIPModel.from_pretrained(args.evaluator_init, dtype=torch.float32).state_dict())
    clip = clip.to(args.device)
    generator = torch.Generator().manual_seed(args.seed + 1)
    trainer = Trainer("evaluator", args.work, {"clip": clip}, clip.parameters(), args.evaluator_steps,
                      args.evaluator_lr, ema_decay=0.995, device=args.device)  # fmt: skip

    def step(i):
        pixels, captions, true_of = evaluator_batch(10_000_000 + args.data_offset + i, 96)
        pixels = degrade(pixels, generator).to(args.device)
        input_ids = tokenize(tokenizer, captions, padding="longest").to(args.device)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.bf16):
            out = clip(input_ids=input_ids, pixel_values=pixels)
        logits = out.logits_per_image.float()  # images x captions
        true_of = true_of.to(args.device)
        return 0.5 * (F.cross_entropy(logits, true_of / true_of.sum(1, keepdim=True))
                      + F.cross_entropy(logits.T, true_of.T / true_of.T.sum(1, keepdim=True)))  # fmt: skip

    record["evaluator"] = trainer.run(step)
    if args.evaluator_init:
        record["evaluator"]["initialised_from"] = str(args.evaluator_init)
    save_module(clip, Path(args.work) / "evaluator" / "final")


def stage_classifier(args, tokenizer, record):
    """TinyWorld's detector (tinyworld/classifier.py): supervised heads on rendered scenes, made to look generated.

    Augmentations, so that it reads the generator's soft samples as it reads renders: a round trip through the
    trained VAE (what every generated pixel passes through), blur and noise (`degrade`), brightness jitter.
    """
    from diffusers import AutoencoderKL

    from .classifier import TinyWorldClassifier, classification_loss

    torch.manual_seed(args.seed + 5)
    vae = AutoencoderKL.from_pretrained(Path(args.work) / "vae" / "final").to(args.device).eval()
    vae.requires_grad_(False)
    if args.classifier_init:  # fine-tune a trained detector (e.g. the shipped one, with blobs)
        classifier = TinyWorldClassifier.from_pretrained(args.classifier_init).to(args.device)
    else:
        classifier = TinyWorldClassifier().to(args.device)
    trainer = Trainer("classifier", args.work, {"classifier": classifier}, classifier.parameters(),
                      args.classifier_steps, args.classifier_lr, ema_decay=0.995, device=args.device)  # fmt: skip
    generator = torch.Generator().manual_seed(args.seed + 5)

    def step(i):
        pixels, targets = classifier_batch(
            50_000_000 + args.data_offset + i,
            args.classifier_batch_size,
            pair_share=args.pair_share,
            blob_share=args.classifier_blob_share,
            blob_kind=args.classifier_blob_kind,
            waver_share=args.classifier_waver_share,
            blob_waver=tuple(args.classifier_blob_waver),
        )
        pixels = pixels.to(args.device)
        through_vae = torch.rand(len(pixels), generator=generator) < 0.5
        if through_vae.any():
            with torch.no_grad():
                chosen = pixels[through_vae.to(args.device)]
                decoded = vae.decode(vae.encode(chosen).latent_dist.sample()).sample.clamp(-1, 1)
            pixels = pixels.clone()
            pixels[through_vae.to(args.device)] = decoded
        pixels = degrade(pixels.cpu(), generator)
        brightness = 1 + 0.1 * (torch.rand(len(pixels), 1, 1, 1, generator=generator) - 0.5)
        pixels = ((pixels + 1) * brightness - 1).clamp(-1, 1).to(args.device)
        logits = classifier(pixels)
        return classification_loss(logits, {h: t.to(args.device) for h, t in targets.items()})

    record["classifier"] = trainer.run(step)
    classifier.save_pretrained(Path(args.work) / "classifier" / "final")


def stage_vae(args, tokenizer, record):
    torch.manual_seed(args.seed + 2)
    vae = models.make_vae().to(args.device)
    trainer = Trainer("vae", args.work, {"vae": vae}, vae.parameters(), args.vae_steps, 1e-3, device=args.device)

    def step(i):
        pixels, _ = image_batch(20_000_000 + args.data_offset + i, 16, motion_share=0.3)
        pixels = pixels.to(args.device)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.bf16):
            posterior = vae.encode(pixels).latent_dist
            recon = vae.decode(posterior.sample()).sample.float()
        kl = posterior.kl().mean() / pixels[0].numel()
        return F.l1_loss(recon, pixels) + F.mse_loss(recon, pixels) + 1e-4 * kl

    record["vae"] = trainer.run(step)
    # scale latents to unit variance, as Stable Diffusion's scaling_factor does
    with torch.no_grad():
        pixels, _ = image_batch(29_999_999, 256)
        std = vae.encode(pixels.to(args.device)).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    record["vae"]["scaling_factor"] = vae.config.scaling_factor
    save_module(vae, Path(args.work) / "vae" / "final")


def sample_timesteps(n: int, scheduler, generator: torch.Generator, late_share: float = 0.0) -> torch.Tensor:
    """Uniform training timesteps; with `late_share`, that share of them from the noisier 70% of the schedule,
    where a sample's layout (shape, colour, place) is decided and the epsilon loss is smallest."""
    steps = scheduler.config.num_train_timesteps
    t = torch.randint(0, steps, (n,), generator=generator)
    if late_share:
        late = torch.rand(n, generator=generator) < late_share
        t = torch.where(late, torch.randint(steps * 3 // 10, steps, (n,), generator=generator), t)
    return t


def diffusion_loss(pred: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, scheduler, snr_gamma: float):
    """Epsilon MSE per sample; with `snr_gamma`, Min-SNR-gamma weighting (Hang et al. 2023: min(SNR, gamma) / SNR),
    which stops the nearly clean timesteps from dominating the loss."""
    per_sample = F.mse_loss(pred.float(), noise, reduction="none").mean(dim=tuple(range(1, pred.dim())))
    if snr_gamma:
        snr = compute_snr(scheduler, t.cpu()).to(per_sample.device)
        per_sample = per_sample * snr.clamp(max=snr_gamma) / snr
    return per_sample.mean()


def _encode_latents(vae, pixels):
    with torch.no_grad():
        return vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor


def stage_image(args, tokenizer, record):
    from diffusers import AutoencoderKL

    torch.manual_seed(args.seed + 3)
    from diffusers import UNet2DConditionModel

    vae = AutoencoderKL.from_pretrained(Path(args.work) / "vae" / "final").to(args.device).eval()
    if args.init_from:  # warm start: the earlier text encoder (rows remapped to this vocabulary) and image UNet
        init = Path(args.init_from) / "image"
        source = CLIPTextModel.from_pretrained(init / "text_encoder", dtype=torch.float32)
        text_encoder, kept = remap_text_encoder(source, CLIPTokenizer.from_pretrained(init / "tokenizer"), tokenizer)
        print(f"[image] warm start from {init}: {kept} of {len(tokenizer)} token rows carried over")
        unet = UNet2DConditionModel.from_pretrained(init / "unet", dtype=torch.float32)
    else:
        text_encoder, unet = models.make_text_encoder(tokenizer), models.make_unet2d()
    text_encoder, unet = text_encoder.to(args.device), unet.to(args.device)
    scheduler = models.make_scheduler()
    params = list(text_encoder.parameters()) + list(unet.parameters())
    focus = parse_focus(args.focus)
    rows = None
    if args.focus_rows:  # the encoder frozen but for the focus subjects' names' rows: other prompts encode as before
        text_encoder.requires_grad_(False)
        rows = WordRows(text_encoder, tokenizer, focus_tokens(tokenizer, focus))
        params = [{"params": list(unet.parameters())}, {"params": [rows.weight], "weight_decay": 0.0}]
        if args.freeze_unet:  # textual inversion of the focus words: every other prompt samples exactly as before
            unet.requires_grad_(False)
            params = params[1:]
        frozen = ", UNet frozen" if args.freeze_unet else ""
        print(f"[image] encoder frozen but for the rows of {rows.tokens}{frozen}")
    if args.unet_cross_attention_only:  # how the prompt reaches the features: the drawing (convolutions) stays put
        for name, parameter in unet.named_parameters():
            parameter.requires_grad_(".attn2." in name)
    trainer = Trainer("image", args.work, {"text_encoder": text_encoder, "unet": unet}, params, args.image_steps,
                      args.image_lr, device=args.device)  # fmt: skip
    generator = torch.Generator().manual_seed(args.seed + 3)
    language = LANGUAGES[args.language]
    separation = ShapeSeparation(tokenizer, args.shape_margin, args.device) if args.shape_margin > 0 else None

    def step(i):
        pixels, captions = image_batch(30_000_000 + args.data_offset + i, args.batch_size, motion_share=0.25,
                                       language=language, pair_share=args.pair_share, focus=focus,
                                       focus_share=args.focus_share)  # fmt: skip
        captions = ["" if torch.rand(1, generator=generator).item() < 0.1 else c for c in captions]
        latents = _encode_latents(vae, pixels.to(args.device))
        noise = torch.randn(latents.shape, generator=generator).to(args.device)
        t = sample_timesteps(latents.shape[0], scheduler, generator, args.late_timestep_share).to(args.device)
        noisy = scheduler.add_noise(latents, noise, t)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.bf16):
            hidden = text_encoder(tokenize(tokenizer, captions).to(args.device))[0]
            pred = unet(noisy, t, hidden).sample.float()
        loss = diffusion_loss(pred, noise, t, scheduler, args.snr_gamma)
        if separation is not None:
            loss = loss + separation.hinge(text_encoder).sum()
        return loss

    closest = None
    if separation is not None:
        with torch.no_grad():
            closest = round(separation.distances(text_encoder).min().item(), 5)
        print(f"[image] shapes kept {args.shape_margin} apart; closest two shapes now {closest:.4f}")
    record["image"] = trainer.run(step)
    if separation is not None:
        with torch.no_grad():
            after = round(separation.distances(text_encoder).min().item(), 5)
        record["image"]["closest_shapes_before_after"] = [closest, after]
    if rows is not None:
        rows.check_only_rows_moved()
        record["image"]["focus_rows_moved"] = rows.moved()
    save_module(text_encoder, Path(args.work) / "image" / "text_encoder")
    save_module(unet, Path(args.work) / "image" / "unet")


def parse_focus(text: str) -> tuple[str, ...]:
    """`--focus hexagon,star` as a tuple of the world's concepts (an unknown name is an error, not a silent no-op)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    taxonomy = load_taxonomy()
    unknown = [n for n in names if n not in taxonomy.names("object") + taxonomy.names("id")]
    if unknown:
        raise SystemExit(f"--focus: {unknown} are not shapes or characters of the world")
    return names


def focus_tokens(tokenizer: CLIPTokenizer, focus: tuple[str, ...]) -> list[str]:
    """The tokens of the focus subjects' names and synonyms (their rows train under `--focus-rows`)."""
    if not focus:
        raise SystemExit("--focus-rows needs --focus (the subjects whose rows train)")
    taxonomy = load_taxonomy()
    words = [w for name in focus for w in (name, *taxonomy.get(name).synonyms)]
    return sorted({t for word in words for t in tokenizer.tokenize(word)})


class ShapeSeparation:
    """A hinge that keeps every two shapes' prompts ("a red hexagon", "a red circle", same colour) at least `margin`
    apart in the encoder's output (mean squared difference over tokens and features). v2.2's joint image stage left
    "hexagon" closer to "circle" than any other two shapes (the stage records the closest pair before and after),
    and its UNet then drew hexagon prompts as circles: the difference is a few pixels of the outline, too faint a
    signal in the denoising loss alone to pull the two words apart."""

    COLOURS = ("red", "blue", "green")

    def __init__(self, tokenizer: CLIPTokenizer, margin: float, device: str = "cpu"):
        shapes = load_taxonomy().names("object")
        self.shapes, self.margin = shapes, margin
        prompts = [f"a {colour} {shape}" for colour in self.COLOURS for shape in shapes]
        self.ids = tokenize(tokenizer, prompts).to(device)
        self.pairs = torch.triu(torch.ones(len(shapes), len(shapes), dtype=torch.bool), diagonal=1)

    def distances(self, text_encoder: CLIPTextModel) -> torch.Tensor:
        """(colours, pairs): each two shapes' distance, said in the same colour."""
        hidden = text_encoder(self.ids)[0].float().view(len(self.COLOURS), len(self.shapes), -1)
        return (hidden[:, :, None] - hidden[:, None, :]).pow(2).mean(-1)[:, self.pairs.to(hidden.device)]

    def hinge(self, text_encoder: CLIPTextModel) -> torch.Tensor:
        return F.relu(self.margin - self.distances(text_encoder))


DIRECTIONS = ("moving left", "moving right", "moving up", "moving down")


def swap_direction(text: str, generator: torch.Generator) -> str | None:
    """`text` with its direction (always the caption's last words) replaced by one of the other three; None for a
    caption without a direction."""
    for direction in DIRECTIONS:
        if text.endswith(direction):
            others = [d for d in DIRECTIONS if d != direction]
            return text[: -len(direction)] + others[int(torch.randint(len(others), (1,), generator=generator))]
    return None


def direction_ranking(pred, swapped_pred, noise, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The direction-ranking term: -log sigmoid(beta * (err_swapped - err_true)) per clip, where err is the epsilon
    error of the same noisy clip at the same timestep under its own caption and under the caption with another
    direction. As in a diffusion classifier (and Diffusion-DPO's ranking of two conditions), it is low when the
    clip's true direction explains it better than a wrong one, so the prompt's direction has to reach the motion;
    it saturates once it does, so it cannot push the wrong caption's error up without bound. Returns the term and
    the per-clip gaps err_swapped - err_true (positive: the true direction explains the clip better)."""
    dims = tuple(range(1, pred.dim()))
    err_true = F.mse_loss(pred.float(), noise, reduction="none").mean(dim=dims)
    err_swapped = F.mse_loss(swapped_pred.float(), noise, reduction="none").mean(dim=dims)
    gaps = (err_swapped - err_true).detach()
    return -F.logsigmoid(beta * (err_swapped - err_true)).mean(), gaps


def video_loss(args, tokenizer, vae, text_encoder, unet, scheduler, generator, data_seed: int, per_frame=False):
    """The video and motion stages' step: step i's rendered clips (from `data_seed + i`), 10% empty captions, the
    frozen encoder's prompts (with `per_frame`, repeated for each frame, as AnimateDiff's UNet takes them). With
    `args.direction_contrast`, the clips that move left, right, up or down also run once more under a caption with
    another direction, and `direction_ranking` of the two is added at that weight."""
    language = LANGUAGES[args.language]
    encoder_trains = any(p.requires_grad for p in text_encoder.parameters())
    contrast = args.direction_contrast
    ranked = []

    def encode(captions):
        with torch.set_grad_enabled(encoder_trains):
            return text_encoder(tokenize(tokenizer, captions).to(args.device))[0]

    focus = parse_focus(args.focus)

    def step(i):
        pixels, captions = video_batch(data_seed + i, args.video_batch_size, language=language, focus=focus,
                                       focus_share=args.focus_share)  # fmt: skip
        captions = ["" if torch.rand(1, generator=generator).item() < 0.1 else c for c in captions]
        b, c, f, h, w = pixels.shape
        frames = pixels.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w).to(args.device)
        latents = _encode_latents(vae, frames)
        latents = latents.reshape(b, f, *latents.shape[1:]).permute(0, 2, 1, 3, 4)
        noise = torch.randn(latents.shape, generator=generator).to(args.device)
        t = sample_timesteps(b, scheduler, generator, args.late_timestep_share).to(args.device)
        noisy = scheduler.add_noise(latents, noise, t)
        hidden = encode(captions)
        pred = unet(noisy, t, hidden.repeat_interleave(f, 0) if per_frame else hidden).sample
        loss = diffusion_loss(pred, noise, t, scheduler, args.snr_gamma)
        if not contrast:
            return loss
        swapped = [swap_direction(text, generator) for text in captions]
        rows = [k for k, text in enumerate(swapped) if text is not None]
        if not rows:
            return loss
        other = encode([swapped[k] for k in rows])
        swapped_pred = unet(noisy[rows], t[rows], other.repeat_interleave(f, 0) if per_frame else other).sample
        ranking, gaps = direction_ranking(pred[rows], swapped_pred, noise[rows], args.direction_beta)
        ranked.extend(gaps.tolist())
        if (i + 1) % 50 == 0:  # how often the true direction explained the clip better, over the last 50 steps
            print(
                f"\n[direction] step {i + 1}: true caption better in {np.mean(np.array(ranked) > 0):.0%} of "
                f"{len(ranked)} clips, mean gap {np.mean(ranked):.2e}",
                flush=True,
            )
            ranked.clear()
        return loss + contrast * ranking

    return step


def stage_video(args, tokenizer, record):
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet3DConditionModel

    work = Path(args.work)
    if args.init_from and args.video_steps == 0:  # the earlier video UNet as it was, spatial layers and all
        earlier = Path(args.init_from) / "video" / "unet"
        save_module(UNet3DConditionModel.from_pretrained(earlier, dtype=torch.float32), work / "video" / "unet")
        shutil.rmtree(work / "video" / "text_encoder", ignore_errors=True)  # an earlier run's motion words
        record["video"] = {"copied_from": str(earlier), "steps": 0}
        print(f"[video] 0 steps: the video UNet of {args.init_from}, unchanged")
        return
    torch.manual_seed(args.seed + 4)
    vae = AutoencoderKL.from_pretrained(work / "vae" / "final").to(args.device).eval()
    text_encoder = CLIPTextModel.from_pretrained(work / "image" / "text_encoder").to(args.device).eval()
    text_encoder.requires_grad_(False)
    words = MotionWordRows(text_encoder, tokenizer) if args.motion_word_lr > 0 else None
    unet2d = UNet2DConditionModel.from_pretrained(work / "image" / "unet")
    unet = models.unet3d_from_unet2d(unet2d)
    spatial = set(unet2d.state_dict())
    if args.init_from:  # warm start the temporal layers from the earlier video UNet
        earlier = UNet3DConditionModel.from_pretrained(Path(args.init_from) / "video" / "unet", dtype=torch.float32)
        temporal = {k: v for k, v in earlier.state_dict().items() if k not in spatial}
        unet.load_state_dict(temporal, strict=False)
        print(f"[video] warm start: {len(temporal)} temporal tensors from {args.init_from}")
    unet = unet.to(args.device)
    scheduler = models.make_scheduler()
    groups = [
        {"params": [p for n, p in unet.named_parameters() if n not in spatial], "lr": args.video_lr},
        {
            "params": [p for n, p in unet.named_parameters() if n in spatial],
            "lr": args.video_lr * args.spatial_lr_scale,
        },
    ]
    modules = {"unet": unet}
    separated = words.separate(tokenizer) if words is not None else None
    if separated is not None:
        print(f"[video] motion words: closest two motions {separated[0]} -> {separated[1]} apart")
    if words is not None:  # no weight decay: it would shrink every row, not only the motion words'
        groups.append({"params": [words.weight], "lr": args.motion_word_lr, "weight_decay": 0.0})
        modules["text_encoder"] = text_encoder
    trainer = Trainer("video", args.work, modules, groups, args.video_steps, args.video_lr,
                      checkpoint_every=100, device=args.device)  # fmt: skip
    generator = torch.Generator().manual_seed(args.seed + 4)
    data_seed = 40_000_000 + args.data_offset
    step = video_loss(args, tokenizer, vae, text_encoder, unet, scheduler, generator, data_seed=data_seed)
    record["video"] = trainer.run(step, log_every=10)
    save_module(unet, work / "video" / "unet")
    if words is not None:
        words.check_only_rows_moved()
        record["video"]["motion_words"] = {"moved": words.moved(), "closest_pair_before_after": separated}
        save_module(text_encoder, work / "video" / "text_encoder")


class WordRows:
    """Some words' token-embedding rows as the only trainable part of the text encoder (as textual inversion trains
    a token's row): every other row and weight stays bit for bit, so prompts without those words encode exactly as
    before. Give `weight` its own optimiser group without weight decay (decay would shrink every row)."""

    def __init__(self, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, tokens: list[str]):
        vocab = tokenizer.get_vocab()
        self.tokens = tokens
        self.ids = torch.tensor([vocab[t] for t in tokens])
        self.weight = text_encoder.get_input_embeddings().weight
        self.start = self.weight.detach().clone()
        self.frozen = {n: p.detach().clone() for n, p in text_encoder.named_parameters() if p is not self.weight}
        self.encoder = text_encoder
        mask = torch.zeros(self.weight.shape[0], 1, device=self.weight.device)
        mask[self.ids] = 1.0
        self.weight.requires_grad_(True)
        self.weight.register_hook(lambda grad: grad * mask)

    def moved(self) -> dict[str, float]:
        """How far each word's row moved (L2), by token."""
        delta = (self.weight.detach() - self.start)[self.ids].norm(dim=-1)
        return {t: round(float(d), 4) for t, d in zip(self.tokens, delta, strict=True)}

    def check_only_rows_moved(self) -> None:
        others = torch.ones(self.weight.shape[0], dtype=torch.bool)
        others[self.ids] = False
        if not torch.equal(self.weight.detach()[others], self.start[others]):
            raise RuntimeError(f"a row other than those of {self.tokens} moved")
        for n, p in self.encoder.named_parameters():
            if p is not self.weight and not torch.equal(p.detach(), self.frozen[n]):
                raise RuntimeError(f"text encoder weight {n} moved")


class MotionWordRows(WordRows):
    """The motion words' rows (left, right, up, down, rotating, ...): the image stage can never tell "moving left"
    from "moving right" (a still frame shows no direction), so it leaves the four directions encoded almost alike
    (mean squared distance 0.0002 against 0.18 to "rotating", on v2.2). Training these rows through the video UNet
    separates them."""

    def __init__(self, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer):
        phrases = load_taxonomy().motions
        tokens = sorted({t for phrase in phrases for t in tokenizer.tokenize(phrase)})
        super().__init__(text_encoder, tokenizer, tokens)

    def separate(self, tokenizer: CLIPTokenizer, margin: float = 0.05, max_steps: int = 200, lr: float = 1e-3):
        """Give the motions distinct encodings before the video stage starts: move the motion words' rows until every
        two motion phrases, said of the same subject, encode at least `margin` apart (mean squared difference). A
        real CLIP encoder arrives with this from its contrastive pre-training; without it the video loss's gradient
        through the collapsed directions is too faint to start from (the directions stayed 0.0001 apart after 100
        video steps). Returns the smallest pairwise distance before and after."""
        taxonomy = load_taxonomy()
        subjects = [taxonomy.concept_prompts(c.name)[0] for c in taxonomy.concepts]
        prompts = [f"{subject} {motion}" for subject in subjects for motion in taxonomy.motions]
        ids = tokenize(tokenizer, prompts).to(self.weight.device)
        n = len(taxonomy.motions)
        pairs = ~torch.eye(n, dtype=torch.bool, device=self.weight.device)
        optimizer = torch.optim.Adam([self.weight], lr=lr)

        def distances():
            hidden = self.encoder(ids)[0].view(len(subjects), n, *ids.shape[1:], -1)
            return (hidden[:, :, None] - hidden[:, None, :]).pow(2).mean((-1, -2))[:, pairs]  # subject, pair

        with torch.no_grad():
            before = distances().min().item()
        for _ in range(max_steps):
            gap = F.relu(margin - distances())
            if not (gap > 0).any():
                break
            optimizer.zero_grad(set_to_none=True)
            gap.mean().backward()
            optimizer.step()
        self.weight.grad = None
        with torch.no_grad():
            after = distances().min().item()
        return round(before, 5), round(after, 5)


def trained_text_encoder(work: Path) -> Path:
    """The encoder the pipelines ship: the video stage's when it trained the motion words, else the image stage's."""
    video = work / "video" / "text_encoder"
    return video if video.is_dir() else work / "image" / "text_encoder"


def stage_motion(args, tokenizer, record):
    """AnimateDiff's motion adapter for the frozen image UNet, on the video stage's data (AnimateDiff's recipe: only
    the motion modules train)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNetMotionModel

    torch.manual_seed(args.seed + 6)
    work = Path(args.work)
    vae = AutoencoderKL.from_pretrained(work / "vae" / "final").to(args.device).eval()
    text_encoder = CLIPTextModel.from_pretrained(trained_text_encoder(work)).to(args.device).eval()
    text_encoder.requires_grad_(False)
    adapter = models.make_motion_adapter()
    earlier = Path(args.init_from or "") / "animatediff" / "unet"  # shipped as a UNetMotionModel
    if args.init_from and earlier.is_dir():
        state = UNetMotionModel.from_pretrained(earlier, dtype=torch.float32).state_dict()
        adapter.load_state_dict({k: v for k, v in state.items() if "motion_modules" in k})
        print(f"[motion] warm start: the motion modules of {earlier}")
    unet = UNetMotionModel.from_unet2d(UNet2DConditionModel.from_pretrained(work / "image" / "unet"), adapter)
    unet.freeze_unet2d_params()
    unet = unet.to(args.device)
    scheduler = models.make_scheduler()
    trainer = Trainer("motion", args.work, {"unet": unet}, unet.parameters(), args.motion_steps, args.motion_lr,
                      checkpoint_every=100, device=args.device)  # fmt: skip
    generator = torch.Generator().manual_seed(args.seed + 6)
    # AnimateDiffPipeline gives every frame its video's prompt
    step = video_loss(
        args, tokenizer, vae, text_encoder, unet, scheduler, generator, 41_000_000 + args.data_offset, per_frame=True
    )
    record["motion"] = trainer.run(step, log_every=10)
    motion = {k: v for k, v in unet.state_dict().items() if "motion_modules" in k}
    adapter.load_state_dict(motion)
    save_module(adapter, work / "motion" / "adapter")


def stage_export(args, tokenizer, record):
    """Write the shipped folders: image, video and AnimateDiff pipelines (fp16 safetensors) and the evaluator."""
    from diffusers import (
        AnimateDiffPipeline,
        AutoencoderKL,
        MotionAdapter,
        StableDiffusionPipeline,
        TextToVideoSDPipeline,
        UNet2DConditionModel,
        UNet3DConditionModel,
        UNetMotionModel,
    )
    from transformers import CLIPModel

    work, out = Path(args.work), Path(args.out)
    half = torch.float16
    text_encoder = CLIPTextModel.from_pretrained(trained_text_encoder(work), dtype=half)
    vae = AutoencoderKL.from_pretrained(work / "vae" / "final", dtype=half)
    scheduler = models.make_scheduler()
    image = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=UNet2DConditionModel.from_pretrained(work / "image" / "unet", dtype=half),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    video = TextToVideoSDPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=UNet3DConditionModel.from_pretrained(work / "video" / "unet", dtype=half),
        scheduler=scheduler,
    )
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    image.save_pretrained(tmp / "image")
    video.save_pretrained(tmp / "video")
    pipelines = ("image", "video")
    if (work / "motion" / "adapter").is_dir():
        # the image pipeline's components, its UNet with the motion modules in place (a UNetMotionModel), so the
        # adapter is not stored twice; AnimateDiffPipeline takes no separate motion_adapter then
        adapter = MotionAdapter.from_pretrained(work / "motion" / "adapter", dtype=half)
        animatediff = AnimateDiffPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=UNetMotionModel.from_unet2d(image.unet, adapter).to(half),
            motion_adapter=None,
            scheduler=scheduler,
        )
        animatediff.save_pretrained(tmp / "animatediff")
        pipelines += ("animatediff",)
    copied = {stage for stage in ("evaluator", "classifier") if (work / stage / "COPIED").exists()}
    if "evaluator" in copied:  # an earlier evaluator, with the tokenizer its text tower was trained with
        shutil.copytree(work / "evaluator" / "final", tmp / "evaluator")
    else:
        CLIPModel.from_pretrained(work / "evaluator" / "final", dtype=half).save_pretrained(tmp / "evaluator")
        tokenizer.save_pretrained(tmp / "evaluator")
    if (work / "classifier" / "final").is_dir():  # the detector (tinyworld/classifier.py)
        shutil.copytree(work / "classifier" / "final", tmp / "classifier")
    # the evaluator reads 64x64 pixels scaled to [-1, 1]: say so the way CLIPImageProcessor reads it
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 64},
        "do_center_crop": True,
        "crop_size": {"height": 64, "width": 64},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
        "resample": 3,
    }
    (tmp / "evaluator" / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    own = tuple(f"{p}/tokenizer" for p in pipelines) + (() if "evaluator" in copied else ("evaluator",))
    for folder in own:  # the slow tokenizer's files too
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(work / "tokenizer" / name, tmp / folder / name)
    for path in tmp.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
    (tmp / "training.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def copy_stage(args, stage: str, record: dict) -> None:
    """With --init-from, the VAE, evaluator and classifier are the earlier ones, copied rather than retrained."""
    init = Path(args.init_from)
    source = {"vae": init / "image" / "vae", "evaluator": init / "evaluator", "classifier": init / "classifier"}[stage]
    final = Path(args.work) / stage / "final"
    shutil.rmtree(final, ignore_errors=True)
    if stage == "vae":  # stored in fp16; training reads fp32
        from diffusers import AutoencoderKL

        save_module(AutoencoderKL.from_pretrained(source, dtype=torch.float32), final)
    else:
        shutil.copytree(source, final)
        (Path(args.work) / stage / "COPIED").write_text(f"{source}\n")
    earlier = init / "training.json"
    earlier_record = json.loads(earlier.read_text()).get(stage, {}) if earlier.exists() else {}
    record[stage] = {**earlier_record, "copied_from": str(source)}


def _weights_source(folder: Path) -> dict:
    """What a warm start began from: the folder, its version, and the git commit that holds it (to rebuild it)."""
    import subprocess

    earlier = folder / "training.json"
    source = {"folder": str(folder),
              "version": json.loads(earlier.read_text()).get("version", 1) if earlier.exists() else None}  # fmt: skip
    try:
        commit = subprocess.run(["git", "-C", str(folder), "log", "-1", "--format=%H", "--", "."], capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
        source["commit"] = commit or None  # the last commit that changed these weights
    except (OSError, subprocess.CalledProcessError):
        source["commit"] = None
    return source


@dataclass
class TrainConfig:
    """The recipe of a training run: the one home of its defaults and help. training.json records it, and
    `--config training.json` makes it the defaults again (flags given still win), so the weights can be rebuilt."""

    seed: int = field(default=0, metadata={"help": "seeds every stage (each adds its own offset)"})
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu",
                        metadata={"help": "torch device (default: cuda if present)"})  # fmt: skip
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast"})
    batch_size: int = field(default=32, metadata={"help": "images per step of the vae and image stages"})
    video_batch_size: int = field(default=4, metadata={"help": "videos per step of the video stage"})
    evaluator_steps: int = field(default=1400, metadata={"help": "steps of the CLIP evaluator stage"})
    evaluator_lr: float = field(default=1e-3, metadata={"help": "learning rate of the CLIP evaluator"})
    evaluator_init: str | None = field(
        default=None, metadata={"help": "an evaluator folder to fine-tune (default: random weights)"}
    )
    classifier_steps: int = field(default=3000, metadata={"help": "steps of the classifier (detector) stage"})
    classifier_batch_size: int = field(default=64, metadata={"help": "images per classifier step"})
    classifier_lr: float = field(default=2e-3, metadata={"help": "peak learning rate of the classifier"})
    classifier_init: str | None = field(
        default=None, metadata={"help": "a classifier folder to fine-tune (default: random weights)"}
    )
    classifier_blob_share: float = field(
        default=0.0, metadata={"help": "share of shape scenes drawn as shapeless blobs, 'none' for the object head"}
    )
    classifier_blob_waver: tuple[float, float] = field(
        default=(0.12, 0.22),
        metadata={"help": "lumpy blobs: the least and the most their radius wavers, as a share"},
    )  # fmt: skip
    classifier_waver_share: float = field(
        default=0.0,
        metadata={"help": "share of the other shape scenes drawn by an unsteady hand (render.wavering_shape), under "
                          "their shape's label"},
    )  # fmt: skip
    classifier_blob_kind: str = field(
        default="egg",
        metadata={"help": "the blobs: 'egg' (smooth eggs and beans, render.blob_outline) or 'lumpy' (wavering blobs "
                          "between a circle and a rounded square, render.lumpy_outline)"},
    )  # fmt: skip
    vae_steps: int = field(default=1500, metadata={"help": "steps of the VAE stage"})
    image_steps: int = field(default=2500, metadata={"help": "steps of the image stage (text encoder + UNet)"})
    video_steps: int = field(
        default=500,
        metadata={
            "help": "steps of the video stage (video UNet); 0 with --init-from: that folder's video UNet, unchanged"
        },
    )
    video_lr: float = field(default=3e-4, metadata={"help": "learning rate of the video UNet's temporal layers"})
    spatial_lr_scale: float = field(
        default=0.2, metadata={"help": "the video UNet's spatial layers train at this multiple of --video-lr"}
    )
    direction_contrast: float = field(
        default=0.0,
        metadata={"help": "weight of the direction-ranking term in the video and motion stages: each clip that moves "
                          "left/right/up/down must be explained better by its caption than by one with another "
                          "direction (0: plain denoising loss, as up to v2.2)"},
    )  # fmt: skip
    direction_beta: float = field(
        default=5000.0, metadata={"help": "sharpness of the direction-ranking term (per-element epsilon MSE gap)"}
    )
    motion_steps: int = field(default=300, metadata={"help": "steps of the motion stage (AnimateDiff's adapter)"})
    motion_lr: float = field(default=3e-4, metadata={"help": "learning rate of the motion adapter"})
    motion_word_lr: float = field(
        default=0.0,
        metadata={"help": "learning rate of the motion words' token embeddings, trained in the video stage so the "
                          "encoder tells the directions apart (0: the encoder stays frozen there, as up to v2.2)"},
    )  # fmt: skip
    data_offset: int = field(
        default=0, metadata={"help": "added to every stage's per-step data seed: a warm start then sees new scenes"}
    )
    image_lr: float = field(default=5e-4, metadata={"help": "learning rate of the image stage"})
    snr_gamma: float = field(
        default=5.0,
        metadata={"help": "Min-SNR-gamma loss weighting of the image and video stages (0: plain epsilon MSE, v1)"},
    )
    late_timestep_share: float = field(
        default=0.3,
        metadata={"help": "share of timesteps drawn from the noisier 70% of the schedule (0: uniform, v1)"},
    )
    pair_share: float = field(
        default=0.0,
        metadata={"help": "share of still scenes (image and classifier stages) with a character beside a shape"},
    )
    focus: str = field(
        default="",
        metadata={"help": "comma-separated shapes or characters drawn more often in the image, video and motion "
                          "stages (the ones a model draws as something else); empty: none, as up to v2.2"},
    )  # fmt: skip
    focus_share: float = field(
        default=0.0, metadata={"help": "share of still scenes and of clips that show a --focus subject"}
    )
    focus_rows: bool = field(
        default=False,
        metadata={"help": "in the image stage, train only the --focus subjects' names' token rows of the text "
                          "encoder (the UNet trains in full): prompts without those words encode as before"},
    )  # fmt: skip
    freeze_unet: bool = field(
        default=False,
        metadata={"help": "with --focus-rows, the image UNet frozen too: only the focus names' rows train (textual "
                          "inversion of the world's own words), so every other prompt samples exactly as before"},
    )  # fmt: skip
    unet_cross_attention_only: bool = field(
        default=False,
        metadata={"help": "in the image stage, train only the UNet's cross-attention layers (attn2: how the prompt "
                          "reaches the features), so the convolutions that draw, and the colours, stay as they were"},
    )  # fmt: skip
    shape_margin: float = field(
        default=0.0,
        metadata={"help": "in the image stage, a hinge keeps every two shapes' prompts at least this far apart in the "
                          "encoder (mean squared difference; 0: off, as up to v2.2)"},
    )  # fmt: skip
    language: str = field(
        default="v2",
        metadata={"help": "captions: v1 (names and synonyms) or v2 (also misspellings, paraphrases, looks)"},
    )
    init_from: str | None = field(
        default=None,
        metadata={"help": "a weights folder to warm-start from: image, video and motion stages continue its "
                          "models; vae, evaluator and classifier are copied from it"},
    )  # fmt: skip

    def __post_init__(self):
        # a list, as training.json holds it, so that a recorded configuration reads back equal to the one that ran
        self.classifier_blob_waver = [float(v) for v in self.classifier_blob_waver]


def parse_args(argv=None) -> argparse.Namespace:
    """Where and how much (--work, --out, --stages, --threads, --config) plus every `TrainConfig` field."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/tinyworld", help="where checkpoints go (resumes from there)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "weights"), help="the shipped model folder")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--config", help="a training.json: its recorded configuration becomes the defaults")
    choices = {"language": sorted(LANGUAGES), "classifier_blob_kind": ("egg", "lumpy")}
    add_config_arguments(parser, TrainConfig, choices=choices)
    args = parser.parse_args(argv)
    recorded = None
    if args.config:
        recorded = json.loads(Path(args.config).read_text()).get("config")
        if not recorded:
            parser.error(f"{args.config} records no configuration (written by an older train.py)")
    try:
        config = config_from_args(TrainConfig, args, base=recorded)
    except ValueError as error:  # a training.json from another version
        parser.error(f"{args.config}: {error}")
    if config.freeze_unet and not config.focus_rows:
        parser.error("--freeze-unet needs --focus-rows (with the encoder and the UNet frozen nothing would train)")
    if config.freeze_unet and config.unet_cross_attention_only:
        parser.error("--freeze-unet and --unet-cross-attention-only: choose one (the UNet frozen, or only its attn2)")
    return argparse.Namespace(**{k: getattr(args, k) for k in RECORDED}, **asdict(config))


RECORDED = ("work", "out", "stages", "config", "threads")  # where and how much: not part of the recipe


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    record_path = work / "record.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    record["hardware"] = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    record["config"] = {k: v for k, v in vars(args).items() if k not in RECORDED}
    record["version"] = 2 if args.language == "v2" else 1
    if args.init_from:
        record["initialised_from"] = _weights_source(Path(args.init_from))
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
    for stage in STAGES:
        if stage not in stages:
            continue
        done = work / stage / "DONE"
        if done.exists() and stage != "export":
            print(f"[{stage}] already done, skipping")
            continue
        start = time.perf_counter()
        if stage == "tokenizer":
            corpus = caption_corpus(LANGUAGES[args.language]) if args.language != "v1" else None
            build_tokenizer(work / "tokenizer", corpus)
        elif args.init_from and stage in ("vae", "evaluator", "classifier"):
            copy_stage(args, stage, record)
        else:
            tokenizer = CLIPTokenizer.from_pretrained(work / "tokenizer")
            stage_functions = {"evaluator": stage_evaluator, "classifier": stage_classifier, "vae": stage_vae,
                               "image": stage_image, "video": stage_video, "motion": stage_motion,
                               "export": stage_export}  # fmt: skip
            stage_functions[stage](args, tokenizer, record)
        record.setdefault(stage, {})["wall_seconds"] = round(time.perf_counter() - start, 1)
        # stages may run in separate processes: merge into what is on disk rather than overwrite it
        on_disk = json.loads(record_path.read_text()) if record_path.exists() else {}
        fresh = (stage, "hardware", "config", "version", "initialised_from")  # this run's, never an earlier run's
        record = {**on_disk, **{k: v for k, v in record.items() if k in fresh or k not in on_disk}}
        record_path.write_text(json.dumps(record, indent=2, sort_keys=True))
        (work / stage).mkdir(parents=True, exist_ok=True)
        done.write_text("done\n")
        print(f"[{stage}] done in {record[stage]['wall_seconds']} s")


if __name__ == "__main__":
    main()
