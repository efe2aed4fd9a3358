"""Video input/output: read + sample + resize frames (`video`), write mp4/gif/PNG frames (`writers`), grids (`grid`),
atomic output folders (`outputs`)."""

from __future__ import annotations

from attentionflow.io.grid import grid_frames, make_grid
from attentionflow.io.outputs import atomic_output_dir, check_output_dir
from attentionflow.io.video import (
    DEFAULT_FOLDER_FPS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    VideoInfo,
    probe_video,
    read_frames,
    resize_center_crop,
)
from attentionflow.io.writers import write_frames, write_gif, write_mp4

__all__ = [
    "DEFAULT_FOLDER_FPS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VideoInfo",
    "atomic_output_dir",
    "check_output_dir",
    "grid_frames",
    "make_grid",
    "probe_video",
    "read_frames",
    "resize_center_crop",
    "write_frames",
    "write_gif",
    "write_mp4",
]
