"""Attention rollout (Abnar & Zuidema 2020) and its relevance form (Chefer et al. 2021) on per-layer maps.

Both multiply per-layer token mixings through the network, M_l = alpha * A_l + beta * I, where A_l is the
head-averaged attention (rollout: alpha = beta = 1/2, the residual as identity) or the head-averaged positive
gradient-weighted attention (relevance: alpha = beta = 1, R <- R + A R). Only the output rows that the
classifier reads are needed, so a row vector is carried backwards through the layers: v M_L ... M_1.

A step is one token mixing in forward order, with the layout of its map:
  "joint" (B, N, N): every token with every token (Model 1; both encoders of Model 2, B = frames there);
  "space" (T, S, S): within each frame; "time" (S, T, T): across frames at each spatial index (Model 3);
  "fdp": Model 4's heads, {"time": (S, T, T), "space": (T, S, S)} mixed by their share of the heads.
Row vectors are (B, N) for "joint" steps and (T, S) for the factorised ones.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

ROLLOUT = (0.5, 0.5)  # (alpha, beta): Abnar & Zuidema 2020, Eq. "0.5 W_att + 0.5 I"
RELEVANCE = (1.0, 1.0)  # Chefer et al. 2021, Eq. 6: R = R + A_bar R


class Step(NamedTuple):
    """One token mixing: `kind` in ("joint", "space", "time", "fdp"), its map(s) and, for "fdp", the
    fraction of heads in the (temporal, spatial) groups."""

    kind: str
    maps: dict[str, torch.Tensor]
    weights: tuple[float, float] = (1.0, 0.0)


def _mix(v: torch.Tensor, step: Step) -> torch.Tensor:
    """v A for one step's attention-like map (no identity term)."""
    if step.kind == "joint":
        return torch.einsum("bn,bnm->bm", v, step.maps["joint"])
    if step.kind == "space":
        return torch.einsum("ts,tsu->tu", v, step.maps["space"])
    if step.kind == "time":
        return torch.einsum("ts,stu->us", v, step.maps["time"])
    w_time, w_space = step.weights
    return (w_time * torch.einsum("ts,stu->us", v, step.maps["time"])
            + w_space * torch.einsum("ts,tsu->tu", v, step.maps["space"]))


def propagate(start: torch.Tensor, steps: list[Step], mixing: tuple[float, float] = ROLLOUT) -> torch.Tensor:
    """start (rows of the output tokens the classifier reads) times M_L ... M_1, M_l = alpha A_l + beta I."""
    alpha, beta = mixing
    v = start.float()
    for step in reversed(steps):
        v = alpha * _mix(v, step) + beta * v
    return v


def pool_weights(classifier: str, output: torch.Tensor) -> torch.Tensor:
    """(B, N, D) encoder output -> (B, N) weights of the output tokens the pooled feature is made of:
    "token" (cls) and "0" (first patch) read token 0; "gap"/"gsp" every token alike (a sum is a scaled mean);
    "gmp" each token by the fraction of feature channels whose maximum it holds."""
    b, n, d = output.shape
    if classifier in ("token", "0"):
        return torch.nn.functional.one_hot(torch.zeros(b, dtype=torch.long), n).float()
    if classifier == "gmp":
        return torch.nn.functional.one_hot(output.argmax(dim=1), n).sum(dim=1).float() / d
    return torch.full((b, n), 1.0 / n)


def _normalised(x: torch.Tensor) -> torch.Tensor:
    total = x.sum(dim=-1, keepdim=True)
    return x / torch.where(total > 0, total, torch.ones_like(total))


def joint_map(steps: list[Step], start: torch.Tensor, num_prefix: int, mixing: tuple[float, float]) -> torch.Tensor:
    """(B, N - prefix) map over the input patch tokens of a joint encoder, each row summing to 1. The cls
    column is dropped: it is the same learnt constant for every input."""
    return _normalised(propagate(start, steps, mixing)[:, num_prefix:])


def token_map(variant: str, steps: dict[str, list[Step]], starts: dict[str, torch.Tensor],
              grid: tuple[int, int, int], num_prefix: int, mixing: tuple[float, float] = ROLLOUT) -> torch.Tensor:
    """(n_t, n_h, n_w) map summing to 1 for one clip, from each encoder's steps and start rows.

    "st": one joint rollout over all space-time tokens. "fe": the spatial rollout of each frame, weighted by
    the temporal encoder's rollout over the frame tokens (uniform for the average-pool baseline, no
    `steps["temporal"]`). "fsa"/"fdp": the factorised mixings on the (T, S) grid.
    """
    n_t, n_h, n_w = grid
    if variant == "fe":
        frames = joint_map(steps["spatial"], starts["spatial"], num_prefix, mixing)  # (T, S)
        if "temporal" in steps:
            time = joint_map(steps["temporal"], starts["temporal"], num_prefix, mixing)[0]  # (T,)
        else:
            time = torch.full((n_t,), 1.0 / n_t)
        result = time[:, None] * frames
    elif variant == "st":
        result = joint_map(steps["encoder"], starts["encoder"], num_prefix, mixing)[0]
    else:
        result = propagate(starts["encoder"].reshape(n_t, n_h * n_w), steps["encoder"], mixing)
    return _normalised(result.reshape(1, -1)).reshape(n_t, n_h, n_w)
