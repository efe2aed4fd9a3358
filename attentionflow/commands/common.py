"""What several commands share: the parsers of shared flags, and what every report-writing command does last
(print the report, then write its ``--json`` file)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attentionflow.config import CAMERA_MOTIONS
from attentionflow.config import InputDataConfig as I
from attentionflow.config import MMIConfig as M


def print_and_save_report(text: str, json_path: Path | None, kind: str, overwrite: bool, payload: str,
                          quiet: bool = True) -> None:
    """Print ``text`` (the markdown report) to stdout and, when ``json_path`` is given, write ``payload`` there
    atomically after checking the target again (a file may have appeared while the work ran)."""
    from attentionflow.io.reports import check_report_target, write_report

    print(text)
    if json_path is None:
        return
    check_report_target(json_path, kind, overwrite)
    write_report(json_path, payload)
    if not quiet:
        print(f"wrote {json_path}", file=sys.stderr)


def parse_size(text: str) -> tuple[int, int]:
    """``512`` or ``WIDTHxHEIGHT`` -> (width, height)."""
    try:
        if "x" in text.lower():
            w, h = text.lower().split("x")
            return int(w), int(h)
        return int(text), int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or WIDTHxHEIGHT (e.g. 512 or 768x432), got '{text}'")


def parse_reweight(text: str) -> tuple[str, float]:
    """``WORD=FACTOR`` -> (word, factor)."""
    word, _, factor = text.rpartition("=")
    try:
        return word, float(factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"reweight must be WORD=FACTOR (e.g. snow=2.0), got '{text}'")


def parse_direction_flag(text: str) -> str | float:
    """An angle in degrees, or a compass word (checked by the config's validator)."""
    try:
        return float(text)
    except ValueError:
        return text


def parse_threads(text: str) -> int:
    """``--threads``: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--threads must be a whole number >= 1, got {text!r}")
    return value


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """The input video's sampling flags (``--frames --start --stride --size``), as ``edit`` has them."""
    g = p.add_argument_group("input video")
    g.add_argument(
        "--frames", type=int, help=f"number of frames to use (n_sample_frames; default {I.n_sample_frames})"
    )
    g.add_argument("--start", type=int, help="index of the first frame (sample_start_idx)")
    g.add_argument("--stride", type=int, help="take every n-th frame (sample_frame_rate)")
    g.add_argument("--size", type=parse_size, help=f"frame size after resize + center crop: N or WIDTHxHEIGHT "
                                             f"(default {I.width}x{I.height})")


def add_motion_args(p: argparse.ArgumentParser) -> None:
    """The motion-map flags (flow, direction, camera motion, smoothing)."""
    g = p.add_argument_group("motion maps")
    g.add_argument("--flow", help=f"optical flow method: dis or farneback (default {M.flow})")
    g.add_argument(
        "--direction", type=parse_direction_flag, help="keep motion toward N/NE/E/SE/S/SW/W/NW or an angle in degrees"
    )
    g.add_argument(
        "--direction-tolerance",
        type=float,
        help=f"half-width of the direction cone in degrees (default {M.direction_tolerance:g})",
    )
    g.add_argument("--direction-mode", choices=["cone", "project"], help="direction guidance variant")
    g.add_argument("--camera-motion", choices=CAMERA_MOTIONS,
                   help=f"homography: remove the camera's motion as a homography; compensate: a homography or the "
                        f"epipolar geometry, chosen per frame pair; keep: raw flow (default {M.camera_motion})")
    g.add_argument("--smoothing", type=float, help="temporal smoothing of the maps (sigma in frames, 0 = off)")


def apply_motion_args(args: argparse.Namespace, target: Any) -> None:
    """Set the motion flags the user gave on ``target`` (an :class:`MMIConfig` or :class:`MotionOptions`)."""
    for flag, attr in (("flow", "flow"), ("direction", "direction"), ("direction_tolerance", "direction_tolerance"),
                       ("direction_mode", "direction_mode"), ("camera_motion", "camera_motion"),
                       ("smoothing", "temporal_smoothing")):
        if getattr(args, flag) is not None:
            setattr(target, attr, getattr(args, flag))
