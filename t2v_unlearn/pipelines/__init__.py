"""Image and video pipelines with a swappable text encoder, seeded generation, video files."""

from .load import KINDS, TINYWORLD, load_pipeline, resolve_model, tinyworld_path

__all__ = ["KINDS", "TINYWORLD", "load_pipeline", "resolve_model", "tinyworld_path"]
