import pytest

from vivit.config import PRESETS, ViViTConfig
from vivit.errors import ConfigError


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


def test_unknown_field_is_rejected():
    with pytest.raises(ConfigError, match="num_frame"):
        ViViTConfig().replace(num_frame=8)


def test_dict_round_trip():
    cfg = PRESETS["vivit-s-16x2-fe"].replace(num_frames=8, image_size=64)
    assert ViViTConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.grid == (4, 4, 4)
