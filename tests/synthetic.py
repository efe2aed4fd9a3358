"""Synthetic videos with exact ground truth for the flow / motion-map tests.

Textured squares (smoothed random noise, so optical flow has texture to lock onto) move with integer
velocities over a textured background that is either static or pans (camera motion). Every shift is
an integer number of pixels, so the true object masks are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class MovingSquare:
    """A textured square: top-left ``(x0, y0)`` in frame 0, ``side`` pixels, velocity ``(vx, vy)`` px/frame."""

    x0: int
    y0: int
    side: int
    vx: int
    vy: int


def texture(height: int, width: int, rng: np.random.Generator, sigma: float = 1.5) -> np.ndarray:
    """``(height, width, 3)`` uint8 smoothed colour noise with strong local contrast."""
    noise = rng.uniform(0, 255, size=(height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    # Restore contrast lost by the blur: stretch to the full range.
    smooth = (smooth - smooth.min()) / max(1e-6, float(smooth.max() - smooth.min())) * 255.0
    return smooth.astype(np.uint8)


def make_video(
    size: int | tuple[int, int] = 64,
    n_frames: int = 6,
    squares: tuple[MovingSquare, ...] = (),
    pan: tuple[int, int] = (0, 0),
    seed: int = 0,
    static_background: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Render the video.

    Args:
        size: frame size ``H = W`` or ``(H, W)``.
        n_frames: number of frames ``N``.
        squares: moving objects (drawn in order; later ones on top).
        pan: background content velocity ``(px, py)`` in px/frame (the camera moves the other way).
        seed: texture seed.
        static_background: background textured (True) or flat grey (False).

    Returns:
        ``(frames (N, H, W, 3) uint8, masks (N, K, H, W) bool)`` with one mask per square (visible
        part, later squares occluding earlier ones).
    """
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    margin_x = abs(pan[0]) * n_frames + 2
    margin_y = abs(pan[1]) * n_frames + 2
    if static_background:
        canvas = texture(h + 2 * margin_y, w + 2 * margin_x, rng)
    else:
        canvas = np.full((h + 2 * margin_y, w + 2 * margin_x, 3), 128, np.uint8)
    patches = [texture(s.side, s.side, rng) for s in squares]
    frames = np.empty((n_frames, h, w, 3), np.uint8)
    masks = np.zeros((n_frames, len(squares), h, w), bool)
    for i in range(n_frames):
        # Content moves by +pan per frame: frame_i(x) = canvas(x - pan * i + margin).
        oy, ox = margin_y - pan[1] * i, margin_x - pan[0] * i
        frames[i] = canvas[oy : oy + h, ox : ox + w]
        for k, (sq, patch) in enumerate(zip(squares, patches)):
            x, y = sq.x0 + sq.vx * i, sq.y0 + sq.vy * i
            ya, yb, xa, xb = max(0, y), min(h, y + sq.side), max(0, x), min(w, x + sq.side)
            if ya >= yb or xa >= xb:
                continue
            frames[i, ya:yb, xa:xb] = patch[ya - y : yb - y, xa - x : xb - x]
            masks[i, :, ya:yb, xa:xb] = False
            masks[i, k, ya:yb, xa:xb] = True
    return frames, masks


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
