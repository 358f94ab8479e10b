"""Video data: decoding, datasets, clip sampling, augmentation, batching, mixup, synthetic motion videos."""

from vivit.data.datasets import VideoDataset, build_dataset
from vivit.data.decode import VideoInfo, YuvFrames, probe, read_clip, read_clip_yuv, read_frames
from vivit.data.loader import Batch, VideoLoader, make_loader
from vivit.data.mixup import mixup, soft_targets
from vivit.textfiles import read_labels, write_labels
from vivit.data.transforms import AugmentConfig

__all__ = ["AugmentConfig", "Batch", "VideoDataset", "VideoInfo", "VideoLoader", "YuvFrames", "build_dataset",
           "make_loader", "mixup", "probe", "read_clip", "read_clip_yuv", "read_frames", "read_labels",
           "soft_targets", "write_labels"]
