"""Video tokenisers (Sec. 3.2) and the 2D-to-3D kernel initialisers (Sec. 3.4, Eq. 8-9).

Both tokenisers map a video (B, C, T, H, W) to tokens (B, n_t, n_h * n_w, D), time-major.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from vivit.model.linear import linear

TUBELET_INITS = ("central_frame", "inflate", "random")


def inflate(kernel2d: torch.Tensor, t: int) -> torch.Tensor:
    """Eq. 8, filter inflation: replicate the 2D kernel (D, C, h, w) over t frames and divide by t."""
    return kernel2d.unsqueeze(2).repeat(1, 1, t, 1, 1) / t


def central_frame(kernel2d: torch.Tensor, t: int) -> torch.Tensor:
    """Eq. 9, central frame initialisation: the 2D kernel at frame floor(t/2), zeros elsewhere."""
    kernel = kernel2d.new_zeros(kernel2d.shape[0], kernel2d.shape[1], t, *kernel2d.shape[2:])
    kernel[:, :, t // 2] = kernel2d
    return kernel


class TubeletEmbedding(nn.Module):
    """Tubelet embedding (Fig. 3): non-overlapping t x h x w tubes, linearly projected. The kernel is a
    Conv3d's (kernel = stride = tubelet; its (D, C, t, h, w) weight is the checkpoints' layout); the forward
    is the same sums as one linear on the flattened tubes, which takes `vivit.model.linear`'s GEMM route
    (a bf16 CPU Conv3d runs 5-25x slower than that where the CPU has no bf16 units; fp32 ~1.2x)."""

    def __init__(self, in_channels: int, dim: int, tubelet: tuple[int, int, int]):
        super().__init__()
        self.tubelet = tuple(tubelet)
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=self.tubelet, stride=self.tubelet)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, n_t, n_h * n_w, D): x_i = E v_i + b for each flattened tube v_i."""
        t, h, w = self.tubelet
        tubes = rearrange(video, "b c (nt t) (nh h) (nw w) -> b nt (nh nw) (c t h w)", t=t, h=h, w=w)
        return linear(tubes, self.proj.weight.flatten(1), self.proj.bias)

    @torch.no_grad()
    def load_image_kernel(self, kernel2d: torch.Tensor, bias: torch.Tensor | None, init: str = "central_frame") -> None:
        """Initialise from a 2D patch embedding (D, C, h, w) with `central_frame`, `inflate` or `random`
        (random keeps the current weights); the bias is copied from the image model in every case."""
        if init not in TUBELET_INITS:
            raise ValueError(f"tubelet init {init!r} is not one of {list(TUBELET_INITS)}")
        expected = (self.proj.out_channels, self.proj.in_channels, *self.tubelet[1:])
        if tuple(kernel2d.shape) != expected:
            raise ValueError(f"2D patch kernel has shape {tuple(kernel2d.shape)}, this tokeniser needs {expected}")
        if init != "random":
            fn = central_frame if init == "central_frame" else inflate
            self.proj.weight.copy_(fn(kernel2d.to(self.proj.weight), self.tubelet[0]))
        if bias is not None:
            self.proj.bias.copy_(bias)


class UniformFrameSampling(TubeletEmbedding):
    """Uniform frame sampling (Fig. 2): each of the n_t sampled frames is embedded independently with
    ViT's 2D h x w patch projection. That is a tubelet of depth 1, so every tubelet init copies the image
    kernel unchanged; the frames themselves are chosen by the clip sampler (`vivit.data.sampling`)."""

    def __init__(self, in_channels: int, dim: int, patch: tuple[int, int]):
        super().__init__(in_channels, dim, (1, *patch))
