"""Multi-head self-attention with one fused qkv projection and one SDPA call per token grouping."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from vivit.model.linear import Linear
from vivit.model.sdpa import scaled_dot_product_attention


class Attention(nn.Module):
    """Multi-head dot-product self-attention over the token axis of (B, N, D) (Sec. 3.1, MSA)."""

    queries_apart = True  # each query's output depends on its own query alone: `first` may skip the others

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None, first: int | None = None) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); with `first` = n, the outputs of the first n tokens alone, (B, n, D): their
        queries attend over the keys and values of all N tokens."""
        # Split along a middle axis so the backward stacks the q/k/v gradients straight into (B, N, 3D).
        qkv = rearrange(self.qkv(x), "b n (three h e) -> b n three h e", three=3, h=self.num_heads)
        q, k, v = (z.transpose(1, 2) for z in qkv.unbind(2))  # (B, H, N, E) views
        x = self.attend(q if first is None else q[:, :, :first], k, v, grid)  # (B, H, n, E)
        return self.proj_drop(self.proj(rearrange(x, "b h n e -> b n (h e)")))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        return self.sdpa(q, k, v)

    def sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)


class FactorisedDotProductAttention(Attention):
    """Model 4 (Sec. 3.3, Eq. 7): heads [0, H/2) attend over time at a fixed spatial index,
    heads [H/2, H) over space within a frame; outputs are concatenated in head order.

    With an odd head count the temporal group gets floor(H/2) heads.
    """

    queries_apart = False  # the token grid regroups every query

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        assert grid is not None, "factorised dot-product attention needs the (n_t, n_s) token grid"
        t, s = grid
        ht = self.num_heads // 2
        time = [rearrange(z[:, :ht], "b h (t s) e -> b (h s) t e", t=t) for z in (q, k, v)]  # attend over T
        space = [rearrange(z[:, ht:], "b h (t s) e -> b (h t) s e", t=t) for z in (q, k, v)]  # attend over S
        y_time = rearrange(self.sdpa(*time), "b (h s) t e -> b h (t s) e", s=s)
        y_space = rearrange(self.sdpa(*space), "b (h t) s e -> b h (t s) e", t=t)
        return torch.cat([y_time, y_space], dim=1)
