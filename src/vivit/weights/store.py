"""Moving weights between files and models: our folder format (config.json + model.safetensors
[+ labels.txt]), safe readers for foreign files, and strict state-dict loading with a report.

Loading is strict: every source key is used or listed, every parameter of the model is loaded or
listed, and a shape mismatch names the key and both shapes. The one tolerated mismatch is a
positional embedding laid out on another token grid: it is resampled with `posembed.resample`
(bicubic in space, linear in time, cls kept apart) and reported.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vivit.config import ViViTConfig, check_choice
from vivit.errors import VivitError
from vivit.textfiles import LABELS_FILE, read_labels, read_text, write_labels
from vivit.model import posembed
from vivit.model.encoders import Encoder
from vivit.model.vivit import ViViT, unwrap_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
INDEX_SUFFIX = ".index.json"  # a sharded checkpoint: `<name>.index.json` maps each tensor to its shard file
# Looked up in this order inside a folder (as transformers' `from_pretrained`: single file before index).
WEIGHT_FILES = (WEIGHTS_FILE, WEIGHTS_FILE + INDEX_SUFFIX, "pytorch_model.bin", "pytorch_model.bin" + INDEX_SUFFIX)


@dataclass
class LoadReport:
    """What a conversion or load did: source keys used / left over, model keys not loaded, and any
    positional embedding resampled to another token grid (key -> [source shape, model shape])."""

    source: str
    used: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    resampled: dict[str, list[list[int]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    wrapper_prefix: str = ""  # removed from every source key (`strip_wrapper_prefix`); "" when none was

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"{self.source}: {len(self.used)} source tensors used, {len(self.unexpected)} unused, "
                 f"{len(self.missing)} model tensors not loaded"]
        lines += [f"  unused: {k}" for k in self.unexpected]
        lines += [f"  not loaded (kept at init): {k}" for k in _group(self.missing)]
        lines += [f"  resampled {k}: {a} -> {b}" for k, (a, b) in self.resampled.items()]
        if self.wrapper_prefix:
            lines.append(f"  note: wrapper prefix {self.wrapper_prefix!r} (DDP / torch.compile) removed from every source key")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel / DataParallel, torch.compile's OptimizedModule


def strip_wrapper_prefix(state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """(`state_dict` without its wrapper prefix, the prefix removed): a `WRAPPER_PREFIXES` entry is removed,
    repeatedly (`module._orig_mod.`), only while EVERY key carries it; one on some keys only is a real name, kept."""
    state, removed = dict(state_dict), ""
    while state:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) and k != p for k in state)), None)
        if prefix is None:
            break
        state, removed = {k[len(prefix):]: v for k, v in state.items()}, removed + prefix
    return state, removed


def block_depth(keys: Iterable[str], pattern: str) -> int:
    """Number of encoder blocks in a checkpoint: 1 + the largest block index `pattern`'s group matches."""
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _group(keys: list[str]) -> list[str]:
    """Collapse `x.blocks.3.attn.qkv.weight`-style runs into `x.blocks.*.attn.qkv` (every block, weight
    and bias) for a readable summary that still names the layer."""
    out: list[str] = []
    for k in keys:
        parts = k.split(".")
        short = ".".join([*parts[:2], "*", *parts[3:-1]]) if len(parts) > 4 and parts[1] == "blocks" else k
        if short not in out:
            out.append(short)
    return out


def pos_embed_layout(model: ViViT) -> dict[str, tuple[tuple[int, ...], int]]:
    """Positional-embedding key -> (token grid it is laid out on, number of prefix tokens)."""
    return {f"{name}.pos_embed": (m.grid, m.num_prefix) for name, m in model.named_modules() if isinstance(m, Encoder)}


def layout_of(config: ViViTConfig) -> dict[str, tuple[tuple[int, ...], int]]:
    """`pos_embed_layout` of the model a config describes (built on the meta device: no memory)."""
    with torch.device("meta"):
        return pos_embed_layout(ViViT(config))


def load_state_dict(
    model: ViViT,
    state_dict: Mapping[str, torch.Tensor],
    source: str = "state dict",
    source_config: ViViTConfig | None = None,
    allow_missing: Iterable[str] = (),
    pos_spatial: str = "bicubic",
    pos_temporal: str = "linear",
) -> LoadReport:
    """Load `state_dict` (our key names) into `model` strictly, resampling positional embeddings
    made for another token grid (`posembed.resample` modes `pos_spatial`, `pos_temporal`; the official
    Scenic `tile` of a frame-count change is `pos_temporal="tile"`). Keys starting with an
    `allow_missing` prefix may be absent. A DDP / torch.compile prefix on every key is removed and reported."""
    check_choice("pos_spatial", pos_spatial, posembed.SPATIAL_MODES)
    check_choice("pos_temporal", pos_temporal, posembed.TEMPORAL_MODES)
    state_dict, wrapper_prefix = strip_wrapper_prefix(state_dict)
    own = model.state_dict()
    unexpected = sorted(set(state_dict) - set(own))
    if unexpected:
        raise VivitError(f"{source}: keys with no counterpart in this model: {unexpected[:8]}"
                         f"{' ...' if len(unexpected) > 8 else ''} (a checkpoint of another architecture?)")
    allow = tuple(allow_missing)
    missing = [k for k in own if k not in state_dict]
    not_allowed = [k for k in missing if not k.startswith(allow)]
    if not_allowed:
        raise VivitError(f"{source}: missing weights for {not_allowed[:8]}{' ...' if len(not_allowed) > 8 else ''}")
    report = LoadReport(source, used=sorted(state_dict), missing=missing, wrapper_prefix=wrapper_prefix)
    layout = pos_embed_layout(model)
    src_layout = layout_of(source_config) if source_config is not None else {}
    merged = dict(own)
    for key, value in state_dict.items():
        value = torch.as_tensor(value)
        if value.shape != own[key].shape and key in layout and key in src_layout:
            (src_grid, prefix), (dst_grid, _) = src_layout[key], layout[key]
            try:
                value = posembed.resample(value.float(), src_grid, dst_grid, prefix, pos_spatial, pos_temporal)
            except ValueError as e:
                raise VivitError(f"{source}: cannot resample {key} from grid {src_grid} to {dst_grid}: {e}") from e
            report.resampled[key] = [list(state_dict[key].shape), list(value.shape)]
        if value.shape != own[key].shape:
            raise VivitError(f"{source}: shape mismatch for {key}: checkpoint {tuple(value.shape)}, "
                             f"model {tuple(own[key].shape)}")
        merged[key] = value.to(own[key].dtype)
    model.load_state_dict(merged, strict=True)
    return report


def weights_file(folder: str | Path) -> Path:
    """The weights a folder holds, first found of `WEIGHT_FILES` (a sharded checkpoint by its index)."""
    folder = Path(folder)
    found = [folder / f for f in WEIGHT_FILES if (folder / f).exists()]
    if not found:
        raise FileNotFoundError(f"no weights in {folder}: expected one of {list(WEIGHT_FILES)}")
    return found[0]


def read_index(index: str | Path) -> dict[str, str]:
    """The weight_map (tensor name -> shard file) of a sharded checkpoint's `*.index.json`, as transformers'
    `save_pretrained(max_shard_size=...)` writes it; every shard is a weights file beside the index."""
    index = Path(index)
    data = read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise VivitError(f"{index} has no weight_map (tensor name -> shard file): not a sharded checkpoint index")
    for shard in set(weight_map.values()):
        plain = isinstance(shard, str) and Path(shard).name == shard and shard not in (".", "..")
        if not plain or shard.endswith(INDEX_SUFFIX):
            raise VivitError(f"{index}: weight_map names shard {shard!r}, not a weights file name beside the index")
    return weight_map


def _read_sharded(index: Path) -> dict[str, torch.Tensor]:
    """Every shard an index names, merged; each tensor must be in the shard the weight_map gives."""
    weight_map = read_index(index)
    shards = {}
    for name in sorted(set(weight_map.values())):
        if not (index.parent / name).is_file():
            raise FileNotFoundError(f"{index} names shard {name}, which is not in {index.parent}")
        shards[name] = read_state_dict(index.parent / name)
    absent = [f"{key} (in {shard})" for key, shard in weight_map.items() if key not in shards[shard]]
    if absent:
        raise VivitError(f"{index}: {len(absent)} tensor(s) of the weight_map are not in their shard: {absent[:4]}")
    return {key: shards[shard][key] for key, shard in weight_map.items()}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from .safetensors, .npz (no pickles), a PyTorch file through `torch.load(weights_only=True)`,
    or a sharded checkpoint's `*.index.json` (its shards merged); a folder is searched for `WEIGHT_FILES`."""
    path = Path(path)
    if path.is_dir():
        path = weights_file(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.name.endswith(INDEX_SUFFIX):
        return _read_sharded(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error type for truncated or corrupt files
            raise VivitError(f"{path} is not a readable safetensors file: {e}") from e
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            return {k: torch.from_numpy(np.asarray(npz[k])) for k in npz.files}
    if path.suffix in PICKLE_SUFFIXES:
        return _unwrap(torch_load(path, "weights"), path)
    raise VivitError(f"{path}: unknown weights format {path.suffix!r}; use .safetensors, .npz, "
                     f"{', '.join(PICKLE_SUFFIXES)} (read with weights_only=True) or a sharded checkpoint's "
                     f"*{INDEX_SUFFIX}")


def torch_load(path: Path, what: str) -> Any:
    """`torch.load(weights_only=True)` with one error line for people: an empty file, a file that is not a
    PyTorch file (a video, a text), one holding Python objects (without torch's advice to load it unsafely,
    which would run the file's code), a corrupt or truncated one."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign, unsafe or corrupt files
        if path.stat().st_size == 0:
            reason = "the file is empty (0 bytes)"
        elif not _torch_file(path):
            reason = "not a PyTorch file (torch.save output)"
        elif isinstance(e, pickle.UnpicklingError):
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            reason = (f"it holds Python objects{f' ({found.group(1)})' if found else ''} besides tensors and "
                      "containers, which torch.load(weights_only=True) does not load")
        else:
            lines = str(e).strip().splitlines()
            reason = f"the file is corrupt or truncated ({lines[0].split('. ')[0] if lines else type(e).__name__})"
        raise VivitError(f"cannot read {what} {path}: {reason}") from None


def _torch_file(path: Path) -> bool:
    """A zip archive (torch.save since PyTorch 1.6) or a pickle of protocol 2 (the legacy format)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or head[:2] == b"\x80\x02"


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A training checkpoint may nest the weights under 'state_dict' or 'model'."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VivitError(f"{path} does not hold a flat state dict of tensors")
    return dict(obj)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise VivitError(f"{path} is not valid JSON: {e}") from e


def sibling_config(path: str | Path) -> dict[str, Any] | None:
    """The `config.json` of a weights folder, or beside a weights file; None when there is none."""
    path = Path(path)
    file = (path if path.is_dir() else path.parent) / CONFIG_FILE
    return read_json(file) if file.exists() else None


OUR_FILES = (CONFIG_FILE, WEIGHTS_FILE, LABELS_FILE)  # what save_pretrained writes (and `extra_files`)


def save_pretrained(model: ViViT, path: str | Path, labels: list[str] | None = None,
                    extra_files: Mapping[str, str] | None = None, *, overwrite: bool = False) -> Path:
    """Write `config.json` + `model.safetensors` (+ `labels.txt`, one class name a line, + `extra_files`
    name -> text) to a folder. A previous vivit model folder is replaced whole; any other non-empty
    folder (or a file) is refused unless `overwrite`, so nothing we did not write is deleted by surprise."""
    path = Path(path)
    model = unwrap_model(model)
    if labels is not None and len(labels) != model.config.num_classes:
        raise VivitError(f"{len(labels)} labels given for a model with num_classes={model.config.num_classes}")
    if not overwrite:
        check_replaceable(path, extra=tuple(extra_files or ()))

    def write(tmp: Path) -> None:
        (tmp / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "library": "vivit"})
        if labels is not None:
            write_labels(tmp / LABELS_FILE, labels)
        for extra, text in (extra_files or {}).items():
            (tmp / extra).write_text(text, encoding="utf-8")

    return write_folder(path, write)


def write_folder(path: Path, write: Callable[[Path], None]) -> Path:
    """Fill a temporary folder beside `path` with `write(tmp)`, then swap it in for `path` (a kill never leaves
    a torn folder). The folder and its files get the permissions of any new file (0777/0666 minus the umask):
    `tempfile.mkdtemp` makes 0700 folders and safetensors writes 0600 files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(tmp)
        umask = current_umask()
        for file in tmp.iterdir():
            file.chmod(0o666 & ~umask)
        tmp.chmod(0o777 & ~umask)
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def current_umask() -> int:
    """The process's file mode creation mask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_vivit_folder(path: Path) -> bool:
    """A folder written by `save_pretrained`: its model.safetensors carries our metadata."""
    from safetensors import safe_open

    try:
        with safe_open(str(path / WEIGHTS_FILE), "pt") as f:
            return (f.metadata() or {}).get("library") == "vivit"
    except Exception:  # missing or not a safetensors file: not ours
        return False


def check_replaceable(path: Path, extra: tuple[str, ...] = ()) -> None:
    """Raise VivitError unless `path` is absent, an empty folder, or a vivit model folder holding only our files."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise VivitError(f"{path} exists and is not a folder; choose another output or pass --overwrite")
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return
    foreign = [name for name in entries if name not in (*OUR_FILES, *extra)]
    if not is_vivit_folder(path) or foreign:
        what = f"holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}" if foreign else "is not a vivit model folder"
        raise VivitError(f"{path} {what}: refusing to replace it; choose an empty or new folder, "
                         "or pass --overwrite (save_pretrained(overwrite=True)) to replace it")


def load_labels(path: str | Path) -> list[str] | None:
    """Class names from `labels.txt` in a saved folder, or None when there is none."""
    file = Path(path) / LABELS_FILE
    return read_labels(file) if file.exists() else None


def load_pretrained(path: str | Path, **overrides: Any) -> ViViT:
    """Load a folder written by `save_pretrained`. Overrides change the config, e.g. `num_frames=16,
    image_size=160` (positional embeddings are resampled; `pos_temporal="tile"` repeats the frame sequence,
    as the official Scenic `tile`) or `num_classes=10` (a fresh head)."""
    return load_pretrained_with_report(path, **overrides)[0]


def load_pretrained_with_report(path: str | Path, **overrides: Any) -> tuple[ViViT, LoadReport]:
    path = Path(path)
    if not (path / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{path} is not a saved vivit model: no {CONFIG_FILE}")
    source_config = ViViTConfig.from_dict(read_json(path / CONFIG_FILE))
    return build(source_config, read_state_dict(path / WEIGHTS_FILE), str(path), **overrides)


def build(source_config: ViViTConfig, state_dict: Mapping[str, torch.Tensor], source: str,
          pos_spatial: str = "bicubic", pos_temporal: str = "linear", **overrides: Any) -> tuple[ViViT, LoadReport]:
    """A model for `source_config.replace(**overrides)` holding `state_dict` (our key names). A changed
    `num_classes` leaves the head freshly initialised; another frame count or size resamples pos-embeds
    (`pos_spatial` / `pos_temporal`: modes of `posembed.resample`)."""
    config = source_config.replace(**overrides)
    model = ViViT(config)
    state, wrapper_prefix = strip_wrapper_prefix(state_dict)
    allow: tuple[str, ...] = ()
    if config.num_classes != source_config.num_classes:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        allow = ("head.",)
    report = load_state_dict(model, state, source, source_config, allow, pos_spatial, pos_temporal)
    report.wrapper_prefix = wrapper_prefix
    if allow:
        report.notes.append(f"head re-initialised: num_classes {source_config.num_classes} -> {config.num_classes}")
    return model.eval(), report
