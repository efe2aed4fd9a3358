"""Write a video's flow and motion maps to disk (what ``attentionflow motion`` produces).

Layout of ``out_dir``::

    flow/0000.png ...      colour-coded raw flow per frame (HSV wheel, one brightness scale per video)
    maps/0000.png ...      motion map per frame, grayscale (white = most motion of that frame)
    overlay.mp4            motion heat map blended over the frames
    motion_maps.npy        (N, H, W) float32 maps in [0, 1]
    flows.npy              (N, H, W, 2) float32 raw flow per frame (pixels, x then y, y down)
    moving_masks/0000.png  the moving-object mask per frame (white), what ``--edit-region moving`` edits
    moving_masks.npy       (N, H, W) uint8 0/1, the same
    moving_masks.mp4       the frames, dimmed outside the moving-object mask, its outline in green

and, for an edit with ``edit_region`` moving or static (:func:`export_region`)::

    edit_mask/0000.png ... where the edit may change the frame (white), before the latent dilation
    edit_mask.npy          (N, H, W) bool, the same
    edit_mask_overlay.gif  the frames, dimmed outside the edit mask, its outline in green (and .mp4)
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from attentionflow.errors import InputError
from attentionflow.flow.motion import MotionResult, check_frames
from attentionflow.flow.visualize import flow_scale, flow_to_color, map_to_image, motion_overlay

__all__ = ["box_mass", "draw_boxes", "export_motion", "export_region", "load_boxes"]

#: A subject box: (x0, y0, x1, y1) as fractions of the frame's width and height, origin top-left.
Box = tuple[float, float, float, float]

logger = logging.getLogger(__name__)


def _write_png(path: Path, image: np.ndarray) -> None:
    """Write ``(H, W)`` gray or ``(H, W, 3)`` RGB uint8 as PNG."""
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr):
        raise OSError(f"could not write {path}")


def load_boxes(path: str | Path, num_frames: int, video: str | Path | None = None) -> dict[int, Box]:
    """Subject boxes from a JSON file: ``{"0": [x0, y0, x1, y1], "5": [...], ...}``, frame index -> box as fractions
    of the width and height (origin top-left). A file of several clips (``{"clips": {"path/clip.mp4": {...}}}``, as
    tests/data/tracking-boxes.json) gives the boxes of the clip whose file name is ``video``'s. Raises a one-line
    :class:`InputError` naming what is wrong."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"boxes file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"boxes file {path} is not readable JSON: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and isinstance(data.get("clips"), dict):
        name = Path(video).name if video is not None else None
        found = [boxes for key, boxes in data["clips"].items() if Path(key).name == name]
        if not found:
            raise InputError(f"boxes file {path} has no boxes for {name}; it has: "
                             f"{', '.join(Path(k).name for k in data['clips'])}")
        data = found[0]
    if not isinstance(data, dict) or not data:
        raise InputError(f"boxes file {path} must hold a mapping of frame index to [x0, y0, x1, y1], "
                         f'e.g. {{"0": [0.1, 0.2, 0.6, 0.9]}}')
    boxes: dict[int, Box] = {}
    for key, box in data.items():
        try:
            frame = int(key)
        except ValueError:
            raise InputError(f"boxes file {path}: frame {key!r} is not a frame index") from None
        if not 0 <= frame < num_frames:
            raise InputError(f"boxes file {path}: frame {frame} is outside the {num_frames} frames "
                             f"(0..{num_frames - 1})")
        ok = (
            isinstance(box, list)
            and len(box) == 4
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and 0.0 <= v <= 1.0
                for v in box
            )
        )
        if not ok or not (box[0] < box[2] and box[1] < box[3]):
            raise InputError(f"boxes file {path}: the box of frame {frame} is {box!r}; use [x0, y0, x1, y1], "
                             "fractions "
                             f"of the width and height in [0, 1] with x0 < x1 and y0 < y1")
        boxes[frame] = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
    return boxes


def _box_pixels(box: Box, height: int, width: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return int(x0 * width), int(y0 * height), int(x1 * width), int(y1 * height)


def box_mass(maps: np.ndarray, boxes: dict[int, Box]) -> dict[int, float]:
    """Per boxed frame, the share of its motion map's mass inside the box (0 for an all-zero map).

    ``maps``: ``(N, H, W)`` in [0, 1]."""
    out: dict[int, float] = {}
    for frame, box in sorted(boxes.items()):
        m = maps[frame]
        x0, y0, x1, y1 = _box_pixels(box, *m.shape)
        total = float(m.sum())
        out[frame] = float(m[y0:y1, x0:x1].sum()) / total if total > 0 else 0.0
    return out


def draw_boxes(video: np.ndarray, boxes: dict[int, Box]) -> np.ndarray:
    """A copy of ``video`` ``(N, H, W, 3)`` uint8 with each boxed frame's box drawn in white (1 px, black edge)."""
    out = video.copy()
    h, w = video.shape[1:3]
    for frame, box in boxes.items():
        x0, y0, x1, y1 = _box_pixels(box, h, w)
        image = np.ascontiguousarray(out[frame])
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (0, 0, 0), 3)
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 1)
        out[frame] = image
    return out


def export_motion(frames: np.ndarray, result: MotionResult, out_dir: Path, fps: float = 8.0,
                  boxes: dict[int, Box] | None = None) -> dict[str, Path]:
    """Write flow PNGs, motion-map PNGs, an overlay mp4 and the raw arrays.

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB, the frames ``result`` was computed on.
        result: output of :func:`attentionflow.flow.motion.motion_maps`.
        out_dir: folder to write into (created if missing; existing files of the same names are
            overwritten).
        fps: frame rate of the overlay video.
        boxes: subject boxes (:func:`load_boxes`) drawn on the overlay's boxed frames; None: none.

    Returns:
        ``{"flow_dir", "map_dir", "overlay", "motion_maps", "flows", "mask_dir", "masks", "mask_overlay"}`` -> paths
        written (the mask entries when ``result.masks`` is set).

    Raises:
        InputError: frames and result disagree in shape.
    """
    from attentionflow.io.writers import write_mp4  # imported here: I/O layer, only needed to export

    check_frames(frames)
    n, h, w = frames.shape[:3]
    if result.maps.shape != (n, h, w) or result.flows.shape != (n, h, w, 2):
        raise InputError(
            f"motion result has maps {result.maps.shape} and flows {result.flows.shape}; "
            f"expected ({n}, {h}, {w}) and ({n}, {h}, {w}, 2) to match the frames"
        )
    out_dir = Path(out_dir)
    flow_dir = out_dir / "flow"
    map_dir = out_dir / "maps"
    flow_dir.mkdir(parents=True, exist_ok=True)
    map_dir.mkdir(parents=True, exist_ok=True)

    top = flow_scale(result.flows)  # one robust scale per video: frames compare, outliers do not darken them
    digits = max(4, len(str(n - 1)))
    for i in range(n):
        _write_png(flow_dir / f"{i:0{digits}d}.png", flow_to_color(result.flows[i], max_magnitude=top))
        _write_png(map_dir / f"{i:0{digits}d}.png", map_to_image(result.maps[i]))

    shown = motion_overlay(frames, result.maps)
    overlay = write_mp4(draw_boxes(shown, boxes) if boxes else shown, out_dir / "overlay.mp4", fps=fps)
    maps_path = out_dir / "motion_maps.npy"
    flows_path = out_dir / "flows.npy"
    np.save(maps_path, result.maps.astype(np.float32, copy=False))
    np.save(flows_path, result.flows.astype(np.float32, copy=False))
    written = {"flow_dir": flow_dir, "map_dir": map_dir, "overlay": Path(overlay), "motion_maps": maps_path,
               "flows": flows_path}
    if result.masks is not None:
        mask_dir = out_dir / "moving_masks"
        mask_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _write_png(mask_dir / f"{i:0{digits}d}.png", result.masks[i].astype(np.uint8) * 255)
        np.save(out_dir / "moving_masks.npy", result.masks.astype(np.uint8))
        shown = region_overlay(frames, result.masks)
        mask_video = write_mp4(draw_boxes(shown, boxes) if boxes else shown, out_dir / "moving_masks.mp4", fps=fps)
        written.update(mask_dir=mask_dir, masks=out_dir / "moving_masks.npy", mask_overlay=Path(mask_video))
    logger.info("motion export: %d frames written to %s", n, out_dir)
    return written


def region_overlay(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` uint8: ``frames`` dimmed to 35% outside ``mask (N, H, W) bool``, the mask's outline green."""
    out = frames.astype(np.float32)
    out[~mask] *= 0.35
    out = out.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for i in range(len(frames)):
        m = mask[i].astype(np.uint8)
        edge = (cv2.dilate(m, kernel) - cv2.erode(m, kernel)).astype(bool)  # (H, W) the outline, 2 px wide
        out[i][edge] = (40, 230, 60)
    return out


def export_region(frames: np.ndarray, moving: np.ndarray, out_dir: Path, fps: float = 8.0,
                  kept: bool = False) -> dict[str, Path]:
    """Write the edit mask of ``edit_region``: PNGs, a ``.npy`` and an overlay GIF (see the module docstring).

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB; moving: ``(N, H, W)`` bool masks of the moving object(s).
        kept: True for ``edit_region: static`` (the movers are kept, the edit mask is everything else).
    """
    from attentionflow.io.writers import write_gif, write_mp4  # I/O layer, only needed to export

    check_frames(frames, min_frames=1)
    if moving.shape != frames.shape[:3]:
        raise InputError(f"region masks {moving.shape} do not match the frames {frames.shape[:3]}")
    mask = ~moving if kept else moving.astype(bool)
    out_dir = Path(out_dir)
    mask_dir = out_dir / "edit_mask"
    mask_dir.mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(len(frames) - 1)))
    for i, m in enumerate(mask):
        _write_png(mask_dir / f"{i:0{digits}d}.png", m.astype(np.uint8) * 255)
    np.save(out_dir / "edit_mask.npy", mask)
    images = region_overlay(frames, mask)
    overlay = write_gif(images, out_dir / "edit_mask_overlay.gif", fps=fps)
    video = write_mp4(images, out_dir / "edit_mask_overlay.mp4", fps=fps)
    return {"mask_dir": mask_dir, "masks": out_dir / "edit_mask.npy", "overlay": Path(overlay), "video": Path(video)}
