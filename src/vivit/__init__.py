"""ViViT: Video Vision Transformers (Arnab et al., ICCV 2021) in PyTorch."""

from vivit.config import PRESETS, ViViTConfig

__all__ = ["PRESETS", "ViViTConfig"]
__version__ = "0.1.0"
