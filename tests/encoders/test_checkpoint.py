import dataclasses
import json
import re
import shutil

import pytest
import torch
from diffusers import StableDiffusionPipeline, TextToVideoSDPipeline
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

from t2v_unlearn.encoders import (
    CheckpointError,
    EraseConfig,
    Manifest,
    erase_concept,
    load_pipeline,
    load_text_encoder,
    save_checkpoint,
)
from t2v_unlearn.encoders.checkpoint import COMPACT_FILE, apply_compact, check_compatible, model_card, read_manifest
from t2v_unlearn.encoders.fingerprint import encoder_fingerprint
from t2v_unlearn.pipelines import tinyworld_path

FAST = dict(num_shots=2, shot_steps=2, max_steps=3, check_every=3, stop_rule="max-steps", batch_size=2)
PROMPTS = ["a picture of zorbo", "a star in dotted style", ""]


def _hidden(encoder, tokenizer):
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids)[0]


@pytest.fixture(scope="module")
def erased(image_pipe, tmp_path_factory):
    config = EraseConfig(**FAST)
    result = erase_concept(image_pipe, ["zorbo"], config, progress=False)
    folder = tmp_path_factory.mktemp("ckpt") / "zorbo"
    save_checkpoint(folder, result, image_pipe.text_encoder, image_pipe.tokenizer, config, "tinyworld",
                    {"load": 0.1, **result.timings})  # fmt: skip
    return result, folder


@pytest.fixture(scope="module")
def erased_lora(image_pipe, tmp_path_factory):
    config = EraseConfig(**FAST, trainable="lora", lr=1e-3)
    result = erase_concept(image_pipe, ["star"], config, progress=False)
    folder = tmp_path_factory.mktemp("ckpt") / "star-lora"
    save_checkpoint(folder, result, image_pipe.text_encoder, image_pipe.tokenizer, config, "tinyworld", {})
    return result, folder


def test_checkpoint_layout_and_manifest(erased, image_pipe):
    result, folder = erased
    for name in ("text_encoder/config.json", "text_encoder/model.safetensors", COMPACT_FILE, "unlearn.json",
                 "README.md"):  # fmt: skip
        assert (folder / name).is_file(), name
    manifest = json.loads((folder / "unlearn.json").read_text())
    assert manifest["concepts"] == ["zorbo"] and manifest["categories"] == {"zorbo": "id"}
    assert manifest["config"] == EraseConfig(**FAST).to_dict()
    assert EraseConfig(**manifest["config"]) == EraseConfig(**FAST)  # the saved config reads back as it was
    assert manifest["base_fingerprint"] == encoder_fingerprint(image_pipe.text_encoder)
    assert manifest["unlearned_fingerprint"] == encoder_fingerprint(result.text_encoder)
    assert {"load", "shots", "optimise", "save"} <= set(manifest["timings"])
    assert {"torch", "diffusers", "transformers"} <= set(manifest["versions"])
    assert 0 < manifest["sizes"]["compact_bytes"] < manifest["sizes"]["full_bytes"]
    assert "UNet still holds the concept" in (folder / "README.md").read_text()
    assert not list(folder.parent.glob(".*tmp"))


def test_manifest_records_what_the_category_defaults_resolved_to(erased, erased_lora):
    # the config leaves robust, the attack's handle and the variant sentences to the category (None): the manifest
    # says what ran, a character's plain erase and a shape's robust one under every spelling
    for (_, folder), expected in zip((erased, erased_lora), (
        {"robust": False, "robust_handle": None, "variant_contexts": 1, "gap_ratio": None, "shot_steps": 2,
         "eval_timesteps": None, "anchors": {"zorbo": "something"}},
        {"robust": True, "robust_handle": "spellings", "variant_contexts": 3, "gap_ratio": None, "shot_steps": 2,
         "eval_timesteps": None, "anchors": {"star": "triangle"}},
    ), strict=True):  # fmt: skip
        manifest = json.loads((folder / "unlearn.json").read_text())
        assert manifest["config"]["robust"] is None and manifest["config"]["robust_handle"] is None
        assert manifest["resolved"] == expected
        assert read_manifest(folder).resolved == expected
        (anchor,) = expected["anchors"].values()  # the model card names it
        assert f"drawn as {anchor} through" in model_card(read_manifest(folder))
    several = dataclasses.replace(read_manifest(folder), resolved={"anchors": {"star": "triangle, cross"}})
    assert "drawn toward triangle, cross at once through" in model_card(several)  # an erase toward several anchors


def test_plain_transformers_loads_the_encoder(erased, image_pipe):
    result, folder = erased
    plain = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    assert torch.equal(_hidden(plain, image_pipe.tokenizer), _hidden(result.text_encoder, image_pipe.tokenizer))


def test_compact_form_reproduces_the_full_one_exactly(erased, image_pipe):
    _, folder = erased
    full = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").state_dict()
    compact = apply_compact(image_pipe.text_encoder, load_file(str(folder / COMPACT_FILE))).state_dict()
    assert all(torch.equal(full[k], compact[k]) for k in full)
    only_compact = folder.parent / "compact-only"
    shutil.copytree(folder, only_compact)
    shutil.rmtree(only_compact / "text_encoder")
    loaded = load_text_encoder(only_compact, image_pipe.text_encoder, image_pipe.tokenizer).state_dict()
    assert all(torch.equal(full[k], loaded[k]) for k in full)


def test_swap_into_image_and_video_pipelines(erased):
    result, folder = erased
    image = load_pipeline("image", text_encoder=folder, progress=False)
    video = load_pipeline("video", text_encoder=folder, progress=False)
    animated = load_pipeline("video", "tinyworld-animatediff", text_encoder=folder, progress=False)
    expected = _hidden(result.text_encoder, image.tokenizer)
    assert type(animated).__name__ == "AnimateDiffPipeline"  # one checkpoint, three pipelines
    for pipe in (image, video, animated):
        assert torch.equal(_hidden(pipe.text_encoder, pipe.tokenizer), expected)


def test_the_pipelines_layer_takes_encoders_not_checkpoint_folders(erased):
    from t2v_unlearn.pipelines import load_pipeline as load_base

    result, folder = erased
    with pytest.raises(TypeError, match="t2v_unlearn.encoders.load_pipeline"):
        load_base("image", text_encoder=folder, progress=False)
    image = load_base("image", text_encoder=result.text_encoder, progress=False)  # a loaded encoder is fine
    assert image.text_encoder is result.text_encoder


def _manifest_copy(folder, tmp_path, **changes):
    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    manifest = json.loads((copy / "unlearn.json").read_text())
    manifest.update(changes)
    (copy / "unlearn.json").write_text(json.dumps(manifest))
    return copy


def test_architecture_mismatch_is_refused_even_with_force(erased, image_pipe, tmp_path):
    _, folder = erased
    arch = read_manifest(folder).base_architecture | {"hidden_size": 768, "num_hidden_layers": 12}
    edited = _manifest_copy(folder, tmp_path, base_architecture=arch)
    for force in (False, True):
        with pytest.raises(CheckpointError, match="hidden_size 768 vs 128"):
            load_text_encoder(edited, image_pipe.text_encoder, image_pipe.tokenizer, force=force)


def test_sd1_encoder_into_sd2_sized_base_names_the_reason(erased, image_pipe):
    _, folder = erased
    manifest = dataclasses.replace(read_manifest(folder), base_architecture={"hidden_size": 768})
    config = CLIPTextConfig(vocab_size=50, hidden_size=1024, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=77)  # fmt: skip
    with pytest.raises(CheckpointError, match="SD 1.x"):
        check_compatible(manifest, CLIPTextModel(config), image_pipe.tokenizer, base_name="ModelScope")


def test_tokenizer_mismatch_is_refused(erased, image_pipe, tmp_path):
    _, folder = erased
    edited = _manifest_copy(folder, tmp_path, tokenizer_fingerprint="0" * 64)
    with pytest.raises(CheckpointError, match="tokenizer"):
        load_text_encoder(edited, image_pipe.text_encoder, image_pipe.tokenizer, force=True)


def test_base_fingerprint_mismatch_needs_force(erased, image_pipe, tmp_path):
    _, folder = erased
    edited = _manifest_copy(folder, tmp_path, base_fingerprint="f" * 64)
    with pytest.raises(CheckpointError, match="--force"):
        load_text_encoder(edited, image_pipe.text_encoder, image_pipe.tokenizer)
    assert load_text_encoder(edited, image_pipe.text_encoder, image_pipe.tokenizer, force=True) is not None


def test_a_different_base_is_described_by_the_tensors_erase_left_unchanged(erased, image_pipe, tmp_path):
    import copy

    _, folder = erased
    edited = _manifest_copy(folder, tmp_path, base_fingerprint="f" * 64)
    # the same base, only re-saved (the fingerprint says "other", the unchanged tensors say "equal")
    with pytest.raises(CheckpointError, match="tensors erase left unchanged equal"):
        load_text_encoder(edited, image_pipe.text_encoder, image_pipe.tokenizer)
    # a base that really differs: one tensor erase never touched is moved
    other = copy.deepcopy(image_pipe.text_encoder)
    name = "embeddings.position_embedding.weight"
    with torch.no_grad():
        other.get_parameter(name).add_(0.25)
    with pytest.raises(CheckpointError, match=f"1 of the .* differ; the largest difference is 0.25 in {name}"):
        load_text_encoder(folder, other, image_pipe.tokenizer)


def test_corrupt_and_missing_checkpoints_get_clear_errors(erased, image_pipe, tmp_path):
    _, folder = erased
    with pytest.raises(CheckpointError, match="does not exist"):
        load_text_encoder(tmp_path / "nothing", image_pipe.text_encoder, image_pipe.tokenizer)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    weights = broken / "text_encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_text_encoder(broken, image_pipe.text_encoder, image_pipe.tokenizer)
    (broken / "unlearn.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_text_encoder(broken, image_pipe.text_encoder, image_pipe.tokenizer)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda m: None, "holds NoneType"),
        (lambda m: [m], "holds list"),
        (lambda m: {**m, "concepts": []}, "non-empty list"),
        (lambda m: {**m, "concepts": "zorbo"}, "non-empty list"),
        (lambda m: {**m, "concepts": [3]}, "non-empty list"),
        (lambda m: {**m, "config": "fast"}, "'config' must be an object"),
    ],
)
def test_a_manifest_of_the_wrong_shape_is_one_clear_error(erased, tmp_path, change, words):
    _, folder = erased
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    manifest = json.loads((broken / "unlearn.json").read_text())
    (broken / "unlearn.json").write_text(json.dumps(change(manifest)))
    with pytest.raises(CheckpointError, match=words):
        read_manifest(broken)


def test_the_manifest_reads_back_as_written_with_its_extra_keys(erased, tmp_path):
    _, folder = erased
    raw = json.loads((folder / "unlearn.json").read_text())
    manifest = read_manifest(folder)
    assert manifest.to_dict() == raw  # the file's shape: the same keys and values, nothing added
    assert manifest.concepts == ["zorbo"] and manifest.lora_fingerprint is None and "lora_fingerprint" not in raw
    extended = dataclasses.replace(manifest, extra={"erase_efficacy": {"variant": "fast", "m_score": 0.25}})
    assert Manifest.from_dict(extended.to_dict(), "x") == extended
    assert extended.to_dict()["erase_efficacy"] == {"variant": "fast", "m_score": 0.25}  # at the top level
    copy = tmp_path / "extended"
    shutil.copytree(folder, copy)
    (copy / "unlearn.json").write_text(json.dumps(extended.to_dict(), indent=2, sort_keys=True))
    assert read_manifest(copy) == extended


def test_save_checkpoint_keeps_extra_keys_and_refuses_ones_that_shadow_fields(erased, image_pipe, tmp_path):
    result, _ = erased

    def save(out, extra):
        return save_checkpoint(out, result, image_pipe.text_encoder, image_pipe.tokenizer, EraseConfig(**FAST),
                               "tinyworld", {}, extra=extra)  # fmt: skip

    manifest = read_manifest(save(tmp_path / "ckpt", {"process_seconds": 1.5}))
    assert manifest.extra == {"process_seconds": 1.5} and manifest.to_dict()["process_seconds"] == 1.5
    with pytest.raises(ValueError, match=r"\['steps'\]"):
        save(tmp_path / "clash", {"steps": 99})
    assert not (tmp_path / "clash").exists()


def _minimal_manifest(**changes) -> dict:
    """unlearn.json as an older version (or a hand) wrote it: only the fields loading checks."""
    data = {"concepts": ["zorbo"], "base_fingerprint": "a" * 64, "tokenizer_fingerprint": "b" * 64,
            "base_architecture": {"hidden_size": 128}}  # fmt: skip
    return {**data, **changes}


def test_a_manifest_without_optional_fields_reads_with_the_defaults(erased, image_pipe, tmp_path):
    manifest = Manifest.from_dict(_minimal_manifest(base_model=None), "x")
    assert manifest.unlearned_fingerprint is None and manifest.base_model is None and manifest.steps is None
    assert manifest.changed_tensors is None and manifest.config == {} and manifest.timings == {}
    written = manifest.to_dict()  # fields not recorded stay out, rather than being written as null
    assert not {"unlearned_fingerprint", "base_model", "steps", "lora_fingerprint"} & set(written)
    assert Manifest.from_dict(written, "x") == manifest
    # a real checkpoint from before unlearned_fingerprint was recorded: loads, its weights simply not checked
    _, folder = erased
    raw = json.loads((folder / "unlearn.json").read_text())
    older = tmp_path / "older"
    shutil.copytree(folder, older)
    (older / "unlearn.json").write_text(json.dumps({k: v for k, v in raw.items() if k != "unlearned_fingerprint"}))
    assert read_manifest(older).unlearned_fingerprint is None
    assert load_text_encoder(older, image_pipe.text_encoder, image_pipe.tokenizer) is not None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"steps": "ten"}, "'steps' must be an integer"),
        ({"steps": True}, "'steps' must be an integer"),
        ({"concepts": "zorbo"}, "'concepts' must be a non-empty list of names"),
        ({"base_model": 3}, "'base_model' must be a string"),
        ({"base_fingerprint": None}, "'base_fingerprint' must be a string"),
        ({"changed_tensors": ["a", 1]}, "'changed_tensors' must be a list of names"),
        ({"timings": [1.0]}, "'timings' must be an object"),
        ({"history": {}}, "'history' must be a list"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_naming_the_file(tmp_path, change, words):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "unlearn.json").write_text(json.dumps(_minimal_manifest(**change)))
    with pytest.raises(CheckpointError, match=re.escape(f"{folder / 'unlearn.json'}: {words}; re-run")):
        read_manifest(folder)


def test_existing_output_is_refused(erased, image_pipe):
    result, folder = erased
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_checkpoint(folder, result, image_pipe.text_encoder, image_pipe.tokenizer, EraseConfig(), "x", {})


def test_lora_patch_is_small_and_loads_with_plain_diffusers(erased_lora, image_pipe):
    result, folder = erased_lora
    lora_file = folder / "lora" / "pytorch_lora_weights.safetensors"
    assert lora_file.is_file() and lora_file.stat().st_size < 1024 * 1024
    expected = _hidden(result.text_encoder, image_pipe.tokenizer)
    assert not torch.allclose(expected, _hidden(image_pipe.text_encoder, image_pipe.tokenizer), atol=1e-4)

    image = StableDiffusionPipeline.from_pretrained(tinyworld_path("image"), dtype=torch.float32)
    image.load_lora_weights(folder / "lora")
    assert torch.allclose(_hidden(image.text_encoder, image.tokenizer), expected, atol=1e-4)

    video = TextToVideoSDPipeline.from_pretrained(tinyworld_path("video"), dtype=torch.float32)
    state = TextToVideoSDPipeline.lora_state_dict(folder / "lora")[0]
    TextToVideoSDPipeline.load_lora_into_text_encoder(state, network_alphas=None, text_encoder=video.text_encoder)
    assert torch.allclose(_hidden(video.text_encoder, video.tokenizer), expected, atol=1e-4)

    only_lora = folder.parent / "lora-only"
    shutil.copytree(folder, only_lora)
    shutil.rmtree(only_lora / "text_encoder")
    (only_lora / COMPACT_FILE).unlink()
    merged = load_text_encoder(only_lora, image_pipe.text_encoder, image_pipe.tokenizer)
    assert torch.allclose(_hidden(merged, image_pipe.tokenizer), expected, atol=1e-4)


def test_half_precision_checkpoint_is_half_the_size_and_loads_the_same_way(erased, image_pipe, tmp_path):
    result, folder = erased
    half = save_checkpoint(tmp_path / "half", result, image_pipe.text_encoder, image_pipe.tokenizer,
                           EraseConfig(**FAST), "tinyworld", {}, dtype=torch.float16)  # fmt: skip
    manifest, full_manifest = read_manifest(half), read_manifest(folder)
    assert manifest.saved_dtype == "float16" and full_manifest.saved_dtype == "float32"
    for form in ("full_bytes", "compact_bytes"):
        assert manifest.sizes[form] < 0.6 * full_manifest.sizes[form]
    plain = CLIPTextModel.from_pretrained(half, subfolder="text_encoder")
    assert plain.dtype == torch.float16 and encoder_fingerprint(plain) == manifest.unlearned_fingerprint
    loaded = load_text_encoder(half, image_pipe.text_encoder, image_pipe.tokenizer)
    exact = _hidden(result.text_encoder, image_pipe.tokenizer)
    assert torch.allclose(_hidden(loaded, image_pipe.tokenizer), exact, atol=2e-2 * exact.abs().max().item())
    compact_only = tmp_path / "half-compact"
    shutil.copytree(half, compact_only)
    shutil.rmtree(compact_only / "text_encoder")
    compact = load_text_encoder(compact_only, image_pipe.text_encoder, image_pipe.tokenizer).state_dict()
    assert all(torch.equal(compact[k], v) for k, v in loaded.state_dict().items())


def _tamper(path, how):
    """Overwrite a safetensors file's float tensors with NaN or random values of the same shapes."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as file:
        metadata = file.metadata()
    generator = torch.Generator().manual_seed(0)
    state = {name: (torch.full_like(t, float("nan")) if how == "nan" else torch.randn(t.shape, generator=generator,
                                                                                      dtype=t.dtype))
             if t.is_floating_point() else t for name, t in load_file(str(path)).items()}  # fmt: skip
    save_file(state, str(path), metadata=metadata)
    return state


@pytest.mark.parametrize("how", ["nan", "random"])
def test_weights_altered_after_saving_are_refused_unless_forced(erased, image_pipe, tmp_path, how):
    _, folder = erased
    altered = tmp_path / "altered"
    shutil.copytree(folder, altered)
    state = _tamper(altered / "text_encoder" / "model.safetensors", how)
    with pytest.raises(CheckpointError, match=f"{altered} holds other weights than `erase` saved.*--force"):
        load_text_encoder(altered, image_pipe.text_encoder, image_pipe.tokenizer)
    loaded = load_text_encoder(altered, image_pipe.text_encoder, image_pipe.tokenizer, force=True).state_dict()
    assert all(torch.equal(loaded[k], v) or torch.isnan(v).all() for k, v in state.items())

    from t2v_unlearn.encoders.inspect import format_report, inspect_sources, resolve_source

    report = inspect_sources(resolve_source(str(altered)), resolve_source("tinyworld"))
    assert report["answer"]["fits"] is False and "holds other weights" in report["answer"]["reason"]
    assert "--force would swap it in" in format_report(report)
    assert inspect_sources(resolve_source(str(folder)), resolve_source("tinyworld"))["answer"]["fits"] is True

    shutil.rmtree(altered / "text_encoder")  # the compact form is checked the same way
    _tamper(altered / COMPACT_FILE, how)
    with pytest.raises(CheckpointError, match="holds other weights"):
        load_text_encoder(altered, image_pipe.text_encoder, image_pipe.tokenizer)
    assert load_text_encoder(altered, image_pipe.text_encoder, image_pipe.tokenizer, force=True) is not None


def test_an_altered_lora_patch_is_refused_unless_forced(erased_lora, image_pipe, tmp_path):
    _, folder = erased_lora
    only_lora = tmp_path / "lora-only"
    shutil.copytree(folder, only_lora)
    shutil.rmtree(only_lora / "text_encoder")
    (only_lora / COMPACT_FILE).unlink()
    assert read_manifest(only_lora).lora_fingerprint
    load_text_encoder(only_lora, image_pipe.text_encoder, image_pipe.tokenizer)  # untouched: accepted
    _tamper(only_lora / "lora" / "pytorch_lora_weights.safetensors", "random")
    with pytest.raises(CheckpointError, match="lora_fingerprint.*--force"):
        load_text_encoder(only_lora, image_pipe.text_encoder, image_pipe.tokenizer)
    assert load_text_encoder(only_lora, image_pipe.text_encoder, image_pipe.tokenizer, force=True) is not None


def test_overwrite_replaces_a_checkpoint_but_no_other_folder(erased, image_pipe, tmp_path):
    result, _ = erased

    def save(out, overwrite):
        return save_checkpoint(out, result, image_pipe.text_encoder, image_pipe.tokenizer, EraseConfig(**FAST),
                               "tinyworld", {}, overwrite=overwrite)  # fmt: skip

    out = save(tmp_path / "ckpt", overwrite=False)
    (out / ".t2v_unlearn").unlink()  # a checkpoint from before the marker: its unlearn.json still marks it ours
    (out / "stale.txt").write_text("from the old checkpoint")
    save(out, overwrite=True)
    assert json.loads((out / ".t2v_unlearn").read_text())["kind"] == "checkpoint"
    assert not (out / "stale.txt").exists() and [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="did not write"):
        save(mine, overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
