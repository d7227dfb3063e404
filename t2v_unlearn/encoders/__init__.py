"""Text-encoder unlearning: the method, its trainable presets, encoder-only checkpoints."""

from .checkpoint import CheckpointError, Manifest, load_pipeline, load_text_encoder, read_manifest, save_checkpoint
from .erase import EraseConfig, EraseResult, erase_concept
from .fingerprint import encoder_fingerprint, tokenizer_fingerprint

__all__ = [
    "CheckpointError",
    "EraseConfig",
    "EraseResult",
    "Manifest",
    "encoder_fingerprint",
    "erase_concept",
    "load_pipeline",
    "load_text_encoder",
    "read_manifest",
    "save_checkpoint",
    "tokenizer_fingerprint",
]
