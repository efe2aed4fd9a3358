"""Data-safety helpers for tests: a folder's content as hashes, to assert that not a byte changed."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_hashes(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


SRC = "a red circle is moving on the road"
TGT = "a blue circle is moving on the road"


def toy_work(folder: Path, frames: int, video: str = "clip.mp4") -> Path:
    """``folder`` holding a toy clip of SRC twice: as a frame folder (``frames/``) and as ``video`` (an mp4)."""
    from attentionflow.io.writers import write_frames, write_mp4
    from attentionflow.toyworld.world import make_video

    clip = make_video(SRC, frames=frames, size=64, seed=0).frames
    write_frames(clip, folder / "frames")
    (folder / video).parent.mkdir(parents=True, exist_ok=True)
    write_mp4(clip, folder / video)
    return folder
