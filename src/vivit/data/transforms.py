"""Clip transforms on torch tensors: every frame of a clip gets the same crop, flip and colour change.

Work happens on the smallest tensor possible and in few passes: the crop is cut from the uint8 frames (RGB,
or planar YUV straight from the decoder) at exactly the pixels an RGB frame would give; YUV crops become uint8
RGB as ffmpeg's own conversion makes them (each chroma sample repeated over the pixels it covers, in swscale's
fixed point for 4:2:0/4:2:2, every pixel clamped), so only the crop is ever converted. The crop is resized by
one uint8 `F.interpolate` call (antialiased when shrinking). Colour jitter, grayscale and normalisation are all affine colour maps, so they are
composed into one 3x3 matrix and offset, applied once from uint8 to float and clamped once (torchvision clamps
after each jitter step instead). The result is float (C, T, H, W).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vivit.data.decode import YuvFrames
from vivit.errors import ConfigError

# ITU-R BT.601 luma weights (grayscale, saturation, contrast)
_LUMA = (0.299, 0.587, 0.114)

Normalization = str | tuple[tuple[float, ...], tuple[float, ...]]  # "minus_one_one" or (mean, std) in [0, 1]


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (paper Appendix / Table 7 recipe); probabilities are per clip."""

    scale_jitter: tuple[float, float] = (0.9, 1.33)  # random zoom of the short-side-resized frame before the crop
    flip: float = 0.5  # horizontal flip probability
    color_jitter: float = 0.8  # probability of applying colour jitter
    brightness: float = 0.4  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1  # fraction of a full turn of the chroma plane, drawn from [-h, h]
    grayscale: float = 0.0  # probability of turning the clip gray
    short_side: int | None = None  # resize target of the short side; None: image_size * 256 / 224 rounded
    normalization: Normalization = "minus_one_one"

    def __post_init__(self):
        low, high = self.scale_jitter
        if not 0 < low <= high:
            raise ConfigError(f"scale_jitter must be (low, high) with 0 < low <= high, got {self.scale_jitter}")
        for name in ("flip", "color_jitter", "grayscale"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if self.normalization != "minus_one_one" and not (
                isinstance(self.normalization, (tuple, list)) and len(self.normalization) == 2):
            raise ConfigError(f"normalization must be 'minus_one_one' or (mean, std), got {self.normalization!r}")

    def resize_to(self, image_size: int) -> int:
        """Short side the frames are resized to (in effect) before cropping `image_size` pixels."""
        return self.short_side or round(image_size * 256 / 224)


def _normalization_affine(normalization: Normalization) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, offset) taking [0, 1] pixels to [-1, 1] or to (x - mean) / std."""
    if normalization == "minus_one_one":
        return torch.full((3,), 2.0, dtype=torch.float64), torch.full((3,), -1.0, dtype=torch.float64)
    mean, std = (torch.tensor(v, dtype=torch.float64) for v in normalization)
    return 1 / std, -mean / std


def crop(clip: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    return clip[..., top:top + height, left:left + width]


def resize(clip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of a (T, C, H, W) clip (uint8 or float) in one call, antialiased when shrinking."""
    if clip.shape[-2:] == (height, width):
        return clip
    shrink = height < clip.shape[-2] or width < clip.shape[-1]
    return F.interpolate(clip, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)


def crop_boxes(height: int, width: int, size: int, num_crops: int) -> list[tuple[int, int]]:
    """(top, left) of 1 centre crop, or 3 along the long side: left/centre/right (landscape) or top/middle/bottom."""
    if num_crops not in (1, 3):
        raise ConfigError(f"num_crops must be 1 or 3, got {num_crops}")
    if min(height, width) < size:
        raise ConfigError(f"frames of {height}x{width} are smaller than the crop size {size}")
    top, left, bottom, right = (height - size) // 2, (width - size) // 2, height - size, width - size
    if num_crops == 1:
        return [(top, left)]
    if width >= height:
        return [(top, x) for x in (0, left, right)]
    return [(y, left) for y in (0, top, bottom)]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _toward_gray(amount: float) -> torch.Tensor:
    """Matrix of x -> amount * x + (1 - amount) * luma(x) (saturation; amount 0 is grayscale)."""
    luma = torch.tensor(_LUMA, dtype=torch.float64)
    return amount * torch.eye(3, dtype=torch.float64) + (1 - amount) * torch.ones(3, 1, dtype=torch.float64) * luma


def _hue_rotation(turns: float) -> torch.Tensor:
    """Rotate the chroma plane of YIQ by `turns` of a full circle."""
    rgb_to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                              dtype=torch.float64)
    c, s = math.cos(2 * math.pi * turns), math.sin(2 * math.pi * turns)
    rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)
    return torch.linalg.inv(rgb_to_yiq) @ rotation @ rgb_to_yiq


def color_jitter_map(mean_rgb: torch.Tensor, cfg: AugmentConfig,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(matrix, offset) of brightness, contrast, saturation, hue in that order, for RGB in [0, 1].

    `mean_rgb` is the clip's mean colour: contrast blends toward the mean gray of the clip.
    """
    matrix, offset = torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    if cfg.brightness:
        b = _uniform(generator, 1 - cfg.brightness, 1 + cfg.brightness)
        matrix, offset = b * matrix, b * offset
    if cfg.contrast:
        c = _uniform(generator, 1 - cfg.contrast, 1 + cfg.contrast)
        mean_gray = torch.tensor(_LUMA, dtype=torch.float64) @ (matrix @ mean_rgb.double() + offset)
        matrix, offset = c * matrix, c * offset + (1 - c) * mean_gray
    if cfg.saturation:
        saturation = _toward_gray(_uniform(generator, 1 - cfg.saturation, 1 + cfg.saturation))
        matrix, offset = saturation @ matrix, saturation @ offset
    if cfg.hue:
        hue = _hue_rotation(_uniform(generator, -cfg.hue, cfg.hue))
        matrix, offset = hue @ matrix, hue @ offset
    return matrix, offset


_RGB = 0  # AVColorSpace of planar RGB (G, B, R planes: `YuvFrames` of RGB sources)
# libswscale/yuv2rgb.c ff_yuv2rgb_coeffs by AVColorSpace (sws_getCoefficients: any other value is BT.601):
# the standards' (kr, kb) and swscale's (crv, cbu, cgu, cgv) in 16.16 fixed point for video range
_BT601 = ((0.299, 0.114), (104597, 132201, 25675, 53279))
_MATRICES = {1: ((0.2126, 0.0722), (117489, 138438, 13975, 34925)),  # ITU-R BT.709
             4: ((0.30, 0.11), (104448, 132798, 24759, 53109)),  # FCC
             7: ((0.212, 0.087), (117579, 136230, 16907, 35559)),  # SMPTE 240M
             9: ((0.2627, 0.0593), (110013, 140363, 12277, 42626)),  # ITU-R BT.2020 (non-constant luminance)
             10: ((0.2627, 0.0593), (110013, 140363, 12277, 42626))}  # BT.2020 constant luminance: the same


def _yuv_to_rgb(full_range: bool, colorspace: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(matrix, offset) with RGB in [0, 1] = matrix @ (Y, U, V) + offset for 8-bit YUV values (`_MATRICES`)."""
    kr, kb = _MATRICES.get(colorspace, _BT601)[0]
    kg = 1 - kr - kb
    to_rgb = torch.tensor([[1.0, 0.0, 2 * (1 - kr)],
                           [1.0, -2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg],
                           [1.0, 2 * (1 - kb), 0.0]], dtype=torch.float64)
    luma_scale, chroma_scale, black = (1.0, 1.0, 0.0) if full_range else (255 / 219, 255 / 224, 16.0)
    matrix = to_rgb @ torch.diag(torch.tensor([luma_scale, chroma_scale, chroma_scale], dtype=torch.float64)) / 255
    return matrix, -matrix @ torch.tensor([black, 128.0, 128.0], dtype=torch.float64)


def _unscaled_coefficients(full_range: bool, colorspace: int) -> tuple[int, int, int, int, int, int]:
    """(y, vr, ub, ug, vg, y offset) of swscale's unscaled YUV -> RGB converter, the one ffmpeg uses for 4:2:0
    and 4:2:2 frames of even height, as `ff_yuv2rgb_c_init_tables` sets them (default contrast, saturation,
    brightness): 16-bit fixed point applied to 8 x the 8-bit values, each product floored (x86/yuv_2_rgb.asm)."""
    crv, cbu, cgu, cgv = _MATRICES.get(colorspace, _BT601)[1]
    cgu, cgv = -cgu, -cgv
    cy, oy = 1 << 16, 0
    if full_range:  # C division truncates toward zero
        crv, cbu, cgu, cgv = (int(math.copysign(abs(c) * 224 // 255, c)) for c in (crv, cbu, cgu, cgv))
    else:
        cy, oy = cy * 255 // 219, 16 << 16
    return tuple((c * (1 << 13) + (1 << 15)) >> 16 for c in (cy, crv, cbu, cgu, cgv)) + ((oy * 8 + (1 << 15)) >> 16,)


Frames = torch.Tensor | YuvFrames  # uint8 RGB (T, H, W, C), or planar YUV from `read_clip_yuv`


def _frame_size(frames: Frames) -> tuple[int, int]:
    return (frames.height, frames.width) if isinstance(frames, YuvFrames) else tuple(frames.shape[1:3])


def _yuv_crop_to_rgb(frames: YuvFrames, top: int, left: int, side: int) -> torch.Tensor:
    """uint8 RGB (T, 3, side, side) of a YUV crop as ffmpeg converts it: each chroma sample applies to the
    sy x sx pixels it covers, every pixel clamped; 4:4:4 (planes a reduced-size decode made) exactly rounded, 4:2:0 and
    4:2:2 in swscale's unscaled fixed point (`_unscaled_coefficients`), so both equal ffmpeg's own RGB; planar RGB
    (colorspace 0) is cut as it is."""
    luma, u, v = (torch.from_numpy(p) for p in frames.planes())
    if frames.colorspace == _RGB:  # planar G, B, R: the crop's own pixels
        return torch.stack([p[:, top:top + side, left:left + side] for p in (v, luma, u)], 1)
    (sy, sx), (ct, cl) = frames.chroma, (top // frames.chroma[0], left // frames.chroma[1])
    ch, cw = (top + side - 1) // sy - ct + 1, (left + side - 1) // sx - cl + 1  # chroma samples under the crop
    unscaled = (sy, sx) != (1, 1)
    kind = torch.int32 if unscaled else torch.float32
    y = luma[:, ct * sy:(ct + ch) * sy, cl * sx:(cl + cw) * sx].to(kind)
    if y.shape[1:] != (ch * sy, cw * sx):  # an odd last row or column covers half a chroma sample
        pad = (0, cw * sx - y.shape[2], 0, ch * sy - y.shape[1])
        y = F.pad(y[:, None].float(), pad, mode="replicate")[:, 0].to(kind)
    chroma = [p[:, ct:ct + ch, cl:cl + cw].to(kind) for p in (u, v)]
    if unscaled:  # terms of 8 x (value - offset), each (term * coefficient) >> 16
        cy, vr, ub, ug, vg, y_offset = _unscaled_coefficients(frames.full_range, frames.colorspace)
        y = y.mul_(8).sub_(y_offset).mul_(cy).bitwise_right_shift_(16)
        u8, v8 = (p.mul_(8).sub_(1024) for p in chroma)
        shifts = [(v8 * vr) >> 16, ((u8 * ug) >> 16).add_((v8 * vg) >> 16), (u8 * ub) >> 16]
    else:
        matrix, offset = _yuv_to_rgb(frames.full_range, frames.colorspace)
        y.mul_(255 * float(matrix[0, 0]))  # every channel weighs luma the same
        shifts = [(chroma[0] * row[1]).add_(chroma[1], alpha=row[2]).add_(bias + 0.5)  # + 0.5, truncation: rounding
                  for row, bias in zip((255 * matrix).tolist(), (255 * offset).tolist())]
    rgb, value = torch.empty(len(y), 3, side, side, dtype=torch.uint8), torch.empty_like(y)
    rows, cols = slice(top - ct * sy, top - ct * sy + side), slice(left - cl * sx, left - cl * sx + side)
    for c, shift in enumerate(shifts):
        if unscaled:  # nearest upsampling by whole factors: each sample over its sy x sx pixels
            shift = shift.repeat_interleave(sy, 1).repeat_interleave(sx, 2)
        torch.add(y, shift, out=value)
        rgb[:, c] = value[:, rows, cols].clamp_(0, 255)
    return rgb


def _crop_resize(frames: Frames, top: int, left: int, side: int, size: int) -> list[torch.Tensor]:
    """Three uint8 RGB (T, size, size) planes of the crop at (top, left)."""
    if isinstance(frames, YuvFrames):
        rgb = _yuv_crop_to_rgb(frames, top, left, side)
    else:
        rgb = crop(frames.permute(0, 3, 1, 2), top, left, side, side)
    return list(resize(rgb, size, size).unbind(1))


def color_map(planes: list[torch.Tensor], matrix: torch.Tensor, offset: torch.Tensor, normalization: Normalization,
              clamp: bool) -> torch.Tensor:
    """normalise(matrix @ x + offset) of three uint8 (T, H, W) planes -> float (3, T, H, W), clamped to the image
    of [0, 1]; written channel by channel straight from uint8, without a float copy of the input."""
    scale, shift = _normalization_affine(normalization)
    full_matrix = (scale[:, None] * matrix).tolist()
    full_offset = (scale * offset + shift).tolist()
    out = torch.empty(3, *planes[0].shape)
    for c, (row, bias) in enumerate(zip(full_matrix, full_offset)):
        torch.mul(planes[0], row[0], out=out[c])
        out[c].add_(planes[1], alpha=row[1]).add_(planes[2], alpha=row[2]).add_(bias)
    if clamp and normalization == "minus_one_one":
        out.clamp_(-1, 1)
    elif clamp:
        for c in range(3):
            out[c].clamp_(float(shift[c]), float(scale[c] + shift[c]))
    return out


def _finish(planes: list[torch.Tensor], normalization: Normalization, jitter: AugmentConfig | None = None,
            gray: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 RGB planes -> float (C, T, S, S): jitter, grayscale and normalisation in one map."""
    matrix, offset = torch.eye(3, dtype=torch.float64) / 255, torch.zeros(3, dtype=torch.float64)
    if jitter is not None:  # the clip's mean colour, from every other pixel
        mean = torch.tensor([p[:, ::2, ::2].float().mean() for p in planes], dtype=torch.float64)
        jitter_matrix, jitter_offset = color_jitter_map(matrix @ mean + offset, jitter, generator)
        matrix, offset = jitter_matrix @ matrix, jitter_matrix @ offset + jitter_offset
    if gray:
        matrix, offset = _toward_gray(0.0) @ matrix, _toward_gray(0.0) @ offset
    return color_map(planes, matrix, offset, normalization, clamp=jitter is not None)


def normalize(clip: torch.Tensor, normalization: Normalization = "minus_one_one") -> torch.Tensor:
    """uint8 RGB (T, C, H, W) -> float (T, C, H, W) in [-1, 1] or (x / 255 - mean) / std."""
    return _finish(list(clip.unbind(1)), normalization).transpose(0, 1)


def train_transform(frames: Frames, image_size: int, cfg: AugmentConfig, generator: torch.Generator,
                    short_side: int | None = None) -> torch.Tensor:
    """uint8 frames -> float (C, T, S, S): scale-jittered random crop, flip, colour jitter, grayscale, normalisation.

    `short_side` is the size the frames stand for (default: their own short side): a crop of S / (scale * zoom)
    frame pixels, resized to S, equals zooming the short-side-resized frame by `scale` and cropping S pixels.
    """
    height, width = _frame_size(frames)
    zoom = (short_side or min(height, width)) / min(height, width)
    side = min(round(image_size / (_uniform(generator, *cfg.scale_jitter) * zoom)), height, width)
    top, left = (min(int(_uniform(generator, 0, n - side + 1)), n - side) for n in (height, width))
    planes = _crop_resize(frames, top, left, side, image_size)
    if torch.rand((), generator=generator) < cfg.flip:
        planes = [p.flip(-1) for p in planes]
    jitter = cfg if torch.rand((), generator=generator) < cfg.color_jitter else None
    gray = bool(torch.rand((), generator=generator) < cfg.grayscale)
    return _finish(planes, cfg.normalization, jitter, gray, generator)


def eval_transform(frames: Frames, image_size: int, num_crops: int,
                   normalization: Normalization = "minus_one_one", short_side: int | None = None) -> torch.Tensor:
    """uint8 frames -> float (num_crops, C, T, S, S): fixed crops of the frame resized to `short_side`."""
    height, width = _frame_size(frames)
    side = min(round(image_size * min(height, width) / (short_side or min(height, width))), height, width)
    boxes = crop_boxes(height, width, side, num_crops)
    return torch.stack([_finish(_crop_resize(frames, top, left, side, image_size), normalization)
                        for top, left in boxes])
