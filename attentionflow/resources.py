"""Memory estimates made before any video is read or model loaded (no torch import).

A job whose frames, latents and decoded videos cannot fit in this machine's available memory is
refused up front with the figure and a way out, instead of growing until the kernel kills it.
The estimate counts what grows with frames x pixels; the model's own weights come on top.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

GiB = 2**30


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def edit_memory_bytes(n_frames: int, width: int, height: int, n_branches: int, *, vae_channels: int = 128,
                      vae_on_host: bool = True, vae_batch: int = 8) -> int:
    """Bytes an edit of ``n_frames`` frames of ``width`` x ``height`` holds at its peak, roughly.

    Per frame pixel: the uint8 input (3), flow and motion maps (12); per branch and frame pixel: the uint8 video
    (3). Per VAE call (``vae_batch`` frames): the float32 frames in and out (12 + 12), and when the VAE runs on the
    host its widest full-resolution activations (``vae_channels`` float32, about three alive at once). The UNet's
    activations are bounded by frame chunks (``chunk_frames``) and not counted; the grid is written frame by frame.
    """
    pixels = int(n_frames) * int(width) * int(height)
    total = pixels * (3 + 12) + pixels * int(n_branches) * 3
    batch = min(int(n_frames), vae_batch) * int(width) * int(height)
    total += batch * (12 + 12)
    if vae_on_host:
        total += batch * int(vae_channels) * 4 * 3
    return total


FEWER_OR_SMALLER = "use fewer frames (--frames) or a smaller size (--size)"


def check_memory(needed: int, what: str, way_out: str = FEWER_OR_SMALLER, available: int | None = None) -> None:
    """Raise a one-line InputError when ``needed`` bytes exceed the available memory."""
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise InputError(f"{what} needs about {needed / GiB:.1f} GiB of memory but {available / GiB:.1f} GiB "
                         f"are available; {way_out}")
