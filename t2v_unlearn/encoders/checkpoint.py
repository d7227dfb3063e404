"""Encoder-only checkpoints: write them, check them against a pipeline, load them.

A checkpoint is a folder that plain libraries load:

    text_encoder/config.json + model.safetensors   CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    compact/text_encoder_changed.safetensors       only the tensors the method changed, applied onto the base
    lora/pytorch_lora_weights.safetensors          (trainable=lora) the patch in the diffusers LoRA format
    unlearn.json                                   what was erased from which base, how, and what it cost
    README.md                                      a model card
    .t2v_unlearn                                   marks the folder as this tool's (so --overwrite may replace it)
"""

from __future__ import annotations

import copy
import datetime
import json
import time
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel

from ..artefacts import atomic_folder
from ..pipelines import load as pipelines
from .fingerprint import architecture, encoder_fingerprint, tensor_fingerprint, tokenizer_fingerprint

FORMAT_VERSION = 1
COMPACT_FILE = "compact/text_encoder_changed.safetensors"
LORA_DIR = "lora"
LORA_FILE = "pytorch_lora_weights.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not fit the pipeline it is meant for."""


def _names(value, non_empty: bool = False) -> bool:
    return isinstance(value, list) and (bool(value) or not non_empty) and all(isinstance(v, str) and v for v in value)


# what a field's JSON value must be, by the words its error message uses
_KINDS = {
    "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "a string": lambda v: isinstance(v, str),
    "an object": lambda v: isinstance(v, dict),
    "a list": lambda v: isinstance(v, list),
    "a list of names": _names,
    "a non-empty list of names": lambda v: _names(v, non_empty=True),
}


def _field(must: str, help: str, **default):
    return field(**default, metadata={"help": help, "must": must})


@dataclass(kw_only=True)
class Manifest:
    """unlearn.json: what was erased from which base, how, and what it cost.

    Only the four fields that loading checks are required; the rest default to "not recorded" (None, or an empty
    container) for manifests written by older versions or by hand. Keys this version does not know (`extra=` of
    `save_checkpoint`) are kept in `extra` and written back at the top level.
    """

    format_version: int | None = _field("an integer", "the unlearn.json format (FORMAT_VERSION)", default=None)
    concepts: list[str] = _field("a non-empty list of names", "the erased concepts")
    categories: dict[str, str] = _field("an object", "concept -> category", default_factory=dict)
    prompts: dict[str, list[str]] = _field("an object", "concept -> its training prompts", default_factory=dict)
    config: dict = _field("an object", "the full EraseConfig (`EraseConfig.to_dict()`)", default_factory=dict)
    resolved: dict = _field("an object", "what ran where the config left the choice to the concepts' categories "
                            "(robust, robust_handle, variant_contexts, gap_ratio, shot_steps, eval_timesteps; "
                            "`EraseResult.resolved`)",
                            default_factory=dict)  # fmt: skip
    base_model: str | None = _field("a string", "the base pipeline erase ran on", default=None)
    base_fingerprint: str = _field("a string", "`encoder_fingerprint` of the base text encoder")
    unlearned_fingerprint: str | None = _field("a string", "`encoder_fingerprint` of the saved encoder", default=None)
    saved_dtype: str | None = _field("a string", 'the dtype of the saved weights, e.g. "float32"', default=None)
    base_architecture: dict = _field("an object", "`architecture` of the base text encoder's config")
    tokenizer_fingerprint: str = _field("a string", "`tokenizer_fingerprint` of the base tokenizer")
    changed_tensors: list[str] | None = _field("a list of names", "the tensors erase changed", default=None)
    changed_parameters: int | None = _field("an integer", "parameters in the changed tensors", default=None)
    total_parameters: int | None = _field("an integer", "parameters in the encoder", default=None)
    steps: int | None = _field("an integer", "optimisation steps run", default=None)
    stopped_by: str | None = _field("a string", "the stop rule that ended the run", default=None)
    history: list[dict] = _field("a list", "the stop rule's checks, one record per check", default_factory=list)
    sizes: dict[str, int] = _field("an object", "bytes of each stored form", default_factory=dict)
    timings: dict[str, float] = _field("an object", "seconds per phase (load, shots, ..., save)", default_factory=dict)
    versions: dict[str, str] = _field("an object", "package versions (`versions()`)", default_factory=dict)
    created: str | None = _field("a string", "when it was written, ISO 8601 UTC", default=None)
    lora_fingerprint: str | None = _field("a string", "`tensor_fingerprint` of the LoRA file (lora)", default=None)
    extra: dict = field(default_factory=dict, metadata={"help": "any other top-level keys, kept as they are"})

    @classmethod
    def from_dict(cls, data, where: str) -> Manifest:
        """Check a parsed unlearn.json and read it; a `CheckpointError` naming `where` (the file) if it is wrong."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{where} holds {type(data).__name__}, not a manifest; re-run `t2v-unlearn erase`")
        missing = {"base_fingerprint", "base_architecture", "tokenizer_fingerprint", "concepts"} - set(data)
        if missing:
            raise CheckpointError(f"{where} lacks {sorted(missing)}; re-run `t2v-unlearn erase`")
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        for name, f in known.items():
            if name not in data or (data[name] is None and f.default is None):  # an optional field not recorded
                continue
            if not _KINDS[f.metadata["must"]](data[name]):
                raise CheckpointError(f"{where}: '{name}' must be {f.metadata['must']}; re-run `t2v-unlearn erase`")
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**{k: v for k, v in data.items() if k in known}, extra=extra)

    def to_dict(self) -> dict:
        """The JSON object of unlearn.json: every recorded field (None ones left out), `extra` at the top level."""
        recorded = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **{k: v for k, v in recorded.items() if v is not None}}


def versions() -> dict[str, str]:
    out = {}
    for package in ("t2v_unlearn", "torch", "diffusers", "transformers", "peft", "safetensors"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def save_checkpoint(
    out: str | Path,
    result,
    base_encoder: CLIPTextModel,
    tokenizer,
    config,
    base_model: str,
    timings: dict[str, float],
    overwrite: bool = False,
    extra: dict | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write an encoder-only checkpoint folder for an `EraseResult`; atomic (see `t2v_unlearn.artefacts`).

    The time saving takes is measured here and added to `timings` as "save". `dtype` (e.g. torch.float16)
    stores the weights in that precision instead of the trained float32: half the size, for sharing. `extra`
    adds top-level keys to unlearn.json (kept in `Manifest.extra`); it may not name a `Manifest` field.
    """
    extra = dict(extra or {})
    clash = sorted(set(extra) & {f.name for f in fields(Manifest)})
    if clash:
        raise ValueError(f"extra keys {clash} are unlearn.json's own fields; pass them under other names")
    start = time.perf_counter()
    with atomic_folder(out, overwrite, kind="checkpoint") as tmp:
        encoder = result.text_encoder if dtype is None else copy.deepcopy(result.text_encoder).to(dtype)
        encoder.save_pretrained(tmp / "text_encoder")
        state = encoder.state_dict()
        changed = {n: state[n].detach().contiguous().cpu() for n in result.changed_parameters}
        (tmp / "compact").mkdir()
        base_print = encoder_fingerprint(base_encoder)
        save_file(changed, str(tmp / COMPACT_FILE), metadata={"base_fingerprint": base_print})
        sizes = {"full_bytes": _folder_size(tmp / "text_encoder"), "compact_bytes": _folder_size(tmp / "compact")}
        lora_print = None
        if result.lora_state_dict is not None:
            from diffusers import StableDiffusionPipeline

            layers = {k.removeprefix("base_model.model."): v for k, v in result.lora_state_dict.items()}
            StableDiffusionPipeline.save_lora_weights(tmp / LORA_DIR, text_encoder_lora_layers=layers,
                                                      weight_name=LORA_FILE)  # fmt: skip
            sizes["lora_bytes"] = _folder_size(tmp / LORA_DIR)
            # the merged LoRA encoder is not bit-reproducible across devices: fingerprint the patch file instead
            lora_print = tensor_fingerprint(load_file(str(tmp / LORA_DIR / LORA_FILE)))
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            concepts=[c.name for c in result.concepts],
            categories={c.name: c.category for c in result.concepts},
            prompts={c.name: list(c.prompts) for c in result.concepts},
            config=config.to_dict(),
            resolved=result.resolved(),
            base_model=base_model,
            base_fingerprint=base_print,
            unlearned_fingerprint=encoder_fingerprint(encoder),
            saved_dtype=str(next(encoder.parameters()).dtype).removeprefix("torch."),
            base_architecture=architecture(base_encoder.config),
            tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
            changed_tensors=sorted(changed),
            changed_parameters=int(sum(t.numel() for t in changed.values())),
            total_parameters=int(sum(t.numel() for t in state.values())),
            steps=result.steps,
            stopped_by=result.stopped_by,
            history=result.history,
            sizes=sizes,
            timings={**{k: round(v, 3) for k, v in timings.items()}, "save": round(time.perf_counter() - start, 3)},
            versions=versions(),
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            lora_fingerprint=lora_print,
            extra=extra,
        )
        (tmp / "unlearn.json").write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(model_card(manifest))
    return Path(out)


def model_card(manifest: Manifest) -> str:
    concepts = ", ".join(f"`{c}` ({manifest.categories[c]})" for c in manifest.concepts)
    sizes = manifest.sizes
    lora = f"\n- `lora/{LORA_FILE}`: LoRA patch, {sizes['lora_bytes'] / 1024:.0f} KiB" if "lora_bytes" in sizes else ""
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in manifest.timings.items())
    anchors = manifest.resolved.get("anchors") or {}  # recorded since the eighteenth session
    anchor = manifest.config.get("anchor") or ", ".join(sorted(set(anchors.values()))) or "a generic anchor"
    several = any("," in a for a in (anchor, *anchors.values()))  # several anchors: one drawn per row and step
    drawn = f"drawn toward {anchor} at once" if several else f"drawn as {anchor}"
    how = {"anchor": f"the concept's prompts {drawn} through the frozen UNet",
           "ascent": "gradient ascent on the denoising loss through the frozen UNet"}.get(
        manifest.config.get("objective"), "objective not recorded")  # fmt: skip
    handle = {"spellings": "every spelling's tokens", "name": "the name's tokens"}.get(
        manifest.resolved.get("robust_handle"), "the concept's tokens"
    )
    robust = f"; erased under an inner attack on {handle} (robust)" if manifest.resolved.get("robust") else ""
    return f"""---
library_name: transformers
tags: [t2v_unlearn, concept-erasure, clip-text-encoder]
---
# Unlearned CLIP text encoder: {", ".join(manifest.concepts)}

This folder holds a CLIP text encoder from which {concepts} was erased by few-shot unlearning
({how}), with t2v_unlearn
{manifest.versions.get("t2v_unlearn")}.

- Base model: `{manifest.base_model}`, text-encoder fingerprint `{manifest.base_fingerprint[:16]}...`
- Trainable preset: `{manifest.config["trainable"]}`; {manifest.changed_parameters:,} of
  {manifest.total_parameters:,} parameters changed; {manifest.steps} steps,
  stopped by `{manifest.stopped_by}`{robust}.
- Time: {timings}.

## Files
- `text_encoder/`: the full encoder, {sizes["full_bytes"] / 1024:.0f} KiB.
  `CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")` loads it without t2v_unlearn.
- `{COMPACT_FILE}`: only the changed tensors, {sizes["compact_bytes"] / 1024:.0f} KiB,
  applied onto the base encoder.{lora}
- `unlearn.json`: the concepts, the full configuration, the base fingerprint, versions and timings.

## Use
```python
from t2v_unlearn.encoders import load_pipeline
image = load_pipeline("image", model="{manifest.base_model}", text_encoder="path/to/this/folder")
video = load_pipeline("video", model="{manifest.base_model}", text_encoder="path/to/this/folder")
```
The encoder serves every pipeline whose text encoder has the base fingerprint above (for example
Stable Diffusion 2.x and ModelScope text-to-video share one).

## How it was measured
`t2v-unlearn eval --text-encoder <this folder>` scores images and every video frame with an independent
CLIP detector (frame-level M-Score with bootstrap intervals). See the project's docs/BENCHMARKS.md.

## Caveat: the UNet still holds the concept
Only the text encoder changed. Whoever swaps the original encoder back, or optimises a token embedding
against this one, can bring the concept back. This is erasure from the prompt interface, not from the weights.
"""


# --- loading -------------------------------------------------------------------------------------------------


def read_manifest(folder: str | Path) -> Manifest:
    """The checked `Manifest` of a checkpoint folder: the one reader of unlearn.json."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"encoder checkpoint {folder} does not exist; pass the folder `t2v-unlearn erase` wrote")
    path = folder / "unlearn.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} is not an encoder checkpoint (no unlearn.json); pass a folder from `erase`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is corrupt ({error}); re-run `t2v-unlearn erase`") from error
    return Manifest.from_dict(data, where=str(path))


def check_compatible(manifest: Manifest, base: CLIPTextModel, tokenizer, force: bool = False, where: str = "",
                     base_name: str = "the pipeline") -> None:  # fmt: skip
    """Raise a `CheckpointError` naming both sides if a checkpoint cannot serve this pipeline's encoder.

    `force` overrides only the base-fingerprint check, never the architecture or the tokenizer.
    """
    theirs, ours = manifest.base_architecture, architecture(base.config)
    if theirs != ours:
        diff = {k: (theirs.get(k), ours.get(k)) for k in ours if theirs.get(k) != ours.get(k)}
        detail = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in diff.items())
        hint = ""
        if diff.get("hidden_size") == (768, 1024):
            hint = " An encoder unlearned on SD 1.x (CLIP ViT-L/14) cannot serve SD 2.x or ModelScope/Zeroscope."
        raise CheckpointError(
            f"encoder checkpoint {where} does not fit {base_name}: {detail} (checkpoint vs pipeline).{hint} "
            f"Unlearn on a base with the same text encoder as {base_name}; --force cannot override this."
        )
    if manifest.tokenizer_fingerprint != tokenizer_fingerprint(tokenizer):
        raise CheckpointError(
            f"encoder checkpoint {where} was unlearned with a different tokenizer than {base_name}'s "
            "(vocabulary, merges or padding differ); token ids would not mean the same. Unlearn on this base."
        )
    if not force and manifest.base_fingerprint != encoder_fingerprint(base):
        raise CheckpointError(
            f"encoder checkpoint {where} was unlearned from base encoder {manifest.base_fingerprint[:12]} "
            f"({manifest.base_model or '?'}), but {base_name}'s encoder is {encoder_fingerprint(base)[:12]}. "
            f"Same architecture, other weights{base_difference(where, base)}: pass --force to swap it in anyway, "
            "or unlearn on this base."
        )


@torch.no_grad()
def base_difference(folder: str | Path, base: CLIPTextModel) -> str:
    """How a pipeline's encoder differs from a checkpoint's base, judged on the tensors erase left unchanged.

    A full checkpoint holds the base's own values of every tensor its compact file does not list, so those can be
    compared with the pipeline's: numerically equal at float16 precision, or the largest difference and where.
    Returns a clause for an error message ("" when the checkpoint holds no full encoder and compact file).
    """
    folder = Path(folder)
    full, compact = folder / "text_encoder" / "model.safetensors", folder / COMPACT_FILE
    if not (full.is_file() and compact.is_file()):
        return ""
    try:
        changed, saved = set(load_file(str(compact))), load_file(str(full))
    except (SafetensorError, OSError):
        return ""
    ours = base.state_dict()
    kept = [n for n in saved if n not in changed and n in ours and saved[n].shape == ours[n].shape]
    differing = {}
    for name in kept:
        a, b = saved[name].float(), ours[name].detach().float().cpu()
        if not torch.equal(a.half(), b.half()):
            differing[name] = (a - b).abs().max().item()
    if not differing:
        return (f" (yet the {len(kept)} tensors erase left unchanged equal {folder.name}'s base at float16 "
                f"precision: only the {len(changed)} it changed can differ)")  # fmt: skip
    worst = max(differing, key=differing.get)
    return (f" ({len(differing)} of the {len(kept)} tensors erase left unchanged differ; the largest difference is "
            f"{differing[worst]:.3g} in {worst})")  # fmt: skip


def check_weights(manifest: Manifest, found: str, key: str = "unlearned_fingerprint", where: str = "") -> None:
    """Raise a `CheckpointError` if weights loaded from a checkpoint are not the ones `erase` saved there.

    Args:
        found: the fingerprint of what was loaded (`encoder_fingerprint`, or `tensor_fingerprint` of a LoRA file).
        key: the `Manifest` field that recorded it; a manifest without it (older versions) is not checked.
    """
    expected = getattr(manifest, key)
    if expected is not None and found != expected:
        raise CheckpointError(
            f"encoder checkpoint {where} holds other weights than `erase` saved: their fingerprint is {found[:12]}, "
            f"unlearn.json's {key} is {expected[:12]}; they were altered or damaged after saving. Re-run "
            "`t2v-unlearn erase`, or pass --force to skip this check and use them anyway."
        )


def load_text_encoder(folder: str | Path, base: CLIPTextModel, tokenizer, force: bool = False,
                      base_name: str = "the pipeline") -> CLIPTextModel:  # fmt: skip
    """Check a checkpoint against a pipeline's encoder and tokenizer, then load it (full, compact or LoRA form).

    The loaded weights must have the fingerprint unlearn.json records; `force` skips that check too.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    check_compatible(manifest, base, tokenizer, force=force, where=str(folder), base_name=base_name)
    try:
        if (folder / "text_encoder" / "config.json").is_file():
            encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32)
            if architecture(encoder.config) != architecture(base.config):
                raise CheckpointError(f"{folder}/text_encoder/config.json disagrees with unlearn.json's architecture")
            if not force:
                check_weights(manifest, encoder_fingerprint(encoder), where=str(folder))
            return encoder.eval()
        if (folder / COMPACT_FILE).is_file():
            encoder = apply_compact(base, load_file(str(folder / COMPACT_FILE)))
            if not force:  # the base was checked above, so base + changed tensors must be the unlearned encoder
                check_weights(manifest, encoder_fingerprint(encoder), where=str(folder))
            return encoder
        if (folder / LORA_DIR / LORA_FILE).is_file():
            if not force:
                patch = tensor_fingerprint(load_file(str(folder / LORA_DIR / LORA_FILE)))
                check_weights(manifest, patch, key="lora_fingerprint", where=str(folder))
            return apply_lora(base, folder / LORA_DIR / LORA_FILE, manifest.config)
    except (SafetensorError, OSError, RuntimeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(
            f"encoder checkpoint {folder} is corrupt ({error}); re-run `t2v-unlearn erase`"
        ) from error
    raise CheckpointError(f"{folder} holds no encoder weights (text_encoder/, {COMPACT_FILE} or {LORA_DIR}/)")


def apply_compact(base: CLIPTextModel, changed: dict[str, torch.Tensor]) -> CLIPTextModel:
    """The base encoder with the changed tensors of a compact checkpoint put in."""
    encoder = copy.deepcopy(base).float()
    names = set(encoder.state_dict())
    unknown = set(changed) - names
    if unknown:
        raise CheckpointError(f"compact checkpoint names tensors the base encoder lacks: {sorted(unknown)[:3]}")
    encoder.load_state_dict(changed, strict=False)
    return encoder.eval()


def apply_lora(base: CLIPTextModel, path: Path, config: dict) -> CLIPTextModel:
    """The base encoder with a diffusers-format text-encoder LoRA merged into its weights (through peft)."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    from .trainable import LORA_TARGET_MODULES

    state = load_file(str(path))
    state = {"base_model.model." + k.removeprefix("text_encoder."): v for k, v in state.items()
             if k.startswith("text_encoder.")}  # fmt: skip
    rank = config.get("lora_rank", 4)
    lora = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(LORA_TARGET_MODULES))
    model = get_peft_model(copy.deepcopy(base).float(), lora)
    result = set_peft_model_state_dict(model, state)
    if result.unexpected_keys:
        raise CheckpointError(f"LoRA file {path} has keys the encoder lacks: {result.unexpected_keys[:3]}")
    return model.merge_and_unload().eval()


def load_pipeline(
    kind: str = "image",
    model: str | Path = pipelines.TINYWORLD,
    text_encoder: str | Path | None = None,
    force: bool = False,
    **options,
):
    """A pipeline (`t2v_unlearn.pipelines.load_pipeline`, same `options`) with an encoder checkpoint swapped in.

    `text_encoder` is a folder written by `t2v-unlearn erase`; before it is swapped in it is checked against the
    pipeline's own encoder and tokenizer (`load_text_encoder`): architecture, tokenizer, base weights (`force`
    accepts other base weights, never another architecture) and its own recorded fingerprint.
    """
    if text_encoder is None:
        return pipelines.load_pipeline(kind, model, **options)

    def swap(base: CLIPTextModel, tokenizer) -> CLIPTextModel:
        return load_text_encoder(text_encoder, base=base, tokenizer=tokenizer, force=force, base_name=str(model))

    return pipelines.load_pipeline(kind, model, text_encoder=swap, **options)
