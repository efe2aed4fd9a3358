"""The edit region from motion (``edit_region``): checks, and the masks an edit uses.

The moving-object masks themselves come with the motion maps (:func:`attentionflow.flow.motion.motion_maps`, made
by :mod:`attentionflow.flow.segment`): one understanding of what moves serves both MMI's maps and the region.
Pure NumPy: this module knows nothing about diffusers; the pipeline turns the mask into a latent blend mask
(``attentionflow/attention/blend.py``).
"""

from __future__ import annotations

import numpy as np

from attentionflow.errors import InputError
from attentionflow.flow.motion import MotionOptions, MotionResult, motion_maps

__all__ = ["check_region", "motion_for_edit"]


def check_region(region: str, masks: np.ndarray | None, num_frames: int, flag: str = "edit_region") -> None:
    """Raise a one-line :class:`InputError` when ``region`` (all, moving or static: the config checked the name)
    cannot be used on this video.

    ``masks``: the moving masks ``(N, H, W)`` (None before they exist: only the frame count is checked).
    """
    if region == "all":
        return
    if num_frames < 2:
        raise InputError(f"{flag} {region!r} needs at least 2 frames (motion comes from optical flow between "
                         f"neighbours), got {num_frames}; use more frames, or set it to all")
    if masks is not None and not masks.any():
        raise InputError(f"{flag} {region!r}: no moving object found in the video (every motion map is empty: "
                         f"a static video, or motion below the flow's noise floor); set it to all to edit everywhere")


def motion_for_edit(frames: np.ndarray, options: MotionOptions, *, mmi: bool, region: str,
                    flag: str = "p2p.edit_region") -> tuple[MotionResult | None, np.ndarray | None]:
    """The motion maps an edit needs (``mmi`` on, or ``region`` other than all) and the moving-object masks
    ``(N, H, W)`` bool of the region (None for all). Optical flow only, no model: jobs call it before loading one.

    Raises:
        InputError: ``region`` moving/static on a single frame, or on a video where nothing moves (names ``flag``).
    """
    check_region(region, None, frames.shape[0], flag=flag)
    if not mmi and region == "all":
        return None, None
    motion = motion_maps(frames, options)
    if region == "all":
        return motion, None
    masks = motion.masks  # (N, H, W) bool
    check_region(region, masks, frames.shape[0], flag=flag)
    return motion, masks
