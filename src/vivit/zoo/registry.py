"""The model registry: pretrained ViViTs known by name, as data (`registry.toml` shipped with the package,
plus the files named by `VIVIT_ZOO`, separated by `os.pathsep`; a later table with the same name wins).

One `[[model]]` table per model. Contract keys: `name`, `format` (scenic | hf | vivit), `url` (an URL, a
path, or for format hf a Hub repo id or folder), `variant` (st | fe | fe-avg | fsa | fdp), `frames` (the
training frame count, which a Scenic tree cannot tell) and `labels` (a label set shipped in `labels/`,
an inline list of names, or a path/URL of a labels.txt). Preprocessing as trained: `stride` (default 2),
`short_side` (default crop * 256 / 224), `crop` (default: the model's image size), `normalisation`
(minus_one_one), `views` (CLIPSxCROPS, default 4x3). Optional: `size` (bytes) and `sha256` of
the file, `accuracy` + `metric` as reported, `dataset`, `description`, and for multi-head models
`class_splits` + `split_names`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from vivit.errors import ConfigError

FORMATS = ("scenic", "hf", "vivit")
VARIANTS = ("st", "fe", "fe-avg", "fsa", "fdp")
NORMALISATIONS = ("minus_one_one",)  # pixels / 127.5 - 1 (official `zero_centering`)
REQUIRED = ("name", "format", "url", "variant", "frames", "labels")
ZOO_ENV = "VIVIT_ZOO"


@dataclass(frozen=True)
class Preprocess:
    """How a model's inputs were made when it was trained and tested (official config names in brackets)."""

    frames: int = 32                       # clip length [num_frames]
    stride: int = 2                        # frame stride of a clip [stride]
    short_side: int | None = 256           # resize target of the short side [min_resize]; None: crop * 256 / 224
    crop: int = 224                        # square crop [crop_size]: the model's image size
    normalisation: str = "minus_one_one"   # pixel range [-1, 1] [zero_centering]
    views: str = "4x3"                     # test views, temporal clips x spatial crops [num_test_clips]

    def train_config(self) -> dict[str, Any]:
        """The `data` section of a training config that preprocesses videos this way (for eval/predict)."""
        augment = {"normalization": self.normalisation}
        if self.short_side is not None:
            augment["short_side"] = self.short_side
        return {"data": {"num_frames": self.frames, "frame_stride": self.stride, "image_size": self.crop,
                         "augment": augment}}


@dataclass(frozen=True)
class ModelEntry:
    """One registry table, validated."""

    name: str
    format: str
    url: str
    variant: str
    frames: int
    labels: str | tuple[str, ...]
    stride: int = 2
    short_side: int | None = None          # None: crop * 256 / 224 (the official 256 for 224)
    crop: int | None = None                # None: the model's image size
    normalisation: str = "minus_one_one"
    views: str = "4x3"
    accuracy: float | None = None
    metric: str = "top-1"
    dataset: str = ""
    description: str = ""
    size: int | None = None
    sha256: str | None = None
    class_splits: tuple[int, ...] | None = None
    split_names: tuple[str, ...] | None = None
    source: str = ""                       # the registry file the entry comes from (not a TOML key)

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(self.frames, self.stride, self.short_side, self.crop or 224, self.normalisation, self.views)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


KEYS = tuple(f.name for f in dataclasses.fields(ModelEntry) if f.name != "source")


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _check_type(where: str, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _fail(where, f"field '{key}' must be {what}, got {value!r}")


def parse_entry(table: dict[str, Any], source: str) -> ModelEntry:
    """Validate one `[[model]]` table; errors name the file, the model, the field and what is allowed."""
    where = f"{source}: model {table.get('name', '?')!r}"
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise _fail(where, f"unknown field '{unknown[0]}'; allowed fields: {', '.join(KEYS)}")
    missing = [k for k in REQUIRED if k not in table]
    if missing:
        raise _fail(where, f"missing field '{missing[0]}' (required: {', '.join(REQUIRED)})")
    for key in ("name", "url", "metric", "dataset", "description", "views"):
        if key in table:
            _check_type(where, key, table[key], str, "a string")
    for key, allowed in (("format", FORMATS), ("variant", VARIANTS), ("normalisation", NORMALISATIONS)):
        if key in table and table[key] not in allowed:
            raise _fail(where, f"field '{key}' = {table[key]!r} is not allowed; choose one of {list(allowed)}")
    for key in ("frames", "stride", "short_side", "crop", "size"):
        if key in table:
            _check_type(where, key, table[key], int, "a positive integer")
            if table[key] < 1:
                raise _fail(where, f"field '{key}' must be a positive integer, got {table[key]}")
    if "accuracy" in table:
        _check_type(where, "accuracy", table["accuracy"], (int, float), "a number (percent)")
    if not re.fullmatch(r"[1-9]\d*x[13]", table.get("views", "4x3")):
        raise _fail(where, f"field 'views' = {table['views']!r} must be CLIPSxCROPS with 1 or 3 crops, e.g. '4x3'")
    if "sha256" in table and not (isinstance(table["sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", table["sha256"])):
        raise _fail(where, f"field 'sha256' must be 64 lower-case hex digits, got {table['sha256']!r}")
    labels = table["labels"]
    if isinstance(labels, list):
        if not labels or not all(isinstance(x, str) and x.strip() for x in labels):
            raise _fail(where, "field 'labels' as a list must hold non-empty class names")
        labels = tuple(labels)
    else:
        _check_type(where, "labels", labels, str, "a label set name, a list of names or a path/URL of a labels.txt")
    values = {**table, "labels": labels, "source": source}
    splits, names = table.get("class_splits"), table.get("split_names")
    if (splits is None) != (names is None):
        raise _fail(where, "fields 'class_splits' and 'split_names' go together: give both or neither")
    if splits is not None:
        if not (isinstance(splits, list) and splits and all(isinstance(n, int) and n > 0 for n in splits)):
            raise _fail(where, f"field 'class_splits' must be a list of positive integers, got {splits!r}")
        if not (isinstance(names, list) and len(names) == len(splits) and all(isinstance(n, str) for n in names)):
            raise _fail(where, f"field 'split_names' must be {len(splits)} names, one per class split, got {names!r}")
        if isinstance(labels, tuple) and len(labels) != sum(splits):
            raise _fail(where, f"{len(labels)} labels for class_splits {splits} (sum {sum(splits)})")
        values.update(class_splits=tuple(splits), split_names=tuple(names))
    return ModelEntry(**values)


def parse_registry(text: str, source: str) -> list[ModelEntry]:
    """The entries of one registry file's text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    unknown = sorted(set(data) - {"model"})
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key '{unknown[0]}'; a registry holds [[model]] tables only")
    tables = data.get("model", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{source}: 'model' must be an array of tables ([[model]])")
    entries = [parse_entry(t, source) for t in tables]
    seen: set[str] = set()
    for e in entries:
        if e.name in seen:
            raise ConfigError(f"{source}: model {e.name!r} is listed twice")
        seen.add(e.name)
    return entries


def shipped_registry() -> tuple[str, str]:
    """(text, description) of the registry shipped with the package."""
    file = resources.files("vivit.zoo").joinpath("registry.toml")
    return file.read_text(encoding="utf-8"), str(file)


def extra_registries() -> list[Path]:
    """The files named by `VIVIT_ZOO` (`os.pathsep`-separated), in order."""
    return [Path(p).expanduser() for p in os.environ.get(ZOO_ENV, "").split(os.pathsep) if p.strip()]


def load_registry() -> dict[str, ModelEntry]:
    """Every known model by name: the shipped registry, then each `VIVIT_ZOO` file (same name replaces)."""
    text, source = shipped_registry()
    entries = {e.name: e for e in parse_registry(text, source)}
    for path in extra_registries():
        if not path.is_file():
            raise ConfigError(f"{ZOO_ENV}: registry file not found: {path}")
        try:
            extra = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{ZOO_ENV}: {path} is not UTF-8 text") from None
        entries.update({e.name: e for e in parse_registry(extra, str(path))})
    return entries


def get_entry(name: str) -> ModelEntry:
    """The entry called `name`, or a ConfigError listing close names."""
    import difflib

    entries = load_registry()
    if name in entries:
        return entries[name]
    close = difflib.get_close_matches(name, list(entries), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `vivit models` lists them"
    raise ConfigError(f"no model named {name!r} in the registry ({len(entries)} models){hint}")


def shipped_label_sets() -> list[str]:
    """Names of the label sets shipped in `vivit/zoo/labels/` (file stems)."""
    folder = resources.files("vivit.zoo").joinpath("labels")
    return sorted(p.name.removesuffix(".txt") for p in folder.iterdir() if p.name.endswith(".txt"))


def shipped_labels(name: str) -> list[str]:
    """The class names of a shipped label set, in output order."""
    if name not in shipped_label_sets():
        raise ConfigError(f"no shipped label set {name!r}; choose one of {shipped_label_sets()}")
    text = resources.files("vivit.zoo").joinpath("labels", f"{name}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]
