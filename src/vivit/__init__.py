"""ViViT: Video Vision Transformers (Arnab et al., ICCV 2021) in PyTorch."""

from vivit.config import PRESETS, ViViTConfig
from vivit.model import ViViT, create_model, list_models
from vivit.zoo import load_pretrained

__all__ = ["PRESETS", "ViViT", "ViViTConfig", "create_model", "list_models", "load_pretrained"]
__version__ = "0.1.0"
