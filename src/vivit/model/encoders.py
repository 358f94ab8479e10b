"""The transformer encoder shared by all variants: [cls] + tokens + positional embedding -> L blocks -> LN."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vivit.config import ViViTConfig
from vivit.model import posembed
from vivit.model.attention import Attention, FactorisedDotProductAttention
from vivit.model.blocks import Block, FactorisedSelfAttentionBlock

ATTENTIONS = ("joint", "fdp", "fsa")


def make_block(cfg: ViViTConfig, attention: str, dim: int, num_heads: int, mlp_dim: int, drop_path: float) -> nn.Module:
    """One encoder layer: `joint` (Models 1-2), `fdp` (Model 4) or `fsa` (Model 3)."""
    if attention == "fsa":
        return FactorisedSelfAttentionBlock(
            dim, num_heads, mlp_dim, cfg.qkv_bias, cfg.attention_dropout, cfg.dropout, drop_path,
            cfg.layer_norm_eps, cfg.gelu_approximation, cfg.fsa_order, cfg.drop_path_rescale,
        )
    attn_cls = FactorisedDotProductAttention if attention == "fdp" else Attention
    attn = attn_cls(dim, num_heads, cfg.qkv_bias, cfg.attention_dropout, cfg.dropout)
    return Block(dim, attn, mlp_dim, cfg.dropout, drop_path, cfg.layer_norm_eps, cfg.gelu_approximation,
                 cfg.drop_path_rescale)


class Encoder(nn.Module):
    """Eq. 1-3: z^0 = [z_cls, E x_1, ..., E x_N] + p, z^l = Block(z^{l-1}), output LN(z^L).

    `grid` is the token layout the positional embedding is learnt on ((t, h, w), (h, w) or (t,));
    a forward on another grid resamples it (see `posembed.resample`).
    """

    def __init__(
        self,
        cfg: ViViTConfig,
        grid: tuple[int, ...],
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        attention: str = "joint",
        cls_token: bool = False,
    ):
        super().__init__()
        self.grid = tuple(grid)
        self.num_prefix = int(cls_token)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.pos_embed = nn.Parameter(torch.empty(1, self.num_prefix + math.prod(grid), dim))
        self.pos_drop = nn.Dropout(cfg.dropout)
        rates = [cfg.drop_path * i / max(depth - 1, 1) for i in range(depth)]  # layer 0 is never dropped
        self.blocks = nn.ModuleList(make_block(cfg, attention, dim, num_heads, mlp_dim, r) for r in rates)
        self.norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.grad_checkpointing = False
        self.every_token = False  # see `every_token`
        nn.init.normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor, grid: tuple[int, ...], first: int | None = None) -> torch.Tensor:
        """x: (B, prod(grid), D) tokens, time-major -> (B, prefix + prod(grid), D); with `first` = n only
        the first n output tokens (B, n, D), as a token classifier reads them: the last block then computes
        just those (`Block.forward`), the same values for 1/depth less work (not under `every_token`)."""
        return self.forward_intermediates(x, grid, first=None if self.every_token else first)[0]

    def forward_intermediates(self, x: torch.Tensor, grid: tuple[int, ...], take: Collection[int] = (),
                              norm: bool = False, first: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """As `forward`, also returning the output of each block in `take` (0-based), each (B, prefix +
        prod(grid), D), passed through the final LayerNorm when `norm` (timm's `forward_intermediates`)."""
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + posembed.resample(self.pos_embed, self.grid, grid, self.num_prefix))
        time_space = (grid[0], math.prod(grid[1:]))  # (n_t, n_s) for the factorised blocks
        taken, last = [], len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            keep = first if i == last and i not in take else None
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, time_space, keep, use_reentrant=False)
            else:
                x = block(x, time_space, keep)
            if i in take:
                taken.append(self.norm(x) if norm else x)
        return self.norm(x if first is None else x[:, :first]), taken


@contextmanager
def every_token(model: nn.Module) -> Iterator[None]:
    """Inside the block, every encoder in `model` runs all tokens through all blocks, as the official model
    does, even where the caller reads only the first (`Encoder.forward`'s `first`): to see every token's
    attention, or to count the official FLOPs."""
    encoders = [m for m in model.modules() if isinstance(m, Encoder)]
    previous = [e.every_token for e in encoders]
    for e in encoders:
        e.every_token = True
    try:
        yield
    finally:
        for e, flag in zip(encoders, previous):
            e.every_token = flag
