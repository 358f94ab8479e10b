"""`vivit models`: the pretrained models of the registry (shipped + `VIVIT_ZOO`) and which are cached."""

from __future__ import annotations

import argparse
from typing import Any

from vivit.cli import print_json
from vivit.zoo import download
from vivit.zoo.pretrained import is_cached, model_dir
from vivit.zoo.registry import ModelEntry, extra_registries, load_registry


def describe(entry: ModelEntry) -> dict[str, Any]:
    """An entry as `--json` shows it: the registry fields, the URL fetched now, and the cache state."""
    cached = is_cached(entry)
    url = entry.url if entry.format == "hf" else download.resolve_url(entry.url)
    d = entry.to_dict()
    if not isinstance(entry.labels, str):
        d["labels"] = f"{len(entry.labels)} inline names"
    return {**d, "resolved_url": url, "cached": cached, "path": str(model_dir(entry)) if cached else None}


def models() -> dict[str, Any]:
    return {"cache": str(download.cache_root()), "registries": [str(p) for p in extra_registries()],
            "offline": download.offline(), "models": [describe(e) for e in load_registry().values()]}


def format_table(listing: dict[str, Any]) -> str:
    rows = [(m["name"], m["format"], m["variant"], f"{m['frames']}x{m['stride']}", m["views"],
             "" if m["accuracy"] is None else f"{m['accuracy']:g} {m['metric']}", m["dataset"],
             "yes" if m["cached"] else "no") for m in listing["models"]]
    head = ("name", "format", "variant", "frames", "views", "reported", "dataset", "cached")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]
    return "\n".join([*lines, f"cache: {listing['cache']}  (frames: count x stride; views: clips x crops)"])


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON: every registry field, URL and cache state")


def run(args: argparse.Namespace) -> int:
    listing = models()
    if args.json:
        print_json(listing)
    else:
        print(format_table(listing))
    return 0
