"""TinyWorld's measuring instrument: a small supervised CNN with one head per category.

A zero-shot CLIP trained on TinyWorld's captions never learned shapes (15% on 8 shapes) and said "zorbo" on
10-30% of images without zorbo. A classifier trained with plain supervision on rendered scenes sees every
category, and its "none" class (a head's answer when the image shows nothing of that category: a character
has no shape or style, a shape is no character, a blank canvas is nothing) keeps false hits low. UnlearnCanvas
measures erasure with a trained classifier in the same way. It never sees the generator's text encoder.

Heads: object (8 shapes + none), style (5 + none), id (5 characters + none), colour (8 + none). Saved as a
plain folder: `config.json` (the class names of every head) and `model.safetensors`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .taxonomy import load_taxonomy

NONE = "none"
HEADS = ("object", "style", "id", "colour")


def head_classes() -> dict[str, list[str]]:
    """Class names per head from the taxonomy; "none" is always the last class."""
    taxonomy = load_taxonomy()
    classes = {category: taxonomy.names(category) for category in ("object", "style", "id")}
    classes["colour"] = list(taxonomy.colours)
    return {head: [*names, NONE] for head, names in classes.items()}


def _block(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


class TinyWorldClassifier(nn.Module):
    """64x64 RGB in [-1, 1] -> one logit vector per head. About 44M multiply-adds per image."""

    def __init__(self, classes: dict[str, list[str]] | None = None, width: int = 32):
        super().__init__()
        self.classes = classes or head_classes()
        w = width
        self.features = nn.Sequential(
            _block(3, w // 2),
            _block(w // 2, w, stride=2),  # 32x32
            _block(w, w),
            nn.MaxPool2d(2),  # 16x16
            _block(w, 2 * w),
            _block(2 * w, 2 * w),
            nn.MaxPool2d(2),  # 8x8
            _block(2 * w, 4 * w),
            _block(4 * w, 4 * w),
        )
        self.heads = nn.ModuleDict({head: nn.Linear(8 * w, len(names)) for head, names in self.classes.items()})
        self.width = width

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(pixels)
        pooled = torch.cat([features.mean((2, 3)), features.amax((2, 3))], dim=1)  # where and whether
        return {head: layer(pooled) for head, layer in self.heads.items()}

    # --- a plain folder: config.json + model.safetensors ----------------------------------------------------

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"architecture": "TinyWorldClassifier", "width": self.width, "classes": self.classes,
                  "input": {"size": 64, "range": [-1, 1]}}  # fmt: skip
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TinyWorldClassifier:
        folder = Path(folder)
        try:
            config = json.loads((folder / "config.json").read_text())
            state = load_file(str(folder / "model.safetensors"))
        except (OSError, ValueError) as error:
            raise FileNotFoundError(
                f"{folder} is not a TinyWorld classifier folder (config.json + model.safetensors): {error}"
            ) from error
        if config.get("architecture") != "TinyWorldClassifier":
            raise ValueError(f"{folder}/config.json describes {config.get('architecture')!r}, not a classifier")
        model = cls(config["classes"], width=int(config.get("width", 32)))
        model.load_state_dict({k: v.float() for k, v in state.items()})
        return model.eval()


def classification_loss(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over heads of the cross-entropy of each head against its class index."""
    return sum(F.cross_entropy(logits[head], targets[head]) for head in logits)
