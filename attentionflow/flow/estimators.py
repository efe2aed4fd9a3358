"""Optical-flow estimators behind a small registry.

An estimator is any object with a ``name`` and a ``__call__(frame_a, frame_b)`` that returns the
dense flow from ``frame_a`` to ``frame_b``. The built-in ones wrap OpenCV (no weights, CPU):

- ``"dis"`` (default): Dense Inverse Search, preset MEDIUM, on grayscale frames.
- ``"farneback"``: Gunnar Farneback's polynomial-expansion flow, on grayscale frames.

A learned estimator (RAFT, ...) can be added later with :func:`register_flow_estimator` without
touching any caller: callers only ever go through :func:`get_flow_estimator` with the method name
from the configuration.

Flow conventions (every estimator must follow them): ``flow[y, x] = (u, v)`` in pixels, ``u`` along
+x (to the right), ``v`` along +y (image y points *down*), such that the pixel ``(x, y)`` of
``frame_a`` moves to ``(x + u, y + v)`` in ``frame_b``.

Callers must pass exactly the frames the model sees (sampled, resized and center-cropped), so the
flow, and the motion maps built from it, are pixel-aligned with the latents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from attentionflow.errors import ConfigError, InputError

__all__ = [
    "FlowEstimator",
    "DISFlow",
    "FarnebackFlow",
    "register_flow_estimator",
    "get_flow_estimator",
    "available_flow_estimators",
    "check_frame_pair",
]


@runtime_checkable
class FlowEstimator(Protocol):
    """Dense optical flow between two RGB frames.

    Attributes:
        name: registry name of the method (e.g. ``"dis"``).

    Optional attribute (read with ``getattr``, not required by the protocol): ``noise_floor``, the
    largest flow magnitude in pixels the method reports between two *identical* frames; motion maps
    treat a frame whose peak motion is below it as static (default 0.1 px when absent).

    ``__call__(frame_a, frame_b)``: ``frame_a``, ``frame_b`` are ``(H, W, 3)`` uint8 RGB arrays of
    the same shape; returns ``(H, W, 2)`` float32, the flow from ``frame_a`` to ``frame_b`` in pixels
    (x component first, image y axis pointing down).
    """

    name: str

    def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray: ...


def check_frame_pair(frame_a: np.ndarray, frame_b: np.ndarray) -> None:
    """Raise :class:`InputError` unless both frames are ``(H, W, 3)`` uint8 arrays of equal shape."""
    for label, frame in (("frame_a", frame_a), ("frame_b", frame_b)):
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            shape = getattr(frame, "shape", type(frame).__name__)
            raise InputError(f"flow {label} has shape {shape}; expected an (H, W, 3) RGB array")
        if frame.dtype != np.uint8:
            raise InputError(f"flow {label} has dtype {frame.dtype}; expected uint8 RGB")
    if frame_a.shape != frame_b.shape:
        raise InputError(
            f"flow frames have different shapes {frame_a.shape} and {frame_b.shape}; expected equal shapes"
        )


def _gray(frame: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H, W)`` uint8 luminance (contiguous, as OpenCV wants)."""
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


class DISFlow:
    """OpenCV Dense Inverse Search optical flow (grayscale; no weights).

    Args:
        preset: ``cv2.DISOPTICAL_FLOW_PRESET_{ULTRAFAST,FAST,MEDIUM}``; MEDIUM (default) runs the
            variational refinement, which gives smooth, accurate flow at a few ms per 512x512 pair.
            With MEDIUM, frames whose short side is under :attr:`SMALL_SIDE` are matched at full resolution
            with smaller patches (see there).
    """

    name: str = "dis"
    #: DIS returns exactly zero flow between identical frames and up to ~0.07 px under +-2 grey-level
    #: sensor noise (measured on 96-px textures); 0.1 px keeps such noise out of the maps.
    noise_floor: float = 0.1

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> None:
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(preset)
        self._small: cv2.DISOpticalFlow | None = None

    #: Frames whose short side is below this are "small": the preset's finest level (half resolution) and
    #: 12-px patches would leave a 64-px frame a 32-px image seen through patches a third of an object wide,
    #: so small frames use full resolution, 8-px patches and a 2-px stride (toy videos, tests).
    SMALL_SIDE: int = 256

    def _for(self, height: int, width: int) -> cv2.DISOpticalFlow:
        if min(height, width) >= self.SMALL_SIDE or self.preset != cv2.DISOPTICAL_FLOW_PRESET_MEDIUM:
            return self._dis
        if self._small is None:
            self._small = cv2.DISOpticalFlow_create(self.preset)
            self._small.setFinestScale(0)
            self._small.setPatchSize(8)
            self._small.setPatchStride(2)
        return self._small

    def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 x2 -> ``(H, W, 2)`` float32 flow from ``frame_a`` to ``frame_b``."""
        check_frame_pair(frame_a, frame_b)
        flow = self._for(*frame_a.shape[:2]).calc(_gray(frame_a), _gray(frame_b), None)
        return np.asarray(flow, dtype=np.float32)


class FarnebackFlow:
    """OpenCV Farneback optical flow (grayscale; no weights).

    The defaults are OpenCV's commonly used settings (pyramid scale 0.5, 3 iterations, poly_n 5,
    sigma 1.2) with a 5-level pyramid, so displacements of a few tens of pixels at 512x512 are found.
    The averaging window scales with the frame: ``winsize=None`` (default) uses ``min(H, W) / 32`` rounded
    up to an odd number, at least 7 (17 at 512x512, near OpenCV's usual 15 at VGA size). A fixed
    15-pixel window on a 128-pixel frame would smear every motion boundary over a tenth of the frame.
    """

    name: str = "farneback"
    #: OpenCV's Farneback reports up to ~0.6 px between identical textured frames at 96-128 px
    #: (~0.15 px at 512 px), so peaks below 0.75 px are not trusted as motion.
    noise_floor: float = 0.75

    def __init__(
        self,
        pyr_scale: float = 0.5,
        levels: int = 5,
        winsize: int | None = None,
        iterations: int = 3,
        poly_n: int = 5,
        poly_sigma: float = 1.2,
    ) -> None:
        self.pyr_scale = pyr_scale
        self.levels = levels
        self.winsize = winsize
        self.iterations = iterations
        self.poly_n = poly_n
        self.poly_sigma = poly_sigma

    @staticmethod
    def auto_winsize(height: int, width: int) -> int:
        """Averaging window ``round(min(height, width) / 32)`` made odd (+1 if even), at least 7."""
        size = max(7, int(round(min(height, width) / 32)))
        return size if size % 2 else size + 1

    def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 x2 -> ``(H, W, 2)`` float32 flow from ``frame_a`` to ``frame_b``."""
        check_frame_pair(frame_a, frame_b)
        winsize = self.winsize if self.winsize is not None else self.auto_winsize(*frame_a.shape[:2])
        flow = cv2.calcOpticalFlowFarneback(
            _gray(frame_a),
            _gray(frame_b),
            None,
            self.pyr_scale,
            self.levels,
            winsize,
            self.iterations,
            self.poly_n,
            self.poly_sigma,
            0,
        )
        return np.asarray(flow, dtype=np.float32)


_REGISTRY: dict[str, Callable[[], FlowEstimator]] = {
    "dis": DISFlow,
    "farneback": FarnebackFlow,
}


def register_flow_estimator(name: str, factory: Callable[[], FlowEstimator], *, overwrite: bool = False) -> None:
    """Make ``factory`` available as flow method ``name`` (lower-cased).

    Args:
        name: method name used in configs / ``--flow`` (e.g. ``"raft"``).
        factory: zero-argument callable returning a :class:`FlowEstimator` (a class works).
        overwrite: allow replacing an existing registration.

    Raises:
        ConfigError: empty name, or the name is already taken and ``overwrite`` is false.
    """
    key = str(name).strip().lower()
    if not key:
        raise ConfigError(f"flow method name {name!r} is empty; give a non-empty name")
    if not callable(factory):
        raise ConfigError(f"flow method {key!r} factory {factory!r} is not callable; pass a class or function")
    if key in _REGISTRY and not overwrite:
        raise ConfigError(f"flow method {key!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[key] = factory


def available_flow_estimators() -> list[str]:
    """Names of the registered flow methods, in registration order (``["dis", "farneback", ...]``)."""
    return list(_REGISTRY)


def get_flow_estimator(name: str) -> FlowEstimator:
    """Build the flow estimator registered as ``name`` (case-insensitive).

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
    """
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise ConfigError(f"unknown flow method {name!r}; choose from: {', '.join(_REGISTRY)}")
    return _REGISTRY[key]()
