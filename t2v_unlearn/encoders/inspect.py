"""`t2v-unlearn inspect`: what a text encoder is, whether two bases share it, whether a checkpoint fits.

    t2v-unlearn inspect sd-2.1-base                       # architecture, fingerprint, parameters, pad token
    t2v-unlearn inspect sd-2.1-base modelscope-1.7b       # identical encoder? tensor by tensor
    t2v-unlearn inspect erased-snoopy zeroscope-v2-576w   # can this checkpoint be swapped into that base?
    t2v-unlearn inspect tinyworld tinyworld:video --json

An argument is `tinyworld` (add `:video` for the video model), a registered base name (resolved offline
through the Hugging Face cache; one that is not downloaded is described from its registered config), a local
diffusers pipeline folder, a checkpoint folder written by `erase` (it holds unlearn.json) or a bare
CLIPTextModel folder. Only text encoders and tokenizers are loaded, never a UNet.

Exit status: 0 when the question has a yes (or one argument was described), 1 when the answer is no
(encoders differ, the checkpoint does not fit), 2 on an error in the input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from .checkpoint import CheckpointError, Manifest, check_compatible, check_weights, read_manifest
from .fingerprint import architecture, encoder_fingerprint, tokenizer_fingerprint

SOURCE_KINDS = ("pipeline", "checkpoint", "text_encoder", "registered")
FAMILY_NAMES = {
    "openclip-vit-h-14-text-23-layers": "OpenCLIP ViT-H/14 text tower, last layer dropped (SD 2.x, ModelScope, "
    "Zeroscope)",
    "clip-vit-l-14-text": "CLIP ViT-L/14 text tower (SD 1.x)",
}


@dataclass
class EncoderSource:
    """One inspected argument: where its encoder came from, and the encoder and tokenizer when they load."""

    argument: str = field(metadata={"help": "the argument as given"})
    source: str = field(metadata={"help": f"one of {SOURCE_KINDS}"})
    path: Path | None = field(default=None, metadata={"help": "the folder read; None for a base not downloaded"})
    config: dict = field(default_factory=dict, metadata={"help": "the text encoder's config"})
    text_encoder: CLIPTextModel | None = field(default=None, metadata={"help": "None where no weights are at hand"})
    tokenizer: CLIPTokenizer | None = None
    pipeline_class: str | None = None
    manifest: Manifest | None = field(default=None, metadata={"help": "a checkpoint's unlearn.json"})
    registered: str | None = field(default=None, metadata={"help": "the registry name, where it is one"})
    notes: list[str] = field(default_factory=list)


# --- resolving an argument -----------------------------------------------------------------------------------


def _split_kind(argument: str, kind: str | None) -> tuple[str, str | None]:
    """`tinyworld:video` -> ("tinyworld", "video"); a real path with a colon is left alone."""
    name, _, suffix = argument.rpartition(":")
    if name and suffix in ("image", "video") and not Path(argument).exists():
        return name, suffix
    return argument, kind


def _quiet():
    from ..pipelines.load import _quiet_loading

    return _quiet_loading()


def _load_encoder(folder: Path) -> CLIPTextModel:
    with _quiet():
        return CLIPTextModel.from_pretrained(folder, dtype=torch.float32).eval()


def _load_tokenizer(folder: Path) -> CLIPTokenizer:
    with _quiet():
        return CLIPTokenizer.from_pretrained(folder)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the folder is corrupt") from error


def _from_pipeline_folder(argument: str, folder: Path) -> EncoderSource:
    index = _read_json(folder / "model_index.json")
    if not (folder / "text_encoder" / "config.json").is_file():
        raise FileNotFoundError(f"pipeline folder {folder} has no text_encoder/config.json; it holds no CLIP text "
                                "encoder to inspect")  # fmt: skip
    source = EncoderSource(argument, "pipeline", folder, pipeline_class=index.get("_class_name"))
    source.text_encoder = _load_encoder(folder / "text_encoder")
    source.config = source.text_encoder.config.to_dict()
    if (folder / "tokenizer").is_dir():
        source.tokenizer = _load_tokenizer(folder / "tokenizer")
    else:
        source.notes.append("no tokenizer/ folder: the tokenizer cannot be compared")
    if (folder / "standin.json").is_file():
        standin = _read_json(folder / "standin.json")
        shapes = "the real shapes" if standin.get("scale") == "real" else f"{standin.get('scale', '?')} shapes"
        source.notes.append(f"random stand-in of {standin.get('standin_of', '?')}: {shapes}, random weights")
    return source


def _from_checkpoint_folder(argument: str, folder: Path) -> EncoderSource:
    manifest = read_manifest(folder)
    source = EncoderSource(argument, "checkpoint", folder, manifest=manifest, config=dict(manifest.base_architecture))
    if (folder / "text_encoder" / "config.json").is_file():
        source.text_encoder = _load_encoder(folder / "text_encoder")
        source.config = source.text_encoder.config.to_dict()
    else:
        source.notes.append("compact or LoRA form only: the full encoder is its base plus the changed tensors")
    return source


def resolve_source(argument: str, kind: str | None = None) -> EncoderSource:
    """Load the text encoder (and tokenizer) an argument names, or its registered config where not downloaded.

    Args:
        argument: "tinyworld[:image|:video]", a registry name[:kind], a pipeline folder, a checkpoint folder
            (with unlearn.json) or a CLIPTextModel folder (config.json + weights).
        kind: "image" or "video", for tinyworld and registry names; a `:kind` suffix wins.
    """
    from ..pipelines.load import TINYWORLD, ModelNotFoundError, tinyworld_path
    from ..pipelines.registry import REGISTRY, BaseNotDownloadedError, resolve_registered

    name, kind = _split_kind(str(argument), kind)
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "unlearn.json").is_file():
            return _from_checkpoint_folder(argument, path)
        if (path / "model_index.json").is_file():
            return _from_pipeline_folder(argument, path)
        config = path / "config.json"
        if config.is_file() and _read_json(config).get("model_type") == "clip_text_model":
            encoder = _load_encoder(path)
            return EncoderSource(argument, "text_encoder", path, config=encoder.config.to_dict(), text_encoder=encoder,
                                 notes=["a bare text-encoder folder: no tokenizer to compare"])  # fmt: skip
        raise FileNotFoundError(f"{path} is a folder but neither a diffusers pipeline (model_index.json), an encoder "
                                "checkpoint (unlearn.json) nor a CLIPTextModel folder (config.json)")  # fmt: skip
    if name == TINYWORLD:
        return _from_pipeline_folder(argument, tinyworld_path(kind or "image"))
    if name in REGISTRY:
        base = REGISTRY[name]
        kind = kind or base.kinds[0]
        try:
            folder = resolve_registered(name, kind)
        except BaseNotDownloadedError as error:
            source = EncoderSource(argument, "registered", None, config=base.config("text_encoder"), registered=name,
                                   pipeline_class=base.pipeline_class)  # fmt: skip
            why = str(error) if "incomplete" in str(error) else f"{base.repo_id} is not in the Hugging Face cache"
            source.notes.append(f"weights not downloaded ({why}): described from the registry's config only; "
                                f"fetch with `{base.download_command()}`")  # fmt: skip
            return source
        source = _from_pipeline_folder(argument, folder)
        source.registered = name
        return source
    raise ModelNotFoundError(
        f"{argument!r} is neither 'tinyworld', a registered base ({', '.join(REGISTRY)}), nor an existing folder; "
        "pass a diffusers pipeline folder or an encoder checkpoint folder from `t2v-unlearn erase`"
    )


# --- what an encoder is --------------------------------------------------------------------------------------


def encoder_family(config: dict) -> str | None:
    """The registry's encoder family whose architecture this config has, if any."""
    from ..pipelines.registry import REGISTRY

    for base in REGISTRY.values():
        if architecture(base.text_encoder) == architecture(config):
            return base.encoder_family
    return None


def describe(source: EncoderSource) -> dict:
    """A JSON-ready description of one argument's encoder: architecture, fingerprint, parameters, tokenizer."""
    from ..pipelines.registry import REGISTRY

    family = encoder_family(source.config)
    out = {
        "argument": source.argument,
        "source": source.source,
        "path": str(source.path) if source.path else None,
        "pipeline_class": source.pipeline_class,
        "architecture": architecture(source.config),
        "encoder_family": family,
        "stored_dtype": source.config.get("dtype") or source.config.get("torch_dtype"),
        "notes": list(source.notes),
    }
    if source.registered:
        base = REGISTRY[source.registered]
        out["registered"] = {"name": base.name, "repo_id": base.repo_id, "kinds": list(base.kinds),
                             "prediction_type": base.prediction_type, "encoder_note": base.encoder_note}  # fmt: skip
    if source.text_encoder is not None:
        out["parameters"] = sum(p.numel() for p in source.text_encoder.parameters())
        out["fingerprint"] = encoder_fingerprint(source.text_encoder)
    elif source.registered:
        from transformers import CLIPTextConfig

        with torch.device("meta"):
            out["parameters"] = sum(p.numel() for p in CLIPTextModel(CLIPTextConfig(**source.config)).parameters())
        out["fingerprint"] = None
    if source.tokenizer is not None:
        out["tokenizer"] = {"class": type(source.tokenizer).__name__, "tokens": len(source.tokenizer),
                            "pad_token": source.tokenizer.pad_token,
                            "fingerprint": tokenizer_fingerprint(source.tokenizer)}  # fmt: skip
    elif source.registered:
        out["tokenizer"] = {"pad_token": REGISTRY[source.registered].tokenizer["pad_token"], "fingerprint": None}
    if source.manifest is not None:
        manifest = source.manifest
        out["checkpoint"] = {key: getattr(manifest, key) for key in ("concepts", "base_model", "base_fingerprint",
                             "unlearned_fingerprint", "changed_parameters", "total_parameters", "steps")}  # fmt: skip
        out["checkpoint"]["trainable"] = manifest.config.get("trainable")
        out["checkpoint"]["tokenizer_fingerprint"] = manifest.tokenizer_fingerprint
    return out


# --- comparisons ---------------------------------------------------------------------------------------------


@torch.no_grad()
def compare_encoders(first: CLIPTextModel, second: CLIPTextModel) -> dict:
    """Tensor by tensor: identical at float16 precision (what the fingerprint hashes), bitwise, max |a - b|.

    Returns the first differing tensor (in the first encoder's order) and the largest absolute difference over
    all tensors of matching shape.
    """
    arch_a, arch_b = architecture(first.config), architecture(second.config)
    differences = {k: [arch_a[k], arch_b[k]] for k in arch_a if arch_a[k] != arch_b[k]}
    a, b = first.state_dict(), second.state_dict()
    first_difference, differing, max_abs, bitwise = None, 0, 0.0, True
    for name, tensor in a.items():
        other = b.get(name)
        if other is None or other.shape != tensor.shape:
            differing += 1
            first_difference = first_difference or {"tensor": name, "reason": "missing or another shape"}
            bitwise = False
            continue
        x, y = tensor.detach().cpu(), other.detach().cpu()
        if torch.equal(x, y):
            continue
        bitwise, delta = False, None
        if x.is_floating_point():
            delta = (x.float() - y.float()).abs().max().item()
            max_abs = max(max_abs, delta)
            if torch.equal(x.to(torch.float16), y.to(torch.float16)):
                continue  # equal at the precision the fingerprint hashes (fp32 vs fp16 storage of one encoder)
        differing += 1
        first_difference = first_difference or {"tensor": name, "max_abs_difference": delta}
    missing = sorted(set(b) - set(a))
    differing += len(missing)
    if missing and first_difference is None:
        first_difference = {"tensor": missing[0], "reason": "only in the second encoder"}
    return {
        "same_architecture": not differences,
        "architecture_differences": differences,
        "tensors": len(a),
        "identical": not differences and differing == 0,
        "bitwise_identical": bitwise and not missing,
        "differing_tensors": differing,
        "first_difference": first_difference,
        "max_abs_difference": max_abs,
    }


def _compare_configs(first: EncoderSource, second: EncoderSource) -> dict:
    """Architecture only, for a side whose weights are not at hand."""
    arch_a, arch_b = architecture(first.config), architecture(second.config)
    differences = {k: [arch_a[k], arch_b[k]] for k in arch_a if arch_a[k] != arch_b[k]}
    return {"same_architecture": not differences, "architecture_differences": differences, "identical": None}


def _tokenizer_match(first: EncoderSource, second: EncoderSource) -> bool | None:
    from ..pipelines.registry import REGISTRY

    def token_print(source):
        if source.tokenizer is not None:
            return tokenizer_fingerprint(source.tokenizer)
        if source.manifest is not None:
            return source.manifest.tokenizer_fingerprint
        return None

    a, b = token_print(first), token_print(second)
    if a is not None and b is not None:
        return a == b
    if first.registered and second.registered:  # both from the registry: compare the published tokenizer configs
        return REGISTRY[first.registered].tokenizer == REGISTRY[second.registered].tokenizer or None
    return None


def _arch_text(differences: dict) -> str:
    return ", ".join(f"{k} {a} vs {b}" for k, (a, b) in differences.items())


def shared_encoder_report(first: EncoderSource, second: EncoderSource) -> dict:
    """Whether two bases (or checkpoints) carry an identical encoder and tokenizer, with the evidence."""
    both = first.text_encoder is not None and second.text_encoder is not None
    tensors = compare_encoders(first.text_encoder, second.text_encoder) if both else _compare_configs(first, second)
    tokenizers = _tokenizer_match(first, second)
    report = {"question": "shared_encoder", "encoders": tensors, "tokenizers_identical": tokenizers}
    if not tensors["same_architecture"]:
        detail = _arch_text(tensors["architecture_differences"])
        hint = ""
        if tensors["architecture_differences"].get("hidden_size") in ([768, 1024], [1024, 768]):
            hint = "; an SD 1.x (CLIP ViT-L/14) encoder cannot serve SD 2.x or ModelScope/Zeroscope"
        report.update(shared=False, reason=f"different architectures: {detail}{hint}")
    elif tensors["identical"] is None:
        absent = [s.argument for s in (first, second) if s.text_encoder is None]
        report.update(shared=None, reason=f"same architecture and tokenizer config, but no weights at hand for "
                      f"{' and '.join(absent)}: download them (see the notes) and inspect again to compare the "
                      "tensors")  # fmt: skip
    elif not tensors["identical"]:
        diff = tensors["first_difference"]
        report.update(shared=False, reason=f"same architecture, other weights: {tensors['differing_tensors']} of "
                      f"{tensors['tensors']} tensors differ, the first {diff['tensor']} (max abs difference "
                      f"{tensors['max_abs_difference']:.3g})")  # fmt: skip
    elif tokenizers is False:
        report.update(shared=False, reason="identical encoder weights, but the tokenizers differ (vocabulary, merges "
                      "or padding): token ids would not mean the same")  # fmt: skip
    else:
        exact = "bitwise" if tensors["bitwise_identical"] else (
            f"at float16 precision (max abs difference {tensors['max_abs_difference']:.3g}, e.g. fp32 vs fp16 storage)"
        )  # fmt: skip
        tokens = "" if tokenizers else " (tokenizers not compared: one side has none)"
        report.update(shared=True, reason=f"identical encoder, {tensors['tensors']} tensors equal {exact}{tokens}: "
                      "an encoder unlearned on one can be swapped into the other")  # fmt: skip
    return report


def checkpoint_fit_report(checkpoint: EncoderSource, base: EncoderSource) -> dict:
    """Whether an encoder checkpoint can be swapped into a base, with `check_compatible`'s reason when not."""
    manifest = checkpoint.manifest
    report = {"question": "checkpoint_fits", "checkpoint": checkpoint.argument, "base": base.argument}
    if base.text_encoder is None or base.tokenizer is None:
        differences = _compare_configs(checkpoint, base)["architecture_differences"]
        if differences:
            report.update(fits=False, reason=f"the checkpoint's architecture does not fit {base.argument}: "
                          f"{_arch_text(differences)} (checkpoint vs base)")  # fmt: skip
        else:
            report.update(fits=None, reason=f"same architecture, but {base.argument}'s weights or tokenizer are not "
                          "at hand, so the fingerprint and tokenizer checks cannot run (see the notes)")  # fmt: skip
        return report
    where, name = str(checkpoint.path), base.argument
    try:
        check_compatible(manifest, base.text_encoder, base.tokenizer, force=False, where=where, base_name=name)
        if checkpoint.text_encoder is not None:
            check_weights(manifest, encoder_fingerprint(checkpoint.text_encoder), where=where)
    except CheckpointError as error:
        try:
            check_compatible(manifest, base.text_encoder, base.tokenizer, force=True, where=where, base_name=name)
            forced = True
        except CheckpointError:
            forced = False
        report.update(fits=False, fits_with_force=forced, reason=str(error))
        return report
    reason = (f"{base.argument}'s encoder is the checkpoint's base ({manifest.base_fingerprint[:12]}), with the "
              "same architecture and tokenizer: it can be swapped in")  # fmt: skip
    report.update(fits=True, fits_with_force=True, reason=reason)
    return report


def inspect_sources(first: EncoderSource, second: EncoderSource | None = None) -> dict:
    """The full report for one or two sources: descriptions, then the answer to the question they pose."""
    report = {"inputs": [describe(first)] + ([describe(second)] if second is not None else [])}
    if second is None:
        return report
    checkpoints = [s for s in (first, second) if s.source == "checkpoint"]
    if len(checkpoints) == 1:
        base = second if checkpoints[0] is first else first
        report["answer"] = checkpoint_fit_report(checkpoints[0], base)
    else:
        report["answer"] = shared_encoder_report(first, second)
    return report


# --- output --------------------------------------------------------------------------------------------------


def _format_description(item: dict) -> list[str]:
    arch = item["architecture"]
    where = f"{item['source']}" + (f" {item['pipeline_class']}" if item.get("pipeline_class") else "")
    where += f" at {item['path']}" if item.get("path") else ""
    lines = [f"{item['argument']}: {where}"]
    if "registered" in item:
        reg = item["registered"]
        lines.append(f"  registered    {reg['name']} = {reg['repo_id']} ({'/'.join(reg['kinds'])}, "
                     f"{reg['prediction_type']})")  # fmt: skip
    shape = (f"hidden {arch['hidden_size']}, {arch['num_hidden_layers']} layers, {arch['num_attention_heads']} heads, "
             f"FFN {arch['intermediate_size']}, vocab {arch['vocab_size']}, {arch['hidden_act']}, "
             f"{arch['max_position_embeddings']} positions")  # fmt: skip
    lines.append(f"  text encoder  {arch['model_type']}: {shape}")
    family = FAMILY_NAMES.get(item["encoder_family"], "not a registered base's encoder (e.g. TinyWorld's)")
    lines.append(f"  family        {family}")
    if item.get("parameters") is not None:
        stored = f" (stored as {item['stored_dtype']})" if item.get("stored_dtype") else ""
        lines.append(f"  parameters    {item['parameters']:,}{stored}")
    if item.get("fingerprint"):
        lines.append(f"  fingerprint   {item['fingerprint']}")
    elif "fingerprint" in item:
        lines.append("  fingerprint   unknown (weights not downloaded)")
    tokenizer = item.get("tokenizer")
    if tokenizer:
        size = f"{tokenizer['tokens']:,} tokens, " if "tokens" in tokenizer else ""
        known = f" (fingerprint {tokenizer['fingerprint'][:16]})" if tokenizer.get("fingerprint") else ""
        lines.append(f"  tokenizer     {size}pad {tokenizer['pad_token']!r}{known}")
    if "checkpoint" in item:
        ckpt = item["checkpoint"]
        lines.append(f"  erased        {', '.join(ckpt['concepts'] or [])} from {ckpt['base_model']} (base "
                     f"{(ckpt['base_fingerprint'] or '?')[:16]}), {ckpt['changed_parameters']:,} parameters changed "
                     f"({ckpt['trainable']}), {ckpt['steps']} steps")  # fmt: skip
    if "registered" in item and item["registered"]["encoder_note"]:
        lines.append(f"  known         {item['registered']['encoder_note']}")
    lines += [f"  note          {note}" for note in item["notes"]]
    return lines


def format_report(report: dict) -> str:
    """The human-readable form of `inspect_sources`' report."""
    lines = []
    for item in report["inputs"]:
        lines += _format_description(item) + [""]
    answer = report.get("answer")
    if answer is not None:
        verdict = answer.get("shared", answer.get("fits"))
        word = {True: "yes", False: "no", None: "unknown"}[verdict]
        question = "shared encoder" if answer["question"] == "shared_encoder" else "checkpoint fits"
        lines.append(f"{question}: {word}: {answer['reason']}")
        if answer["question"] == "checkpoint_fits" and verdict is False and answer.get("fits_with_force"):
            lines.append("  (only the base or weights fingerprint differs: --force would swap it in)")
        encoders = answer.get("encoders")
        if encoders and encoders.get("first_difference") and verdict is False:
            diff = encoders["first_difference"]
            lines.append(f"  first differing tensor: {diff['tensor']}")
    return "\n".join(lines).rstrip() + "\n"


def exit_status(report: dict) -> int:
    answer = report.get("answer")
    if answer is None:
        return 0
    return 1 if answer.get("shared", answer.get("fits")) is False else 0
