"""Pretrained ViViTs by name: the registry (`registry.toml`, `VIVIT_ZOO`), the download cache and
`load_pretrained(NAME | FOLDER | FILE)`."""

from vivit.zoo.pretrained import is_cached, load_pretrained
from vivit.zoo.registry import ModelEntry, Preprocess, get_entry, load_registry

__all__ = ["ModelEntry", "Preprocess", "get_entry", "is_cached", "load_pretrained", "load_registry"]
