"""Pretrained ViViTs by name: resolve a registry entry, download it once, convert it once, and load it
from the cache with its class names (`model.labels`) and preprocessing (`model.preprocess`) attached.

Cache layout, per model, in `$VIVIT_HOME/models/<name with / as -->/`: `download/` (the raw file, as
fetched) and `model/` (our folder: config.json, model.safetensors, labels.txt, preprocess.json and
zoo_source.json, the registry fields the conversion used; another value there means convert again).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from vivit.backends import vivit_home
from vivit.config import ViViTConfig
from vivit.errors import VivitError
from vivit.model.vivit import ViViT
from vivit.textfiles import read_labels
from vivit.weights import store
from vivit.zoo import download
from vivit.zoo.registry import ModelEntry, Preprocess, get_entry, load_registry, shipped_label_sets, shipped_labels

PREPROCESS_FILE = "preprocess.json"
SOURCE_FILE = "zoo_source.json"
# What a ViViT needs from a Hub repo: its config and weights, a sharded checkpoint's index (its shards come next).
HF_FILES = [store.CONFIG_FILE, *store.WEIGHT_FILES]
SOURCE_FIELDS = ("format", "url", "variant", "frames", "labels", "size", "sha256")


def entry_dir(entry: ModelEntry) -> Path:
    return download.cache_root() / entry.name.replace("/", "--")


def model_dir(entry: ModelEntry) -> Path:
    """The converted model folder of an entry in the cache."""
    return entry_dir(entry) / "model"


def source_record(entry: ModelEntry, fields: tuple[str, ...] = SOURCE_FIELDS) -> dict[str, Any]:
    return {k: v for k, v in entry.to_dict().items() if k in fields}


def download_dir(entry: ModelEntry) -> Path:
    """`<entry>/download/`, emptied first when it holds the file of another url/size/sha256 (a changed entry)."""
    folder = entry_dir(entry) / "download"
    record = json.dumps(source_record(entry, ("url", "size", "sha256")), indent=2) + "\n"
    marker = folder / SOURCE_FILE
    if folder.exists() and not (marker.is_file() and marker.read_text(encoding="utf-8") == record):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(record, encoding="utf-8")
    return folder


def is_cached(entry: ModelEntry) -> bool:
    """Whether the converted model is in the cache, made from the entry as it is registered now."""
    folder = model_dir(entry)
    if not (folder / store.CONFIG_FILE).is_file() or not (folder / store.WEIGHTS_FILE).is_file():
        return False
    try:
        return store.read_json(folder / SOURCE_FILE) == source_record(entry)
    except (OSError, VivitError):
        return False


def variant_of(config: ViViTConfig) -> str:
    """The registry's variant name of a model config (`fe-avg`: the factorised encoder's average-pool baseline)."""
    return "fe-avg" if config.variant == "fe" and config.temporal_pool == "avg" else config.variant


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr)


# Labels ----------------------------------------------------------------------------------------------
def resolve_labels(entry: ModelEntry, quiet: bool = True) -> list[str]:
    """The class names an entry declares: a shipped set, an inline list, or a labels.txt path/URL
    (a relative path is relative to the registry file)."""
    spec = entry.labels
    if isinstance(spec, tuple):
        return list(spec)
    if spec in shipped_label_sets():
        return shipped_labels(spec)
    if not (download.is_remote(spec) or spec.startswith("file:") or spec.endswith(".txt") or "/" in spec):
        raise VivitError(f"{entry.source}: model {entry.name!r}: labels {spec!r} is neither a shipped label set "
                         f"({', '.join(shipped_label_sets())}) nor a path/URL of a labels.txt")
    if not download.is_remote(spec) and not spec.startswith("file:") and not Path(spec).expanduser().is_absolute():
        spec = str(Path(entry.source).parent / spec)
    name = f"labels-{hashlib.sha256(spec.encode()).hexdigest()[:12]}.txt"  # one file per labels URL
    path = download.fetch(spec, entry_dir(entry) / name, quiet=quiet)
    return read_labels(path)


# Conversion --------------------------------------------------------------------------------------------
def _check_converted(entry: ModelEntry, model: ViViT, labels: list[str]) -> None:
    """The converted model is the one registered: variant, frame count and number of classes."""
    config = model.config
    if variant_of(config) != entry.variant:
        raise VivitError(f"it holds a {variant_of(config)!r} model, the registry says variant {entry.variant!r}")
    if config.num_frames != entry.frames:
        raise VivitError(f"it holds a {config.num_frames}-frame model, the registry says frames = {entry.frames}")
    if len(labels) != config.num_classes:
        raise VivitError(f"its head has {config.num_classes} classes, the registry's labels {len(labels)} names")
    if config.class_splits != entry.class_splits or (entry.class_splits and config.split_names != entry.split_names):
        raise VivitError(f"its head is split {config.splits}, the registry says class_splits "
                         f"{list(entry.class_splits or ())} ({', '.join(entry.split_names or ())})")


def _hf_folder(repo: str) -> Path:
    """A Hub repo's files through huggingface_hub (HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE apply), or a folder.
    `HF_FILES` first; when the weights are a sharded checkpoint, its index is read and the shards it names follow."""
    if Path(repo).expanduser().is_dir():
        return Path(repo).expanduser()
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise VivitError(f"{repo} is on the Hugging Face Hub, which needs huggingface_hub: "
                         "pip install 'vivit[hub]'") from None
    local_only = download.offline() or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes")

    def snapshot(patterns: list[str]) -> Path:
        try:
            return Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=local_only))
        except Exception as e:  # huggingface_hub raises its own types (cache miss offline, 404, network)
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
            where = " (offline: only the local Hugging Face cache was searched)" if local_only else ""
            raise VivitError(f"could not get {repo} from the Hugging Face Hub{where}: "
                             f"{type(e).__name__}: {detail}") from None

    folder = snapshot(HF_FILES)
    try:
        weights = store.weights_file(folder)
    except FileNotFoundError as e:
        raise VivitError(f"{repo} on the Hugging Face Hub: {e}") from None
    if weights.name.endswith(store.INDEX_SUFFIX):
        folder = snapshot(sorted(set(store.read_index(weights).values())))
    return folder


def _convert(entry: ModelEntry, quiet: bool) -> tuple[ViViT, list[str] | None, Path | None]:
    """(model, the checkpoint's own class names or None, the downloaded file to drop if it is refused)."""
    if entry.format == "hf":
        from vivit.weights import hf

        folder = _hf_folder(entry.url)
        model, _ = hf.load_hf(folder)
        config = store.sibling_config(folder)
        return model, hf.labels_from_hf(config) if config else None, None
    url = download.resolve_url(entry.url, Path(entry.source).parent)
    fetched = None
    if download.is_remote(url):
        try:
            path = fetched = download.fetch(url, download_dir(entry) / (Path(urllib.parse.urlsplit(url).path).name
                                                                        or "checkpoint"),
                                            size=entry.size, sha256=entry.sha256, quiet=quiet)
        except VivitError:
            _tidy(entry)
            raise
    else:
        path = download.local_file(url, entry.size, entry.sha256)
    try:
        if entry.format == "scenic":
            from vivit.weights import scenic
            from vivit.zoo.scenic_stream import read_params

            _say(f"converting {entry.name} (Scenic checkpoint)", quiet)
            heads = dict(class_splits=entry.class_splits, split_names=entry.split_names) if entry.class_splits else {}
            model, _ = scenic.load_scenic(read_params(path), entry.frames, "fdp" if entry.variant == "fdp" else None,
                                          **heads)  # one output_projection of sum(class_splits) logits
        elif path.is_dir():
            model = store.load_pretrained(path)
        else:
            model = _vivit_file(url, path, quiet)
    except (VivitError, KeyError, ValueError, IndexError) as e:
        _refuse(entry, url, fetched, e)
    return model, None, fetched


def _vivit_file(url: str, path: Path, quiet: bool) -> ViViT:
    """Our weights file (.safetensors) with the config.json that sits beside it (fetched too for an URL)."""
    config_url = url.rsplit("/", 1)[0] + "/" + store.CONFIG_FILE
    config_path = download.fetch(config_url, path.with_name(store.CONFIG_FILE), quiet=quiet)
    config = ViViTConfig.from_dict(store.read_json(config_path))
    return store.build(config, store.read_state_dict(path), url)[0]


def _tidy(entry: ModelEntry) -> None:
    """After a failed download: drop the entry's folders unless they hold something (a partial file to resume)."""
    folder = entry_dir(entry) / "download"
    if folder.is_dir() and not any(p.name != SOURCE_FILE for p in folder.iterdir()):
        shutil.rmtree(folder)
    with contextlib.suppress(OSError):
        entry_dir(entry).rmdir()  # only when empty


def _refuse(entry: ModelEntry, url: str, fetched: Path | None, error: Exception) -> NoReturn:
    if fetched is not None:
        fetched.unlink(missing_ok=True)
        _tidy(entry)
    gone = "; the download was removed from the cache" if fetched is not None else ""
    detail = error.args[0] if isinstance(error, KeyError) and error.args else error
    missing = "missing tensor " if isinstance(error, KeyError) else ""
    raise VivitError(f"{entry.name}: {url} is not a usable {entry.format} checkpoint: {missing}{detail}{gone}") from None


@contextlib.contextmanager
def _locked(entry: ModelEntry) -> Iterator[None]:
    """One process (or thread) at a time downloads and converts an entry; the others wait, then find it cached."""
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): concurrent first loads each download
        yield
        return
    lock = vivit_home() / "locks" / f"{entry_dir(entry).name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_cached(entry: ModelEntry, quiet: bool = False) -> Path:
    """The converted model folder of `entry`, downloading and converting it when the cache lacks it."""
    if is_cached(entry):
        return model_dir(entry)
    with _locked(entry):
        return model_dir(entry) if is_cached(entry) else _download_and_convert(entry, quiet)


def _download_and_convert(entry: ModelEntry, quiet: bool) -> Path:
    folder = model_dir(entry)
    model, own_labels, fetched = _convert(entry, quiet)
    labels = resolve_labels(entry, quiet)
    try:
        _check_converted(entry, model, own_labels or labels)
    except VivitError as e:
        _refuse(entry, entry.url, fetched, e)
    if own_labels is not None and own_labels != labels:
        warnings.warn(f"{entry.name}: the checkpoint's own class names differ from the registry's "
                      f"{entry.labels!r}; the checkpoint's are used", stacklevel=2)
    extra = {PREPROCESS_FILE: json.dumps(dataclasses.asdict(entry.preprocess), indent=2) + "\n",
             SOURCE_FILE: json.dumps(source_record(entry), indent=2) + "\n"}
    store.save_pretrained(model, folder, own_labels or labels, extra_files=extra)
    _say(f"cached {entry.name} in {folder}", quiet)
    return folder


# Loading ---------------------------------------------------------------------------------------------
def load_folder(path: str | Path, **overrides: Any) -> ViViT:
    """Our model folder (or a Hugging Face ViViT folder) with its labels and preprocessing attached."""
    path = Path(path)
    source = store.sibling_config(path) or {}
    if "model_type" in source:  # a transformers config
        from vivit.weights import hf

        model = hf.load_hf(path, **overrides)[0]
        labels = hf.labels_from_hf(source)
    else:
        model = store.load_pretrained(path, **overrides)
        labels = store.load_labels(path)
    preprocess = None
    if (path / PREPROCESS_FILE).is_file():
        fields = {k: v for k, v in store.read_json(path / PREPROCESS_FILE).items()
                  if k in {f.name for f in dataclasses.fields(Preprocess)}}
        preprocess = dataclasses.replace(Preprocess(**fields), frames=model.config.num_frames,
                                         crop=model.config.image_size[0])
    return attach(model, labels, preprocess)


def attach(model: ViViT, labels: list[str] | None, preprocess: Preprocess | None) -> ViViT:
    """Set `model.labels` (None when they do not fit the head), `model.split_labels` ({split: names} of a
    multi-head model, e.g. Epic-Kitchens nouns then verbs; None otherwise) and `model.preprocess`."""
    model.labels = labels if labels is not None and len(labels) == model.config.num_classes else None
    model.split_labels = None
    if model.labels is not None and model.config.class_splits:
        starts = [sum(model.config.class_splits[:i]) for i in range(len(model.config.class_splits))]
        model.split_labels = {name: model.labels[start:start + size]
                              for (name, size), start in zip(model.config.splits.items(), starts)}
    model.preprocess = preprocess
    return model


def load_pretrained(spec: str | Path, *, quiet: bool = False, **overrides: Any) -> ViViT:
    """A pretrained ViViT from a registry NAME (`vivit models`), a model FOLDER, or a weights FILE
    (.safetensors or a sharded checkpoint's .index.json beside our or transformers' config.json, a HF
    pytorch_model.bin beside transformers' config.json, or a `vivit train` checkpoint .pt), with
    `model.labels` and `model.preprocess` attached. Overrides adapt the config, e.g. `num_frames=16` or `num_classes=10`
    (a fresh head); a registry model is downloaded and converted once, then read from the cache."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_folder(path, **overrides)
    if path.is_file():
        return _load_file(path, **overrides)
    entry = get_entry(str(spec))
    return load_folder(ensure_cached(entry, quiet), **overrides)


def _load_file(path: Path, **overrides: Any) -> ViViT:
    weights = path.suffix == ".safetensors" or path.name.endswith(store.INDEX_SUFFIX)
    config = store.sibling_config(path) if weights or path.suffix == ".bin" else None
    if config is not None and "model_type" in config:  # transformers' config.json: a HF ViViT's weights
        from vivit.weights import hf

        return attach(hf.load_hf(path, **overrides)[0], hf.labels_from_hf(config), None)
    if weights:
        if config is None:
            raise VivitError(f"{path}: no {store.CONFIG_FILE} beside it, so the model cannot be built")
        model = store.build(ViViTConfig.from_dict(config), store.read_state_dict(path), str(path), **overrides)[0]
        return attach(model, store.load_labels(path.parent), None)
    from vivit.engine.checkpoint import load_model

    loaded = load_model(path)
    model = loaded.model
    if overrides:
        model = store.build(model.config, model.state_dict(), str(path), **overrides)[0]
    return attach(model, loaded.classes, None)


def is_registered(name: str) -> bool:
    return name in load_registry()


def load_registered(name: str, quiet: bool = False) -> Any:
    """A registry model as `vivit.engine.checkpoint.LoadedModel` (model, class names, the training
    config whose `data` section reproduces the model's preprocessing), for `predict` and `eval`."""
    from vivit.engine.checkpoint import LoadedModel

    model = load_pretrained(name, quiet=quiet)
    classes = model.labels or [str(i) for i in range(model.config.num_classes)]
    train_config = model.preprocess.train_config() if model.preprocess is not None else {}
    return LoadedModel(model.eval(), classes, train_config)
