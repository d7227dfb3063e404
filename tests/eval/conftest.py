"""Tiny components built inline (seconds on a CPU): a tokenizer, image and video pipelines, a CLIP detector."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# one thread: on this 2-core machine, two threads that compete with other work run 10x slower, not faster
torch.set_num_threads(1)

TEXT_HIDDEN = 32


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from t2v_unlearn.tinyworld.tokenizer import build_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tokenizer_dir)


def _text_config(tokenizer, hidden=TEXT_HIDDEN):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, projection_dim=hidden,
        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory, tokenizer):
    """A folder with `image/` (StableDiffusionPipeline) and `video/` (TextToVideoSDPipeline), 32x32 pixels."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        TextToVideoSDPipeline,
        UNet2DConditionModel,  # fmt: skip
        UNet3DConditionModel,
    )
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pipelines")
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8, layers_per_block=1, sample_size=32,
    )  # fmt: skip
    common = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 32), layers_per_block=1,
                  cross_attention_dim=TEXT_HIDDEN, norm_num_groups=16)  # fmt: skip
    unet2d = UNet2DConditionModel(
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        use_linear_projection=True, attention_head_dim=2, **common,  # 2 heads (a head COUNT in the 2D UNet)
    )  # fmt: skip
    unet3d = UNet3DConditionModel(
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        attention_head_dim=16, **common,  # 2 heads of width 16 (a head WIDTH in the 3D UNet)
    )  # fmt: skip
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1
    )
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet2d, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder / "image")  # fmt: skip
    TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet3d,
                          scheduler=scheduler).save_pretrained(folder / "video")  # fmt: skip
    return folder


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory, tokenizer, tokenizer_dir):
    """A tiny CLIPModel folder (random weights, 32x32 input) with its tokenizer, usable as a detector."""
    import shutil

    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("clip")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)  # fmt: skip
    config = CLIPConfig(
        text_config=_text_config(tokenizer).to_dict(), vision_config=vision.to_dict(), projection_dim=16
    )
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tokenizer_dir / name, folder / name)
    return folder


def rendered_frames(subject: str, n: int, video: bool = False, seed: int = 0) -> np.ndarray:
    """Renderer frames of one concept: (n, 64, 64, 3) stills or (n, 8, 64, 64, 3) videos."""
    from t2v_unlearn.tinyworld.render import render, sample_scene

    rng = np.random.default_rng(seed)
    frames = [render(sample_scene(rng, video=video, subject=subject)) for _ in range(n)]
    return np.stack(frames) if video else np.concatenate(frames)


@pytest.fixture(scope="session")
def frames_of():
    """`frames_of(subject, n, video=False)`: renderer frames of one concept."""
    return rendered_frames
