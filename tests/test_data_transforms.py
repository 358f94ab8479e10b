import pytest
import torch

from vivit.data.mixup import mixup, soft_targets
from vivit.data.transforms import AugmentConfig, color_jitter, eval_transform, spatial_crops, train_transform
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
    assert torch.allclose(kept[:, 0].permute(1, 2, 0), clip[0].float() / 255 * 2 - 1)  # [-1, 1] normalisation


def test_eval_three_crops_are_left_centre_right_or_top_middle_bottom():
    landscape = torch.arange(4 * 10).view(1, 4, 10, 1).expand(2, -1, -1, 3).to(torch.uint8)
    crops = spatial_crops(landscape.permute(0, 3, 1, 2), 4, 3)
    assert [int(c[0, 0, 0, 0]) for c in crops] == [0, 3, 6]
    portrait = landscape.transpose(1, 2)
    assert [int(c[0, 0, 0, 0]) for c in spatial_crops(portrait.permute(0, 3, 1, 2), 4, 3)] == [0, 3, 6]
    views = eval_transform(landscape, 4, 3, normalization=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    assert views.shape == (3, 3, 2, 4, 4)
    assert torch.allclose(views[0, :, :, 0, 0], torch.full((3, 2), (0 / 255 - 0.5) / 0.25))


def test_color_jitter_keeps_range_and_changes_colour():
    clip = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = color_jitter(clip.clone(), AugmentConfig(), torch.Generator().manual_seed(3))
    assert out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, clip)


def test_bad_augment_values_are_rejected():
    with pytest.raises(ConfigError, match="flip"):
        AugmentConfig(flip=2.0)
    with pytest.raises(ConfigError, match="num_crops"):
        spatial_crops(torch.zeros(1, 3, 8, 8), 4, 2)


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
