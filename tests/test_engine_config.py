import pytest

from vivit.engine.config import TrainConfig, apply_override, load_config, save_config
from vivit.errors import ConfigError, VivitError


def test_yaml_and_toml_with_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("optim:\n  name: adamw\n  lr: 1\nrun:\n  batch_size: 16\n")
    (tmp_path / "a.toml").write_text('[optim]\nname = "adamw"\nlr = 1\n[run]\nbatch_size = 16\n')
    for name in ("a.yaml", "a.toml"):
        c = load_config(tmp_path / name, ["optim.lr=0.05", "optim.betas=[0.9, 0.95]", "schedule.max_steps=null"])
        assert c.optim.name == "adamw" and c.optim.lr == 0.05 and isinstance(c.optim.lr, float)
        assert c.optim.betas == (0.9, 0.95) and c.run.batch_size == 16 and c.schedule.max_steps is None


def test_int_is_promoted_to_float_and_saved_config_round_trips(tmp_path):
    c = load_config(None, ["optim.lr=1", "model.overrides={depth: 2}"])
    assert c.optim.lr == 1.0 and isinstance(c.optim.lr, float)
    save_config(c, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == c


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=0.1", "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
        ("optimm.lr=0.1", "unknown config key 'optimm'; did you mean 'optim'?"),
        ("optim.lr=fast", "optim.lr must be float, got 'fast'"),
        ("run.batch_size=2.5", "run.batch_size must be int, got 2.5"),
        ("run.deterministic=3", "run.deterministic must be bool, got 3"),
        ("optim.name=adam", "optim.name='adam' is not allowed (did you mean 'adamw'?)"),
        ("model.name=vivit-x", "model.name='vivit-x' is not allowed"),
        ("optim.label_smoothing=1.5", "optim.label_smoothing must be in [0, 1)"),
        ("run.grad_accum=3", "run.batch_size 64 must be divisible by run.grad_accum 3"),
        ("model.overrides={num_frames: 8}", "model.overrides.num_frames is set by data.num_frames"),
        ("lr=0.1", "must look like section.key=value"),
    ],
)
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=None) as e:
        load_config(None, [override])
    assert message in str(e.value)


def test_override_typing_follows_yaml_scalars():
    d = {}
    for item in ("a.b=1", "a.c=0.5", "a.d=true", "a.e=null", "a.f=text", "a.g=[1, 2]"):
        apply_override(d, item)
    assert d == {"a": {"b": 1, "c": 0.5, "d": True, "e": None, "f": "text", "g": [1, 2]}}
    assert load_config(None, ["optim.lr=1e-3"]).optim.lr == 0.001  # YAML 1.1 reads 1e-3 as a string


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00model: x")
    with pytest.raises(VivitError, match="binary.yaml is not UTF-8 text"):
        load_config(tmp_path / "binary.yaml")
    (tmp_path / "utf8.yaml").write_text("run:\n  out: runs/caf\u00e9\n", encoding="utf-8")
    assert load_config(tmp_path / "utf8.yaml").run.out == "runs/caf\u00e9"


def test_example_configs_are_valid_and_demo_yaml_is_the_demo_recipe():
    from pathlib import Path

    from vivit.engine.demo import demo_config

    configs = Path(__file__).parent.parent / "configs"
    assert len(list(configs.glob("*.yaml"))) >= 3
    for path in sorted(configs.glob("*.yaml")):
        assert isinstance(load_config(path), TrainConfig)
    assert load_config(configs / "demo.yaml") == demo_config(Path("runs/demo"), "vivit-ti-16x2-fe")
