"""The TinyWorld model family: the real diffusers/transformers classes at tiny sizes.

One text encoder and one VAE are shared by an image UNet (`UNet2DConditionModel`), a video UNet
(`UNet3DConditionModel`, initialised from the image UNet as ModelScope was from Stable Diffusion) and
AnimateDiff's motion modules (`MotionAdapter`) for the image UNet, plus an independent `CLIPModel` that serves as
the evaluator. Sizes were picked from the costs in
shared/TECH-NOTES.md so that all stages train in about an hour on a 2-core CPU.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel, UNet3DConditionModel
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig

LATENT_SIZE = 16
TEXT_HIDDEN = 128
# diffusers' naming legacy: `attention_head_dim` is the number of heads per block in UNet2DConditionModel but
# the width of a head in UNet3DConditionModel (SD 2.1 passes [5, 10, 20, 20], ModelScope 64: both 64 wide).
# Both UNets get heads of one fixed width, so the video UNet computes exactly what the image UNet does.
HEAD_WIDTH = 16
UNET_CHANNELS = (64, 128)
UNET_LAYERS_PER_BLOCK = 1


def text_encoder_config(tokenizer: CLIPTokenizer, hidden_size: int = TEXT_HIDDEN) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        projection_dim=hidden_size,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def make_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(text_encoder_config(tokenizer))


def make_vae() -> AutoencoderKL:
    """64x64x3 images <-> 16x16x4 latents."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
    )


def make_unet2d() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=UNET_CHANNELS,
        layers_per_block=UNET_LAYERS_PER_BLOCK,
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=tuple(c // HEAD_WIDTH for c in UNET_CHANNELS),
        use_linear_projection=True,
        norm_num_groups=32,
    )


def make_unet3d() -> UNet3DConditionModel:
    return UNet3DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D"),
        up_block_types=("CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=UNET_CHANNELS,
        layers_per_block=UNET_LAYERS_PER_BLOCK,
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=HEAD_WIDTH,
        norm_num_groups=32,
    )


def unet3d_from_unet2d(unet2d: UNet2DConditionModel) -> UNet3DConditionModel:
    """A video UNet whose spatial layers are the image UNet's and whose temporal layers start as identity."""
    unet3d = make_unet3d()
    missing, unexpected = unet3d.load_state_dict(unet2d.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"image UNet tensors with no place in the video UNet: {unexpected[:5]}")
    # diffusers zero-initialises the temporal convolutions but not the temporal transformers' output
    # projections; zero those too so that the video UNet starts as the image UNet applied frame by frame.
    with torch.no_grad():
        for name, module in unet3d.named_modules():
            if name.endswith("proj_out") and (".temp_attentions." in name or name.startswith("transformer_in")):
                module.weight.zero_()
                module.bias.zero_()
    return unet3d


def make_motion_adapter() -> MotionAdapter:
    """AnimateDiff's motion modules at TinyWorld's size: one temporal transformer per layer of the image UNet (and
    one in its mid block), heads `HEAD_WIDTH` wide; their output projections start at zero, as AnimateDiff's do,
    so the animated UNet starts as the image UNet applied frame by frame."""
    adapter = MotionAdapter(
        block_out_channels=UNET_CHANNELS,
        motion_layers_per_block=UNET_LAYERS_PER_BLOCK,
        motion_num_attention_heads=tuple(c // HEAD_WIDTH for c in UNET_CHANNELS),
        motion_norm_num_groups=32,
        motion_max_seq_length=32,
        use_motion_mid_block=True,
    )
    with torch.no_grad():
        for module in adapter.modules():
            if isinstance(module, AnimateDiffTransformer3D):
                module.proj_out.weight.zero_()
                module.proj_out.bias.zero_()
    return adapter


def make_scheduler() -> DDIMScheduler:
    """The noise schedule of Stable Diffusion (scaled-linear betas, epsilon prediction)."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def make_evaluator(tokenizer: CLIPTokenizer) -> CLIPModel:
    """An independent CLIP (its own text tower and a tiny ViT) for zero-shot concept detection."""
    text = text_encoder_config(tokenizer, hidden_size=128).to_dict()
    vision = CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=64,
        patch_size=8,
        projection_dim=128,
    ).to_dict()
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=128))
