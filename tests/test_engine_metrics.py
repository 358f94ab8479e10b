import math

import pytest
import torch

from vivit.engine.metrics import ClassificationReport, aggregate_views, confusion_matrix, topk_correct
from vivit.engine.optim import build_optimizer, param_groups, scaled_lr
from vivit.engine.config import OptimSection
from vivit.engine.schedule import build_scheduler, lr_factor
from conftest import tiny_model


def test_views_are_averaged_as_logits_or_probabilities():
    logits = torch.tensor([[[4.0, 0.0], [-2.0, 0.0]]])  # one video, two views
    assert torch.equal(aggregate_views(logits), torch.tensor([[1.0, 0.0]]))
    probs = aggregate_views(logits, "softmax")
    expected = (torch.tensor([4.0, 0.0]).softmax(0) + torch.tensor([-2.0, 0.0]).softmax(0)) / 2
    assert torch.allclose(probs[0], expected)


def test_report_of_a_constant_model_is_exact():
    # a model that always scores class 1 first and class 2 second: top-1 = share of class 1, top-5 caps at K
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    scores = torch.tensor([[0.0, 2.0, 1.0]]).expand(6, 3)
    r = ClassificationReport.from_scores(scores, labels, num_classes=4)
    assert r.top1 == pytest.approx(2 / 6) and r.top5 == 1.0
    assert r.per_class_accuracy == [0.0, 1.0, 0.0, None]
    assert r.mean_class_accuracy == pytest.approx(1 / 3)
    assert r.confusion == [[0, 1, 0, 0], [0, 2, 0, 0], [0, 3, 0, 0], [0, 0, 0, 0]]
    assert topk_correct(scores, labels, 2).tolist() == [False, True, True, True, True, True]


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(torch.tensor([1, 1, 0]), torch.tensor([0, 1, 0]), 2)
    assert cm.tolist() == [[1, 1], [0, 1]]


def test_warmup_then_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0)
    assert lr_factor(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(50, 100, 10, name="constant") == 1.0


def test_scheduler_steps_the_optimizer_lr():
    model = tiny_model()
    opt = build_optimizer(model, OptimSection(name="sgd", lr=0.1, base_batch_size=64), batch_size=32)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # linear scaling rule
    sched = build_scheduler(opt, total_steps=20, warmup_steps=4)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.05 / 4) and lrs[3] == pytest.approx(0.05)
    assert lrs[12] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * 8 / 16)))


def test_no_weight_decay_on_biases_norms_tokens_and_pos_embeddings():
    model = tiny_model("fe")
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim > 1 for p in decay["params"])
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"spatial.cls_token", "spatial.pos_embed", "temporal.pos_embed", "head.bias"} <= skipped
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    assert scaled_lr(OptimSection(lr=0.1, base_batch_size=None), 512) == 0.1


def test_metric_log_restarts_or_resumes_at_the_checkpoint(tmp_path):
    from vivit.engine.logging import MetricLogger

    def steps():
        return [int(line.split(",")[1]) for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]

    log = MetricLogger(tmp_path, tensorboard=False)
    for step in range(1, 7):  # a run killed after logging step 6, its last checkpoint at step 3
        log.log({"kind": "step", "step": step, "loss": 1.0 / step})
    MetricLogger(tmp_path, tensorboard=False, resume_step=3).log({"kind": "step", "step": 4, "loss": 0.2})
    assert steps() == [1, 2, 3, 4]  # the replayed steps 4-6 are not logged twice
    MetricLogger(tmp_path, tensorboard=False).log({"kind": "step", "step": 1, "loss": 0.9})
    assert steps() == [1]  # a new run in the same folder starts the log afresh
