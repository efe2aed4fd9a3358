"""``attentionflow evaluate``: the command handler and parser (the scoring lives in
:mod:`attentionflow.evaluation.evaluate`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from attentionflow.commands.common import print_and_save_report
from attentionflow.errors import ModelError
from attentionflow.evaluation.evaluate import REPORT_KIND, find_inputs, format_table, run_evaluation, to_json


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``attentionflow evaluate``; prints the table (stdout), writes JSON with ``--json``."""
    inputs = find_inputs(args.source, args.edited, prompt=args.prompt, source_prompt=args.source_prompt,
                         mask=args.mask)
    from attentionflow.io.reports import check_report_target

    out = check_report_target(args.json, REPORT_KIND, args.overwrite) if args.json else None
    from attentionflow.resources import check_device

    check_device(args.device)
    if args.clip and not (Path(args.clip) / "config.json").is_file():  # before torch and transformers load
        raise ModelError(f"CLIP folder '{args.clip}' not found or has no config.json; give a local folder saved "
                         "with CLIPModel.save_pretrained (plus its tokenizer files)")
    report = run_evaluation(inputs, clip=args.clip, flow=args.flow, device=args.device, progress=not args.quiet)
    print_and_save_report(format_table(report), out, REPORT_KIND, args.overwrite,
                          to_json({"report": REPORT_KIND, **report}), quiet=args.quiet)
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` to the CLI's subparsers (handler under ``func``)."""
    p = subparsers.add_parser(
        "evaluate", help="score an edited video against its source (consistency, motion, structure, CLIP)",
        description="Score EDITED against SOURCE: warp error, motion EPE, PSNR/SSIM (whole and outside "
                    "--mask), flicker, and CLIP text/frame metrics with --clip. With a single argument, "
                    "evaluate every video in the output folder of an 'edit' run.")
    p.add_argument("source", help="source video/gif/frame folder, or the output folder of an edit run")
    p.add_argument("edited", nargs="?", help="edited video/gif/frame folder (omit for an edit output folder)")
    p.add_argument("--mask", help="edit masks: frame folder/video (white = edited) or .npy (F, H, W) bool")
    p.add_argument("--prompt", help="target prompt (CLIP score); default from the manifest in folder mode")
    p.add_argument("--source-prompt", help="source prompt (CLIP frame accuracy); default from the manifest")
    p.add_argument("--clip", help="local CLIP model folder (transformers CLIPModel + tokenizer) for CLIP metrics")
    p.add_argument("--json", help="write the scores as JSON to this file (a new file, or an earlier report of this "
                   "command with --overwrite; any other file is left alone)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier --json report of this command")
    p.add_argument("--flow", default="dis", help="optical flow method: dis (default) or farneback")
    p.add_argument("--device", default="cpu", help="device for CLIP (cpu, cuda, ...)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_evaluate)
