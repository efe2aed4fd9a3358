"""``attentionflow motion VIDEO --out DIR``: flow images, motion maps and the moving-object masks of a video."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from attentionflow.commands.common import add_motion_args, add_sampling_args, apply_motion_args
from attentionflow.config import InputDataConfig as I
from attentionflow.errors import ConfigError


def cmd_motion(args: argparse.Namespace) -> int:
    """Handler of ``attentionflow motion``."""
    import numpy as np

    from attentionflow.config import MIN_FRAME_SIZE
    from attentionflow.flow.export import box_mass, export_motion, load_boxes
    from attentionflow.flow.motion import MotionOptions, motion_maps
    from attentionflow.io.outputs import atomic_output_dir, check_output_dir, probe_output_location, seal_output
    from attentionflow.io.video import read_frames
    from attentionflow.io.writers import check_fps
    from attentionflow.resources import check_memory, data_bytes

    opts = MotionOptions()
    apply_motion_args(args, opts)
    opts.validate()
    check_fps(args.fps)
    # the same default sampling as `edit` (the config's input_data defaults)
    width, height = args.size if args.size else (I.width, I.height)
    n_frames = args.frames if args.frames is not None else I.n_sample_frames
    if min(width, height) < MIN_FRAME_SIZE:
        raise ConfigError(f"--size must be at least {MIN_FRAME_SIZE} (the smallest size optical flow accepts), "
                          f"got {width}x{height}")
    check_memory(data_bytes(n_frames, width, height, 0),
                 f"motion maps of {n_frames} frames of {width}x{height}")
    inputs = [args.video, *([args.boxes] if args.boxes else [])]
    check_output_dir(args.out, args.overwrite, protect=inputs)
    probe_output_location(args.out)
    frames = read_frames(args.video, n_frames=n_frames, start=args.start or 0, stride=args.stride or 1,
                         width=width, height=height, names=("--frames", "--stride", "--start"))
    boxes = load_boxes(args.boxes, len(frames), args.video) if args.boxes else None
    with atomic_output_dir(args.out, overwrite=args.overwrite, protect=inputs) as tmp:
        result = motion_maps(frames, opts)
        export_motion(frames, result, tmp, fps=args.fps, boxes=boxes)
        manifest: dict[str, Any] = {"command": "motion", "frames": int(len(frames)),
                                    "camera_motion": opts.camera_motion,
                                    "camera_models": list(result.camera_model_kinds),
                                    "moving_area": [round(float(m.mean()), 4) for m in result.masks]}
        if boxes:
            mass = box_mass(result.maps, boxes)
            manifest["box_mass"] = {"per_frame": {str(k): round(v, 4) for k, v in mass.items()},
                                    "mean": round(float(np.mean(list(mass.values()))), 4)}
        seal_output(tmp, manifest)
    if not args.quiet:
        kinds = result.camera_model_kinds
        models = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
        note = f"; mass inside the boxes {manifest['box_mass']['mean']:.3f}" if boxes else ""
        print(f"wrote motion maps of {len(frames)} frames to {args.out} (camera models: {models}{note})",
              file=sys.stderr)
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add ``attentionflow motion`` to an argparse subparsers object (handler under ``func``)."""
    m = sub.add_parser("motion", help="compute optical flow and motion maps of a video",
                       description="Write flow images, motion maps, the moving-object masks that --edit-region moving "
                                   "would use (moving_masks/, moving_masks.npy), overlay videos and .npy arrays.")
    m.add_argument("video", help="video file or folder of frames")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    m.add_argument("--fps", type=float, default=8.0, help="frame rate of the overlay video")
    m.add_argument("--boxes", metavar="FILE",
                   help='subject boxes, JSON {"frame": [x0, y0, x1, y1]} as fractions of width and height: drawn on '
                        'the overlay, and the map\'s mass inside them goes into the manifest')
    add_sampling_args(m)
    add_motion_args(m)
    m.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    m.set_defaults(func=cmd_motion)
