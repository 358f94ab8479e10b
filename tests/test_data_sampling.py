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
    # official `_get_random_sampling_offset` (dmvr/processors.py): offsets in [0, max(100 - 7 * 3, 1)) = [0, 79)
    assert min(starts) == 0 and max(starts) == 78 and len(starts) > 40


def test_short_video_loops_back_to_its_first_frame():
    """Official `sample_or_pad_sequence_indices` (dmvr/processors.py, repeat_sequence=True) gathers steps
    offset, offset + s, ... from range(T) tiled ceil((n s + offset) / T) times: index = step mod T."""
    # T=5, n=4, s=2: training offset in [0, max(5 - 6, 1)) = {0}; steps 0 2 4 6 of 0 1 2 3 4 0 1 2 3 4
    assert random_clip(5, 4, 2, np.random.default_rng(0)).tolist() == [0, 2, 4, 1]
    assert clip_indices(3, 4, 1, 0).tolist() == [0, 1, 2, 0]
    assert clip_indices(3, 4, 2, 0).tolist() == [0, 2, 1, 0]  # steps 0 2 4 6 of 0 1 2 tiled 3 times
    # test clips, T=10, n=8, s=2: linspace offsets max(0, 10 - 16) = 0 for every clip, the centre
    # max(0, (10 - 16) // 2) = 0; steps 0 2 ... 14 of 0..9 tiled twice
    looped = [0, 2, 4, 6, 8, 0, 2, 4]
    assert [c.tolist() for c in eval_clips(10, 8, 2, 2)] == [looped, looped]
    assert eval_clips(10, 8, 2, 1)[0].tolist() == looped


def official_uniform(total: int, n: int) -> np.ndarray:
    """Scenic's `sample_frames_uniformly` (scenic/common_lib/video_utils.py) restated in numpy: positions
    arange(T/(n+1), T, T/(n+1)) (arange(0, T, 1) when n >= T) in float32, as jnp.arange computes them with
    x64 off, rounded half to even, clipped to T - 1."""
    start, step = (total / (n + 1), total / (n + 1)) if n < total else (0, 1)
    return np.minimum(np.round(np.arange(start, total, step, dtype=np.float32)).astype(np.int64), total - 1)


# Indices the official function returned when run (jax 0.10.2, x64 off): every frame for n == T, float32
# drift breaking a would-be tie (13/12 * 6 -> 7, not 6), the extra end point (8/3 * 3 ~ 8 -> 7), and Scenic's
# own unit test (128 frames, n=18 -> 19 frames).
MEASURED = {(4, 4): [0, 1, 2, 3], (13, 11): [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12], (8, 2): [3, 5, 7],
            (4, 2): [1, 3, 3], (128, 18): [7, 13, 20, 27, 34, 40, 47, 54, 61, 67, 74, 81, 88, 94, 101, 108, 115, 121, 127]}


def test_the_numpy_restatement_is_what_the_official_code_returned():
    for (total, n), indices in MEASURED.items():
        assert official_uniform(total, n).tolist() == indices
    pairs = [(t, n) for t in range(1, 65) for n in range(1, t + 1)]
    lengths = [len(official_uniform(t, n)) - n for t, n in pairs]
    assert (lengths.count(0), lengths.count(1), len(pairs)) == (1842, 238, 2080)  # as measured with jax


def test_uniform_indices_equal_the_official_wherever_it_returns_n_frames():
    matched = 0
    for total in range(1, 65):
        for n in range(1, total + 1):
            official = official_uniform(total, n)
            ours = uniform_indices(total, n)
            assert len(ours) == n, (total, n)
            if len(official) == n:
                assert ours.tolist() == official.tolist(), (total, n)
                assert eval_uniform(total, n, 1)[0].tolist() == official.tolist(), (total, n)
                matched += 1
            else:  # the official float32 arange also reached its end point T - 1: we keep its first n
                assert ours.tolist() == official[:n].tolist() and official[-1] == total - 1, (total, n)
    assert matched == 1842


def test_uniform_indices_for_more_frames_than_the_video_has():
    assert uniform_indices(4, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # the official takes the 4 frames only
    assert uniform_indices(3, 4).tolist() == [0, 0, 1, 2]
    assert uniform_indices(5, 5, offset=0.4).tolist() == [0, 1, 2, 3, 4]  # nothing to shift: every frame


def test_uniform_training_and_multi_clip_offsets_stay_in_range():
    idx = random_uniform(50, 8, np.random.default_rng(1))
    assert len(idx) == 8 and np.all(np.diff(idx) > 0) and idx.max() <= 49
    clips = eval_uniform(50, 8, 3)
    assert len(clips) == 3 and clips[0][0] < clips[1][0] < clips[2][0]


def official_linspace_starts(total: int, n: int, stride: int, k: int) -> list[int]:
    """Official `sample_linspace_sequence` (dmvr/processors.py) offsets restated in numpy: tf.linspace in float32
    (start, start + i * delta, stop, delta = (stop - start) / (k - 1)) of 0 .. max(0, T - n s), cast to int32."""
    delta = np.float32(max(total - n * stride, 0)) / np.float32(k - 1)
    values = np.arange(k, dtype=np.float32) * delta
    values[-1] = max(total - n * stride, 0)
    return values.astype(np.int32).tolist()


def test_eval_clips_start_where_the_official_linspace_puts_them():
    """k > 1: offsets linspace(0, max(0, T - n s), k) truncated (official `sample_linspace_sequence`)."""
    clips = eval_clips(250, 32, 2, 4)  # linspace(0, 250 - 64 = 186, 4) = 0 62 124 186
    assert [int(c[0]) for c in clips] == [0, 62, 124, 186] and clips[3][-1] == 186 + 62
    assert all(np.all(np.diff(c) == 2) for c in clips)
    assert [int(c[0]) for c in eval_clips(100, 8, 2, 4)] == [0, 28, 56, 84]  # linspace(0, 84, 4)
    assert [int(c[0]) for c in eval_clips(50, 4, 4, 4)] == [0, 11, 22, 34]  # 34 / 3 = 11.33: 11.33 22.67 truncated
    assert [int(c[0]) for c in eval_clips(40, 4, 2, 3)] == [0, 16, 32]  # linspace(0, 32, 3)
    for total in range(1, 400):
        for k in range(2, 7):
            assert [int(c[0]) for c in eval_clips(total, 4, 3, k)] == official_linspace_starts(total, 4, 3, k)


def test_one_eval_clip_is_the_official_central_window():
    """k = 1: offset max(0, (T - n s) // 2) (official `sample_sequence` with random=False)."""
    assert eval_clips(251, 32, 2, 1)[0][0] == 93  # (251 - 64) // 2 = 187 // 2
    assert eval_clips(250, 32, 2, 1)[0][0] == 93  # 186 // 2
    assert eval_clips(100, 8, 2, 1)[0].tolist() == list(range(42, 58, 2))  # (100 - 16) // 2 = 42
    assert eval_clips(17, 8, 2, 1)[0][0] == 0  # (17 - 16) // 2


def test_bad_clip_parameters_name_the_values():
    with pytest.raises(ConfigError, match="num_frames"):
        random_clip(10, 0, 1, np.random.default_rng(0))
