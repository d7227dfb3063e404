import numpy as np
import pytest
import torch

from t2v_unlearn.pipelines import tinyworld_path
from t2v_unlearn.pipelines.generate import generate_images, generate_videos
from t2v_unlearn.tinyworld import models


def test_pipelines_load_offline_with_the_real_classes(image_pipe, video_pipe):
    assert type(image_pipe).__name__ == "StableDiffusionPipeline"
    assert type(video_pipe).__name__ == "TextToVideoSDPipeline"
    assert type(video_pipe.unet).__name__ == "UNet3DConditionModel"
    assert image_pipe.text_encoder.dtype == torch.float32  # stored fp16, loaded fp32


def test_image_and_video_share_an_identical_text_encoder_and_vae(image_pipe, video_pipe):
    for a, b in [(image_pipe.text_encoder, video_pipe.text_encoder), (image_pipe.vae, video_pipe.vae)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_animatediff_animates_the_image_model_with_its_encoder(image_pipe):
    from t2v_unlearn.pipelines import load_pipeline
    from t2v_unlearn.pipelines.load import ModelNotFoundError

    animated = load_pipeline("video", "tinyworld-animatediff", progress=False)
    assert type(animated).__name__ == "AnimateDiffPipeline" and type(animated.unet).__name__ == "UNetMotionModel"
    for a, b in [(image_pipe.text_encoder, animated.text_encoder), (image_pipe.vae, animated.vae)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    spatial = image_pipe.unet.state_dict()  # the image UNet's own weights, with motion modules beside them
    motion = animated.unet.state_dict()
    assert all(torch.equal(spatial[k], motion[k]) for k in spatial if k in motion)
    assert sum(k in motion for k in spatial) > 0.9 * len(spatial)
    videos = generate_videos(animated, ["a red circle moving left"], [0], steps=2)
    assert videos.shape == (1, 8, 64, 64, 3) and videos.dtype == np.uint8
    with pytest.raises(ModelNotFoundError, match="is a video model"):
        load_pipeline("image", "tinyworld-animatediff", progress=False)


def test_motion_adapter_starts_as_the_image_unet_frame_by_frame():
    from diffusers import UNetMotionModel

    torch.manual_seed(0)
    unet2d = models.make_unet2d().eval()
    animated = UNetMotionModel.from_unet2d(unet2d, models.make_motion_adapter()).eval()
    latents = torch.randn(1, 4, 3, 16, 16)
    hidden = torch.randn(1, 77, models.TEXT_HIDDEN)
    with torch.no_grad():
        video = animated(latents, 10, hidden.repeat_interleave(3, 0)).sample
        frames = unet2d(latents[0].permute(1, 0, 2, 3), 10, hidden.expand(3, -1, -1)).sample
    assert torch.allclose(video[0].permute(1, 0, 2, 3), frames, atol=1e-4)


def test_generation_shapes_and_dtypes(image_pipe, video_pipe):
    images = generate_images(image_pipe, ["a picture of a star", "zorbo"], [0, 1], steps=3)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    videos = generate_videos(video_pipe, ["a red circle moving left"], [0], steps=2)
    assert videos.shape == (1, 8, 64, 64, 3) and videos.dtype == np.uint8


def test_generation_is_seeded_per_sample(image_pipe):
    alone = generate_images(image_pipe, ["a picture of a heart"], [7], steps=3)
    batched = generate_images(image_pipe, ["zorbo", "a picture of a heart"], [1, 7], steps=3)
    assert np.abs(alone[0].astype(int) - batched[1].astype(int)).max() <= 1


def test_shipped_weights_are_safetensors_under_budget():
    root = tinyworld_path("image").parent
    files = [p for p in root.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"}]
    weights = sum(p.stat().st_size for p in files if p.suffix == ".safetensors")
    assert 0 < weights < 60 * 2**20


def test_video_unet_starts_as_the_image_unet_frame_by_frame():
    torch.manual_seed(0)
    unet2d = models.make_unet2d().eval()
    unet3d = models.unet3d_from_unet2d(unet2d).eval()
    latents = torch.randn(1, 4, 3, 16, 16)
    hidden = torch.randn(1, 77, models.TEXT_HIDDEN)
    with torch.no_grad():
        video = unet3d(latents, 10, hidden).sample
        frames = unet2d(latents[0].permute(1, 0, 2, 3), 10, hidden.expand(3, -1, -1)).sample
    assert torch.allclose(video[0].permute(1, 0, 2, 3), frames, atol=1e-4)


def test_memory_options_of_load_pipeline(video_pipe):
    from t2v_unlearn.pipelines.load import load_pipeline

    pipe = load_pipeline("video", vae_slicing=True, offload=True, device="cpu", progress=False)
    assert pipe.vae.use_slicing and not video_pipe.vae.use_slicing
    # on the CPU there is nothing to offload to: no accelerate hooks, everything stays where it is
    assert not hasattr(pipe.unet, "_hf_hook") and pipe.unet.device.type == "cpu"
    # decoding frame by frame gives the same video
    sliced = generate_videos(pipe, ["a star moving left"], [0], steps=2, num_frames=4)
    whole = generate_videos(video_pipe, ["a star moving left"], [0], steps=2, num_frames=4)
    assert np.abs(sliced.astype(int) - whole.astype(int)).max() <= 1
