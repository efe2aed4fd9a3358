"""``attentionflow toyworld`` subcommands (registered by :mod:`attentionflow.commands.cli`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from attentionflow.errors import InputError

logger = logging.getLogger(__name__)


def _video(args: argparse.Namespace) -> int:
    from attentionflow.io.outputs import check_output_dir
    from attentionflow.io.writers import check_fps, write_frames, write_gif, write_mp4
    from attentionflow.resources import check_memory
    from attentionflow.toyworld.world import make_video

    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in (".mp4", ".gif", ""):
        raise InputError(f"--out {args.out!r} has an unsupported extension; use .mp4, .gif or a folder")
    if suffix and out.is_dir():
        raise InputError(f"--out {args.out} is an existing folder; a {suffix} output must be a file path")
    if suffix and out.parent.exists() and not out.parent.is_dir():
        raise InputError(f"--out {args.out} lies under {out.parent}, which is a file; choose another path")
    if suffix and (out.exists() or out.is_symlink()):
        raise InputError(f"--out {args.out} exists; it is left alone (this command never replaces a file): give a new "
                         "file name")
    if not suffix:
        check_output_dir(out)  # an empty or new folder: frames are never written over someone's files
    if args.masks:
        masks_dir = Path(args.masks)
        if masks_dir.exists() and not masks_dir.is_dir():
            raise InputError(f"--masks {args.masks} is a file; give a new or empty folder for the mask frames")
        check_output_dir(masks_dir)  # new or empty: mask frames are never written over someone's files
    check_fps(args.fps)
    if args.frames >= 1 and args.size >= 16:  # make_video names smaller values itself
        # frames (3 bytes/pixel) + masks (1) + flows (8) + one encoding copy (3)
        check_memory(args.frames * args.size * args.size * 15, f"a toy clip of {args.frames} frames of "
                     f"{args.size}x{args.size}")
    if args.still:
        from attentionflow.flow.motion import parse_direction
        from attentionflow.toyworld.world import ObjectSpec, make_scene, parse_caption

        colour, shape, background = parse_caption(args.caption)
        specs = [ObjectSpec(colour, shape, True, parse_direction(args.direction), args.speed)]
        for text in args.still:
            words = text.split()
            if len(words) != 2:
                raise InputError(f"--still {text!r} is invalid; give a colour and a shape, e.g. --still 'red circle'")
            specs.append(ObjectSpec(words[0], words[1]))
        scene = make_scene(specs, background, frames=args.frames, size=args.size, seed=args.seed)
        frames, masks, flows = scene.frames, scene.moving_masks, scene.flows
    else:
        if args.direction is not None:
            raise InputError("--direction needs --still (a multi-object scene); a one-object clip takes --path")
        video = make_video(args.caption, frames=args.frames, size=args.size, seed=args.seed, path=args.path,
                           speed=args.speed)
        frames, masks, flows = video.frames, video.masks, video.flows
    if suffix == ".mp4":
        write_mp4(frames, out, fps=args.fps)
    elif suffix == ".gif":
        write_gif(frames, out, fps=args.fps)
    else:
        write_frames(frames, out)
    if args.masks:
        mask_dir = Path(args.masks)
        write_frames(np.repeat(masks[..., None].astype(np.uint8) * 255, 3, axis=-1), mask_dir)  # (N, H, W, 3)
        np.save(mask_dir / "flows.npy", flows)  # (N-1, H, W, 2) float32
    logger.info("wrote %s (%d frames, %s)", out, len(frames), args.caption)
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``toyworld video`` to an argparse subparsers object (handlers under ``func``)."""
    tw = subparsers.add_parser("toyworld", help="procedural toy world (videos for the embedded toy model)",
                               description="Procedural toy world: coloured shapes moving on textured "
                                           "backgrounds, the world the embedded toy model was trained on.")
    tws = tw.add_subparsers(dest="toyworld_command", metavar="{video}")
    tws.required = True
    v = tws.add_parser("video", help="render a toy video from a caption",
                       description="Render a toy video, e.g. --caption 'a red circle is moving on the road'.")
    v.add_argument("--caption", default="a red circle is moving on the road",
                   help="'a {colour} {shape} is moving on the {background}' (colours: red, green, blue, "
                        "yellow, white, purple; shapes: circle, square, triangle; backgrounds: road, grass, "
                        "snow, sand, water)")
    v.add_argument("--frames", type=int, default=8, help="number of frames (default 8)")
    v.add_argument("--size", type=int, default=64, help="frame side in pixels (default 64)")
    v.add_argument("--seed", type=int, default=0, help="random seed (texture, size, start, direction)")
    v.add_argument("--path", choices=("straight", "curved"), default="straight", help="motion path")
    v.add_argument("--speed", type=float, default=None, help="pixels per frame (default: random, path fits)")
    v.add_argument("--fps", type=float, default=8.0, help="frame rate of .mp4/.gif output (default 8)")
    v.add_argument("--out", required=True, help="output: FILE.mp4, FILE.gif, or a folder of PNG frames")
    v.add_argument(
        "--masks", default=None, help="also write ground-truth masks of the mover(s) (PNG) and flows.npy here"
    )
    v.add_argument("--still", action="append", default=None, metavar="'COLOUR SHAPE'",
                   help="add a static object beside the caption's mover (repeatable), e.g. --still 'red circle' for a "
                        "look-alike: the scenes of 'bench quality --suite motion' and of --edit-region")
    v.add_argument("--direction", default=None, help="with --still: the mover's heading, a compass word or degrees")
    v.set_defaults(func=_video)
