"""The ViViT model: tokeniser -> variant encoder(s) -> pooled feature -> [pre-logits] -> linear head (Sec. 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from einops import rearrange
from torch import nn

from vivit.config import PRESETS, ViViTConfig
from vivit.errors import ConfigError, InputShapeError
from vivit.model.blocks import FactorisedSelfAttentionBlock
from vivit.model.encoders import Encoder
from vivit.model.linear import Linear
from vivit.model.tokenizers import TubeletEmbedding, UniformFrameSampling


class ViViT(nn.Module):
    """Video Vision Transformer. Input (B, C, T, H, W) float video, output (B, num_classes) logits.

    variant "st":  one encoder over all n_t * n_h * n_w tokens (Model 1).
    variant "fe":  a spatial encoder per frame (shared weights), then a temporal encoder over the n_t
                   frame tokens (Model 2); temporal_pool="avg" averages them instead (baseline).
    variant "fsa": blocks with spatial then temporal self-attention (Model 3).
    variant "fdp": blocks whose heads attend over time or space (Model 4).
    """

    def __init__(self, config: ViViTConfig):
        super().__init__()
        self.config = cfg = config
        if cfg.tokenizer == "tubelet":
            self.tokenizer: TubeletEmbedding = TubeletEmbedding(cfg.in_channels, cfg.width, cfg.tubelet)
        else:
            self.tokenizer = UniformFrameSampling(cfg.in_channels, cfg.width, cfg.tubelet[1:])
        cls_token = cfg.classifier == "token"
        n_t, n_h, n_w = cfg.grid
        feature_dim = cfg.width
        if cfg.variant == "fe":
            self.spatial = Encoder(cfg, (n_h, n_w), cfg.width, cfg.depth, cfg.num_heads, cfg.mlp_dim, "joint", cls_token)
            self.temporal: Encoder | None = None
            if cfg.temporal_pool == "transformer":
                feature_dim = cfg.temporal_dim
                self.temporal_proj = Linear(cfg.width, feature_dim) if feature_dim != cfg.width else nn.Identity()
                self.temporal = Encoder(
                    cfg, (n_t,), feature_dim, cfg.temporal_depth, cfg.temporal_num_heads, cfg.temporal_mlp, "joint", cls_token
                )
        else:
            attention = {"st": "joint", "fsa": "fsa", "fdp": "fdp"}[cfg.variant]
            self.encoder = Encoder(cfg, cfg.grid, cfg.width, cfg.depth, cfg.num_heads, cfg.mlp_dim, attention, cls_token)
        self.num_features = feature_dim
        # official `pre_logits`: Dense(representation_size) + tanh between the pooled feature and the head
        self.pre_logits = Linear(feature_dim, cfg.representation_size) if cfg.representation_size else None
        self.head_hidden_size = cfg.representation_size or feature_dim
        self.head_drop = nn.Dropout(cfg.head_dropout)
        self.head = Linear(self.head_hidden_size, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """ViT initialisation: xavier-uniform dense kernels, zero biases, LeCun-normal tokeniser and
        pre-logits, pos-embed N(0, 0.02), zero cls token and zero-initialised output head (as the official code)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for lecun in (self.tokenizer.proj, self.pre_logits):
            if lecun is not None:
                nn.init.trunc_normal_(lecun.weight, std=(1.0 / lecun.weight[0].numel()) ** 0.5)
                nn.init.zeros_(lecun.bias)
        if isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        if self.config.fsa_zero_init_temporal:
            for m in self.modules():
                if isinstance(m, FactorisedSelfAttentionBlock):
                    nn.init.zeros_(m.attn_time.proj.weight)
                    nn.init.zeros_(m.attn_time.proj.bias)

    def token_grid(self, video: torch.Tensor) -> tuple[int, int, int]:
        """(n_t, n_h, n_w) for this input; raises InputShapeError naming expected and given shapes."""
        cfg = self.config
        expected = (cfg.in_channels, cfg.num_frames, *cfg.image_size)
        if video.ndim != 5 or video.shape[1] != cfg.in_channels:
            raise InputShapeError(f"expected a video of shape (B, {', '.join(map(str, expected))}) [B, C, T, H, W], got {tuple(video.shape)}")
        t, h, w = cfg.tubelet
        T, H, W = video.shape[2:]
        if T % t or H % h or W % w:
            raise InputShapeError(f"video (T, H, W) = {(T, H, W)} is not divisible by the tubelet {cfg.tubelet}")
        grid = (T // t, H // h, W // w)
        if grid != cfg.grid and not cfg.dynamic_size:
            raise InputShapeError(
                f"expected a video of shape (B, {', '.join(map(str, expected))}), got {tuple(video.shape)}; "
                "build the model with dynamic_size=True to run other frame counts or sizes"
            )
        return grid

    def pool(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, D) encoder output -> (B, D), as the official classifiers: token 0 ("token": the cls token;
        "0": the first patch token, no cls), or the mean / max / sum over all tokens ("gap" / "gmp" / "gsp")."""
        classifier = self.config.classifier
        if classifier in ("token", "0"):
            return z[:, 0]
        return {"gap": z.mean, "gmp": z.amax, "gsp": z.sum}[classifier](dim=1)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> pooled feature (B, num_features)."""
        grid = self.token_grid(video)
        tokens = self.tokenizer(video)  # (B, n_t, n_s, D)
        first = 1 if self.config.classifier in ("token", "0") else None  # the encoders' tokens `pool` reads
        if self.config.variant != "fe":
            return self.pool(self.encoder(tokens.flatten(1, 2), grid, first=first))
        # Model 2: the spatial encoder sees each frame alone; one token per frame goes on.
        frames = self.spatial(rearrange(tokens, "b t s d -> (b t) s d"), grid[1:], first=first)
        frame_tokens = rearrange(self.pool(frames), "(b t) d -> b t d", b=video.shape[0])  # (B, n_t, D)
        if self.temporal is None:
            return frame_tokens.mean(dim=1)
        return self.pool(self.temporal(self.temporal_proj(frame_tokens), grid[:1], first=first))

    def num_layers(self) -> int:
        """Blocks `forward_intermediates` indexes: the encoder's, or for Model 2 the spatial encoder's
        (0 .. depth - 1) followed by the temporal encoder's (depth .. depth + temporal_depth - 1)."""
        if self.config.variant != "fe":
            return len(self.encoder.blocks)
        return len(self.spatial.blocks) + (len(self.temporal.blocks) if self.temporal is not None else 0)

    def forward_intermediates(
        self, video: torch.Tensor, indices: int | Sequence[int] | None = None, *, norm: bool = False,
        output_fmt: str = "NCTHW", intermediates_only: bool = False, return_prefix_tokens: bool = False,
    ) -> list[Any] | tuple[torch.Tensor, list[Any]]:
        """Block outputs as timm's `VisionTransformer.forward_intermediates`: `indices` None = every block, an
        int n = the last n, a sequence = those blocks (negative from the end), numbered as `num_layers`.

        Each intermediate (prefix tokens split off; `norm`: through its encoder's final LayerNorm) is
        "NLC" (B, N, D) or "NCTHW" (B, D, n_t, n_h, n_w); a temporal-encoder block of Model 2 has one token per
        frame: (B, n_t, D) or (B, D, n_t, 1, 1). `return_prefix_tokens` pairs each with its cls token(s)
        (Model 2 spatial blocks: one per frame, (B, n_t, D)). Also returned unless `intermediates_only`: the
        last encoder's normed output with prefix, (B, prefix + N, D); `pool_output` of it is `forward_features`.
        """
        if output_fmt not in ("NLC", "NCTHW"):
            raise ConfigError(f"output_fmt={output_fmt!r} is not allowed; choose one of ['NLC', 'NCTHW']")
        total = self.num_layers()
        wanted = [total - indices + i for i in range(indices)] if isinstance(indices, int) else (
            range(total) if indices is None else [i + total if i < 0 else i for i in indices])
        if (isinstance(indices, int) and not 0 < indices <= total) or any(not 0 <= i < total for i in wanted):
            raise ConfigError(f"layer indices {indices!r} out of range: this model has {total} blocks (0..{total - 1})")
        take = sorted(set(wanted))
        b, grid = video.shape[0], self.token_grid(video)
        tokens = self.tokenizer(video)  # (B, n_t, n_s, D)
        if self.config.variant != "fe":
            final, taken = self.encoder.forward_intermediates(tokens.flatten(1, 2), grid, take, norm)
            out = [_split_prefix(z, self.encoder.num_prefix, grid, output_fmt) for z in taken]
        else:  # Model 2: per-frame spatial blocks, then temporal blocks over the frame tokens
            depth = len(self.spatial.blocks)
            frames, taken = self.spatial.forward_intermediates(
                rearrange(tokens, "b t s d -> (b t) s d"), grid[1:], [i for i in take if i < depth], norm)
            def frame_grid(z: torch.Tensor) -> torch.Tensor:  # (B * n_t, n, D) -> (B, n_t * n, D), time-major
                return rearrange(z, "(b t) n d -> b (t n) d", b=b)

            p = self.spatial.num_prefix
            out = [(_format(frame_grid(z[:, p:]), grid, output_fmt), frame_grid(z[:, :p])) for z in taken]
            final = rearrange(self.pool(frames), "(b t) d -> b t d", b=b)  # (B, n_t, D) frame tokens
            if self.temporal is not None:
                final, taken = self.temporal.forward_intermediates(
                    self.temporal_proj(final), grid[:1], [i - depth for i in take if i >= depth], norm)
                out += [_split_prefix(z, self.temporal.num_prefix, (grid[0], 1, 1), output_fmt) for z in taken]
        out = out if return_prefix_tokens else [z for z, _ in out]
        return out if intermediates_only else (final, out)

    def pool_output(self, final: torch.Tensor) -> torch.Tensor:
        """`forward_intermediates`' last normed output (B, prefix + N, D) -> `forward_features` (B, num_features)."""
        if self.config.variant == "fe" and self.temporal is None:
            return final.mean(dim=1)  # the average-pool baseline's frame tokens
        return self.pool(final)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled feature -> logits; `pre_logits=True` stops before the head (the official `return_prelogits`)."""
        if self.pre_logits is not None:
            features = torch.tanh(self.pre_logits(features))
        features = self.head_drop(features)
        return features if pre_logits else self.head(features)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(video))

    def split_logits(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """(..., num_classes) logits -> {split name: (..., size)} (`config.splits`; one "class" split for a
        single head), as the official multi-head model splits its one output_projection."""
        return split_logits(logits, self.config.splits)

    def save_pretrained(self, path: str | Path, labels: list[str] | None = None, *, overwrite: bool = False) -> Path:
        """Write config.json + model.safetensors (+ labels.txt) to a folder; `vivit.load_pretrained` reads it.
        A non-empty folder that is not a vivit model folder is refused unless `overwrite`."""
        from vivit.weights.store import save_pretrained  # the weights package imports this module

        return save_pretrained(self, path, labels, overwrite=overwrite)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        for m in self.modules():
            if isinstance(m, Encoder):
                m.grad_checkpointing = enable


def _format(z: torch.Tensor, grid: tuple[int, int, int], output_fmt: str) -> torch.Tensor:
    """(B, N, D) time-major tokens -> as they are ("NLC") or (B, D, n_t, n_h, n_w) ("NCTHW")."""
    if output_fmt == "NLC":
        return z
    return rearrange(z, "b (t h w) d -> b d t h w", t=grid[0], h=grid[1], w=grid[2])


def _split_prefix(z: torch.Tensor, prefix: int, grid: tuple[int, int, int],
                  output_fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, prefix + N, D) -> (formatted patch tokens, prefix tokens (B, prefix, D))."""
    return _format(z[:, prefix:], grid, output_fmt), z[:, :prefix]


def split_logits(logits: torch.Tensor, splits: dict[str, int]) -> dict[str, torch.Tensor]:
    """The last axis of `logits` cut into consecutive named parts of the given sizes (views, no copy)."""
    if logits.shape[-1] != sum(splits.values()):
        raise InputShapeError(f"logits have {logits.shape[-1]} classes, the splits {dict(splits)} sum to "
                              f"{sum(splits.values())}")
    return dict(zip(splits, logits.split(list(splits.values()), dim=-1)))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers, in any nesting (what checkpoints store)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def list_models() -> list[str]:
    """Names of the presets accepted by `create_model`."""
    return sorted(PRESETS)


def create_model(name: str, **overrides: Any) -> ViViT:
    """Build a preset, e.g. `create_model("vivit-b-16x2-fe", num_classes=174, num_frames=16)`."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return ViViT(PRESETS[name].replace(**overrides))
