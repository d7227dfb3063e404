"""t2v_unlearn: erase a concept from the CLIP text encoder shared by text-to-image and text-to-video models."""

__version__ = "0.1.0"
