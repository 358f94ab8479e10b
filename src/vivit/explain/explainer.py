"""`explain_clip`: token-grid maps of where a ViViT looks in one clip, by attention rollout (class-agnostic)
or gradient-weighted relevance (for chosen classes)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple

import torch

from vivit.errors import ConfigError, InputShapeError
from vivit.explain.attention_capture import Capture, capture_attention
from vivit.explain.relevance import relevance_steps
from vivit.explain.rollout import RELEVANCE, ROLLOUT, pool_weights, token_map
from vivit.model import ViViT

METHODS = ("rollout", "relevance")


class ClipExplanation(NamedTuple):
    logits: torch.Tensor  # (num_classes,)
    maps: list[torch.Tensor]  # (n_t, n_h, n_w) each, summing to 1: one for rollout, one per target for relevance
    targets: list[int]  # the explained classes (relevance); empty for rollout


def split_ranges(model: ViViT) -> dict[str, range]:
    """Name -> class indices of each split of the logits (multi-head models); one split "class" otherwise."""
    ranges, start = {}, 0
    for name, size in model.config.splits.items():
        ranges[name] = range(start, start + size)
        start += size
    return ranges


def predicted_classes(model: ViViT, logits: torch.Tensor) -> list[int]:
    """The top class of each split."""
    return [r.start + int(logits[r.start:r.stop].argmax()) for r in split_ranges(model).values()]


@contextmanager
def _without_parameter_grads(model: ViViT) -> Iterator[None]:
    """Relevance needs gradients of the attention outputs only: the graph then keeps no layer inputs for
    weight gradients (less memory); the parameters' flags are restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def explain_clip(model: ViViT, clip: torch.Tensor, method: str = "rollout",
                 targets: list[int] | None = None) -> ClipExplanation:
    """Maps over the (n_t, n_h, n_w) token grid for a (1, C, T, H, W) clip. "relevance" explains `targets`
    (default: the top class of each split); "rollout" does not depend on a class. The model is put in eval mode."""
    if method not in METHODS:
        raise ConfigError(f"method {method!r} is not allowed; choose one of {list(METHODS)}")
    if clip.ndim != 5 or clip.shape[0] != 1:
        raise InputShapeError(f"explain takes one clip of shape (1, C, T, H, W), got {tuple(clip.shape)}")
    if model.config.num_classes == 0:
        raise ConfigError("the model has no classifier head (num_classes=0): there is nothing to explain")
    cfg, grid = model.config, model.token_grid(clip)
    model.eval()
    num_prefix = int(cfg.classifier == "token")
    capture, logits = _forward(model, clip, method == "relevance")
    starts = {name: pool_weights(cfg.classifier, out) for name, out in capture.outputs.items()}
    if method == "rollout":
        steps = capture.steps()
        return ClipExplanation(logits.detach(), [token_map(cfg.variant, steps, starts, grid, num_prefix, ROLLOUT)], [])
    targets = predicted_classes(model, logits) if targets is None else list(targets)
    for c in targets:
        if not 0 <= c < cfg.num_classes:
            raise ConfigError(f"class index {c} is out of range for {cfg.num_classes} classes")
    maps = []
    for i, c in enumerate(targets):
        if i:  # one backward per forward: a retained graph costs memory, and compiled kernels refuse it
            capture, logits = _forward(model, clip, True)
        maps.append(token_map(cfg.variant, relevance_steps(capture, logits[c]), starts, grid, num_prefix, RELEVANCE))
    return ClipExplanation(logits.detach(), maps, targets)


def _forward(model: ViViT, clip: torch.Tensor, relevance: bool) -> tuple[Capture, torch.Tensor]:
    """The captured forward of one clip: (capture, logits (num_classes,)), in a graph for `relevance`."""
    with torch.set_grad_enabled(relevance), _without_parameter_grads(model), \
            capture_attention(model, keep_values=relevance) as capture:
        logits = model(clip.detach().requires_grad_(relevance))[0]
    return capture, logits
