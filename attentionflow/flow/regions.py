"""Moving-object masks from motion maps, for motion-targeted editing (``edit_region``).

:func:`moving_region` turns the motion maps of :func:`attentionflow.flow.motion.motion_maps` (camera-compensated,
direction-guided, per-frame normalised) into a pixel mask of the moving object(s) per frame:

1. **Coarse mask**: ``maps >= threshold`` (a share of the frame's own peak motion). Optical flow bleeds
   over the edges of a moving object (DIS smooths it into the nearby background), so this mask is too
   large and blob-shaped.
2. **Colour refinement**: OpenCV's GrabCut on a crop around the coarse mask: coarse pixels start as
   "probably object", a ring of ``grow`` pixels around them as "probably background", everything farther
   as background. It snaps the mask to the object's edges. Only refined parts that touch the coarse
   mask's strongest motion (``>= core``) are kept, so a look-alike just outside the ring cannot join.
3. **Consistency over time**: a frame whose refined area is far from the video's median (under half or
   over twice) falls back to its coarse mask; tiny specks (< ``min_fraction`` of the frame) are dropped.

A static frame (all-zero map) gets an empty mask. Pure NumPy/OpenCV: this module knows nothing about
diffusers; the pipeline turns the mask into a latent blend mask (``attentionflow/attention/p2p.py``).
"""

from __future__ import annotations

import cv2
import numpy as np

from attentionflow.errors import InputError
from attentionflow.flow.motion import MotionOptions, MotionResult, motion_maps

__all__ = ["REGION_THRESHOLD", "REGION_CORE", "moving_region", "check_region", "refine_with_colour", "motion_for_edit"]

#: Coarse-mask threshold on the per-frame normalised motion map.
REGION_THRESHOLD: float = 0.3
#: Refined parts must touch motion at least this strong (share of the frame's peak).
REGION_CORE: float = 0.6


def _components_touching(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The connected components (8-connectivity) of ``mask (H, W) bool`` that contain a ``seeds`` pixel."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.copy()
    keep = np.unique(labels[seeds & mask])
    keep = keep[keep > 0]
    return np.isin(labels, keep)


def refine_with_colour(frame: np.ndarray, coarse: np.ndarray, grow: int, iterations: int = 3) -> np.ndarray:
    """Snap a coarse object mask to the object's edges with GrabCut (see the module docstring).

    Args:
        frame: ``(H, W, 3)`` uint8 RGB; coarse: ``(H, W)`` bool; grow: ring width in pixels.

    Returns:
        ``(H, W)`` bool; ``coarse`` itself when it is empty or GrabCut cannot model the crop.
    """
    h, w = coarse.shape
    if not coarse.any():
        return coarse.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    near = cv2.dilate(coarse.astype(np.uint8), kernel).astype(bool)  # (H, W)
    ys, xs = np.nonzero(near)
    y0, y1 = max(0, ys.min() - grow), min(h, ys.max() + 1 + grow)
    x0, x1 = max(0, xs.min() - grow), min(w, xs.max() + 1 + grow)
    init = np.full((h, w), cv2.GC_BGD, np.uint8)
    init[near] = cv2.GC_PR_BGD
    init[coarse] = cv2.GC_PR_FGD
    crop = np.ascontiguousarray(frame[y0:y1, x0:x1, ::-1])  # (h', w', 3) BGR, as OpenCV wants
    labels = np.ascontiguousarray(init[y0:y1, x0:x1])
    if (labels == cv2.GC_BGD).sum() < 8:  # GrabCut needs both models; a crop without background cannot be split
        return coarse.copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means initialisation draws from OpenCV's global RNG: same input, same mask
    try:
        cv2.grabCut(crop, labels, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return coarse.copy()
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return out


def moving_region(frames: np.ndarray, maps: np.ndarray, *, threshold: float = REGION_THRESHOLD,
                  core: float = REGION_CORE, refine: bool = True, min_fraction: float = 0.002) -> np.ndarray:
    """Pixel masks ``(N, H, W) bool`` of the moving object(s), one per frame (see the module docstring).

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB, the frames the maps were made from.
        maps: ``(N, H, W)`` motion maps in ``[0, 1]`` (``MotionResult.maps``), each frame normalised by its peak.
        threshold: coarse-mask threshold; core: refined parts must touch maps ``>= core``.
        refine: snap to colour edges with GrabCut (False: the coarse mask, specks removed).
        min_fraction: connected parts smaller than this share of the frame are dropped.
    """
    if frames.ndim != 4 or maps.shape != frames.shape[:3]:
        raise InputError(f"frames {frames.shape} and maps {maps.shape} do not match; expected (N, H, W, 3) and "
                         "(N, H, W)")
    n, h, w = maps.shape
    grow = max(2, int(round(min(h, w) / 12)))  # 5 px at 64, 43 px at 512: about the flow's bleed
    min_area = max(1, int(min_fraction * h * w))
    coarse = np.empty((n, h, w), bool)
    out = np.empty((n, h, w), bool)
    for i in range(n):
        c = maps[i] >= threshold
        count, labels, stats, _ = cv2.connectedComponentsWithStats(c.astype(np.uint8), connectivity=8)
        big = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_area) + 1  # (k,) labels of parts kept
        coarse[i] = np.isin(labels, big) if count > 1 else c
        if refine and coarse[i].any():
            r = refine_with_colour(frames[i], coarse[i], grow)
            out[i] = _components_touching(r, maps[i] >= core)
        else:
            out[i] = coarse[i]
    areas = out.reshape(n, -1).sum(axis=1)  # (N,)
    moving = areas > 0
    if moving.any():
        median = float(np.median(areas[moving]))
        bad = moving & ((areas < 0.5 * median) | (areas > 2.0 * median))
        out[bad] = coarse[bad]
    return out


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
    masks = moving_region(frames, motion.maps)  # (N, H, W) bool
    check_region(region, masks, frames.shape[0], flag=flag)
    return motion, masks
