"""Memory estimates made before any video is read or model loaded (no torch import).

A job whose frames, latents and decoded videos cannot fit in this machine's available memory is
refused up front with the figure and a way out, instead of growing until the kernel kills it.
The estimate counts what grows with frames x pixels; the model's own weights come on top.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from attentionflow.errors import ConfigError, InputError

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


#: Devices an edit can run on: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(device: str, mixed_precision: str = "no", flag: str = "--device") -> None:
    """Refuse, in one line and before diffusers is imported, a device this machine does not have, and fp16 where
    the edit would run on a CPU. Imports torch only when the answer depends on it (cuda, mps, auto with fp16)."""
    if not DEVICE_PATTERN.fullmatch(device or ""):
        raise ConfigError(f"{flag} {device!r} is not a device this tool runs on; use auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda") or (device == "auto" and mixed_precision == "fp16"):
        if _nvidia_driver_present():
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        else:  # no NVIDIA driver: no CUDA device, known without importing torch
            count = 0
        if device.startswith("cuda"):
            index = int(device.partition(":")[2] or 0)
            if count == 0:
                raise ConfigError(f"{flag} {device} requested but CUDA is not available; use {flag} cpu or auto")
            if index >= count:
                raise ConfigError(f"{flag} {device}: this machine has {count} CUDA device(s), cuda:0 to "
                                  f"cuda:{count - 1}")
        elif count == 0 and not _mps_available():
            device = "cpu"
    if device == "mps" and not _mps_available():
        raise ConfigError(f"{flag} mps needs Apple silicon with PyTorch's MPS backend; use {flag} cpu or auto")
    if mixed_precision == "fp16" and device == "cpu":
        raise ConfigError("mixed_precision 'fp16' needs a GPU; on a CPU pass --mixed-precision no (or bf16), "
                          "or set mixed_precision: 'no' in the config")


def _nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded (Linux: ``/proc/driver/nvidia``; elsewhere assumed, torch decides)."""
    return not sys.platform.startswith("linux") or Path("/proc/driver/nvidia").exists()


def _mps_available() -> bool:
    if sys.platform != "darwin":
        return False
    import torch

    return bool(getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())
