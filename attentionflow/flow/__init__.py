"""Optical flow and motion maps for Motion Map Injection (numpy, OpenCV and torch only).

- :mod:`.estimators`: ``FlowEstimator`` protocol and registry (``"dis"`` default, ``"farneback"``).
- :mod:`.motion`: ``MotionOptions``, ``motion_maps`` (flow pairing, camera-motion compensation,
  direction guidance, temporal smoothing, per-frame normalisation), ``resize_motion_maps``.
- :mod:`.visualize`: flow colour wheel, map images, heat-map overlays.
- :mod:`.export`: ``export_motion`` (PNGs, overlay mp4, ``.npy`` arrays).
"""

from __future__ import annotations

from attentionflow.flow.estimators import (
    DISFlow,
    FarnebackFlow,
    FlowEstimator,
    available_flow_estimators,
    get_flow_estimator,
    register_flow_estimator,
)
from attentionflow.flow.export import export_motion
from attentionflow.flow.motion import (
    MotionOptions,
    MotionResult,
    compute_flows,
    motion_maps,
    motion_maps_for_resolutions,
    parse_direction,
    resize_motion_maps,
)
from attentionflow.flow.visualize import flow_to_color, map_to_image, motion_overlay

__all__ = [
    "DISFlow",
    "FarnebackFlow",
    "FlowEstimator",
    "MotionOptions",
    "MotionResult",
    "available_flow_estimators",
    "compute_flows",
    "export_motion",
    "flow_to_color",
    "get_flow_estimator",
    "map_to_image",
    "motion_maps",
    "motion_maps_for_resolutions",
    "motion_overlay",
    "parse_direction",
    "register_flow_estimator",
    "resize_motion_maps",
]
