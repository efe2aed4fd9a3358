"""Side-by-side grids of videos with wrapped labels (the edit's ``grid.mp4`` / ``grid.gif``)."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from attentionflow.io.video import _as_index, _resize
from attentionflow.io.writers import as_uint8_video

__all__ = ["grid_frames", "make_grid", "wrap_label"]


def _fits(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int
) -> bool:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left <= width


def wrap_label(text: str, width: int, draw: ImageDraw.ImageDraw,
               font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> list[str]:
    """``text`` broken into lines that each fit ``width`` pixels: at spaces, and inside a word only when the word
    alone is too wide. Nothing is cut: joining the lines gives the text back (white space folded)."""
    lines: list[str] = []
    line = ""
    for word in " ".join(str(text or "").split()).split(" "):
        if not word:
            continue
        candidate = f"{line} {word}" if line else word
        if _fits(draw, candidate, font, width):
            line = candidate
            continue
        if line:
            lines.append(line)
        while not _fits(draw, word, font, width) and len(word) > 1:  # a word wider than the column
            cut = len(word) - 1
            while cut > 1 and not _fits(draw, word[:cut], font, width):
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        lines.append(line)
    return lines


def _label_strip(labels: Sequence[str], widths: Sequence[int], gap: int, frame_height: int) -> np.ndarray:
    """White strip ``(S, sum(widths) + gap * (k - 1), 3)`` with each label centered over its column, wrapped onto
    as many lines as the longest label needs (never cut off)."""
    size = int(np.clip(round(frame_height / 16), 10, 28))  # font pixel size scales with the video
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    words = [(w, col_w) for text, col_w in zip(labels, widths) for w in str(text or "").split()]
    while size > 8 and not all(_fits(scratch, w, ImageFont.load_default(size=size), col_w - 2) for w, col_w in words):
        size -= 1  # a smaller font before any word is broken
    pad = max(2, size // 3)
    font = ImageFont.load_default(size=size)
    wrapped = [wrap_label(text, col_w - 2, scratch, font) for text, col_w in zip(labels, widths)]
    line_h = size + max(1, size // 5)
    strip_h = max(1, max(len(w) for w in wrapped)) * line_h + 2 * pad
    strip_h += strip_h % 2  # even, so a grid of even-sized videos stays even (yuv420p)
    total_w = sum(widths) + gap * (len(widths) - 1)
    strip = Image.new("RGB", (total_w, strip_h), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    x = 0
    for lines, col_w in zip(wrapped, widths):
        for row, line in enumerate(lines):
            left, top, right, _ = draw.textbbox((0, 0), line, font=font)
            tx = x + (col_w - (right - left)) // 2 - left
            draw.text((tx, pad + row * line_h - top), line, fill=(0, 0, 0), font=font)
        x += col_w + gap
    return np.asarray(strip)


def grid_frames(
    columns: Sequence[np.ndarray], labels: Sequence[str] | None = None, gap: int = 4
) -> Iterator[np.ndarray]:
    """The frames of :func:`make_grid`, one at a time (a long video's grid is never held whole).

    Args and layout as :func:`make_grid`; yields ``(S + H_0, sum(W_i') + gap * (k - 1), 3)`` uint8 frames. The
    arguments are checked before the first frame is made.
    """
    if not columns:
        raise ValueError("make_grid needs at least one column")
    gap = _as_index("gap", gap)
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    if labels is not None and len(labels) != len(columns):
        raise ValueError(f"got {len(labels)} labels for {len(columns)} columns")
    videos = [as_uint8_video(c) for c in columns]
    n, h0 = videos[0].shape[:2]
    for i, v in enumerate(videos):
        if v.shape[0] != n:
            raise ValueError(f"column {i} has {v.shape[0]} frames, column 0 has {n}")
    widths = [v.shape[2] if v.shape[1] == h0 else max(1, int(round(v.shape[2] * h0 / v.shape[1]))) for v in videos]
    total_w = sum(widths) + gap * (len(widths) - 1)
    strip = _label_strip(list(labels), widths, gap, h0) if labels is not None else None  # (S, W_total, 3)

    def frames() -> Iterator[np.ndarray]:
        for t in range(n):
            frame = np.full((h0, total_w, 3), 255, dtype=np.uint8)  # (H0, W_total, 3), white gaps
            x = 0
            for v, w in zip(videos, widths):
                frame[:, x : x + w] = _resize(v[t : t + 1], w, h0)[0]  # (h0, w', 3)
                x += w + gap
            yield frame if strip is None else np.concatenate([strip, frame], axis=0)  # (S + H0, W_total, 3)

    return frames()


def make_grid(columns: Sequence[np.ndarray], labels: Sequence[str] | None = None, gap: int = 4) -> np.ndarray:
    """Place videos side by side: one column per video, ``gap`` white pixels between columns.

    Args:
        columns: videos ``(N, H_i, W_i, 3)``, all with the same ``N``. A column whose height
            differs from the first column's ``H_0`` is resized to ``H_0`` (aspect ratio kept).
        labels: optional text per column, drawn in a white strip of height ``S`` above it.
        gap: white pixels between neighbouring columns (>= 0).

    Returns:
        ``(N, S + H_0, sum(W_i') + gap * (k - 1), 3)`` uint8, ``S = 0`` without labels. For long videos,
        :func:`grid_frames` makes the same frames one at a time (the writers take it).
    """
    return np.stack(list(grid_frames(columns, labels, gap)))
