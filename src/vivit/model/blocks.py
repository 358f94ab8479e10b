"""Transformer building blocks shared by every variant: MLP, DropPath, the pre-LN encoder block,
and the factorised self-attention block of Model 3."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from vivit.model.activations import GELU
from vivit.model.attention import Attention
from vivit.model.linear import Linear


class Mlp(nn.Module):
    """Dense -> GELU -> Dropout -> Dense -> Dropout (the ViT MLP block)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0, approximate: str = "tanh"):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = GELU(approximate)
        self.fc2 = Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth (Eq. 10): drop the residual branch per sample with probability p. The official code keeps
    the branch as it is (`Encoder1DBlock.get_drop_pattern`, scenic/projects/vivit/model.py); `rescale` divides
    it by 1 - p instead, as the common DropPath does, so that its expectation is unchanged."""

    def __init__(self, p: float = 0.0, rescale: bool = False):
        super().__init__()
        self.p = p
        self.rescale = rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p) if self.rescale else x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}, rescale={self.rescale}"


class Block(nn.Module):
    """Pre-LN transformer block (Eq. 4-5): x + MSA(LN(x)), then x + MLP(LN(x)).

    `attn` is any `Attention`: joint attention for Models 1-2, factorised dot-product for Model 4.
    """

    def __init__(self, dim: int, attn: Attention, mlp_dim: int, drop: float, drop_path: float, eps: float, approximate: str,
                 drop_path_rescale: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, drop, approximate)
        self.drop_path = DropPath(drop_path, drop_path_rescale)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None, first: int | None = None) -> torch.Tensor:
        """`first` = n: the caller reads the first n output tokens alone, so only those are computed where the
        attention allows (queries apart); the result is then (B, n, D)."""
        first = first if self.attn.queries_apart else None
        residual = x if first is None else x[:, :first]  # no slice (and its backward copy) for every token
        x = residual + self.drop_path(self.attn(self.norm1(x), grid, first))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FactorisedSelfAttentionBlock(nn.Module):
    """Model 3 (Sec. 3.3, Eq. 6): spatial MSA within each frame, then temporal MSA across frames at each
    spatial index, then the MLP; each with its own LayerNorm and residual. `order` may swap the first two."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        qkv_bias: bool,
        attn_drop: float,
        drop: float,
        drop_path: float,
        eps: float,
        approximate: str,
        order: str = "space_time",
        drop_path_rescale: bool = False,
    ):
        super().__init__()
        self.order = order
        self.norm_space = nn.LayerNorm(dim, eps=eps)
        self.attn_space = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.norm_time = nn.LayerNorm(dim, eps=eps)
        self.attn_time = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.norm_mlp = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, drop, approximate)
        self.drop_path = DropPath(drop_path, drop_path_rescale)  # the official Model 3 block has none

    def spatial(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """y_s = MSA_s(LN_s(z)) over the tokens of each frame."""
        y = self.attn_space(rearrange(self.norm_space(x), "b (t s) d -> (b t) s d", t=t))
        return x + self.drop_path(rearrange(y, "(b t) s d -> b (t s) d", t=t))

    def temporal(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """y_t = MSA_t(LN_t(z)) over the frames at each spatial index."""
        # at batch 1 this is a strided view; a linear on it makes CPU bf16 matmul copy the weight per sequence
        y = self.attn_time(rearrange(self.norm_time(x), "b (t s) d -> (b s) t d", t=t).contiguous())
        return x + self.drop_path(rearrange(y, "(b s) t d -> b (t s) d", b=x.shape[0]))

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None, first: int | None = None) -> torch.Tensor:
        """All tokens, whatever `first` (the temporal attention mixes every frame's tokens into each)."""
        assert grid is not None, "factorised self-attention needs the (n_t, n_s) token grid"
        t = grid[0]
        if self.order == "space_time":
            x = self.temporal(self.spatial(x, t), t)
        else:
            x = self.spatial(self.temporal(x, t), t)
        return x + self.drop_path(self.mlp(self.norm_mlp(x)))
