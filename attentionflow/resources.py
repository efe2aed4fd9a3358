"""Memory estimates made before any video is read or model loaded (no torch import).

A job whose weights, frames, activations and decoded videos cannot fit in this machine's available memory is
refused up front with the figure and a way out, instead of growing until the kernel kills it. The same
activation estimate sizes ``auto`` frame chunks (:func:`auto_chunk`).
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
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


#: Feature maps of one UNet level alive at once in a call without gradients (the skip connections kept for the up
#: path, the resnets' and transformers' temporaries, the 4x feed-forward): measured, docs/benchmarks.md.
UNET_MAPS = 32
#: Full-resolution feature maps of the VAE's first block alive at once per decoded frame (measured likewise).
VAE_MAPS = 6
#: Share of the free memory that ``auto`` frame chunks and VAE batches may fill with activations.
AUTO_CHUNK_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs to know of a model, read from its configs and weight headers (no torch)."""

    unet_channels: tuple[int, ...]
    """The UNet's ``block_out_channels``: the channels of each resolution level."""
    vae_channels: int
    """The VAE's first block's channels: its widest feature map at full resolution."""
    vae_scale: int
    """Pixels per latent cell (8 for Stable Diffusion)."""
    parameters: int
    """Weights of the UNet, VAE and text encoder together (elements)."""


@dataclass(frozen=True)
class EditMemory:
    """Bytes an edit holds at its peak, by part (:func:`edit_memory`)."""

    weights: int
    """The model's weights."""
    data: int
    """What grows with frames x pixels outside the model: the video, flows, motion maps and the decoded videos."""
    unet: int
    """The UNet's activations in one call of one chunk of frames."""
    vae: int
    """The VAE's activations for one batch of frames."""

    @property
    def total(self) -> int:
        """The sum: the allocator keeps the UNet's freed memory for the decoder, so the two phases add up."""
        return self.weights + self.data + self.unet + self.vae


def unet_activation_bytes(unet_channels: Sequence[int], latent_size: tuple[int, int], dtype_bytes: int) -> int:
    """Activation bytes of one latent row (one frame of one branch and guidance half) in a UNet call without
    gradients: :data:`UNET_MAPS` feature maps per resolution level ``l`` (``unet_channels[l]`` channels on
    ``(h / 2**l) x (w / 2**l)``). Attention runs on SDPA (no score matrix) except where a controller reads
    probabilities (cross-attention: queries x 77, small beside the feature maps)."""
    h, w = latent_size
    total = sum(math.ceil(h / 2**level) * math.ceil(w / 2**level) * int(c) for level, c in enumerate(unet_channels))
    return UNET_MAPS * total * int(dtype_bytes)


def vae_activation_bytes(vae_channels: int, width: int, height: int, dtype_bytes: int) -> int:
    """Bytes of decoding one ``width`` x ``height`` frame: :data:`VAE_MAPS` maps of ``vae_channels``, and the float32
    frame out of the VAE and into the uint8 conversion (24 per pixel)."""
    return int(width) * int(height) * (VAE_MAPS * int(vae_channels) * int(dtype_bytes) + 24)


def auto_chunk(free: int | None, per_frame: int, num_frames: int) -> int:
    """Frames per chunk under ``auto``: the most whose ``per_frame`` bytes fit in :data:`AUTO_CHUNK_MEMORY_SHARE` of
    ``free`` bytes, at least 1 and at most ``num_frames`` (all of them when ``free`` is unknown)."""
    if free is None:
        return num_frames
    return max(1, min(num_frames, int(free * AUTO_CHUNK_MEMORY_SHARE) // max(per_frame, 1)))


def frames_per_call(chunk_frames: int | str, num_frames: int, per_frame: int, free: int | None) -> int:
    """Frames per UNet call for the ``chunk_frames`` setting: a number, that many (1 to ``num_frames``); ``auto``,
    :func:`auto_chunk` of ``free`` bytes at ``per_frame`` bytes of activations a frame. The pipeline and the job's
    memory check both use it."""
    if chunk_frames != "auto":
        return max(1, min(int(chunk_frames), num_frames))
    return auto_chunk(free, per_frame, num_frames)


def latent_rows(num_branches: int, guidance_scale: float, skip_source_uncond: bool = False) -> int:
    """Latent rows per frame in one UNet call: each branch once, twice with classifier-free guidance (guidance > 1),
    less the source's unconditional row when direct inversion skips it (``inversion.skips_source_uncond``)."""
    if guidance_scale <= 1.0:
        return num_branches
    return 2 * num_branches - int(skip_source_uncond)


def data_bytes(n_frames: int, width: int, height: int, n_branches: int) -> int:
    """Bytes of an edit's frame-sized data: per frame pixel the uint8 input (3), flow and motion maps (12); per
    branch and frame pixel the uint8 video (3)."""
    pixels = int(n_frames) * int(width) * int(height)
    return pixels * (3 + 12) + pixels * int(n_branches) * 3


def edit_memory(n_frames: int, width: int, height: int, n_branches: int, model: ModelShape, *,
                rows_per_frame: int, chunk: int, dtype_bytes: int = 4, vae_batch: int = 8) -> EditMemory:
    """The peak memory of an edit of ``n_frames`` frames of ``width`` x ``height`` with ``n_branches`` prompts,
    ``chunk`` frames per UNet call of ``rows_per_frame`` latent rows each, decoded ``vae_batch`` frames at a time, in
    ``dtype_bytes`` floats. Within 25% of the measured peak on the toy model and the SD-1.4 architecture
    (``benchmarks/bench_memory.py``)."""
    latent = (int(height) // model.vae_scale, int(width) // model.vae_scale)
    chunk = max(1, min(int(chunk), int(n_frames)))
    return EditMemory(
        weights=int(model.parameters) * int(dtype_bytes),
        data=data_bytes(n_frames, width, height, n_branches),
        unet=chunk * int(rows_per_frame) * unet_activation_bytes(model.unet_channels, latent, dtype_bytes),
        vae=min(int(n_frames), int(vae_batch)) * vae_activation_bytes(model.vae_channels, width, height, dtype_bytes))


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
