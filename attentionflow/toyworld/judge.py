"""A pixel-level judge for toy-world images: object colour, shape and background class.

It knows the palette (:data:`COLOURS`, :data:`BACKGROUNDS`). Without a mask it segments the object
itself: pixels far from the background's median colour, largest connected component, holes filled.
Shape is the template (circle / square / upright triangle fitted to the object's bounding box) with
the best IoU against the object mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from attentionflow.errors import InputError
from attentionflow.toyworld.world import BACKGROUNDS, COLOURS, SHAPES

_COLOUR_NAMES = list(COLOURS)
_COLOUR_RGB = np.array([COLOURS[c] for c in _COLOUR_NAMES], np.float32)  # (n_colours, 3)
_BG_NAMES = list(BACKGROUNDS)
_BG_RGB = np.array([BACKGROUNDS[b] for b in _BG_NAMES], np.float32)  # (n_backgrounds, 3)
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))  # 4-connectivity, as scipy.ndimage's default

#: RGB distance from the background median above which a pixel counts as object.
OBJECT_THRESHOLD = 45.0
#: Smallest object (pixels) the judge names a colour / shape for, as a fraction of the frame area.
MIN_OBJECT_FRACTION = 0.005


@dataclass
class Judgement:
    """What the judge sees in one frame.

    Attributes:
        colour: nearest palette colour of the object's median RGB (None: no object found).
        shape: best-fitting shape template (None: no object found).
        background: nearest background class of the non-object pixels' median RGB.
        mask: ``(H, W) bool`` the object mask used (given or segmented).
        colour_distance: RGB distance of the object's median colour to the chosen colour.
        shape_iou: IoU of the chosen template with the object mask (0 without object).
        background_distance: RGB distance of the background median to the chosen class.
    """

    colour: str | None
    shape: str | None
    background: str
    mask: np.ndarray
    colour_distance: float
    shape_iou: float
    background_distance: float


def _nearest(rgb: np.ndarray, table: np.ndarray) -> tuple[int, float]:
    d = np.linalg.norm(table - rgb[None, :], axis=1)  # (n,)
    i = int(np.argmin(d))
    return i, float(d[i])


def segment_object(frame: np.ndarray, bg_rgb: np.ndarray, threshold: float = OBJECT_THRESHOLD) -> np.ndarray:
    """Object mask ``(H, W) bool``: largest connected region of pixels farther than ``threshold``
    from ``bg_rgb`` (RGB), holes filled."""
    dist = np.linalg.norm(frame.astype(np.float32) - bg_rgb[None, None, :], axis=-1)  # (H, W)
    cand = dist > threshold
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cand.astype(np.uint8), connectivity=4)
    if n <= 1:  # label 0 is the non-object part
        return cand
    mask = labels == (int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) + 1)  # largest; ties: first in raster order
    return fill_holes(mask)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask (H, W) bool`` with every non-mask region that does not touch the border filled in."""
    h, w = mask.shape
    outside = np.ones((h + 2, w + 2), np.uint8)  # (H + 2, W + 2): a ring of background around the frame
    outside[1:-1, 1:-1] = ~mask
    cv2.floodFill(outside, None, (0, 0), 2, flags=4)  # 2 = background reachable from the border
    return mask | (outside[1:-1, 1:-1] == 1)


def erode(mask: np.ndarray) -> np.ndarray:
    """One-pixel 4-neighbour erosion of ``mask (H, W) bool``; pixels beyond the frame count as outside."""
    return cv2.erode(mask.astype(np.uint8), _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def shape_scores(mask: np.ndarray) -> dict[str, float]:
    """IoU of ``mask`` (H, W) bool with each shape template fitted to its bounding box."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return {s: 0.0 for s in SHAPES}
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = mask[y0:y1, x0:x1]  # (h, w)
    h, w = box.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (u + 0.5) / w, (v + 0.5) / h  # pixel centres in [0, 1]
    templates = {
        "circle": (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25,
        "square": np.ones_like(box),
        "triangle": np.abs(u - 0.5) <= v / 2,  # apex at the top centre, base at the bottom
    }
    out = {}
    for name in SHAPES:
        t = templates[name]
        out[name] = float((t & box).sum() / max(1, (t | box).sum()))
    return out


def judge(frame: np.ndarray, mask: np.ndarray | None = None) -> Judgement:
    """Judge one frame ``(H, W, 3) uint8`` (optionally with its object ``mask (H, W) bool``)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise InputError(f"frame of shape {frame.shape} is invalid; expected (H, W, 3) RGB")
    pix = frame.astype(np.float32)
    h, w = frame.shape[:2]
    if mask is None:
        ring = max(2, min(h, w) // 16)
        border = np.concatenate([pix[:ring].reshape(-1, 3), pix[-ring:].reshape(-1, 3),
                                 pix[:, :ring].reshape(-1, 3), pix[:, -ring:].reshape(-1, 3)])  # (P, 3)
        bg_rgb = np.median(border, axis=0)
        mask = segment_object(frame, bg_rgb)
        if (~mask).any():  # refine: the median of every non-object pixel
            bg_rgb = np.median(pix[~mask], axis=0)
            mask = segment_object(frame, bg_rgb)
    else:
        mask = np.asarray(mask, bool)
        if mask.shape != (h, w):
            raise InputError(f"mask of shape {mask.shape} does not match the frame ({h}, {w})")
    bg_pixels = pix[~mask] if (~mask).any() else pix.reshape(-1, 3)
    bi, bd = _nearest(np.median(bg_pixels, axis=0), _BG_RGB)
    if mask.sum() < MIN_OBJECT_FRACTION * h * w:
        return Judgement(None, None, _BG_NAMES[bi], mask, float("inf"), 0.0, bd)
    core = erode(mask)
    sel = core if core.sum() >= 8 else mask  # avoid anti-aliased edge pixels
    ci, cd = _nearest(np.median(pix[sel], axis=0), _COLOUR_RGB)
    scores = shape_scores(mask)
    shape = max(scores, key=scores.__getitem__)
    return Judgement(_COLOUR_NAMES[ci], shape, _BG_NAMES[bi], mask, cd, scores[shape], bd)
