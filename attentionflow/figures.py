"""Which frames of a long video the attention figure shows (and the pipeline keeps attention maps for); no torch.

The pipeline stores the head/step/layer-averaged cross-attention maps of these frames only, so that nothing grows
with the number of frames, and ``jobs.attention_grid`` draws them.
"""

from __future__ import annotations

#: Attention maps are kept (and the attention figure drawn) for at most this many frames, evenly spaced.
ATTENTION_FIGURE_FRAMES = 8


def figure_frames(num_frames: int, most: int = ATTENTION_FIGURE_FRAMES) -> list[int]:
    """Indices of the frames a figure shows: all of them, or ``most`` evenly spaced ones (first and last included)."""
    if num_frames <= most:
        return list(range(num_frames))
    return sorted({int(round(i * (num_frames - 1) / (most - 1))) for i in range(most)})
