"""Pictures of optical flow and motion maps (numpy + OpenCV; RGB uint8 in and out)."""

from __future__ import annotations

import cv2
import numpy as np

from attentionflow.errors import InputError
from attentionflow.io.video import check_video

__all__ = ["flow_scale", "flow_to_color", "map_to_image", "motion_overlay"]


def flow_scale(flows: np.ndarray, percentile: float = 99.0, floor: float = 0.1) -> float | None:
    """A robust full-brightness magnitude for every flow picture of one video.

    ``flows``: ``(N, H, W, 2)`` (or ``(H, W, 2)``) in pixels. Returns the ``percentile`` of the magnitudes above
    ``floor`` pixels (so a few outlier vectors do not leave the rest of the pictures black), or None when nothing
    moves.
    """
    mag = np.nan_to_num(np.hypot(flows[..., 0], flows[..., 1]).astype(np.float32))
    moving = mag[mag > floor]
    if moving.size == 0:
        return None
    return float(np.percentile(moving, percentile))


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a flow field on the HSV colour wheel.

    Hue = direction with the screen-compass angle ``atan2(-v, u)`` (east = red, north = yellow-green,
    west = cyan, south = violet); saturation = 1; value = magnitude / ``max_magnitude`` (clipped), so
    still pixels are black.

    Args:
        flow: ``(H, W, 2)`` flow in pixels (x, y; y down).
        max_magnitude: magnitude shown at full brightness; default: this flow's maximum (use a common
            value to compare frames of one video).

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if not isinstance(flow, np.ndarray) or flow.ndim != 3 or flow.shape[2] != 2:
        shape = getattr(flow, "shape", type(flow).__name__)
        raise InputError(f"flow has shape {shape}; expected (H, W, 2)")
    u = np.nan_to_num(flow[..., 0].astype(np.float32))
    v = np.nan_to_num(flow[..., 1].astype(np.float32))
    mag = np.hypot(u, v)
    angle = np.degrees(np.arctan2(-v, u)) % 360.0  # (H, W) in [0, 360)
    top = float(mag.max()) if max_magnitude is None else float(max_magnitude)
    value = np.clip(mag / top, 0.0, 1.0) if top > 0 else np.zeros_like(mag)
    hsv = np.empty(flow.shape[:2] + (3,), dtype=np.uint8)
    hsv[..., 0] = np.round(angle / 2.0).astype(np.int32) % 180  # OpenCV 8-bit hue is degrees / 2
    hsv[..., 1] = 255
    hsv[..., 2] = np.round(value * 255.0).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def map_to_image(motion_map: np.ndarray, colormap: int | None = None) -> np.ndarray:
    """Turn a ``[0, 1]`` map into an image.

    Args:
        motion_map: ``(H, W)`` float map (values clipped to ``[0, 1]``, NaN -> 0).
        colormap: an OpenCV colormap id (e.g. ``cv2.COLORMAP_JET``) for a colour image, or ``None``
            for grayscale.

    Returns:
        ``(H, W)`` uint8 grayscale, or ``(H, W, 3)`` uint8 RGB with a colormap.
    """
    if not isinstance(motion_map, np.ndarray) or motion_map.ndim != 2:
        shape = getattr(motion_map, "shape", type(motion_map).__name__)
        raise InputError(f"motion map has shape {shape}; expected (H, W)")
    gray = np.round(np.clip(np.nan_to_num(motion_map.astype(np.float32)), 0.0, 1.0) * 255.0).astype(np.uint8)
    if colormap is None:
        return gray
    return cv2.cvtColor(cv2.applyColorMap(gray, colormap), cv2.COLOR_BGR2RGB)


def motion_overlay(
    frames: np.ndarray, maps: np.ndarray, alpha: float = 0.6, colormap: int = cv2.COLORMAP_JET
) -> np.ndarray:
    """Blend a heat map of each motion map over its frame, in proportion to the motion.

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB.
        maps: ``(N, h, w)`` float maps in ``[0, 1]``; resized (bilinear) to ``(H, W)`` if needed, so
            attention-resolution maps can be shown too.
        alpha: heat-map weight where the map is 1, in ``[0, 1]``.
        colormap: OpenCV colormap id.

    Returns:
        ``(N, H, W, 3)`` uint8 RGB: ``(1 - a) * frame + a * heat`` with ``a = alpha * map`` per pixel, so still
        parts show the frame unchanged and only moving parts are tinted.
    """
    check_video(frames, "overlay frames")
    if not isinstance(maps, np.ndarray) or maps.ndim != 3 or maps.shape[0] != frames.shape[0]:
        shape = getattr(maps, "shape", type(maps).__name__)
        raise InputError(f"overlay maps have shape {shape}; expected ({frames.shape[0]}, H, W)")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"overlay alpha {alpha!r} is invalid; expected a value in [0, 1]")
    height, width = frames.shape[1:3]
    out = np.empty_like(frames)
    for i, (frame, motion_map) in enumerate(zip(frames, maps)):
        m = motion_map.astype(np.float32)
        if m.shape != (height, width):
            m = cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR)
        heat = map_to_image(m, colormap).astype(np.float32)  # (H, W, 3) RGB
        a = alpha * np.clip(np.nan_to_num(m), 0.0, 1.0)[..., None]  # (H, W, 1) per-pixel weight
        out[i] = np.round((1.0 - a) * frame.astype(np.float32) + a * heat).astype(np.uint8)
    return out
