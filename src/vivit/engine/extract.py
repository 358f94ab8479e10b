"""`vivit extract DATA... --model NAME|CKPT --out DIR`: features of every video of a dataset, as safetensors.

Each video gives a pooled feature per view (`features`, (V, D)), optionally every output token (`tokens`
(V, N, D) and `prefix` (V, P, D), the token grid in the metadata) and the outputs of chosen blocks (`layer.<i>`,
numbered as `ViViT.num_layers`; the mean of its patch tokens, or all of them with `--tokens`). Files are one
per video (`DIR/<path relative to the data>.safetensors`) or shards of `--shard-size` videos with `index.csv`
(`file, label, shard, offset`: the video's first row in the shard). Every file is written atomically; a rerun
skips the videos already written, so an interrupted run resumes. Videos that cannot be decoded are skipped and
listed as `{file, reason}` (as `check-data`) in `DIR/failed.json`. `DIR/extract.json` records the settings;
a rerun with others is refused.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import save_file

from vivit.cli import non_negative_int, positive_int, print_json
from vivit.data.sources import VIDEO_EXTENSIONS, find_samples, parse_split
from vivit.engine.atomic import atomic_write
from vivit.engine.build import AUTOCAST_DTYPES, autocast, resolve_device
from vivit.engine.logging import progress
from vivit.errors import ConfigError, DataError
from vivit.outputs import output_folder

POOLS = ("model", "cls", "mean")  # the model's own pooling (forward_features), its cls token, the token mean
INDEX_FILE, FAILED_FILE, SETTINGS_FILE = "index.csv", "failed.json", "extract.json"
INDEX_FIELDS = ("file", "label", "shard", "offset")


@dataclass(frozen=True)
class Features:
    """What to store of each view: pooled feature kind, every token, the blocks in `layers`."""

    pool: str = "model"
    tokens: bool = False
    layers: tuple[int, ...] = ()


def pooled(model: Any, final: torch.Tensor, pool: str) -> torch.Tensor:
    """(B, P + N, D) last normed output -> (B, D): `forward_features`, the cls token or the patch-token mean."""
    if pool == "model":
        return model.pool_output(final)
    return final[:, 0] if pool == "cls" else final[:, _last_prefix(model):].mean(dim=1)


def check_pool(model: Any, pool: str) -> None:
    """ConfigError for an unknown pooling, or `cls` on a model without a cls token."""
    if pool not in POOLS:
        raise ConfigError(f"--pool {pool!r} is not allowed; choose one of {list(POOLS)}")
    if pool == "cls" and not _last_prefix(model):
        raise ConfigError(f"--pool cls: this model has no cls token (classifier {model.config.classifier!r}); "
                          "use --pool mean or model")


def _last_prefix(model: Any) -> int:
    """Prefix tokens of the last encoder's output (none for the average-pool baseline's frame tokens)."""
    if model.config.variant != "fe":
        return model.encoder.num_prefix
    return model.temporal.num_prefix if model.temporal is not None else 0


def layer_indices(model: Any, layers: Sequence[int]) -> list[int]:
    """Sorted distinct block indices (negative: from the end), in the order `forward_intermediates` returns them."""
    total = model.num_layers()
    bad = [i for i in layers if not -total <= i < total]
    if bad:
        raise ConfigError(f"--layers {bad[0]} is out of range: this model has {total} blocks (0..{total - 1}, "
                          f"or -{total}..-1 from the end)")
    return sorted({i % total for i in layers})


def view_features(model: Any, views: torch.Tensor, what: Features) -> dict[str, torch.Tensor]:
    """Tensors for a batch of views (B, C, T, H, W): `features`, [`tokens`, `prefix`], [`layer.<i>`]."""
    final, layers = model.forward_intermediates(views, indices=list(what.layers), norm=True, output_fmt="NLC")
    out = {"features": pooled(model, final, what.pool)}
    if what.tokens:
        prefix = _last_prefix(model)
        out["tokens"], out["prefix"] = final[:, prefix:], final[:, :prefix]
    for index, z in zip(layer_indices(model, what.layers), layers):
        out[f"layer.{index}"] = z if what.tokens else z.mean(dim=1)
    return out


def token_grids(model: Any, what: Features) -> dict[str, list[int]]:
    """(n_t, n_h, n_w) of the stored token tensors (Model 2's temporal tokens: (n_t, 1, 1))."""
    grid, spatial = list(model.config.grid), len(model.spatial.blocks) if model.config.variant == "fe" else None
    frame_tokens = [grid[0], 1, 1]
    grids = {"tokens": frame_tokens if spatial is not None else grid}
    for i in layer_indices(model, what.layers):
        grids[f"layer.{i}"] = frame_tokens if spatial is not None and i >= spatial else grid
    return grids


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """One safetensors file, written beside its target and renamed over it when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"vivit": json.dumps(metadata)})


def output_names(paths: Sequence[Path]) -> list[str]:
    """Each video's path relative to the folder common to all (its output name, extension kept)."""
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([p.parent for p in resolved]))
    return [p.relative_to(root).as_posix() for p in resolved]


def read_index(out: Path) -> list[dict[str, str]]:
    if not (out / INDEX_FILE).is_file():
        return []
    with open(out / INDEX_FILE, newline="") as f:
        return list(csv.DictReader(f))


class _Shards:
    """Collects videos' tensors and writes a shard of `size` videos, then the index naming them."""

    def __init__(self, out: Path, size: int, metadata: dict[str, Any]):
        self.out, self.size, self.metadata = out, size, metadata
        self.index = read_index(out)
        self.number = 1 + max((int(r["shard"].split("-")[1].split(".")[0]) for r in self.index), default=-1)
        self.pending: list[tuple[str, str, dict[str, torch.Tensor]]] = []

    def add(self, name: str, label: str, tensors: dict[str, torch.Tensor]) -> None:
        self.pending.append((name, label, tensors))
        if len(self.pending) == self.size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        shard, rows = f"shard-{self.number:05d}.safetensors", 0
        for name, label, tensors in self.pending:
            self.index.append({"file": name, "label": label, "shard": shard, "offset": str(rows)})
            rows += len(tensors["features"])
        keys = self.pending[0][2]
        write_tensors(self.out / shard, {k: torch.cat([t[k] for _, _, t in self.pending]) for k in keys},
                      {**self.metadata, "files": [name for name, _, _ in self.pending]})
        with atomic_write(self.out / INDEX_FILE) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, INDEX_FIELDS)
            writer.writeheader()
            writer.writerows(self.index)
        self.number, self.pending = self.number + 1, []


def claim_folder(out: Path, settings: dict[str, Any]) -> None:
    """Record what `out` holds (extract.json); a rerun that would store other features there is refused, since
    skipping the videos already written would mix two kinds of features in one folder."""
    path = out / SETTINGS_FILE
    if path.is_file():
        before = json.loads(path.read_text())
        diff = [f"{k}: {before.get(k)!r} there, {v!r} now" for k, v in settings.items() if before.get(k) != v]
        if diff:
            raise ConfigError(f"{out} holds features extracted with other settings ({'; '.join(diff)}): give another "
                              "--out, or the same options to resume")
        return
    output_folder(out)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(settings, indent=2))


def extract(data: str | Path | Sequence[str | Path], model: str | Path, out: str | Path, *, split: str | None = None,
            what: Features = Features(), views: str = "1x1", shard_size: int = 0, batch_size: int = 8,
            num_workers: int = 0, device: str = "auto", precision: str | None = None,
            quiet: bool = False) -> dict[str, Any]:
    """Features of every video of `data` (folder, list file, CSV, or a list of video paths) written to `out`;
    videos already written there are skipped. Returns counts and the failed `{file, reason}`."""
    from vivit.data.datasets import VideoDataset
    from vivit.data.loader import make_loader
    from vivit.engine.checkpoint import load_model
    from vivit.engine.evaluate import eval_preprocessing, inference_precision, parse_views
    from vivit.engine.predict import decode_failure

    out, clips_crops = Path(out), parse_views(views)
    loaded = load_model(model)
    net = loaded.model
    check_pool(net, what.pool)
    what = Features(what.pool, what.tokens, tuple(layer_indices(net, what.layers)))
    samples, classes = find_samples(data if isinstance(data, (str, Path)) else list(data), split)
    if not samples:
        raise DataError(f"no videos found in {data}")
    names = output_names([p for p, _ in samples])
    metadata = {"model": str(model), "views": views, "pool": what.pool, "grids": token_grids(net, what),
                "layers": list(what.layers)}
    claim_folder(out, {**metadata, "tokens": what.tokens, "shard_size": shard_size})
    done = {r["file"] for r in read_index(out)} if shard_size else {
        n for n in names if (out / f"{n}.safetensors").is_file()}
    todo = [i for i, n in enumerate(names) if n not in done]
    failed: list[dict[str, str]] = []
    written = 0
    if todo:
        stride, augment = eval_preprocessing(loaded.train_config)
        dataset = VideoDataset([samples[i] for i in todo], classes, train=False, num_frames=net.config.num_frames,
                               frame_stride=stride, image_size=net.config.image_size[0], num_clips=clips_crops[0],
                               num_crops=clips_crops[1], augment=augment, warn_skipped=False)  # in `failed`
        dev = resolve_device(device)
        precision = precision or inference_precision(loaded.train_config, dev)
        net.to(dev).eval()
        shards = _Shards(out, shard_size, metadata) if shard_size else None
        seen: set[int] = set()
        loader = make_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        try:
            for batch in progress(loader, desc="extract", total=len(loader), unit="batch", quiet=quiet):
                if len(batch.indices) == 0:
                    continue
                b, v = batch.videos.shape[:2]
                with torch.no_grad(), autocast(dev, precision):
                    tensors = view_features(net, batch.videos.to(dev).flatten(0, 1), what)
                tensors = {k: t.float().cpu().unflatten(0, (b, v)) for k, t in tensors.items()}
                for row, (k, label) in enumerate(zip(batch.indices.tolist(), batch.labels.tolist())):
                    seen.add(k)
                    name, label_name = names[todo[k]], classes[label] if 0 <= label < len(classes) else ""
                    item = {key: t[row].clone() for key, t in tensors.items()}  # own storage: no shared views
                    if shards is not None:
                        shards.add(name, label_name, item)
                    else:
                        write_tensors(out / f"{name}.safetensors", item, {**metadata, "file": name, "label": label_name})
                    written += 1
        except DataError:  # every video failed to decode (each is listed in `failed`)
            pass
        if shards is not None:
            shards.flush()
        failed = [{"file": str(samples[i][0]), "reason": decode_failure(samples[i][0])}
                  for k, i in enumerate(todo) if k not in seen]
    with atomic_write(out / FAILED_FILE) as tmp:
        tmp.write_text(json.dumps(failed, indent=2))
    return {"out": str(out), "videos": len(samples), "written": written, "already_written": len(done & set(names)),
            "failed": failed}


def parse_layers(text: str) -> tuple[int, ...]:
    """'3,7,11' or '-1,-2' -> block indices (negative: from the end)."""
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices like 3,7,11 or -1, got {text!r}") from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", help="dataset folder (class folders), list file, Kinetics CSV, or "
                                                f"video files ({' '.join(VIDEO_EXTENSIONS[:4])} ...)")
    parser.add_argument("--model", required=True, help="model NAME (`vivit models`), CHECKPOINT (.pt) or FOLDER")
    parser.add_argument("--out", required=True, help="output folder (a rerun skips the videos written there)")
    parser.add_argument("--split", type=parse_split, default=None, help="train/val/test folder or CSV split")
    parser.add_argument("--pool", default="model", choices=POOLS,
                        help="pooled feature: the model's own (forward_features), the cls token, or the token mean")
    parser.add_argument("--tokens", action="store_true", help="also store every output token (and layer token)")
    parser.add_argument("--layers", type=parse_layers, default=(), help="blocks to store too, e.g. 3,7,11 or -1")
    parser.add_argument("--views", default="1x1", help="CLIPSxCROPS views per video, each stored (default 1x1)")
    parser.add_argument("--shard-size", type=non_negative_int, default=0,
                        help="videos per shard file with index.csv (default 0: one file per video)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--workers", type=non_negative_int, default=2, help="decoding processes (0: in this one)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default=None, choices=("fp32", *AUTOCAST_DTYPES),
                        help="autocast precision (default: the training run's on CUDA, fp32 on CPU)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Exit status 0 when every video was written (now or before), 1 when some failed."""
    data = args.data[0] if len(args.data) == 1 and Path(args.data[0]).suffix.lower() not in VIDEO_EXTENSIONS else args.data
    result = extract(data, args.model, args.out, split=args.split,
                     what=Features(args.pool, args.tokens, args.layers), views=args.views, shard_size=args.shard_size,
                     batch_size=args.batch_size, num_workers=args.workers, device=args.device,
                     precision=args.precision, quiet=args.quiet)
    if args.json:
        print_json(result)
    else:
        for item in result["failed"]:
            print(f"{item['file']}: {item['reason']}")
        print(f"{result['written']} written, {result['already_written']} already written, "
              f"{len(result['failed'])} failed of {result['videos']} videos -> {result['out']}")
    return 1 if result["failed"] else 0
