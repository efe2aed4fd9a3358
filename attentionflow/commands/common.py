"""What several commands share: the parsers of shared flags, and what every report-writing command does last
(print the report, then write its ``--json`` file)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attentionflow.options import MOTION_OPTIONS, SAMPLING_OPTIONS, add_options, apply_options


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


def parse_threads(text: str) -> int:
    """``--threads``: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--threads must be a whole number >= 1, got {text!r}")
    return value


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    """The input video's sampling flags (``--frames --start --stride --size``), as ``edit`` has them."""
    add_options(parser, SAMPLING_OPTIONS)


def add_motion_args(parser: argparse.ArgumentParser) -> None:
    """The motion-map flags (flow, direction, camera motion, smoothing), as ``edit`` has them."""
    add_options(parser, MOTION_OPTIONS)


def apply_motion_args(args: argparse.Namespace, target: Any) -> None:
    """Set the motion flags the user gave on ``target`` (a :class:`~attentionflow.flow.motion.MotionOptions`)."""
    apply_options(target, args, MOTION_OPTIONS, strip="mmi.")
