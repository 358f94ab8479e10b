"""ViViT model: tokenisers, attention, blocks, encoders and the assembled variants."""

from vivit.model.vivit import ViViT, create_model, list_models

__all__ = ["ViViT", "create_model", "list_models"]
