"""Motion maps for Motion Map Injection.

Pipeline of :func:`motion_maps` for a video of ``N`` frames ``(N, H, W, 3)`` uint8 RGB (exactly the
sampled, resized and center-cropped frames the model sees):

1. :func:`compute_flows`: frame ``i`` uses the flow ``i -> i+1``; the last frame uses the flow
   ``N-1 -> N-2`` negated (so every frame has a "where is it going" flow at its own pixels).
2. Camera-motion compensation (:mod:`attentionflow.flow.camera`). ``camera_motion="homography"`` (default): per
   frame, a homography is fitted with RANSAC to a subsampled grid of ``(p, p + flow(p))`` correspondences; the flow
   it induces (the dominant / camera motion) is subtracted. With a static camera the fit is the identity and the
   flow is unchanged. ``camera_motion="compensate"``: per frame pair the homography, or
   (GRIC picks) a fundamental matrix whose Sampson distance is the motion. On DAVIS-2016 it is worse than the
   homography (it takes water and waves for parallax; ``docs/benchmarks.md``), so it is an option, not the default.
   ``"keep"``: raw flow. The fits need the camera-moved background to be the dominant consistent motion.
3. Magnitude ``sqrt(u^2 + v^2)``, or direction guidance (:func:`directional_magnitude`), zero where the flow is
   not forward-backward consistent, scaled by its coherence along its trajectory over the next frames
   (:func:`.segment.coherence`), except on an epipolar pair: its magnitude is a distance off the epipolar geometry
   and its heading borrowed from the homography, so a runner's swinging legs would fail a test that says nothing
   there; one backward flow per frame pair.
4. Optional temporal smoothing: Gaussian along time, ``sigma`` in frames.
5. :func:`attentionflow.flow.segment.segment_motion`: evidence over the clip (carried along trajectories, a clip
   colour model, edges, time) gives the moving-object ``masks`` and the ``maps`` MMI injects (the score, mostly on
   the masks, each frame divided by its maximum). A frame whose largest motion is below ``MotionOptions.min_motion``
   pixels (default: the estimator's ``noise_floor``, 0.1 px for DIS, 0.75 px for Farneback) brings no evidence of
   its own; a video where no frame moves gets all-zero maps and empty masks (never NaN).

Angles follow the screen compass: degrees counter-clockwise from +x (east), north = up on screen
= 90 degrees. Image y points down, so a flow ``(u, v)`` has the angle ``atan2(-v, u)``.

:func:`resize_motion_maps` / :func:`motion_maps_for_resolutions` turn the full-resolution maps into
the attention resolutions (pure torch, on the maps' device); callers compute them once per video.

This module imports numpy and OpenCV; torch only inside the functions that resize maps for attention.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

import attentionflow.flow.segment as segment
from attentionflow.errors import ConfigError, InputError
from attentionflow.flow.camera import (
    compensate_camera_motion,
    compensate_camera_motion_robust,
)
from attentionflow.flow.estimators import FlowEstimator, available_flow_estimators, get_flow_estimator
from attentionflow.io.video import check_video

if TYPE_CHECKING:  # torch is imported by the functions that resize maps for attention, not by flow itself
    import torch

__all__ = [
    "COMPASS",
    "DIRECTION_MODES",
    "CAMERA_MOTION_MODES",
    "MotionOptions",
    "MotionResult",
    "parse_direction",
    "check_frames",
    "compute_flows",
    "directional_magnitude",
    "smooth_along_time",
    "motion_maps",
    "resize_motion_maps",
    "motion_maps_for_resolutions",
]

logger = logging.getLogger(__name__)

#: Compass words -> degrees counter-clockwise from east (north = up on screen = 90).
COMPASS: dict[str, float] = {
    "E": 0.0,
    "NE": 45.0,
    "N": 90.0,
    "NW": 135.0,
    "W": 180.0,
    "SW": 225.0,
    "S": 270.0,
    "SE": 315.0,
}
#: Static-frame threshold (pixels) for estimators that declare no ``noise_floor``.
DEFAULT_NOISE_FLOOR: float = 0.1
DIRECTION_MODES: tuple[str, ...] = ("cone", "project")
CAMERA_MOTION_MODES: tuple[str, ...] = ("compensate", "homography", "keep")
_VALID_DIRECTIONS = "a compass word (N, NE, E, SE, S, SW, W, NW) or degrees in [-360, 360]"


def parse_direction(value: str | float | int | None) -> float | None:
    """Parse a motion direction into degrees in ``[0, 360)`` (counter-clockwise from east).

    Args:
        value: ``None`` / ``""`` / ``"none"`` (no direction guidance), a compass word
            ``N/NE/E/SE/S/SW/W/NW`` (case-insensitive), or an angle in degrees in ``[-360, 360]``
            (number or numeric string; north = up on screen = 90).

    Raises:
        ConfigError: unknown word, non-finite or out-of-range angle.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text == "" or text.lower() == "none":
            return None
        if text.upper() in COMPASS:
            return COMPASS[text.upper()]
        try:
            angle = float(text)
        except ValueError:
            raise ConfigError(f"unknown direction {value!r}; use {_VALID_DIRECTIONS}") from None
    elif isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"direction {value!r} has type {type(value).__name__}; use {_VALID_DIRECTIONS}")
    else:
        angle = float(value)
    if not math.isfinite(angle) or not -360.0 <= angle <= 360.0:
        raise ConfigError(f"direction angle {value!r} is out of range; use {_VALID_DIRECTIONS}")
    return angle % 360.0


@dataclass
class MotionOptions:
    """How motion maps are built from a video (all validated by :meth:`validate`)."""

    #: Optical-flow method, a name from :func:`available_flow_estimators` (``"dis"``, ``"farneback"``).
    flow: str = "dis"
    #: Direction guidance: ``None`` (plain magnitude), a compass word N/NE/E/SE/S/SW/W/NW, or degrees
    #: counter-clockwise from east (north = up on screen = 90; a flow (u, v) has angle atan2(-v, u)).
    direction: str | float | None = None
    #: Half-width in degrees of the accepted cone around ``direction`` (``"cone"`` mode), in (0, 180].
    direction_tolerance: float = 45.0
    #: ``"cone"``: keep the magnitude of flow within the tolerance of the direction, zero elsewhere;
    #: ``"project"`` (journal variant): keep the positive component of the flow along the direction.
    direction_mode: str = "cone"
    #: How the camera's motion is removed, one of :data:`CAMERA_MOTION_MODES`. What each does and when it suits:
    #: ``MMIConfig.camera_motion``'s doc (``attentionflow/config.py``), which the flags' help and the docs show.
    camera_motion: str = "homography"
    #: Sigma, in frames, of a Gaussian smoothing the motion magnitudes along time (0 = off).
    temporal_smoothing: float = 0.0
    #: Pixels; a frame whose largest (compensated, directional) motion is below this is static and
    #: gets an all-zero map. ``None``: the estimator's ``noise_floor`` (DIS 0.1, Farneback 0.75).
    min_motion: float | None = None

    def validate(self, prefix: str = "") -> MotionOptions:
        """Check every field; return ``self``. Raises :class:`ConfigError` (one line) on a bad value.

        The one check of motion options: the ``motion`` command calls it, and the edit config calls it with
        ``prefix="mmi."`` so that its messages name the YAML key."""
        names = available_flow_estimators()
        if not isinstance(self.flow, str) or self.flow.strip().lower() not in names:
            raise ConfigError(f"unknown {prefix}flow method {self.flow!r}; choose from: {', '.join(names)}")
        parse_direction(self.direction)
        tol = self.direction_tolerance
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 < float(tol) <= 180.0:
            raise ConfigError(f"{prefix}direction_tolerance {tol!r} is invalid; use degrees in (0, 180]")
        if self.direction_mode not in DIRECTION_MODES:
            raise ConfigError(f"{prefix}direction_mode {self.direction_mode!r} is invalid; choose from: "
                              f"{', '.join(DIRECTION_MODES)}")
        if self.camera_motion not in CAMERA_MOTION_MODES:
            raise ConfigError(f"{prefix}camera_motion {self.camera_motion!r} is invalid; choose from: "
                              f"{', '.join(CAMERA_MOTION_MODES)}")
        sig = self.temporal_smoothing
        if isinstance(sig, bool) or not isinstance(sig, (int, float)) or not math.isfinite(sig) or sig < 0:
            raise ConfigError(f"{prefix}temporal_smoothing {sig!r} is invalid; use a sigma in frames >= 0 (0 = off)")
        mm = self.min_motion
        if mm is not None and (
            isinstance(mm, bool) or not isinstance(mm, (int, float)) or not math.isfinite(mm) or mm < 0
        ):
            raise ConfigError(f"{prefix}min_motion {mm!r} is invalid; use pixels >= 0 or none (estimator default)")
        return self

    @property
    def direction_degrees(self) -> float | None:
        """``direction`` parsed to degrees in ``[0, 360)``, or ``None``."""
        return parse_direction(self.direction)


@dataclass
class MotionResult:
    """Motion maps of one video and the intermediate quantities they were built from.

    Attributes:
        maps: ``(N, H, W)`` float32 in ``[0, 1]``, what MMI injects; each frame divided by its own maximum;
            all-zero where nothing moves.
        flows: ``(N, H, W, 2)`` float32 raw flow used for each frame (``i -> i+1``; last frame:
            ``-(N-1 -> N-2)``), pixels, x then y (y down).
        residual_flows: ``(N, H, W, 2)`` float32 flow after camera-motion compensation (the same
            array as ``flows`` when ``camera_motion="keep"``).
        magnitudes: ``(N, H, W)`` float32 directional magnitude in pixels, zero where the flow is unreliable,
            scaled by coherence except on epipolar pairs (after temporal smoothing).
        peak_motion: ``(N,)`` float32 per-frame maximum of ``magnitudes`` (pixels).
        camera_models: per frame, the fitted ``3 x 3`` homography, affine map or translation (frame pixel -> next-frame
            pixel) that was subtracted, or ``None`` (compensation off, or nothing to fit).
        camera_model_kinds: per frame, the camera model used: ``"homography"``, ``"affine"`` (no homography
            explained the flow within a pixel: an affine map by least median of squares), ``"translation"`` (that
            degenerated too: the flow's median), ``"epipolar"`` (the fundamental matrix: the residual's magnitude is
            the Sampson distance, its direction the homography residual's), ``"none"`` (too few finite flow vectors:
            raw flow) or ``"keep"`` (compensation off).
        options: the options used.
        min_motion: the static-frame threshold applied (pixels).
        masks: ``(N, H, W)`` bool moving-object masks (what ``edit_region moving`` edits).
        score: ``(N, H, W)`` float32 in ``[0, 1]``, the soft moving-object score the masks threshold.
    """

    maps: np.ndarray
    flows: np.ndarray
    residual_flows: np.ndarray
    magnitudes: np.ndarray
    peak_motion: np.ndarray
    camera_models: list[np.ndarray | None] = field(default_factory=list)
    camera_model_kinds: list[str] = field(default_factory=list)
    options: MotionOptions = field(default_factory=MotionOptions)
    min_motion: float = DEFAULT_NOISE_FLOOR
    masks: np.ndarray | None = None
    score: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        """Number of frames ``N``."""
        return int(self.maps.shape[0])

    def maps_tensor(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The maps as a ``(N, H, W)`` tensor on ``device``, ready for :func:`resize_motion_maps`."""
        import torch

        return torch.from_numpy(self.maps).to(device=device, dtype=dtype or torch.float32)


def check_frames(frames: np.ndarray, min_frames: int = 2) -> None:
    """Raise :class:`InputError` unless ``frames`` is ``(N, H, W, 3)`` uint8 with ``N >= min_frames``."""
    check_video(frames)
    if frames.shape[0] < min_frames:
        raise InputError(f"MMI needs at least {min_frames} frames, got {frames.shape[0]}")
    if frames.shape[1] < 2 or frames.shape[2] < 2:
        raise InputError(f"frames are {frames.shape[1]}x{frames.shape[2]} pixels; expected at least 2x2")


def compute_flows(frames: np.ndarray, estimator: FlowEstimator, progress: bool = False) -> np.ndarray:
    """Flow used for every frame.

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB, ``N >= 2``, the frames the model sees.
        estimator: a :class:`FlowEstimator`.
        progress: show a tqdm bar.

    Returns:
        ``(N, H, W, 2)`` float32: entry ``i`` is the flow ``i -> i+1`` for ``i < N-1``; entry ``N-1``
        is the flow ``N-1 -> N-2`` negated.
    """
    check_frames(frames)
    n, h, w = frames.shape[:3]
    flows = np.empty((n, h, w, 2), dtype=np.float32)
    for i in tqdm(range(n), desc="optical flow", disable=not progress, leave=False):
        if i < n - 1:
            flows[i] = estimator(frames[i], frames[i + 1])
        else:
            flows[i] = -np.asarray(estimator(frames[i], frames[i - 1]), dtype=np.float32)
    return flows


def directional_magnitude(
    flow: np.ndarray, direction: float | None = None, tolerance: float = 45.0, mode: str = "cone"
) -> np.ndarray:
    """Motion magnitude, optionally restricted to a direction.

    Args:
        flow: ``(..., H, W, 2)`` flow in pixels (x, y; y down).
        direction: degrees counter-clockwise from east (north = up = 90), or ``None`` for the plain
            magnitude ``sqrt(u^2 + v^2)``.
        tolerance: ``"cone"`` mode half-width in degrees.
        mode: ``"cone"`` keeps ``|flow|`` where the angle ``atan2(-v, u)`` is within ``tolerance`` of
            ``direction`` and 0 elsewhere; ``"project"`` keeps ``max(0, flow . d)`` with ``d`` the unit
            vector of ``direction`` (``tolerance`` unused).

    Returns:
        ``(..., H, W)`` float32, non-negative, in pixels.
    """
    u = flow[..., 0].astype(np.float32)
    v = flow[..., 1].astype(np.float32)
    if direction is None:
        return np.hypot(u, v)
    rad = math.radians(direction)
    if mode == "project":
        # Screen-up is -y: the unit vector of the direction in image coordinates is (cos, -sin).
        return np.maximum(u * math.cos(rad) - v * math.sin(rad), 0.0).astype(np.float32)
    if mode != "cone":
        raise ConfigError(f"direction_mode {mode!r} is invalid; choose from: {', '.join(DIRECTION_MODES)}")
    angle = np.degrees(np.arctan2(-v, u))  # (..., H, W) in (-180, 180]
    diff = np.abs((angle - direction + 180.0) % 360.0 - 180.0)  # angular distance in [0, 180]
    mag = np.hypot(u, v)
    return np.where(diff <= tolerance, mag, 0.0).astype(np.float32)


def smooth_along_time(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 (time), ``sigma`` in frames, truncated at 3 sigma.

    Near the first/last frame the kernel is renormalised over the frames that exist (no padding
    artefacts). ``values``: ``(N, ...)``; returns float32 of the same shape. ``sigma <= 0`` -> copy.
    """
    if sigma <= 0 or values.shape[0] < 2:
        return values.astype(np.float32, copy=True)
    n = values.shape[0]
    t = np.arange(n, dtype=np.float64)
    weights = np.exp(-0.5 * ((t[:, None] - t[None, :]) / sigma) ** 2)  # (N, N) target x source
    weights[np.abs(t[:, None] - t[None, :]) > 3.0 * sigma] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    return np.tensordot(weights, values.astype(np.float64), axes=1).astype(np.float32)  # (N, ...)


def motion_maps(
    frames: np.ndarray,
    options: MotionOptions | None = None,
    *,
    estimator: FlowEstimator | None = None,
    progress: bool = False,
) -> MotionResult:
    """Full-resolution motion maps of a video.

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB, ``N >= 2``: exactly the (sampled, resized, cropped) frames
            the model sees, so the maps line up with the latents.
        options: :class:`MotionOptions` (validated here); default options if ``None``.
        estimator: use this estimator instead of ``get_flow_estimator(options.flow)``.
        progress: show a tqdm bar for the flow computation.

    Returns:
        :class:`MotionResult` with ``maps`` ``(N, H, W)`` float32 in ``[0, 1]``.

    Raises:
        InputError: bad frames (fewer than 2, wrong shape/dtype).
        ConfigError: bad options.
    """
    options = (options or MotionOptions()).validate()
    check_frames(frames)
    est = estimator if estimator is not None else get_flow_estimator(options.flow)
    flows = compute_flows(frames, est, progress=progress)
    n = len(flows)
    # backward[i]: the flow i+1 -> i (the last one compute_flows already made, negated, for the last frame)
    backward = np.stack([est(frames[i + 1], frames[i]) for i in range(n - 2)] + [-flows[n - 1]]).astype(np.float32)
    models: list[np.ndarray | None] = [None] * n
    kinds = ["keep"] * n
    if options.camera_motion == "keep":
        residual = flows
    else:
        residual = np.empty_like(flows)
        compensate = compensate_camera_motion if options.camera_motion == "homography" else \
            compensate_camera_motion_robust
        for i, flow in enumerate(flows):
            residual[i], models[i], kinds[i] = compensate(flow)
    mags = directional_magnitude(
        residual, options.direction_degrees, float(options.direction_tolerance), options.direction_mode
    )  # (N, H, W)
    for i in range(n):  # only observed motion that maps back to where it came from counts
        flow, back = (flows[i], backward[i]) if i < n - 1 else (-flows[i], flows[i - 1])
        mags[i][~(segment.reliable(flow, back) & segment.observed(frames[i], flow))] = 0.0
    heading = segment.coherence(residual, flows[:-1])  # (N, H, W)
    heading[[kind == "epipolar" for kind in kinds]] = 1.0  # no heading of its own to keep (module docstring, 3.)
    mags *= heading
    if options.temporal_smoothing > 0:
        mags = smooth_along_time(mags, float(options.temporal_smoothing))
    min_motion = options.min_motion
    if min_motion is None:
        min_motion = float(getattr(est, "noise_floor", DEFAULT_NOISE_FLOOR))
    peaks = mags.reshape(n, -1).max(axis=1).astype(np.float32)
    score, masks, maps = segment.segment_motion(frames, mags, flows[:-1], backward, float(min_motion))
    return MotionResult(
        maps=maps,
        flows=flows,
        residual_flows=residual,
        magnitudes=mags.astype(np.float32, copy=False),
        peak_motion=peaks,
        camera_models=models,
        camera_model_kinds=kinds,
        options=options,
        min_motion=float(min_motion),
        masks=masks,
        score=score,
    )


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise InputError(f"motion-map size {size!r} is invalid; expected (height, width) positive ints") from None
    if h < 1 or w < 1:
        raise InputError(f"motion-map size {size!r} is invalid; expected (height, width) positive ints")
    return h, w


def resize_motion_maps(maps: torch.Tensor, size: tuple[int, int], eps: float = 1e-6) -> torch.Tensor:
    """Resize motion maps to an attention resolution and renormalise each frame to max 1.

    Area interpolation (adaptive average pooling when shrinking) keeps small moving objects: their
    motion is averaged into the cell instead of being skipped by point sampling. Pure torch; the
    result stays on ``maps.device`` and has ``maps.dtype`` (float32 for non-float input).

    Args:
        maps: ``(N, H, W)`` non-negative maps (e.g. ``MotionResult.maps_tensor()``).
        size: ``(h, w)`` target resolution (the UNet's attention map size; see ``attention.processors``).
        eps: frames whose resized maximum is ``<= eps`` stay all-zero (never NaN).

    Returns:
        ``(N, h, w)``; every frame has maximum 1, or is all zeros.
    """
    import torch
    import torch.nn.functional as F

    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        shape = tuple(maps.shape) if hasattr(maps, "shape") else type(maps).__name__
        raise InputError(f"motion maps have shape {shape}; expected an (N, H, W) tensor")
    h, w = _check_size(size)
    out_dtype = maps.dtype if maps.is_floating_point() else torch.float32
    work = maps if maps.dtype in (torch.float32, torch.float64) else maps.to(torch.float32)
    resized = F.interpolate(work.unsqueeze(1), size=(h, w), mode="area").squeeze(1)  # (N,1,H,W)->(N,h,w)
    resized = resized.clamp_min(0.0)
    peak = resized.amax(dim=(1, 2), keepdim=True)  # (N, 1, 1)
    moving = peak > eps
    resized = torch.where(
        moving, resized / torch.where(moving, peak, torch.ones_like(peak)), torch.zeros_like(resized)
    )
    return resized.clamp_(0.0, 1.0).to(out_dtype)


def motion_maps_for_resolutions(
    maps: torch.Tensor, sizes: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], torch.Tensor]:
    """:func:`resize_motion_maps` for every distinct ``(h, w)`` in ``sizes`` (each computed once).

    Args:
        maps: ``(N, H, W)`` tensor.
        sizes: attention resolutions, duplicates allowed.

    Returns:
        ``{(h, w): (N, h, w) tensor}`` on ``maps.device``.
    """
    out: dict[tuple[int, int], torch.Tensor] = {}
    for size in sizes:
        key = _check_size(size)
        if key not in out:
            out[key] = resize_motion_maps(maps, key)
    return out
