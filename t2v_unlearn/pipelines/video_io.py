"""Video files in and out: mp4 through PyAV (via imageio), GIF and lossless PNG frames through PIL.

Frames are always uint8 numpy arrays of shape (F, H, W, 3). PyAV is imported where an mp4 is written or a video
read (0.4 s): a command that writes only GIFs or nothing, such as `erase --no-preview`, does not pay for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif", ".mkv", ".mov", ".avi")


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 8) -> Path:
    """H.264 mp4 via PyAV. Sides are padded to even numbers, as yuv420p requires."""
    import av

    path = Path(path)
    frames = _even(frames)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_gif(frames: np.ndarray, path: str | Path, fps: int = 8, scale: int = 1) -> Path:
    path = Path(path)
    images = [Image.fromarray(f) for f in frames]
    if scale != 1:
        images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def write_frames(frames: np.ndarray, folder: str | Path, prefix: str = "frame") -> list[Path]:
    """Lossless PNG frames, numbered from 0."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        paths.append(folder / f"{prefix}_{i:03d}.png")
        Image.fromarray(frame).save(paths[-1])
    return paths


def read_video(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """Decode a video file (mp4, webm, gif, ...) with PyAV into uint8 RGB frames (F, H, W, 3)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file {path} does not exist")
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("it has no video stream")
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.error.FFmpegError, ValueError) as error:
        raise ValueError(f"cannot read video {path}: {error}; pass an mp4, webm or gif file") from error
    if not frames:
        raise ValueError(f"cannot read video {path}: it has no frames")
    return np.stack(frames)


def _even(frames: np.ndarray) -> np.ndarray:
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames
