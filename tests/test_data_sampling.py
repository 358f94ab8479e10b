import numpy as np
import pytest

from vivit.data.sampling import clip_indices, eval_clips, eval_uniform, random_clip, random_uniform, uniform_indices
from vivit.errors import ConfigError


def test_random_clip_keeps_stride_and_stays_inside():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = random_clip(100, 8, 3, rng)
        assert len(idx) == 8 and np.all(np.diff(idx) == 3) and idx[0] >= 0 and idx[-1] <= 99
        starts.add(int(idx[0]))
    assert min(starts) == 0 and max(starts) == 100 - 22 and len(starts) > 40  # temporal jitter over all starts


def test_short_video_is_padded_with_its_last_frame():
    idx = random_clip(5, 4, 2, np.random.default_rng(0))
    assert idx.tolist() == [0, 2, 4, 4]
    assert clip_indices(3, 4, 1, 0).tolist() == [0, 1, 2, 2]


@pytest.mark.parametrize("total, n", [(300, 32), (100, 8), (10, 16), (33, 32)])
def test_uniform_sampling_is_the_official_rule(total, n):
    official = np.clip(np.round(np.arange(total / (n + 1), total, total / (n + 1)))[:n], 0, total - 1)
    assert uniform_indices(total, n).tolist() == official.astype(int).tolist()
    assert eval_uniform(total, n, 1)[0].tolist() == official.astype(int).tolist()


def test_uniform_training_and_multi_clip_offsets_stay_in_range():
    idx = random_uniform(50, 8, np.random.default_rng(1))
    assert len(idx) == 8 and np.all(np.diff(idx) > 0) and idx.max() <= 49
    clips = eval_uniform(50, 8, 3)
    assert len(clips) == 3 and clips[0][0] < clips[1][0] < clips[2][0]


def test_eval_clips_are_evenly_spaced_from_first_to_last_start():
    clips = eval_clips(100, 8, 2, 4)  # span 15: starts linspace(0, 85, 4)
    assert [int(c[0]) for c in clips] == [0, 28, 57, 85]
    assert all(np.all(np.diff(c) == 2) for c in clips)
    assert eval_clips(100, 8, 2, 1)[0][0] == 85 // 2  # one clip: the centre


def test_bad_clip_parameters_name_the_values():
    with pytest.raises(ConfigError, match="num_frames"):
        random_clip(10, 0, 1, np.random.default_rng(0))
