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


def test_multi_head_loss_defaults_to_the_official_mean_over_splits():
    """scenic/projects/vivit/model.py, ViViTMultiHeadClassificationModel.loss_function: jnp.mean of the splits."""
    assert load_config(None).optim.split_loss == "mean"
    assert load_config(None, ["optim.split_loss=sum"]).optim.split_loss == "sum"
    with pytest.raises(ConfigError, match="optim.split_loss='total' is not allowed"):
        load_config(None, ["optim.split_loss=total"])


# The official configs' values (scenic/projects/vivit/configs/, DMVR modalities.add_image / processors.py), spelled
# out here: frames, stride, crop, short side, LR, epochs, warmup, flip, colour jitter, colour drop, smoothing, mixup,
# stochastic depth.
OFFICIAL_RECIPES = {
    "k400_vivit_b_fe.yaml": dict(num_frames=32, frame_stride=2, image_size=224, short_side=256, lr=0.05, epochs=30,
                                 warmup=2.5, flip=0.5, color_jitter=0.8, grayscale=0.1, smoothing=0.0, mixup=0.0,
                                 drop_path=0.0),
    "ssv2_vivit_l_fe.yaml": dict(num_frames=32, frame_stride=1, image_size=256, short_side=288, lr=0.4, epochs=35,
                                 warmup=2.5, flip=0.5, color_jitter=0.0, grayscale=0.0, smoothing=0.3, mixup=0.3,
                                 drop_path=0.3),
    "ek_vivit_l_fe.yaml": dict(num_frames=32, frame_stride=1, image_size=224, short_side=256, lr=0.5, epochs=50,
                               warmup=2.5, flip=0.5, color_jitter=0.0, grayscale=0.0, smoothing=0.2, mixup=0.1,
                               drop_path=0.2),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_RECIPES))
def test_presets_follow_the_official_configs(name):
    from pathlib import Path

    from vivit.engine.build import augment_config

    c = load_config(Path(__file__).parent.parent / "configs" / name)
    augment = augment_config(c.data)
    ours = dict(num_frames=c.data.num_frames, frame_stride=c.data.frame_stride, image_size=c.data.image_size,
                short_side=augment.resize_to(c.data.image_size), lr=c.optim.lr, epochs=c.schedule.epochs,
                warmup=c.schedule.warmup_epochs, flip=augment.flip, color_jitter=augment.color_jitter,
                grayscale=augment.grayscale, smoothing=c.optim.label_smoothing, mixup=c.optim.mixup_alpha,
                drop_path=c.model.drop_path)
    assert ours == OFFICIAL_RECIPES[name]
    assert (c.optim.name, c.optim.momentum, c.optim.base_batch_size, c.optim.weight_decay) == ("sgd", 0.9, 64, 0.0)
    assert (c.schedule.name, c.optim.clip_grad_norm, c.run.batch_size) == ("cosine", 1.0, 64)
