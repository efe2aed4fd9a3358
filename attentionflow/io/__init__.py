"""Video input/output: read + sample + resize frames, write mp4/gif/PNG frames/grids, atomic output folders."""

from __future__ import annotations

from attentionflow.io.outputs import atomic_output_dir, check_output_dir
from attentionflow.io.video import (
    DEFAULT_FOLDER_FPS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    VideoInfo,
    grid_frames,
    make_grid,
    probe_video,
    read_frames,
    resize_center_crop,
    write_frames,
    write_gif,
    write_mp4,
)

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
