import numpy as np
import pytest
import torch
from data_videos import good_video

from vivit.data.decode import YuvFrames, read_clip, read_clip_yuv

from vivit.data.mixup import mixup, soft_targets
from vivit.data.transforms import (AugmentConfig, color_jitter_map, crop_boxes, eval_transform, normalize,
                                   train_transform)
from vivit.errors import ConfigError

STRONG = AugmentConfig(flip=0.5, color_jitter=1.0, grayscale=0.3)


def static_clip(frames=6, height=40, width=56):
    """uint8 (T, H, W, C) where every frame is the same random image."""
    image = torch.randint(0, 256, (1, height, width, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return image.expand(frames, -1, -1, -1).contiguous()


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_treats_every_frame_the_same(seed):
    out = train_transform(static_clip(), 24, STRONG, torch.Generator().manual_seed(seed))
    assert out.shape == (3, 6, 24, 24) and out.dtype == torch.float32
    assert torch.allclose(out, out[:, :1].expand_as(out))
    assert out.min() >= -1 and out.max() <= 1


def test_train_transform_is_random_but_seeded():
    a, b, c = (train_transform(static_clip(), 24, STRONG, torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flip_mirrors_width():
    clip = static_clip(2, 24, 24)
    no_aug = dict(scale_jitter=(1.0, 1.0), color_jitter=0.0)
    kept = train_transform(clip, 24, AugmentConfig(flip=0.0, **no_aug), torch.Generator().manual_seed(0))
    flipped = train_transform(clip, 24, AugmentConfig(flip=1.0, **no_aug), torch.Generator().manual_seed(0))
    assert torch.equal(flipped, kept.flip(-1))
    assert torch.allclose(kept[:, 0].permute(1, 2, 0), clip[0].float() / 255 * 2 - 1, atol=1e-6)  # [-1, 1]


def test_eval_three_crops_are_left_centre_right_or_top_middle_bottom():
    landscape = torch.arange(4 * 10).view(1, 4, 10, 1).expand(2, -1, -1, 3).to(torch.uint8)
    assert crop_boxes(4, 10, 4, 3) == [(0, 0), (0, 3), (0, 6)] and crop_boxes(10, 4, 4, 3) == [(0, 0), (3, 0), (6, 0)]
    assert crop_boxes(4, 10, 4, 1) == [(0, 3)] and crop_boxes(5, 11, 5, 3) == [(0, 0), (0, 3), (0, 6)]
    views = eval_transform(landscape, 4, 3, normalization=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    assert views.shape == (3, 3, 2, 4, 4)
    assert torch.allclose(views[0, :, :, 0, 0], torch.full((3, 2), (0 / 255 - 0.5) / 0.25))


def test_color_jitter_map_is_the_composition_of_the_four_jitters():
    gray = torch.tensor([0.3, 0.3, 0.3], dtype=torch.float64)
    only = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    m, v = color_jitter_map(gray, AugmentConfig(**{**only, "brightness": 0.4}), torch.Generator().manual_seed(0))
    assert torch.allclose(m, m[0, 0] * torch.eye(3, dtype=torch.float64)) and 0.6 <= m[0, 0] <= 1.4
    assert v.abs().max() == 0
    for kind in ("saturation", "hue", "contrast"):  # the clip's mean gray is a fixed point of these three
        m, v = color_jitter_map(gray, AugmentConfig(**{**only, kind: 0.4}), torch.Generator().manual_seed(1))
        assert torch.allclose(m @ gray + v, gray) and not torch.allclose(m, torch.eye(3, dtype=torch.float64))
    clip = torch.randint(0, 256, (4, 40, 40, 3), dtype=torch.uint8)
    out = train_transform(clip, 16, AugmentConfig(color_jitter=1.0, brightness=2.0), torch.Generator().manual_seed(3))
    assert out.min() >= -1 and out.max() <= 1 and (out.abs() == 1).any()  # strong jitter is clamped


def test_crop_is_taken_at_the_short_side_scale():
    frames = torch.randint(0, 256, (2, 60, 80, 3), dtype=torch.uint8)
    full = eval_transform(frames, 30, 1, short_side=30)  # the frame stands for a 30x40 image: the crop is 60x60
    assert full.shape == (1, 3, 2, 30, 30)
    expected = normalize(torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2)[..., 10:70], size=(30, 30),
                                                         mode="bilinear", antialias=True))
    assert torch.allclose(full[0].transpose(0, 1), expected, atol=1e-6)


def test_bad_augment_values_are_rejected():
    with pytest.raises(ConfigError, match="flip"):
        AugmentConfig(flip=2.0)
    with pytest.raises(ConfigError, match="num_crops"):
        crop_boxes(8, 8, 4, 2)


def test_soft_targets_and_label_smoothing():
    t = soft_targets(torch.tensor([0, 2]), 4, smoothing=0.2)
    assert torch.allclose(t[0], torch.tensor([0.85, 0.05, 0.05, 0.05])) and torch.allclose(t.sum(1), torch.ones(2))


def test_mixup_uses_one_lambda_with_the_reversed_batch():
    videos = torch.arange(3.0).view(3, 1, 1, 1, 1).expand(3, 1, 2, 2, 2)
    targets = soft_targets(torch.tensor([0, 1, 2]), 3)
    mixed_v, mixed_t = mixup(videos, targets, alpha=0.4, generator=torch.Generator().manual_seed(0))
    lam = mixed_t[0, 0].item()
    assert 0 <= lam <= 1 and torch.allclose(mixed_t[0], torch.tensor([lam, 0, 1 - lam]))
    assert torch.allclose(mixed_v[:, 0, 0, 0, 0], lam * torch.arange(3.0) + (1 - lam) * torch.arange(3.0).flip(0))
    with pytest.raises(ConfigError, match="soft targets"):
        mixup(videos, torch.tensor([0, 1, 2]), alpha=0.4)


@pytest.mark.parametrize("codec, ext", [("libx264", "mp4"), ("mjpeg", "avi")])
def test_yuv_path_matches_the_rgb_path(tmp_path, codec, ext):
    """Decoding to YUV and folding the colour conversion into the colour matrix gives the RGB path's result
    (up to chroma upsampling: swscale's filter and ours differ at colour edges by ~3/255 on average)."""
    path = good_video(tmp_path / f"v.{ext}", frames=6, size=(48, 64), codec=codec)
    rgb, _ = read_clip(path, lambda info: range(6))
    yuv, _ = read_clip_yuv(path, lambda info: range(6))
    assert yuv.full_range == (codec == "mjpeg")
    cfg = AugmentConfig(color_jitter=1.0, grayscale=0.0)
    for seed in range(3):
        a = train_transform(torch.from_numpy(rgb), 32, cfg, torch.Generator().manual_seed(seed), short_side=36)
        b = train_transform(yuv, 32, cfg, torch.Generator().manual_seed(seed), short_side=36)
        assert a.shape == b.shape == (3, 6, 32, 32)  # same jitter; crops may differ by a pixel (even-aligned in YUV)
        assert torch.allclose(a.mean((1, 2, 3)), b.mean((1, 2, 3)), atol=0.03)
    a, b = eval_transform(torch.from_numpy(rgb), 32, 3), eval_transform(yuv, 32, 3)
    assert a.shape == b.shape == (3, 3, 6, 32, 32) and (a - b).abs().mean() < 0.03


@pytest.mark.parametrize("chroma", [(2, 2), (1, 2), (1, 1)])
@pytest.mark.parametrize("height, width", [(5, 7), (6, 7), (7, 6)])
def test_yuv_crops_are_the_rgb_crops_of_odd_sized_planes(chroma, height, width):
    """Hand-made planar YUV of odd sizes: every crop equals the same crop of its RGB image, made as ffmpeg makes
    it (each chroma sample repeated over its sy x sx pixels, BT.601 video range, clamped): 4:4:4 rounded,
    4:2:0 / 4:2:2 as swscale's unscaled converter computes them, in 16-bit fixed point on 8 x the values with
    each product floored (coefficients of libswscale/yuv2rgb.c for BT.601 video range, spelled out here)."""
    sy, sx = chroma
    ch, cw = -(-height // sy), -(-width // sx)
    rng = np.random.default_rng(0)
    y = rng.integers(16, 236, (2, height, width), dtype=np.uint8)
    u, v = rng.integers(16, 241, (2, 2, ch, cw), dtype=np.uint8)
    frames = YuvFrames(np.concatenate([p.reshape(2, -1) for p in (y, u, v)], 1), height, width, False, 2, chroma)
    up = [p.repeat(sy, 1).repeat(sx, 2)[:, :height, :width].astype(np.int64) - 128 for p in (u, v)]
    if chroma == (1, 1):
        luma = 1.164384 * (y.astype(float) - 16)
        rgb = np.round(np.stack([luma + 1.596027 * up[1], luma - 0.391762 * up[0] - 0.812968 * up[1],
                                 luma + 2.017232 * up[0]], -1))
    else:  # y: (8 Y - 128) * 9539 >> 16; chroma: 8 (C - 128) * (13075 vr, 16525 ub, -3209 ug, -6660 vg) >> 16
        luma = ((8 * y.astype(np.int64) - 128) * 9539) >> 16
        u8, v8 = 8 * up[0], 8 * up[1]
        rgb = np.stack([luma + ((v8 * 13075) >> 16), luma + ((u8 * -3209) >> 16) + ((v8 * -6660) >> 16),
                        luma + ((u8 * 16525) >> 16)], -1)
    rgb = torch.from_numpy(np.clip(rgb, 0, 255).astype(np.uint8))
    side = min(height, width)
    ours, expected = eval_transform(frames, side, 3), eval_transform(rgb, side, 3)
    assert ours.shape == (3, 3, 2, side, side) and (ours - expected).abs().max() <= 1.01 * 2 / 255
