"""Scores of moving-object masks against true masks: DAVIS's region similarity J and boundary F-measure.

Pure NumPy/OpenCV. One scorer serves two data sources: DAVIS sequences (:mod:`attentionflow.evaluation.davis`)
and toy scenes with exact masks.

- ``J`` (region similarity): intersection over union of a frame's mask with the true mask; a frame where both are
  empty counts 1 (DAVIS's convention).
- ``F`` (boundary F-measure, Perazzi et al. 2016): the boundary pixels of both masks (a pixel that differs from its
  right, lower or lower-right neighbour, DAVIS's ``seg2bmap`` on equal sizes) are matched within a tolerance of
  ``0.008`` of the image diagonal (rounded up); precision and recall of the matches give ``F = 2PR / (P + R)``;
  both boundaries empty: 1; one empty: 0.
- ``mass``: the share of a soft map's total that lies on the true mask (how much of the motion map MMI injects
  falls on the object); a frame whose map is all zero counts 0.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from attentionflow.errors import InputError

__all__ = ["BOUNDARY_TOLERANCE", "boundary", "boundary_f", "jaccard", "map_mass", "score_masks"]

#: DAVIS's boundary tolerance, as a share of the image diagonal.
BOUNDARY_TOLERANCE: float = 0.008


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if pred.shape != truth.shape or pred.ndim < 2:
        raise InputError(f"masks {pred.shape} and {truth.shape} do not match; expected two (..., H, W) arrays")
    return pred, truth


def jaccard(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-frame IoU of ``(N, H, W)`` (or ``(H, W)``) bool masks; both empty -> 1. Returns ``(N,)`` (or 0-d)."""
    pred, truth = _pair(pred, truth)
    inter = (pred & truth).sum(axis=(-2, -1))
    union = (pred | truth).sum(axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def boundary(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool boundary map: pixels of ``mask`` whose right, lower or lower-right neighbour differs (DAVIS's
    ``seg2bmap`` on equal sizes)."""
    m = np.asarray(mask, bool)
    b = np.zeros_like(m)
    b[:, :-1] |= m[:, :-1] != m[:, 1:]
    b[:-1, :] |= m[:-1, :] != m[1:, :]
    b[:-1, :-1] |= m[:-1, :-1] != m[1:, 1:]
    return b


def boundary_f(pred: np.ndarray, truth: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> np.ndarray:
    """Per-frame boundary F-measure of ``(N, H, W)`` (or ``(H, W)``) masks (see the module docstring)."""
    pred, truth = _pair(pred, truth)
    single = pred.ndim == 2
    pred, truth = pred.reshape((-1,) + pred.shape[-2:]), truth.reshape((-1,) + truth.shape[-2:])
    h, w = pred.shape[-2:]
    radius = max(1, math.ceil(tolerance * math.hypot(h, w)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    out = np.empty(len(pred))
    for i, (p, t) in enumerate(zip(pred, truth)):
        bp, bt = boundary(p), boundary(t)
        np_, nt = int(bp.sum()), int(bt.sum())
        if np_ == 0 and nt == 0:
            out[i] = 1.0
            continue
        if np_ == 0 or nt == 0:
            out[i] = 0.0
            continue
        near_t = cv2.dilate(bt.astype(np.uint8), disk).astype(bool)
        near_p = cv2.dilate(bp.astype(np.uint8), disk).astype(bool)
        precision = float((bp & near_t).sum()) / np_
        recall = float((bt & near_p).sum()) / nt
        out[i] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return out[0] if single else out


def map_mass(maps: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-frame share of the soft ``maps (N, H, W)`` (non-negative) lying on ``truth (N, H, W)`` bool; 0 where a
    frame's map is all zero."""
    maps = np.asarray(maps, np.float64)
    truth = np.asarray(truth, bool)
    if maps.shape != truth.shape:
        raise InputError(f"maps {maps.shape} and masks {truth.shape} do not match; expected equal (N, H, W)")
    total = maps.sum(axis=(-2, -1))
    on = (maps * truth).sum(axis=(-2, -1))
    return np.where(total > 0, on / np.where(total > 0, total, 1.0), 0.0)


def score_masks(pred: np.ndarray, truth: np.ndarray, maps: np.ndarray | None = None) -> dict[str, float]:
    """Means over the frames of J, F and (with ``maps``) the map's mass on the object; ``(N, H, W)`` inputs."""
    scores = {"J": float(jaccard(pred, truth).mean()), "F": float(np.mean(boundary_f(pred, truth)))}
    if maps is not None:
        scores["mass"] = float(map_mass(maps, truth).mean())
    return scores
