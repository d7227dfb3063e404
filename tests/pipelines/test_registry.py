import json
import os
import subprocess
import sys

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import (
    AnimateDiffPipeline,
    StableDiffusionPipeline,
    TextToVideoSDPipeline,
    UNet2DConditionModel,
    UNet3DConditionModel,
    UNetMotionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from t2v_unlearn.encoders.fingerprint import architecture, encoder_fingerprint, tokenizer_fingerprint
from t2v_unlearn.eval.evaluate import EvalConfig
from t2v_unlearn.pipelines import load_pipeline, resolve_model
from t2v_unlearn.pipelines.registry import (
    LITERATURE,
    MODELS,
    REGISTRY,
    TINYWORLD_MODEL,
    BaseNotDownloadedError,
    RegistryError,
    animatediff_for,
    conventions_for,
    get_base,
    model_entry,
    motion_adapter_folder,
    resolve_registered,
    shared_encoder_architecture,
)
from t2v_unlearn.pipelines.standins import build_standin, save_standin, standin_configs, standin_tokenizer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline, whatever the machine's own cache holds."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def fake_snapshot(cache, repo_id: str, pipe=None):
    """Lay a pipeline folder out as huggingface_hub caches a snapshot (refs/main -> snapshots/<commit>)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    if pipe is not None:
        save_standin(pipe, snapshot)
    else:
        snapshot.mkdir(parents=True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture(scope="module")
def reduced_image():
    return build_standin("sd-2.1-base", scale="reduced")


# --- entries and their conventions ------------------------------------------------------------------------------


def test_tinyworld_is_an_entry_beside_the_real_bases(image_pipe, tmp_path):
    assert set(MODELS) == {"tinyworld", "tinyworld-animatediff", *REGISTRY}
    assert MODELS["tinyworld-animatediff"].kinds == ("video",)
    with pytest.raises(RegistryError, match="serves video only"):
        MODELS["tinyworld-animatediff"].folder("image")
    assert model_entry("tinyworld") is TINYWORLD_MODEL
    assert TINYWORLD_MODEL.folder("video").name == "video"
    assert model_entry(image_pipe) is TINYWORLD_MODEL  # a loaded pipeline: by its folder
    assert conventions_for(image_pipe).prompts == "tinyworld" and conventions_for("tinyworld").suite == "tinyworld"
    export = tmp_path / "export"  # a TinyWorld export: training.json beside the pipeline folders
    (export / "image").mkdir(parents=True)
    (export / "training.json").write_text("{}")
    assert model_entry(export / "image") is TINYWORLD_MODEL
    assert model_entry(export / "animatediff") is MODELS["tinyworld-animatediff"]
    assert model_entry(tmp_path) is None and conventions_for(tmp_path) == LITERATURE  # an unknown folder
    assert conventions_for("") == LITERATURE


def test_a_cached_snapshot_belongs_to_its_base(tmp_path):
    snapshot = fake_snapshot(tmp_path / "hub", "damo-vilab/text-to-video-ms-1.7b")
    assert model_entry(snapshot) is get_base("modelscope-1.7b")
    alias = fake_snapshot(tmp_path / "hub", "runwayml/stable-diffusion-v1-5")
    assert model_entry(alias) is get_base("sd-1.5")
    assert conventions_for(alias) == LITERATURE
    assert model_entry("sd-2.1-base").conventions.suite == "sd2"


# --- the published configs --------------------------------------------------------------------------------------


def test_registry_holds_the_published_facts():
    assert set(REGISTRY) == {"sd-2.1-base", "sd-2.1", "modelscope-1.7b", "zeroscope-v2-576w", "sd-1.5",
                             "animatediff-sd-1.5"}  # fmt: skip
    base, v768 = get_base("sd-2.1-base"), get_base("sd-2.1")
    assert (base.prediction_type, base.unet["sample_size"], base.height) == ("epsilon", 64, 512)
    assert (v768.prediction_type, v768.unet["sample_size"], v768.height) == ("v_prediction", 96, 768)
    assert base.unet["attention_head_dim"] == [5, 10, 20, 20] and base.unet["use_linear_projection"]
    video = get_base("modelscope-1.7b")
    assert video.repo_id == "damo-vilab/text-to-video-ms-1.7b" and video.kinds == ("video",)
    assert video.unet_class == "UNet3DConditionModel" and video.unet["attention_head_dim"] == 64
    assert video.unet["sample_size"] == 32 and video.vae["scaling_factor"] == 0.18215
    assert get_base("zeroscope-v2-576w").repo_id == "cerspense/zeroscope_v2_576w"
    sd15 = get_base("sd-1.5")
    assert architecture(sd15.text_encoder)["hidden_size"] == 768 and sd15.text_encoder["hidden_act"] == "quick_gelu"
    assert sd15.tokenizer["pad_token"] == "<|endoftext|>" and base.tokenizer["pad_token"] == "!"
    animated = get_base("animatediff-sd-1.5")
    assert animated.repo_id == "guoyww/animatediff-motion-adapter-v1-5-2" and animated.animates == "sd-1.5"
    assert (animated.text_encoder, animated.tokenizer, animated.unet) == (sd15.text_encoder, sd15.tokenizer, sd15.unet)
    assert animated.motion_adapter["block_out_channels"] == sd15.unet["block_out_channels"]
    assert animated.motion_adapter["use_motion_mid_block"] and animated.motion_adapter["motion_max_seq_length"] == 32
    with pytest.raises(KeyError, match="sd-2.1-base"):
        get_base("sd-3")


def test_encoder_families_by_config():
    assert shared_encoder_architecture("sd-2.1-base", "modelscope-1.7b")
    assert shared_encoder_architecture("sd-2.1", "zeroscope-v2-576w")
    assert not shared_encoder_architecture("sd-1.5", "modelscope-1.7b")
    assert shared_encoder_architecture("sd-1.5", "animatediff-sd-1.5")


def test_configs_build_the_published_parameter_counts():
    # on the meta device: the real shapes without the memory; the counts are the published models'
    counts = {}
    with init_empty_weights():
        for name in ("sd-2.1-base", "modelscope-1.7b", "sd-1.5"):
            configs = standin_configs(name, "real")
            unet_class = UNet3DConditionModel if name == "modelscope-1.7b" else UNet2DConditionModel
            unet = unet_class.from_config(configs["unet"])
            encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
            counts[name] = (sum(p.numel() for p in unet.parameters()), sum(p.numel() for p in encoder.parameters()))
    assert counts["sd-2.1-base"] == (865_910_724, 340_387_840)
    assert counts["modelscope-1.7b"] == (1_411_233_860, 340_387_840)
    assert counts["sd-1.5"] == (859_520_964, 123_060_480)


# --- resolution through the Hugging Face cache ------------------------------------------------------------------


def test_unknown_name_is_not_the_registrys():
    assert resolve_registered("not-a-base", "image") is None


def test_missing_weights_say_what_to_download(empty_cache):
    with pytest.raises(BaseNotDownloadedError) as info:
        resolve_registered("sd-2.1-base", "image")
    message = str(info.value)
    assert "stabilityai/stable-diffusion-2-1-base" in message and "hf download" in message
    assert "HF_HUB_OFFLINE" in message and str(empty_cache) in message
    # through load_pipeline's own resolution too: a FileNotFoundError the CLI reports
    with pytest.raises(FileNotFoundError, match="hf download damo-vilab/text-to-video-ms-1.7b"):
        resolve_model("modelscope-1.7b", "video")


def test_sd15_is_refused_as_a_video_model_with_the_reason(empty_cache):
    with pytest.raises(RegistryError) as info:
        resolve_model("sd-1.5", "video")
    message = str(info.value)
    assert "use animatediff-sd-1.5" in message and "hidden 768 vs 1024" in message
    with pytest.raises(RegistryError, match="erase on sd-1.5"):
        resolve_model("animatediff-sd-1.5", "image")


@pytest.fixture
def animatediff_cache(empty_cache):
    """SD 1.5 and AnimateDiff's v1-5-2 motion adapter, reduced stand-ins, laid out as the hub caches them."""
    animated = build_standin("animatediff-sd-1.5", scale="reduced")
    sd15 = build_standin("sd-1.5", scale="reduced")
    base = fake_snapshot(empty_cache, "stable-diffusion-v1-5/stable-diffusion-v1-5", sd15)
    adapter = fake_snapshot(empty_cache, "guoyww/animatediff-motion-adapter-v1-5-2")
    animated.motion_adapter.save_pretrained(adapter)
    return {"base": base, "adapter": adapter, "animated": animated, "cache": empty_cache}


def test_the_animatediff_pair_loads_from_two_cached_repos(animatediff_cache):
    assert resolve_registered("animatediff-sd-1.5", "video") == animatediff_cache["base"]  # the encoder's home
    assert motion_adapter_folder("animatediff-sd-1.5") == animatediff_cache["adapter"]
    assert motion_adapter_folder("sd-1.5") is None
    assert animatediff_for("sd-1.5") == animatediff_for(animatediff_cache["base"]) == "animatediff-sd-1.5"
    assert animatediff_for("sd-2.1-base") is None and animatediff_for("tinyworld") is None
    assert EvalConfig(model="sd-1.5", kind="all").model_for("animatediff") == "animatediff-sd-1.5"
    pipe = load_pipeline("video", "animatediff-sd-1.5", progress=False)
    assert isinstance(pipe, AnimateDiffPipeline) and isinstance(pipe.unet, UNetMotionModel)
    image = load_pipeline("image", "sd-1.5", progress=False)
    # one encoder: SD 1.5's own, bit for bit, and the adapter's motion modules as saved
    assert encoder_fingerprint(pipe.text_encoder) == encoder_fingerprint(image.text_encoder)
    assert tokenizer_fingerprint(pipe.tokenizer) == tokenizer_fingerprint(image.tokenizer)
    saved = animatediff_cache["animated"].motion_adapter.state_dict()
    loaded = pipe.unet.down_blocks[0].motion_modules.state_dict()
    assert all(torch.equal(t, saved[f"down_blocks.0.motion_modules.{k}"]) for k, t in loaded.items())
    frames = pipe("a dog running", num_frames=3, height=64, width=64, num_inference_steps=1, output_type="np").frames
    assert frames.shape == (1, 3, 64, 64, 3)


def test_an_absent_adapter_or_base_says_which_repo_to_download(animatediff_cache):
    import shutil

    cache, adapter_repo = animatediff_cache["cache"], "guoyww/animatediff-motion-adapter-v1-5-2"
    shutil.rmtree(animatediff_cache["adapter"].parents[1])
    with pytest.raises(BaseNotDownloadedError, match=f'hf download {adapter_repo} --include "config.json"'):
        load_pipeline("video", "animatediff-sd-1.5", progress=False)
    animatediff_cache["animated"].motion_adapter.save_pretrained(fake_snapshot(cache, adapter_repo))
    shutil.rmtree(animatediff_cache["base"].parents[1])
    with pytest.raises(BaseNotDownloadedError, match="stable-diffusion-v1-5/stable-diffusion-v1-5"):
        resolve_model("animatediff-sd-1.5", "video")


def test_video_base_refused_as_image_model_points_to_an_image_base(empty_cache):
    with pytest.raises(RegistryError, match="sd-2.1-base or sd-2.1"):
        resolve_registered("zeroscope-v2-576w", "image")
    with pytest.raises(RegistryError, match="modelscope-1.7b or zeroscope-v2-576w"):
        resolve_registered("sd-2.1", "video")


def test_cached_snapshot_resolves_offline_and_loads(empty_cache, reduced_image):
    snapshot = fake_snapshot(empty_cache, "stabilityai/stable-diffusion-2-1-base", reduced_image)
    assert resolve_registered("sd-2.1-base", "image") == snapshot
    pipe = load_pipeline("image", "sd-2.1-base", progress=False)
    assert isinstance(pipe, StableDiffusionPipeline)
    assert encoder_fingerprint(pipe.text_encoder) == encoder_fingerprint(reduced_image.text_encoder)
    assert pipe.tokenizer.pad_token == "!" and pipe.scheduler.config.prediction_type == "epsilon"


def test_alias_repo_id_is_found(empty_cache):
    video = build_standin("modelscope-1.7b", scale="reduced")
    snapshot = fake_snapshot(empty_cache, "ali-vilab/text-to-video-ms-1.7b", video)
    assert resolve_registered("modelscope-1.7b", "video") == snapshot
    assert isinstance(load_pipeline("video", "modelscope-1.7b", progress=False), TextToVideoSDPipeline)


def test_incomplete_snapshot_names_what_is_missing(empty_cache):
    snapshot = fake_snapshot(empty_cache, "stabilityai/stable-diffusion-2-1")
    (snapshot / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(BaseNotDownloadedError) as info:
        resolve_registered("sd-2.1", "image")
    assert "incomplete (missing text_encoder/config.json, text_encoder weights, unet/config.json" in str(info.value)


# --- stand-ins ----------------------------------------------------------------------------------------------------


def test_standins_of_one_family_share_the_encoder(reduced_image):
    video = build_standin("modelscope-1.7b", scale="reduced")
    other_weights = build_standin("zeroscope-v2-576w", scale="reduced", encoder_seed=1)
    sd15 = build_standin("sd-1.5", scale="reduced")
    assert isinstance(video, TextToVideoSDPipeline) and isinstance(reduced_image, StableDiffusionPipeline)
    assert encoder_fingerprint(video.text_encoder) == encoder_fingerprint(reduced_image.text_encoder)
    assert architecture(other_weights.text_encoder.config) == architecture(reduced_image.text_encoder.config)
    assert encoder_fingerprint(other_weights.text_encoder) != encoder_fingerprint(reduced_image.text_encoder)
    assert sd15.text_encoder.config.hidden_size < reduced_image.text_encoder.config.hidden_size
    assert (reduced_image.tokenizer.pad_token, sd15.tokenizer.pad_token) == ("!", "<|endoftext|>")
    # the UNets are drawn from their own seeds: different models, the same encoder
    assert video.unet.config.cross_attention_dim == reduced_image.text_encoder.config.hidden_size
    assert reduced_image.vae_scale_factor == 8 and reduced_image.standin["standin_of"] == "sd-2.1-base"


def test_standin_dtype_keeps_the_encoder_values():
    half = build_standin("sd-2.1-base", scale="reduced", dtype=torch.bfloat16)
    full = build_standin("modelscope-1.7b", scale="reduced")
    assert half.unet.dtype == torch.bfloat16 and half.text_encoder.dtype == torch.bfloat16
    expected = full.text_encoder.state_dict()
    for name, tensor in half.text_encoder.state_dict().items():
        assert torch.equal(tensor, expected[name].to(torch.bfloat16)), name


def test_standin_tokenizer_is_the_same_in_every_process():
    # checkpoints are checked against the tokenizer fingerprint, so a stand-in saved by one process must match
    # one built by another (hash randomisation must not change the merges)
    code = (
        "from t2v_unlearn.pipelines.standins import standin_tokenizer as t; "
        "from t2v_unlearn.encoders.fingerprint import tokenizer_fingerprint as f; print(f(t('sd-2.1')))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == tokenizer_fingerprint(standin_tokenizer("sd-2.1-base"))
    tokenizer = standin_tokenizer("modelscope-1.7b")
    assert tokenizer.tokenize("a photo of a dog") == ["a</w>", "p", "ho", "t", "o</w>", "of</w>", "a</w>", "dog</w>"]
    assert tokenizer("a dog").input_ids[0] == tokenizer.bos_token_id and len(tokenizer) < 1000


def test_an_encoder_erased_on_sd15_runs_in_the_animatediff_pair(animatediff_cache, tmp_path):
    import numpy as np

    from t2v_unlearn.encoders import EraseConfig, erase_concept, save_checkpoint
    from t2v_unlearn.encoders import load_pipeline as load_with_checkpoint
    from t2v_unlearn.encoders.inspect import inspect_sources, resolve_source

    image = load_pipeline("image", "sd-1.5", progress=False)
    shots = {"snoopy": np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)}
    config = EraseConfig(num_shots=2, batch_size=2, max_steps=2, stop_rule="max-steps", preserve_batch=2)
    result = erase_concept(image, ["snoopy"], config, progress=False, shots=shots)
    folder = save_checkpoint(tmp_path / "erased", result, image.text_encoder, image.tokenizer, config, "sd-1.5", {})
    # the fit checks pass without --force: the pair runs sd-1.5's own encoder
    video = load_with_checkpoint("video", "animatediff-sd-1.5", text_encoder=folder, progress=False)
    assert isinstance(video, AnimateDiffPipeline)
    assert encoder_fingerprint(video.text_encoder) == encoder_fingerprint(result.text_encoder)
    assert encoder_fingerprint(video.text_encoder) != encoder_fingerprint(image.text_encoder)
    report = inspect_sources(resolve_source("sd-1.5"), resolve_source("animatediff-sd-1.5"))
    assert report["answer"]["shared"] is True
