"""Before/after previews: the same prompts and seeds through the original and the unlearned encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .video_io import write_gif


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 2) -> np.ndarray:
    """Two frame stacks (F, H, W, 3) or images (H, W, 3) next to each other with a white gap."""
    pad = np.full((*left.shape[:-2], gap, 3), 255, np.uint8)
    return np.concatenate([left, pad, right], axis=-2)


def labelled_grid(rows: list[tuple[str, np.ndarray, np.ndarray]], scale: int = 3,
                  headers: tuple[str, str] = ("original", "unlearned")) -> Image.Image:  # fmt: skip
    """A PNG grid: one row per prompt, original on the left, unlearned on the right, prompt text beside."""
    h, w = rows[0][1].shape[:2]
    cell_h, cell_w, text_w, head = h * scale, w * scale, 260, 18
    grid = Image.new("RGB", (text_w + 2 * cell_w + 6, head + len(rows) * (cell_h + 4)), "white")
    draw = ImageDraw.Draw(grid)
    for col, title in enumerate(headers):
        draw.text((text_w + col * (cell_w + 4) + 4, 3), title, fill="black")
    for r, (prompt, before, after) in enumerate(rows):
        y = head + r * (cell_h + 4)
        draw.text((4, y + cell_h // 2 - 6), prompt[:42], fill="black")
        for col, image in enumerate((before, after)):
            tile = Image.fromarray(image).resize((cell_w, cell_h), Image.NEAREST)
            grid.paste(tile, (text_w + col * (cell_w + 4), y))
    return grid


def write_preview(folder: Path, prompts: list[str], images: tuple[np.ndarray, np.ndarray] | None,
                  videos: tuple[np.ndarray, np.ndarray] | None) -> list[Path]:  # fmt: skip
    """Write `images.png` (a grid) and `video_XX.gif` (side by side) for original vs unlearned outputs."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if images is not None:
        rows = list(zip(prompts, images[0], images[1], strict=True))
        path = folder / "images.png"
        labelled_grid(rows).save(path)
        written.append(path)
    if videos is not None:
        for i, (before, after) in enumerate(zip(videos[0], videos[1], strict=True)):
            written.append(write_gif(side_by_side(before, after), folder / f"video_{i:02d}.gif", scale=3))
        lines = [f"video_{i:02d}.gif\t{p}\n" for i, p in enumerate(prompts[: len(videos[0])])]
        (folder / "prompts.txt").write_text("".join(lines))
    return written
