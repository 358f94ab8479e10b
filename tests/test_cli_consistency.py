"""The CLI a new user meets: the same options, defaults, output shapes and error style across commands."""

import json
import logging
import os
import re
import stat
import warnings
from pathlib import Path

import pytest
import torch

from engine_fixtures import CLASSES, untrained_checkpoint, write_brightness_videos
from vivit.cli import build_parser, display_width, main

README = Path(__file__).resolve().parents[1] / "README.md"
MODEL_COMMANDS = ("eval", "predict", "export", "profile")
LONG_COMMANDS = ("synth", "check-data", "train", "eval", "predict", "export", "convert", "profile", "demo")


def options(command):
    """{dest: action} of a sub-command's parser."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices[command]._actions}


def one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def json_output(capsys, argv, status=0):
    """The stdout of a `--json` run, which must be exactly the shared print_json shape (indent 2)."""
    assert main(argv) == status
    out = capsys.readouterr().out
    assert out == json.dumps(json.loads(out), indent=2, ensure_ascii=False) + "\n"
    return json.loads(out)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return write_brightness_videos(tmp_path_factory.mktemp("consistency") / "data", per_class=0, val_per_class=2)


@pytest.fixture
def ckpt(tmp_path):
    """A tiny training checkpoint with random weights (8 frames of 16 px, 2 classes, no training config)."""
    from vivit.engine.checkpoint import load_checkpoint, save_checkpoint

    path = untrained_checkpoint(tmp_path / "ckpt.pt")
    state = load_checkpoint(path)
    generator = torch.Generator().manual_seed(0)
    state["model"] = {k: torch.randn(v.shape, generator=generator) * 0.2 for k, v in state["model"].items()}
    save_checkpoint(path, state)
    return path


# --model, views, stride, workers, quiet ------------------------------------------------------------------
@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_command_that_uses_a_model_takes_model(command):
    assert any("--model" in action.option_strings for action in options(command).values())


def test_eval_and_export_take_the_model_as_option_or_positional(videos, ckpt, tmp_path, capsys):
    common = ["--views", "1x1", "--workers", "0", "--json", "--quiet"]
    positional = json_output(capsys, ["eval", str(ckpt), str(videos), *common])
    option = json_output(capsys, ["eval", str(videos), "--model", str(ckpt), *common])
    assert option == positional and option["checkpoint"] == str(ckpt)
    exported = json_output(capsys, ["export", str(tmp_path / "m.onnx"), "--model", str(ckpt), "--json"])
    assert exported["out"] == str(tmp_path / "m.onnx") and (tmp_path / "m.onnx").stat().st_size > 0
    profiled = json_output(capsys, ["profile", "--model", str(ckpt), "--no-latency", "--json"])
    assert profiled["input_shape"] == [1, 3, 8, 16, 16] and profiled["params"] > 0
    err = one_line_error(capsys, ["eval", str(videos)])  # the model is missing
    assert "--model MODEL" in err


def test_eval_and_predict_share_options_and_defaults():
    shared = ("model", "views", "stride", "batch_size", "workers", "device", "precision", "json", "quiet")
    eval_opts, predict_opts = options("eval"), options("predict")
    for dest in shared:
        assert (eval_opts[dest].option_strings, eval_opts[dest].default) == \
               (predict_opts[dest].option_strings, predict_opts[dest].default), dest
    assert eval_opts["views"].default is None  # the model's views (below), not one default per command


def test_views_default_to_the_models_for_eval_and_predict(videos, ckpt, capsys):
    from vivit.engine.evaluate import model_views
    from vivit.zoo.registry import Preprocess

    model = torch.nn.Linear(1, 1)
    assert model_views(model) == "4x3"  # the paper's, for a model that does not say
    model.preprocess = Preprocess(views="4x1")  # e.g. the Epic-Kitchens registry entry
    assert model_views(model) == "4x1"
    report = json_output(capsys, ["eval", str(ckpt), str(videos), "--workers", "0", "--json", "--quiet"])
    assert report["views"] == "4x3"
    video = str(videos / "val" / "dark" / "000.mp4")

    def probabilities(*flags):
        r = json_output(capsys, ["predict", str(ckpt), video, "--workers", "0", "--json", "--quiet", *flags])
        return [p["probability"] for p in r["results"][0]["predictions"]]

    assert probabilities() == probabilities("--views", "4x3") != probabilities("--views", "1x1")
    assert probabilities("--stride", "1") != probabilities("--stride", "3")  # 8-frame clips of 8-frame videos


@pytest.mark.parametrize("command", LONG_COMMANDS)
def test_every_long_command_has_quiet(command):
    assert options(command)["quiet"].option_strings == ["--quiet"]


@pytest.mark.parametrize("command, kind", [("convert", "positional"), ("synth", "positional"), ("export", "positional"),
                                           ("eval", "option"), ("demo", "option")])
def test_the_output_folder_is_out_everywhere(command, kind):
    action = options(command)["out"]
    assert (action.option_strings == ["--out"]) == (kind == "option")


# JSON and failures ---------------------------------------------------------------------------------------
def test_json_has_one_shape_and_failed_files_are_file_reason(videos, ckpt, tmp_path, capsys):
    broken = tmp_path / "data" / "val" / "dark" / "broken.mp4"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a video")
    checked = json_output(capsys, ["check-data", str(tmp_path / "data"), "--json", "--quiet"], status=1)
    predicted = json_output(capsys, ["predict", str(ckpt), str(broken), "--views", "1x1", "--workers", "0",
                                     "--json", "--quiet"], status=1)
    assert checked["failed"] == predicted["failed"] == [{"file": str(broken), "reason": checked["failed"][0]["reason"]}]
    json_output(capsys, ["profile", "--list", "--json"])
    json_output(capsys, ["synth", str(tmp_path / "synth"), "--classes", "2", "--videos-per-class", "2", "--frames", "4",
                         "--size", "8", "--json"])
    json_output(capsys, ["convert", "--to", "hf", str(ckpt), str(tmp_path / "hf"), "--json"])


def test_eval_out_says_where_it_wrote(videos, ckpt, tmp_path, capsys):
    common = ["eval", str(ckpt), str(videos), "--views", "1x1", "--workers", "0", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "text")]) == 0
    assert str(tmp_path / "text") in capsys.readouterr().out.splitlines()[-1]
    json_output(capsys, [*common, "--out", str(tmp_path / "json"), "--json"])  # stdout stays the report alone
    assert main([*common, "--out", str(tmp_path / "json"), "--json", "--overwrite"]) == 0
    assert str(tmp_path / "json") in capsys.readouterr().err
    assert (tmp_path / "json" / "report.json").is_file()


def test_skip_warnings_count_epochs_from_one(tmp_path, caplog):
    from vivit.data import build_dataset, make_loader

    root = write_brightness_videos(tmp_path / "data", per_class=2, val_per_class=0)
    (root / "train" / "dark" / "broken.mp4").write_bytes(b"not a video")
    dataset = build_dataset(root, split="train", train=True, num_frames=8, frame_stride=1, image_size=16)
    loader = make_loader(dataset, batch_size=5, shuffle=True, num_workers=0)
    with caplog.at_level(logging.WARNING):
        for epoch in range(2):
            loader.set_epoch(epoch)
            list(loader)
    assert re.findall(r"in epoch (\d+)", caplog.text) == ["1", "2"]


def test_resume_names_the_epoch_from_one(tmp_path, capsys):
    from engine_fixtures import tiny_overrides

    data = write_brightness_videos(tmp_path / "data", per_class=12, val_per_class=1)  # 3 steps of 8 per epoch
    overrides = tiny_overrides(data, tmp_path / "run", **{"schedule.epochs": 2, "run.save_every_steps": 0})
    assert main(["train", *overrides, "--stop-after-steps", "4", "--quiet"]) == 0  # one step into the second epoch
    capsys.readouterr()
    assert main(["train", *overrides, "--resume", "--stop-after-steps", "1"]) == 0
    assert f"resumed from {tmp_path / 'run' / 'last.pt'} in epoch 2 at step 4" in capsys.readouterr().out


# Bad input and first steps -------------------------------------------------------------------------------
@pytest.mark.parametrize("fps", ["0", "-8"])
def test_synth_fps_must_be_positive(fps, tmp_path, capsys):
    err = one_line_error(capsys, ["synth", str(tmp_path / "out"), "--fps", fps, "--videos-per-class", "2"])
    assert "fps" in err and not (tmp_path / "out").exists()


def test_bare_train_asks_for_a_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()  # even with a ./data folder: no guessing
    err = one_line_error(capsys, ["train"])
    assert "CONFIG" in err and "configs/demo.yaml" in err and "data.train=" in err
    one_line_error(capsys, ["train", "run.out=runs/x"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_train_fine_tunes_a_registered_model_by_name_with_a_fresh_head(tmp_path, monkeypatch):
    """model.init=NAME: the registry model's weights, and a new head for another number of classes."""
    from vivit.engine.build import build_model
    from vivit.engine.config import DataSection, ModelSection
    from vivit.model import create_model
    from vivit.weights.store import save_pretrained

    monkeypatch.setenv("VIVIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VIVIT_OFFLINE", raising=False)
    arch = dict(width=32, depth=1, num_heads=2, mlp_dim=64, tubelet=(2, 8, 8))
    torch.manual_seed(0)
    source = create_model("vivit-ti-16x2-st", num_classes=3, num_frames=8, image_size=16, **arch)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(0, 0.2)
    save_pretrained(source, tmp_path / "weights", labels=["a", "b", "c"])
    registry = tmp_path / "zoo.toml"
    registry.write_text(f'[[model]]\nname = "tiny-k3"\nformat = "vivit"\nurl = "{tmp_path / "weights"}"\n'
                        'variant = "st"\nframes = 8\nlabels = ["a", "b", "c"]\ncrop = 16\n')
    monkeypatch.setenv("VIVIT_ZOO", str(registry))
    section = ModelSection(name="vivit-ti-16x2-st", overrides={**arch, "tubelet": [2, 8, 8]}, init="tiny-k3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # preprocessing as the model's own (stride 2, short side 16 * 256 / 224)
        model = build_model(section, DataSection(num_frames=8, image_size=16), num_classes=len(CLASSES))
    with pytest.warns(UserWarning, match=r"frame stride 2 -> 1; short side 18 -> 32"):
        build_model(section, DataSection(num_frames=8, image_size=16, frame_stride=1, augment={"short_side": 32}),
                    num_classes=len(CLASSES))
    expected = source.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            assert value.shape[0] == len(CLASSES) and not torch.equal(value, expected[key][:len(CLASSES)])
        else:
            assert torch.equal(value, expected[key]), key
    with pytest.raises(FileNotFoundError, match="model name"):
        build_model(ModelSection(name="vivit-ti-16x2-st", overrides=section.overrides, init="no-such-model"),
                    DataSection(num_frames=8, image_size=16), num_classes=2)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_models_get_the_permissions_of_new_files(umask, tmp_path, ckpt, capsys):
    from vivit.weights.store import save_pretrained
    from conftest import tiny_model

    old = os.umask(umask)
    try:
        save_pretrained(tiny_model("st"), tmp_path / "ours")
        assert main(["convert", "--to", "hf", str(ckpt), str(tmp_path / "hf")]) == 0
    finally:
        os.umask(old)
    for folder in (tmp_path / "ours", tmp_path / "hf"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
        for file in folder.iterdir():
            assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~umask, file.name


# Profile -------------------------------------------------------------------------------------------------
def test_profile_table_with_latency_shows_progress(monkeypatch, capsys):
    from vivit import profile

    monkeypatch.setattr(profile, "PAPER_TABLE2", dict(list(profile.PAPER_TABLE2.items())[:1]))
    monkeypatch.setattr(profile, "measure_latency", lambda *a, **k: 12.5)  # a full-size forward takes seconds
    monkeypatch.setattr(profile, "model_for", lambda name, **kw: profile.create_model(
        "vivit-ti-16x2-st", num_frames=4, image_size=32, num_classes=kw["num_classes"]))  # nor a ViViT-B build
    assert main(["profile", "--table"]) == 0
    captured = capsys.readouterr()
    assert "[1/1] vivit-b-16x2-st: timing the forward pass on cpu" in captured.err and "12.5" in captured.out
    assert main(["profile", "--table", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_profile_says_what_its_peak_memory_is(capsys):
    assert main(["profile", "vivit-ti-16x2-st", "--frames", "4", "--size", "32", "--iters", "1"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("peak memory"))
    assert "rise" in line and "during the forward" in line


# Predict table and README --------------------------------------------------------------------------------
def test_display_width():
    assert display_width("clip.mp4") == 8
    assert display_width("動画.mp4") == 8  # two wide characters
    assert display_width("vide\u0301o.mp4") == 9  # e + combining acute accent: one column


def test_predict_table_stays_aligned_with_non_ascii_names():
    from vivit.engine.predict import format_table

    names = ["clip.mp4", "動画/テスト.mp4", "vide\u0301o.mp4", "ünïcödé.mp4"]
    result = {"results": [{"file": n, "predictions": [{"label": "dark", "probability": 0.75}]} for n in names],
              "failed": [{"file": "壊れた.mp4", "reason": "not found"}]}
    lines = format_table(result).splitlines()
    columns = {display_width(line[:line.index(marker)]) for line in lines
               for marker in ("top predictions", "dark 75.0%", "(skipped") if marker in line}
    assert len(lines) == 6 and len(columns) == 1


def test_readme_quick_start_runs_vivit_from_the_venv():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Quick start\n+```bash\n(.*?)```", text, re.S).group(1)
    commands = [c.strip() for line in block.splitlines() for c in line.split("#")[0].split("&&") if c.strip()]
    activated = False
    for command in commands:
        activated |= command.startswith(("source .venv/bin/activate", ". .venv/bin/activate"))
        if command.startswith("vivit "):
            assert activated, f"{command!r} runs before .venv is activated"
    assert any(c.startswith("vivit ") or c.startswith(".venv/bin/vivit ") for c in commands)
