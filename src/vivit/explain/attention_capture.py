"""Attention weights for explaining, recomputed beside the model's own fused attention.

The model's forward is unchanged: `capture_attention` wraps each attention module's `attend` (on the instance,
for the duration of the `with` block) so that the fused SDPA call still makes the output, while its q, k (and
for relevance v and the output, whose gradient is taken) are kept. Maps are softmax(q k^T / sqrt(E)) (Sec. 3.1,
the SDPA default scale), recomputed one head at a time and averaged over the heads of a group, so no layer
ever holds all heads' maps at once.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from einops import rearrange
from torch import nn

from vivit.explain.rollout import Step
from vivit.model.attention import Attention, FactorisedDotProductAttention
from vivit.model.blocks import FactorisedSelfAttentionBlock
from vivit.model.encoders import every_token


@dataclass
class Record:
    """One attention call: `role` in ("joint", "space", "time", "fdp"), its (B, H, N, E) tensors."""

    role: str
    grid: tuple[int, int] | None
    heads: int
    temporal_heads: int  # "fdp": heads [0, temporal_heads) attend over time
    maps: dict[str, torch.Tensor] | None = None  # rollout: the head-mean attention per group, made in the forward
    tensors: tuple[torch.Tensor, ...] = ()  # relevance: (q, k, v)
    output: torch.Tensor | None = None  # relevance: the attend output in the graph


@dataclass
class Capture:
    """Per encoder ("encoder", or "spatial"/"temporal" for Model 2): the attention calls in forward order, and
    the encoder's output tokens (what the classifier pools)."""

    records: dict[str, list[Record]] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)

    def steps(self, fn: Callable[..., torch.Tensor] | None = None,
              grads: dict[int, torch.Tensor] | None = None) -> dict[str, list[Step]]:
        """Each call as a rollout step: its head-mean attention, or (relevance) the head mean of
        `fn(q, k, v, grad of the output)` with `grads` by id of the record."""
        result = {}
        for name, records in self.records.items():
            result[name] = []
            for record in records:
                maps = record.maps if fn is None else head_mean(fn, record, (*record.tensors, grads[id(record)]))
                share = record.temporal_heads / record.heads
                result[name].append(Step(record.role, maps, (share, 1 - share) if record.role == "fdp" else (1.0, 0.0)))
        return result


def attention_probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(E)) for (..., N, E) queries and keys -> (..., N, N)."""
    return torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)


def groups(record: Record, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """A (B, H, N, E) tensor as (G, h, n, e) per attention group: the sequences one softmax runs over (G) and
    the heads averaged (h). Model 4 (Eq. 7): the first heads over time at each spatial index, the rest over
    space within each frame."""
    if record.role != "fdp":
        return {record.role: z}
    t, ht = record.grid[0], record.temporal_heads
    return {"time": rearrange(z[:, :ht], "b h (t s) e -> (b s) h t e", t=t),
            "space": rearrange(z[:, ht:], "b h (t s) e -> (b t) h s e", t=t)}


def head_mean(fn: Callable[..., torch.Tensor], record: Record, tensors: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """Mean over each group's heads of `fn` on one head's tensors, one head at a time (memory: one map)."""
    grouped = [groups(record, z) for z in tensors]
    result = {}
    for name in grouped[0]:
        parts = [g[name].float() for g in grouped]
        heads = parts[0].shape[1]
        total = fn(*(p[:, 0] for p in parts))
        for h in range(1, heads):
            total += fn(*(p[:, h] for p in parts))
        result[name] = total / heads
    return result


def encoders(model: nn.Module) -> dict[str, nn.Module]:
    """The model's encoders by name: "encoder" (Models 1, 3, 4) or "spatial" and "temporal" (Model 2)."""
    if model.config.variant != "fe":
        return {"encoder": model.encoder}
    return {name: enc for name, enc in (("spatial", model.spatial), ("temporal", model.temporal)) if enc is not None}


def attention_roles(model: nn.Module) -> dict[Attention, tuple[str, str]]:
    """Every attention module -> (its encoder's name, role)."""
    roles: dict[Attention, tuple[str, str]] = {}
    for name, encoder in encoders(model).items():
        for block in encoder.blocks:
            if isinstance(block, FactorisedSelfAttentionBlock):
                roles[block.attn_space], roles[block.attn_time] = (name, "space"), (name, "time")
            else:
                roles[block.attn] = (name, "fdp" if isinstance(block.attn, FactorisedDotProductAttention) else "joint")
    return roles


@contextmanager
def capture_attention(model: nn.Module, keep_values: bool = False) -> Iterator[Capture]:
    """Within the block, each forward of `model` (batch 1) fills the returned Capture. `keep_values`: keep q, k, v
    and the outputs for gradients (relevance); otherwise only each call's head-mean attention (rollout)."""
    capture = Capture()
    roles = attention_roles(model)
    for module, (name, role) in roles.items():
        capture.records.setdefault(name, [])
        module.attend = _recording(module, module.attend, capture.records[name], role, keep_values)
    hooks = [enc.register_forward_hook(lambda m, args, out, name=name: capture.outputs.__setitem__(name, out.detach()))
             for name, enc in encoders(model).items()]
    try:
        with every_token(model):  # the maps of all tokens, not only of those the classifier reads
            yield capture
    finally:
        for module in roles:
            del module.attend  # the class's own method again
        for hook in hooks:
            hook.remove()


def _recording(module: Attention, attend: Callable[..., torch.Tensor], records: list[Record], role: str,
               keep_values: bool) -> Callable[..., torch.Tensor]:
    def recording_attend(q, k, v, grid):
        y = attend(q, k, v, grid)
        record = Record(role, grid, module.num_heads, module.num_heads // 2)
        if keep_values:
            record.tensors, record.output = (q.detach(), k.detach(), v.detach()), y
        else:
            with torch.no_grad():
                record.maps = head_mean(attention_probs, record, (q, k))
        records.append(record)
        return y

    return recording_attend
