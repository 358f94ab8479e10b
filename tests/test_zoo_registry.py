"""The model registry: the shipped entries and label sets, validation, VIVIT_ZOO merging, packaging."""

from __future__ import annotations

import fnmatch
import os
import tomllib
from pathlib import Path

import pytest
from zoo_fixtures import zoo  # noqa: F401 (fixture)

from vivit.errors import ConfigError
from vivit.zoo import registry

OFFICIAL = "https://storage.googleapis.com/scenic-bucket/vivit/"


def test_shipped_registry_has_the_six_models_with_their_preprocessing(monkeypatch):
    monkeypatch.delenv("VIVIT_ZOO", raising=False)
    entries = registry.load_registry()
    expected = {  # name: (url under the official base, variant, stride, views, reported accuracy, classes)
        "vivit-b-16x2-kinetics400": ("kinetics_400/vivit_base_16x2_unfactorized/checkpoint", "st", 2, "4x3", 79.9, 400),
        "vivit-b-16x2-fe-kinetics400": ("kinetics_400/vivit_base_16x2_fe/checkpoint", "fe", 2, "4x3", 78.4, 400),
        "vivit-l-16x2-fe-kinetics400": ("kinetics_400/vivit_large_16x2_fe/checkpoint", "fe", 2, "4x3", 80.3, 400),
        "vivit-l-16x2-fe-kinetics600": ("kinetics_600/vivit_large_16x2_fe/checkpoint", "fe", 2, "4x3", 81.6, 600),
        "vivit-l-16x2-fe-epic-kitchens": ("epic_kitchens/vivit_large_16x2_fe/checkpoint", "fe", 1, "4x1", 43.6, 397),
    }
    assert set(entries) == {*expected, "google/vivit-b-16x2-kinetics400"}
    for name, (path, variant, stride, views, accuracy, classes) in expected.items():
        e = entries[name]
        assert (e.format, e.url, e.variant, e.frames) == ("scenic", OFFICIAL + path, variant, 32)
        assert (e.stride, e.short_side, e.crop, e.normalisation, e.views) == (stride, 256, 224, "minus_one_one", views)
        assert e.accuracy == accuracy and len(registry.shipped_labels(e.labels)) == classes
    hf = entries["google/vivit-b-16x2-kinetics400"]
    assert (hf.format, hf.url, hf.variant, hf.frames, hf.labels) == ("hf", "google/vivit-b-16x2-kinetics400", "st", 32, "kinetics400")
    ek = entries["vivit-l-16x2-fe-epic-kitchens"]
    assert ek.class_splits == (300, 97) and ek.split_names == ("noun", "verb")


def test_shipped_label_sets_are_in_output_order():
    k400, k600, ek = (registry.shipped_labels(n) for n in ("kinetics400", "kinetics600", "epic-kitchens-100"))
    assert len(set(k400)) == 400 and len(set(k600)) == 600
    assert k400[:3] == ["abseiling", "air drumming", "answering questions"] and k400[-1] == "zumba"
    assert k600[:3] == ["abseiling", "acting in play", "adjusting glasses"] and k600[-1] == "zumba"
    # EPIC_100_noun_classes.csv ids 0.. then EPIC_100_verb_classes.csv ids 0.. (class_splits [300, 97])
    assert ek[:3] == ["tap", "spoon", "plate"] and ek[300:303] == ["take", "put", "wash"]


def test_registry_and_labels_ship_in_the_wheel():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["vivit.zoo"]
    zoo = Path(registry.__file__).parent
    for file in [zoo / "registry.toml", *(zoo / "labels").glob("*.txt")]:
        assert any(fnmatch.fnmatch(str(file.relative_to(zoo)), p) for p in patterns), file
    assert "huggingface_hub" in pyproject["project"]["optional-dependencies"]["hub"][0]


@pytest.mark.parametrize("change, field", [
    ({"format": "onnx"}, "'format' = 'onnx' is not allowed; choose one of ['scenic', 'hf', 'vivit']"),
    ({"variant": "model2"}, "'variant' = 'model2' is not allowed"),
    ({"frames": 0}, "'frames' must be a positive integer"),
    ({"frames": "32"}, "'frames' must be a positive integer"),
    ({"views": "4x2"}, "'views' = '4x2' must be CLIPSxCROPS"),
    ({"sha256": "abc"}, "'sha256' must be 64 lower-case hex digits"),
    ({"normalisation": "imagenet"}, "'normalisation' = 'imagenet' is not allowed"),
    ({"colour": "red"}, "unknown field 'colour'"),
    ({"class_splits": [1, 1]}, "'class_splits' and 'split_names' go together"),
])
def test_invalid_registry_entries_name_the_field(zoo, change, field):
    zoo(bad={"url": "x", **change})
    with pytest.raises(ConfigError, match="model 'bad'") as e:
        registry.load_registry()
    assert field in str(e.value)


def test_missing_contract_field_is_named(zoo, tmp_path):
    (tmp_path / "extra.toml").write_text('[[model]]\nname = "m"\nformat = "scenic"\nurl = "x"\nvariant = "st"\nlabels = "kinetics400"\n')
    with pytest.raises(ConfigError, match="missing field 'frames'"):
        registry.load_registry()


def test_vivit_zoo_files_are_merged_in_order_and_same_name_overrides(zoo, tmp_path, monkeypatch):
    first = zoo(**{"vivit-b-16x2-kinetics400": {"url": "http://127.0.0.1:1/mine"}, "mine": {"url": "a"}})
    second = tmp_path / "second.toml"
    second.write_text('[[model]]\nname = "mine"\nformat = "vivit"\nurl = "b"\nvariant = "fe"\nframes = 4\nlabels = "kinetics600"\n')
    monkeypatch.setenv("VIVIT_ZOO", os.pathsep.join([str(first), str(second)]))
    entries = registry.load_registry()
    assert entries["vivit-b-16x2-kinetics400"].url == "http://127.0.0.1:1/mine"
    assert entries["vivit-b-16x2-kinetics400"].source == str(first)
    assert (entries["mine"].format, entries["mine"].url, entries["mine"].source) == ("vivit", "b", str(second))
    assert len(entries) == 7
