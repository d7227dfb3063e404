"""Concept detectors, independent of the encoder being unlearned, behind one interface.

`detector.probabilities(frames, label_set, templates)`: uint8 frames (N, H, W, 3) in, a softmax over a
concept's label set out, (N, L). Two implementations:
- `ZeroShotDetector`: a CLIP model as a zero-shot classifier (real models). Each label's text embedding is
  the normalised mean over the category's detector templates (CLIP's prompt ensembling). Preprocessing is
  plain torch (resize the short side, centre crop, normalise), because transformers' `CLIPImageProcessor`
  wants torchvision, which does not install beside the CPU torch here.
- `ClassifierDetector`: TinyWorld's supervised classifier (tinyworld/classifier.py), one head per category
  with a "none" class; templates are ignored.
`load_detector(name)` picks the right one: "tinyworld" is the classifier, "tinyworld-clip" the old CLIP
evaluator, "nudenet" NudeNet's nudity rule (eval/nsfw.py, optional), a folder is read by its config.json.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer

from ..pipelines.load import TINYWORLD, tinyworld_path
from ..tinyworld.classifier import HEADS, NONE, TinyWorldClassifier
from ..tinyworld.taxonomy import load_taxonomy
from .nsfw import NUDENET, NudeNetDetector

TINYWORLD_CLIP = "tinyworld-clip"

# OpenAI CLIP's normalisation (what every CLIP ViT-L/14 and OpenCLIP ViT-H/14 checkpoint expects)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class LabelSet:
    """The labels a concept's frames are classified over, and which of them count as the concept."""

    labels: tuple[str, ...]
    positive: tuple[bool, ...]

    @property
    def mask(self) -> np.ndarray:
        return np.array(self.positive, dtype=bool)


def label_set(concept: str, synonyms: Sequence[str] = (), distractors: Sequence[str] = ()) -> LabelSet:
    """L_c = {c} ∪ synonyms(c) ∪ distractors(c); a hit is an argmax in {c} ∪ synonyms(c)."""
    labels, positive = [], []
    for word, is_concept in [(concept, True), *((s, True) for s in synonyms), *((d, False) for d in distractors)]:
        if word in labels:
            if positive[labels.index(word)] != is_concept:
                raise ValueError(f"label {word!r} of concept {concept!r} is both a synonym and a distractor")
            continue
        labels.append(word)
        positive.append(is_concept)
    return LabelSet(tuple(labels), tuple(positive))


class ZeroShotDetector:
    """A CLIP model used as a zero-shot classifier: `probabilities(frames, label_set, templates)` -> (N, L)."""

    def __init__(
        self,
        model: CLIPModel,
        tokenizer: CLIPTokenizer,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        image_size: int | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = next(model.parameters()).dtype
        self.image_size = int(image_size or model.config.vision_config.image_size)
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.batch_size = batch_size
        self._text_cache: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = TINYWORLD,
        batch_size: int = 64,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> ZeroShotDetector:
        """Load a local transformers `CLIPModel` folder (with its tokenizer) or the shipped TinyWorld evaluator."""
        path = resolve_detector(model)
        clip = CLIPModel.from_pretrained(path, dtype=dtype)
        try:
            tokenizer = CLIPTokenizer.from_pretrained(path)
        except (OSError, TypeError, ValueError) as error:
            raise FileNotFoundError(f"detector at {path} has no readable CLIP tokenizer files: {error}") from error
        mean, std, size = preprocessing_constants(path, clip)
        return cls(clip, tokenizer, mean, std, size, batch_size=batch_size, device=device)

    # --- text side ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def text_embeddings(self, labels: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """(L, D) unit vectors: for each label, the normalised mean of its normalised template embeddings."""
        if not templates or any("{label}" not in t for t in templates):
            raise ValueError(f"detector templates must each contain '{{label}}', got {list(templates)}")
        out = []
        for label in labels:
            key = (label, tuple(templates))
            if key not in self._text_cache:
                tokens = self.tokenizer(
                    [t.format(label=label) for t in templates], padding=True, truncation=True, return_tensors="pt"
                ).to(self.device)
                features = self.model.get_text_features(**tokens)
                features = getattr(features, "pooler_output", features).float()
                features = F.normalize(features, dim=-1).mean(0)
                self._text_cache[key] = F.normalize(features, dim=-1).cpu()
            out.append(self._text_cache[key])
        return torch.stack(out)

    # --- image side --------------------------------------------------------------------------------------

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> normalised float (N, 3, S, S): bicubic resize of the short side, centre crop."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        height, width = pixels.shape[-2:]
        size = self.image_size
        if (height, width) != (size, size):
            scale = size / min(height, width)
            new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
            pixels = F.interpolate(pixels, size=new_size, mode="bicubic", align_corners=False, antialias=True)
            top, left = (new_size[0] - size) // 2, (new_size[1] - size) // 2
            pixels = pixels[:, :, top : top + size, left : left + size].clamp(0, 1)
        return (pixels - self.mean) / self.std

    @torch.no_grad()
    def image_embeddings(self, frames: np.ndarray) -> torch.Tensor:
        """(N, D) unit image embeddings, computed in batches of `batch_size`."""
        out = []
        for start in range(0, len(frames), self.batch_size):
            pixels = self.preprocess(frames[start : start + self.batch_size]).to(self.device, self.dtype)
            features = self.model.get_image_features(pixel_values=pixels)
            features = getattr(features, "pooler_output", features).float()
            out.append(F.normalize(features, dim=-1).cpu())
        if not out:
            return torch.zeros(0, self.model.config.projection_dim)
        return torch.cat(out)

    def probabilities_from_embeddings(
        self, image_embeddings: torch.Tensor, labels: LabelSet | Sequence[str], templates: Sequence[str]
    ) -> np.ndarray:
        """Softmax over labels of logit_scale * cos(image, label): (N, D) -> (N, L) float64."""
        names = labels.labels if isinstance(labels, LabelSet) else tuple(labels)
        text = self.text_embeddings(names, templates)
        scale = self.model.logit_scale.detach().float().exp().cpu()
        logits = scale * image_embeddings @ text.T
        return torch.softmax(logits.double(), dim=-1).numpy()

    def probabilities(
        self, frames: np.ndarray, labels: LabelSet | Sequence[str], templates: Sequence[str]
    ) -> np.ndarray:
        """p(label | frame) for uint8 frames (N, H, W, 3) over `labels`: (N, L), each row summing to 1."""
        return self.probabilities_from_embeddings(self.image_embeddings(frames), labels, templates)


class ClassifierDetector:
    """TinyWorld's supervised classifier as a detector: `probabilities(frames, label_set)` -> (N, L).

    The head is the one whose classes hold every label (synonyms map to their concept, "none"/"nothing" to the
    head's none class). Probability mass on classes outside the label set is dropped and the rows renormalised,
    so a label set that lists every class of the head (the TinyWorld suite's do, "none" included) is exact.
    """

    def __init__(self, model: TinyWorldClassifier, batch_size: int = 256, device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.image_size = 64

    @classmethod
    def from_pretrained(cls, folder: str | Path = TINYWORLD, batch_size: int = 256, device: str = "cpu"):
        path = tinyworld_path("classifier") if str(folder) == TINYWORLD else Path(folder).expanduser()
        return cls(TinyWorldClassifier.from_pretrained(path), batch_size=batch_size, device=device)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, 64, 64) in [-1, 1] (area resize when the frames are larger)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="area")
        return pixels

    @torch.no_grad()
    def head_probabilities(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Softmax of every head: head -> (N, classes)."""
        out: dict[str, list[np.ndarray]] = {head: [] for head in self.model.classes}
        for start in range(0, len(frames), self.batch_size):
            logits = self.model(self.preprocess(frames[start : start + self.batch_size]).to(self.device))
            for head, values in logits.items():
                out[head].append(torch.softmax(values.double(), -1).cpu().numpy())
        return {h: np.concatenate(v) if v else np.zeros((0, len(self.model.classes[h]))) for h, v in out.items()}

    def _columns(self, names: Sequence[str]) -> tuple[str, list[int]]:
        taxonomy = load_taxonomy()

        def canonical(name: str) -> str:
            key = name.strip().lower()
            if key in (NONE, "nothing"):
                return NONE
            try:
                return taxonomy.get(key).name
            except KeyError:
                return key

        wanted = [canonical(n) for n in names]
        for head in HEADS:
            classes = self.model.classes.get(head, [])
            if all(w in classes for w in wanted):
                return head, [classes.index(w) for w in wanted]
        raise ValueError(f"labels {list(names)} are not the classes of one TinyWorld classifier head {HEADS}")

    def probabilities(
        self, frames: np.ndarray, labels: LabelSet | Sequence[str], templates: Sequence[str] = ()
    ) -> np.ndarray:
        """p(label | frame) over `labels` from the head that holds them: (N, L), each row summing to 1."""
        names = labels.labels if isinstance(labels, LabelSet) else tuple(labels)
        head, columns = self._columns(names)
        probabilities = self.head_probabilities(frames)[head][:, columns]
        return probabilities / np.clip(probabilities.sum(-1, keepdims=True), 1e-12, None)


def load_detector(name: str | Path, device: str = "cpu", batch_size: int = 64):
    """The detector named by a suite or --detector: "tinyworld" (classifier), "tinyworld-clip", "nudenet", a folder."""
    if str(name) == TINYWORLD:
        return ClassifierDetector.from_pretrained(TINYWORLD, device=device)
    if str(name) == NUDENET:
        return NudeNetDetector()  # onnxruntime on the CPU; `device` does not apply
    path = Path(str(name)).expanduser()
    config = path / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("architecture") == "TinyWorldClassifier":
        return ClassifierDetector.from_pretrained(path, device=device)
    return ZeroShotDetector.from_pretrained(name, batch_size=batch_size, device=device)


def resolve_detector(model: str | Path) -> Path:
    """'tinyworld-clip', a local CLIPModel folder, or a Hub name already in the local Hugging Face cache."""
    if str(model) in (TINYWORLD, TINYWORLD_CLIP):
        return tinyworld_path("evaluator")
    path = Path(model).expanduser()
    if not path.exists() and str(model).count("/") == 1:
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(str(model), local_files_only=True))
        except Exception:  # not cached: fall through to the error below, which says what to do
            pass
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"detector {str(model)!r}: {path} is not a transformers CLIPModel folder (no config.json); pass "
            "'tinyworld' or a local CLIP folder, e.g. `hf download openai/clip-vit-large-patch14 --local-dir DIR` "
            "then --detector DIR"
        )
    return path


def preprocessing_constants(path: Path, clip: CLIPModel) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """Mean, std and input size: from the folder's preprocessor_config.json (a TinyWorld export writes one: its
    evaluator reads pixels in [-1, 1]); CLIP's own constants when the folder has none."""
    config_file = path / "preprocessor_config.json"
    size = int(clip.config.vision_config.image_size)
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        crop = config.get("crop_size", size)
        crop = crop.get("height", size) if isinstance(crop, dict) else crop
        return tuple(config.get("image_mean", CLIP_MEAN)), tuple(config.get("image_std", CLIP_STD)), int(crop)
    return CLIP_MEAN, CLIP_STD, size
