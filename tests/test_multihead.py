"""Multi-head models (Epic-Kitchens nouns and verbs): one head of sum(class_splits) logits split along the
last axis; loss = mean (official) or sum of per-split cross-entropies; per-split and action metrics; per-split and action
predictions; the Scenic converter and the zoo's Epic-Kitchens entry (official ViViTMultiHeadClassificationModel,
scenic/projects/vivit/model.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo_fixtures import flax_msgpack, scenic_params, server, train_state, zoo  # noqa: F401 (fixtures)

import vivit
from vivit.cli import main
from vivit.config import ViViTConfig
from vivit.data.loader import Batch
from vivit.data.sources import find_samples
from vivit.engine.checkpoint import save_checkpoint
from vivit.engine.config import OptimSection, load_config
from vivit.engine.evaluate import evaluate_loader, format_report, report_dict
from vivit.engine.metrics import aggregate_views
from vivit.engine.predict import format_table
from vivit.engine.train import train, train_step
from vivit.errors import ConfigError, DataError
from vivit.weights.scenic import from_scenic

TINY = dict(num_frames=8, image_size=16, tubelet=(2, 8, 8), width=32, depth=1, num_heads=2, mlp_dim=64)
NOUN_VERB = dict(num_classes=5, class_splits=(3, 2), split_names=("noun", "verb"))


def tiny_model(seed: int = 0, **kw) -> vivit.ViViT:
    torch.manual_seed(seed)
    model = vivit.ViViT(ViViTConfig(variant="st", **TINY, **{**NOUN_VERB, **kw}))
    nn.init.normal_(model.head.weight, std=0.5)  # the zero-initialised head would make every split uniform
    nn.init.normal_(model.head.bias, std=0.5)
    return model


# Config and model ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, message", [
    (dict(class_splits=(3, 3)), "class_splits \\[3, 3\\] sum to 6, not num_classes=5"),
    (dict(class_splits=(5, 0)), "class_splits must be a list of positive integers"),
    (dict(class_splits=(3, 2), split_names=("noun",)), "split_names must be 2 different non-empty names"),
    (dict(class_splits=(3, 2), split_names=("noun", "noun")), "split_names must be 2 different"),
    (dict(split_names=("noun", "verb")), "split_names \\['noun', 'verb'\\] need class_splits"),
])
def test_class_splits_are_validated(fields, message):
    with pytest.raises(ConfigError, match=message):
        ViViTConfig(num_classes=5, **fields)


def test_default_split_names_and_config_round_trip(tmp_path):
    assert ViViTConfig(num_classes=5, class_splits=[3, 2]).splits == {"1": 3, "2": 2}  # Scenic's default names
    assert ViViTConfig(num_classes=5).splits == {"class": 5} and ViViTConfig().class_splits is None
    model = tiny_model()
    assert ViViTConfig.from_dict(json.loads(json.dumps(model.config.to_dict()))) == model.config
    model.save_pretrained(tmp_path / "m", labels=["a", "b", "c", "x", "y"])
    loaded = vivit.load_pretrained(tmp_path / "m")
    assert (loaded.config.class_splits, loaded.config.split_names) == ((3, 2), ("noun", "verb"))
    assert loaded.split_labels == {"noun": ["a", "b", "c"], "verb": ["x", "y"]}


def test_split_logits_cuts_the_one_head_along_the_last_axis():
    model = tiny_model().eval()
    logits = model(torch.randn(2, 3, 8, 16, 16))
    parts = model.split_logits(logits)
    assert list(parts) == ["noun", "verb"]
    assert torch.equal(parts["noun"], logits[:, :3]) and torch.equal(parts["verb"], logits[:, 3:])


def test_hf_export_refuses_multi_head_models():
    from vivit.weights.hf import to_hf

    with pytest.raises(ConfigError, match="a multi-head model \\(class_splits \\[3, 2\\]\\) cannot be converted"):
        to_hf(tiny_model())


# Training ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_the_loss_is_the_mean_of_the_splits_cross_entropies_by_default(smoothing):
    """Official ViViTMultiHeadClassificationModel.loss_function: jnp.mean over the splits' losses."""
    model = tiny_model()
    videos, labels = torch.randn(4, 3, 8, 16, 16), torch.tensor([[0, 1], [2, 0], [1, 1], [2, 1]])
    with torch.no_grad():
        logits = model.eval()(videos)
    by_hand = (F.cross_entropy(logits[:, :3], labels[:, 0], reduction="none", label_smoothing=smoothing)
               + F.cross_entropy(logits[:, 3:], labels[:, 1], reduction="none", label_smoothing=smoothing))
    action = ((logits[:, :3].argmax(-1) == labels[:, 0]) & (logits[:, 3:].argmax(-1) == labels[:, 1])).sum()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    def step(**split_loss):
        return train_step(model.eval(), optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False),
                          [(videos, labels)], num_classes=5, device=torch.device("cpu"), class_splits=(3, 2),
                          optim=OptimSection(label_smoothing=smoothing, clip_grad_norm=None, **split_loss))

    official = step()
    assert official.loss_sum == pytest.approx(float(by_hand.sum()) / 2, rel=1e-5)  # the mean over two splits
    assert official.correct == int(action)
    assert step(split_loss="sum").loss_sum == pytest.approx(float(by_hand.sum()), rel=1e-5)


def write_videos(root: Path, n: int = 8) -> list[Path]:
    """n lossless 8-frame 16 px clips; clip i is bright when i is even (the noun), noisy when i % 4 >= 2."""
    from vivit.data.encode import write_video

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        level = 180 if i % 2 == 0 else 70
        noise = 40 if i % 4 >= 2 else 2
        video = np.clip(level + rng.normal(0, noise, (8, 16, 16, 3)), 0, 255).astype(np.uint8)
        paths.append(write_video(root / f"clip{i}.mp4", video, fps=8, options={"crf": "0"}))
    return paths


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, list[tuple[int, int]]]:
    """A list file `clipN.mp4 noun verb` beside 8 clips: noun = brightness (of 3), verb = noise (of 2)."""
    root = tmp_path_factory.mktemp("clips")
    write_videos(root)
    labels = [(i % 2, int(i % 4 >= 2)) for i in range(8)]
    (root / "list.txt").write_text("".join(f"clip{i}.mp4 {n} {v}\n" for i, (n, v) in enumerate(labels)))
    return root, labels


def test_list_files_and_csvs_give_one_label_per_split(clips, tmp_path):
    root, labels = clips
    splits = {"noun": 3, "verb": 2}
    samples, classes = find_samples(root / "list.txt", None, None, splits)
    assert [label for _, label in samples] == labels and classes == ["0", "1", "2", "0", "1"]
    assert samples[3][0] == root / "clip3.mp4"
    with (tmp_path / "labels.csv").open("w", newline="") as f:  # column order need not be the splits'
        csv.writer(f).writerows([["verb", "path", "noun", "split"], ["open", "a.mp4", "tap", "train"],
                                 ["close", "b.mp4", "cup", "val"], ["open", "c.mp4", "pan", "train"]])
    samples, classes = find_samples(tmp_path / "labels.csv", "train", None, {"noun": 3, "verb": 2})
    assert classes == ["cup", "pan", "tap", "close", "open"]
    assert [(p.name, label) for p, label in samples] == [("a.mp4", (2, 1)), ("c.mp4", (1, 1))]


@pytest.mark.parametrize("content, splits, message", [
    ("a.mp4 0\n", {"noun": 3, "verb": 2}, "expected 'relative/path noun verb'"),
    ("a.mp4 3 0\n", {"noun": 3, "verb": 2}, "label 3 outside 0..2"),
    ("a.mp4 tap open\nb.mp4 cup open\n", {"noun": 3, "verb": 2}, "2 class names where the split has 3 classes"),
])
def test_bad_multi_split_list_files_are_clear_errors(tmp_path, content, splits, message):
    (tmp_path / "list.txt").write_text(content)
    with pytest.raises(DataError, match=message):
        find_samples(tmp_path / "list.txt", None, None, splits)


def test_a_folder_per_class_cannot_hold_multi_split_labels(tmp_path):
    (tmp_path / "tap").mkdir()
    with pytest.raises(DataError, match="a folder per class gives one label per video.*'relative/path noun verb'"):
        find_samples(tmp_path, None, None, {"noun": 3, "verb": 2})


def test_a_tiny_multi_head_training_run_learns(clips, tmp_path):
    root, _ = clips
    overrides = {
        "model.name": "vivit-ti-16x2-st",
        "model.overrides": "{width: 32, depth: 1, num_heads: 2, mlp_dim: 64, tubelet: [2, 8, 8], "
                           "class_splits: [3, 2], split_names: [noun, verb]}",
        "data.train": str(root / "list.txt"), "data.val": str(root / "list.txt"), "data.train_split": "none",
        "data.val_split": "none", "data.num_frames": 8, "data.frame_stride": 1, "data.image_size": 16,
        "data.num_workers": 0, "data.augment": "{flip: 0.0, color_jitter: 0.0}",
        "optim.name": "adamw", "optim.lr": 0.01, "optim.base_batch_size": "null", "optim.label_smoothing": 0.1,
        "optim.mixup_alpha": 0.2, "schedule.epochs": 4, "schedule.warmup_epochs": 0,
        "run.batch_size": 4, "run.out": str(tmp_path / "run"), "run.deterministic": "true", "run.tensorboard": "false",
    }
    summary = train(load_config(None, [f"{k}={v}" for k, v in overrides.items()]), quiet=True)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    losses = [float(r["loss"]) for r in rows if r["kind"] == "epoch"]
    assert losses[-1] < losses[0]
    assert set(summary["final"]["splits"]) == {"noun", "verb"} and 0.0 <= summary["final"]["top1"] <= 1.0
    best = vivit.load_pretrained(tmp_path / "run" / "best")
    assert best.config.splits == {"noun": 3, "verb": 2}
    assert best.split_labels == {"noun": ["0", "1", "2"], "verb": ["0", "1"]}


# Evaluation (a fake model of constant outputs, exact expected metrics) -----------------------------------
class ConstantModel(nn.Module):
    """Logits looked up by the sample id written in each video's first value (Scenic's eval-test style)."""

    def __init__(self, table: list[list[float]], **splits):
        super().__init__()
        self.table = torch.tensor(table)
        self.config = ViViTConfig(**{"num_classes": self.table.shape[1], **splits})

    def forward(self, videos):
        return self.table[videos.flatten(1)[:, 0].long()]


def fake_loader(labels: list[tuple[int, int]]) -> list[Batch]:
    ids = torch.arange(len(labels), dtype=torch.float32)
    videos = ids[:, None, None, None, None, None].expand(-1, 1, 1, 1, 1, 1)  # (B, V=1, C, T, H, W)
    return [Batch(videos, torch.tensor(labels), torch.arange(len(labels)), 0)]


def test_eval_reports_each_split_and_the_action_accuracy():
    #        noun (3)           verb (2)     arg-max (noun, verb)   label        noun  verb  action
    table = [[3.0, 1.0, 0.0, 2.0, 0.0],   # (0, 0)               (0, 0)       yes   yes   yes
             [0.0, 3.0, 1.0, 0.0, 2.0],   # (1, 1)               (1, 0)       yes   no    no
             [1.0, 0.0, 3.0, 0.0, 2.0],   # (2, 1)               (0, 1)       no    yes   no
             [0.0, 1.0, 3.0, 2.0, 0.0]]   # (2, 0)               (2, 0)       yes   yes   yes
    labels = [(0, 0), (1, 0), (0, 1), (2, 0)]
    model = ConstantModel(table, **NOUN_VERB)
    report, finite = evaluate_loader(model, fake_loader(labels), device=torch.device("cpu"), num_classes=5)
    assert finite
    assert report.splits["noun"].top1 == 0.75 and report.splits["verb"].top1 == 0.75
    assert report.top1 == 0.5  # both right: samples 0 and 3
    # no labelled action is the least probable of its 6 (noun, verb) pairs: all within the top 5
    assert report.top5 == 1.0
    assert report.splits["noun"].per_class_accuracy == [0.5, 1.0, 1.0]
    result = report_dict(report, ["tap", "cup", "pan", "open", "close"])
    assert result["splits"]["noun"]["classes"] == ["tap", "cup", "pan"]
    assert result["splits"]["verb"]["top5"] is None  # 2 classes: trivially 1
    assert result["action"] == {"top1": 0.5, "top5": 1.0} and result["top1"] == 0.5
    json.dumps(result)
    text = format_report({"views": "1x1", "aggregation": "logits", "skipped": 0, **result})
    assert "action (all of noun, verb right): top-1 50.00%  top-5 100.00%" in text
    assert "noun:\n  top-1 75.00%" in text and "    close  100.0%" in text


def test_action_top5_ranks_the_joint_probabilities():
    # the labelled action (3, 1) pairs the least probable noun with a verb of the lowest probability: 10 of
    # the 12 pairs are more probable
    table = [[4.0, 3.0, 2.0, 1.0, 0.5, 0.0, 0.0]]
    model = ConstantModel(table, num_classes=7, class_splits=(4, 3), split_names=("noun", "verb"))
    report, _ = evaluate_loader(model, fake_loader([(3, 1)]), device=torch.device("cpu"), num_classes=7)
    p_noun, p_verb = torch.tensor(table[0][:4]).softmax(0), torch.tensor(table[0][4:]).softmax(0)
    rank = int((torch.outer(p_noun, p_verb).flatten() > p_noun[3] * p_verb[1]).sum())
    assert rank == 10 and report.top5 == 0.0 and report.top1 == 0.0


def test_softmax_aggregation_takes_each_splits_softmax():
    logits = torch.randn(2, 3, 5)  # (B, V, K)
    expected = torch.cat([logits[..., :3].softmax(-1).mean(1), logits[..., 3:].softmax(-1).mean(1)], dim=-1)
    torch.testing.assert_close(aggregate_views(logits, "softmax", (3, 2)), expected)


def multi_head_checkpoint(path: Path) -> Path:
    model = tiny_model()
    with torch.no_grad():  # known probabilities: zero weights, logits = bias
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([3.0, 0.0, 1.0, 0.0, 1.0]))
    save_checkpoint(path, {"model": model.state_dict(), "model_config": model.config.to_dict(),
                           "classes": ["tap", "cup", "pan", "open", "close"]})
    return path


def test_eval_command_on_a_multi_split_list_file(clips, tmp_path, capsys):
    root, _ = clips
    ckpt = multi_head_checkpoint(tmp_path / "mh.pt")
    argv = ["eval", str(ckpt), str(root / "list.txt"), "--split", "none", "--views", "1x1", "--workers", "0",
            "--quiet", "--out", str(tmp_path / "report")]
    assert main([*argv, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    # every video is predicted (tap, close): nouns 0 of the labels {0, 1} -> 4/8; verbs 1 -> 4/8; action 2/8
    assert (r["splits"]["noun"]["top1"], r["splits"]["verb"]["top1"], r["action"]["top1"]) == (0.5, 0.5, 0.25)
    assert r["num_samples"] == 8
    assert json.loads((tmp_path / "report" / "report.json").read_text())["action"] == r["action"]
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == ["confusion-noun.png", "confusion-verb.png"]


# Prediction ----------------------------------------------------------------------------------------------
def test_predict_json_per_split_and_top_actions(clips, tmp_path, capsys):
    root, _ = clips
    ckpt = multi_head_checkpoint(tmp_path / "mh.pt")
    assert main(["predict", str(ckpt), str(root / "clip0.mp4"), "--top-k", "2", "--json", "--quiet"]) == 0
    (r,) = json.loads(capsys.readouterr().out)["results"]
    noun, verb = torch.tensor([3.0, 0.0, 1.0]).softmax(0), torch.tensor([0.0, 1.0]).softmax(0)
    assert r["splits"]["noun"] == [{"label": "tap", "probability": round(float(noun[0]), 6)},
                                   {"label": "pan", "probability": round(float(noun[2]), 6)}]
    assert [p["label"] for p in r["splits"]["verb"]] == ["close", "open"]
    assert r["actions"] == [{"labels": {"noun": "tap", "verb": "close"}, "probability": round(float(noun[0] * verb[1]), 6)},
                            {"labels": {"noun": "tap", "verb": "open"}, "probability": round(float(noun[0] * verb[0]), 6)}]
    table = format_table({"results": [r], "failed": []})
    assert "actions: tap/close 61.7%  tap/open 22.7%  |  noun: tap 84.4%  pan 11.4%  |  verb: close 73.1%  open 26.9%" in table


# Scenic converter and the zoo's Epic-Kitchens entry ----------------------------------------------------
def test_from_scenic_with_class_splits():
    params = scenic_params()
    rng = np.random.default_rng(1)
    params["output_projection"] = {"kernel": rng.normal(0, 0.2, (32, 5)).astype(np.float32),
                                   "bias": rng.normal(0, 0.2, 5).astype(np.float32)}
    model = from_scenic(params, source_frames=8, class_splits=(3, 2), split_names=("noun", "verb"))
    single = from_scenic(params, source_frames=8)
    assert model.config.splits == {"noun": 3, "verb": 2}
    video = torch.randn(1, 3, 8, 16, 16)
    torch.testing.assert_close(model(video), single(video))  # one output_projection, only split
    with pytest.raises(ConfigError, match="class_splits \\[3, 3\\] sum to 6, not num_classes=5"):
        from_scenic(params, source_frames=8, class_splits=(3, 3))


def epic_kitchens_tree() -> dict:
    """A tiny Scenic factorised encoder as the Epic-Kitchens entry registers it: 32 frames (tubelet 2 -> 16
    temporal tokens), 16 px (2x2 patches of 8), one output_projection of 300 + 97 logits."""
    rng = np.random.default_rng(2)
    r = lambda *shape: rng.normal(0, 0.2, shape).astype(np.float32)  # noqa: E731
    d, heads, mlp = 32, 2, 64

    def encoder(tokens: int) -> dict:
        ln = lambda: {"scale": 1 + r(d), "bias": r(d)}  # noqa: E731
        mha = {n: {"kernel": r(d, heads, d // heads), "bias": r(heads, d // heads)} for n in ("query", "key", "value")}
        mha["out"] = {"kernel": r(heads, d // heads, d), "bias": r(d)}
        block = {"LayerNorm_0": ln(), "MultiHeadDotProductAttention_0": mha, "LayerNorm_1": ln(),
                 "MlpBlock_0": {"Dense_0": {"kernel": r(d, mlp), "bias": r(mlp)},
                                "Dense_1": {"kernel": r(mlp, d), "bias": r(d)}}}
        return {"posembed_input": {"pos_embedding": r(1, 1 + tokens, d)}, "encoderblock_0": block, "encoder_norm": ln()}

    return {"embedding": {"kernel": r(2, 8, 8, 3, d), "bias": r(d)},
            "SpatialTransformer": encoder(4), "cls_SpatialTransformer": r(1, 1, d),
            "TemporalTransformer": encoder(16), "cls_TemporalTransformer": r(1, 1, d),
            "output_projection": {"kernel": r(d, 397), "bias": r(397)}}


def test_the_epic_kitchens_zoo_entry_loads_with_noun_and_verb_heads(zoo, server, monkeypatch, clips, capsys):
    tree = epic_kitchens_tree()
    server.files["/mirror/epic_kitchens/vivit_large_16x2_fe/checkpoint"] = train_state(tree)
    monkeypatch.setenv("VIVIT_ZOO_URL", server.url + "/mirror")
    model = vivit.load_pretrained("vivit-l-16x2-fe-epic-kitchens", quiet=True)
    assert (model.config.variant, model.config.num_frames, model.config.splits) == ("fe", 32, {"noun": 300, "verb": 97})
    assert model.split_labels["noun"][:3] == ["tap", "spoon", "plate"] and len(model.split_labels["verb"]) == 97
    assert model.preprocess.stride == 1 and model.preprocess.views == "4x1"
    video = torch.randn(1, 3, 32, 16, 16)
    reference = from_scenic(tree, source_frames=32)
    torch.testing.assert_close(model(video), reference(video))

    root, _ = clips
    assert main(["predict", str(root / "clip0.mp4"), "--model", "vivit-l-16x2-fe-epic-kitchens", "--views", "1x1",
                 "--json", "--quiet"]) == 0
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert set(r["splits"]) == {"noun", "verb"} and len(r["actions"]) == 5
    first = r["actions"][0]
    assert first["labels"] == {"noun": r["splits"]["noun"][0]["label"], "verb": r["splits"]["verb"][0]["label"]}
    assert first["probability"] == pytest.approx(r["splits"]["noun"][0]["probability"]
                                                 * r["splits"]["verb"][0]["probability"], abs=1e-5)
