import pytest

from vivit.config import PRESETS, ViViTConfig
from vivit.errors import ConfigError
from vivit.model import create_model


def test_presets_cover_sizes_and_variants():
    for size in ("ti", "s", "b", "l", "h"):
        for kind in ("st", "fe", "fsa", "fdp"):
            assert f"vivit-{size}-16x2-{kind}" in PRESETS
    assert PRESETS["vivit-b-16x2-fe-avg"].temporal_pool == "avg"


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(variant="joint"), "variant"),
        (dict(classifier="cls"), "classifier"),
        (dict(num_frames=31), "tubelet"),
        (dict(variant="fsa", classifier="token"), "classifier"),
        (dict(tokenizer="uniform_frame"), "tubelet"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        ViViTConfig(**overrides)


@pytest.mark.parametrize(
    "overrides, says",
    [
        (dict(num_frames=1), r"num_frames=1 does not fit tubelet=\(2, 16, 16\) \(t, h, w\): its t size 2 must divide "
                             r"num_frames; set num_frames to a multiple of 2, or the tubelet's t to one of \[1\]"),
        (dict(num_frames=9, tubelet=(4, 16, 16)), r"num_frames=9 .*multiple of 4, or the tubelet's t to one of \[1, 3, 9\]"),
        (dict(image_size=(224, 200)), r"image_size\[1\]=200 .*its w size 16 .*multiple of 16, or the tubelet's w to "
                                      r"one of \[1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100, 200\]"),
    ],
)
def test_a_tubelet_that_does_not_fit_names_the_fields_and_the_allowed_values(overrides, says):
    with pytest.raises(ConfigError, match=says):
        ViViTConfig(**overrides)
    with pytest.raises(ConfigError, match=says):
        create_model("vivit-b-16x2-st", **overrides)


def test_unknown_field_is_rejected():
    with pytest.raises(ConfigError, match="num_frame"):
        ViViTConfig().replace(num_frame=8)


def test_dict_round_trip():
    cfg = PRESETS["vivit-s-16x2-fe"].replace(num_frames=8, image_size=64)
    assert ViViTConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.grid == (4, 4, 4)
