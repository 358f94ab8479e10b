"""Weights: image-ViT initialisation, Hugging Face and Scenic conversion, and our own folder format."""

from vivit.weights.store import LoadReport, load_pretrained, load_state_dict, save_pretrained

__all__ = ["LoadReport", "load_pretrained", "load_state_dict", "save_pretrained"]
