"""``attentionflow bench quality | motion``: the command handlers and parsers (the suites live in
:mod:`attentionflow.evaluation.bench.single`, :mod:`attentionflow.evaluation.bench.motion` and
:mod:`attentionflow.evaluation.davis`)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from attentionflow.commands.common import print_and_save_report
from attentionflow.config import INVERSION_METHODS, parse_chunk_frames
from attentionflow.errors import ConfigError
from attentionflow.evaluation.bench.common import REPORT_HEADER, REPORT_KIND, SUITES, BenchSettings
from attentionflow.evaluation.bench.motion import MOTION_TASKS
from attentionflow.evaluation.bench.single import TASKS, format_markdown, run_quality_bench


def _model_note(model: str) -> str:
    from attentionflow.models.loading import resolve_model_path

    folder = resolve_model_path(model)
    readme = folder / "README.md"
    first = readme.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip() if readme.is_file() else ""
    body = " ".join(readme.read_text(encoding="utf-8").split()[:40]) if readme.is_file() else ""
    name = "embedded toy model" if model == "embedded" else str(folder)
    if "PLACEHOLDER" in body.upper():
        return f"{name} (PLACEHOLDER: untrained random weights)"
    return f"{name}" + (f" ({first})" if first else "")


def _report_targets(out: Path, overwrite: bool) -> dict[str, Path]:
    """quality.md / quality.json / quality.partial.json in ``out``, each checked: new, or an earlier report of this
    command replaced only with ``--overwrite`` (never a file this command did not write)."""
    from attentionflow.io.reports import check_report_target

    if not out.is_dir():
        return {"md": out / "quality.md", "json": out / "quality.json"}
    check_report_target(out / "quality.partial.json", REPORT_KIND, True, "--out")
    return {"md": check_report_target(out / "quality.md", REPORT_KIND, overwrite, "--out", header=REPORT_HEADER),
            "json": check_report_target(out / "quality.json", REPORT_KIND, overwrite, "--out")}


def cmd_bench_quality(args: argparse.Namespace) -> int:
    """Handler of ``attentionflow bench quality``."""
    settings = BenchSettings(tasks=args.tasks, steps=args.steps, frames=args.frames, size=args.size,
                             inversion=args.inversion, seed=args.seed, suite=args.suite,
                             chunk_frames=parse_chunk_frames(args.chunk_frames))
    settings.validate()
    most = max(len(TASKS), len(MOTION_TASKS))
    if settings.tasks is not None and settings.tasks > most:
        raise ConfigError(f"--tasks {settings.tasks} is invalid; use 1..{most} (the first N tasks of each suite)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{args.out}' is a file; give a folder")
    targets = _report_targets(out, args.overwrite)
    from attentionflow.resources import check_device

    check_device(args.device)
    import torch  # only now: every check above fails in well under a second

    from attentionflow.evaluation.evaluate import to_json
    from attentionflow.pipeline import AttentionFlowPipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    note = _model_note(args.model)
    pipe = AttentionFlowPipeline.from_pretrained(args.model, device=args.device)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "quality.partial.json"
    report: dict[str, Any] = {"report": REPORT_KIND, "settings": asdict(settings), "model": note}

    def save_partial(records: list[dict[str, Any]], key: str) -> None:
        partial.write_text(to_json({**report, key: records}), encoding="utf-8")

    command = _command_line("quality")
    parts = []
    if settings.suite in ("all", "single"):
        report.update(run_quality_bench(pipe, settings, progress=not args.quiet, model_note=note,
                                        on_task=lambda r: save_partial(r, "tasks")))
        parts.append(format_markdown(report, command))
    if settings.suite in ("all", "motion"):
        from attentionflow.evaluation.bench.motion import format_motion_markdown, run_motion_bench

        report["motion"] = run_motion_bench(pipe, settings, progress=not args.quiet,
                                            on_task=lambda r: save_partial(r, "motion_tasks"))
        if not parts:
            report["created"] = time.strftime("%Y-%m-%d %H:%M")
            parts.append(f"{REPORT_HEADER}\n\nGenerated {report['created']} by `{command}`.\n"
                         f"Model: {note}.\n")
        parts.append(format_motion_markdown(report["motion"]))
    report["command"] = command
    md = "\n".join(parts)
    from attentionflow.io.reports import write_report

    _report_targets(out, args.overwrite)  # still true after the work
    write_report(targets["md"], md)
    write_report(targets["json"], to_json(report))
    partial.unlink(missing_ok=True)
    if not args.quiet:
        print(md)
        print(f"wrote {out / 'quality.md'} and {out / 'quality.json'}", file=sys.stderr)
    return 0


def _command_line(name: str) -> str:
    """The ``attentionflow bench ...`` command as the user typed it, for the reports' headers."""
    argv = sys.argv[1:]
    if "bench" not in argv:
        return f"attentionflow bench {name}"
    return "attentionflow " + shlex.join(argv[argv.index("bench"):])


def cmd_bench_motion(args: argparse.Namespace) -> int:
    """Handler of ``attentionflow bench motion`` (:mod:`attentionflow.evaluation.davis`)."""
    import json

    from attentionflow.commands.common import apply_motion_args
    from attentionflow.evaluation.davis import REPORT_KIND as MOTION_REPORT
    from attentionflow.evaluation.davis import (
        Protocol,
        davis_sources,
        find_sequences,
        format_motion_report,
        run_motion_scores,
        toy_sources,
    )
    from attentionflow.flow.motion import MotionOptions
    from attentionflow.io.reports import check_report_target

    options = MotionOptions()
    apply_motion_args(args, options)
    options.validate()
    width, height = args.size
    if args.all_frames and (args.frames is not None or args.toy):
        raise ConfigError("--all-frames reads every frame of each DAVIS sequence: give it without --frames, and "
                          "with --davis (the toy scenes are --frames long)")
    frames = Protocol.frames if args.frames is None else args.frames
    stride = args.stride if args.stride is not None else (1 if args.all_frames else Protocol.stride)
    if frames < 2 or stride < 1 or min(width, height) < 16 or width % 8 or height % 8:
        raise ConfigError("--frames must be >= 2, --stride >= 1, and --size at least 16x16 in multiples of 8; got "
                          f"--frames {frames} --stride {stride} --size {width}x{height}")
    json_path = check_report_target(args.json, MOTION_REPORT, args.overwrite) if args.json else None
    if (args.davis is None) == (not args.toy):
        raise ConfigError("give one data source: --davis DIR or --toy")
    if args.toy:
        side = min(width, height)
        sources = list(toy_sources(frames, side))  # a few small scenes
        total = len(sources)
        source = f"toy scenes of the motion suite, {frames} frames of {side}x{side}"
    else:
        names = [n.strip() for n in args.sequences.split(",") if n.strip()] if args.sequences else None
        protocol = Protocol(None if args.all_frames else frames, stride, width, height)
        sequences = find_sequences(args.davis, names)
        sources, total = davis_sources(sequences, protocol), len(sequences)
        span = "all frames" if args.all_frames else f"{frames} frames"
        source = f"DAVIS ({Path(args.davis).name}), {span} at stride {stride}, {width}x{height}"
    report = run_motion_scores(sources, options, total=total, progress=not args.quiet)
    report.update(source=source, created=time.strftime("%Y-%m-%d %H:%M"), command=_command_line("motion"),
                  options=asdict(options))
    print_and_save_report(format_motion_report(report), json_path, MOTION_REPORT, args.overwrite,
                          json.dumps(report, indent=2))
    return 0


def _add_motion_bench_parser(bench_parsers: argparse._SubParsersAction) -> None:
    from attentionflow.commands.common import add_motion_args
    from attentionflow.evaluation.davis import Protocol
    from attentionflow.options import parse_size

    m = bench_parsers.add_parser(
        "motion", help="moving-object masks and maps against true masks (DAVIS or toy scenes): J, F, mass",
        description="Score the masks that --edit-region moving would use, and the maps MMI injects, against true "
                    "object masks: J (IoU), F (boundary F-measure), the map's mass on the object; per sequence and "
                    "the mean. Prints markdown; --json writes the report.")
    m.add_argument("--davis", metavar="DIR",
                   help="a DAVIS folder: JPEGImages[/480p]/<seq>, Annotations[/480p]/<seq> (or Full-Resolution)")
    m.add_argument("--toy", action="store_true", help="the toy scenes of the motion suite (exact masks)")
    m.add_argument("--sequences", metavar="A,B,C", help="only these sequences (default all)")
    m.add_argument("--frames", type=int, help=f"frames per sequence (default {Protocol.frames})")
    m.add_argument("--stride", type=int,
                   help=f"take every n-th frame (default {Protocol.stride}; 1 with --all-frames)")
    m.add_argument("--all-frames", action="store_true",
                   help="the whole of each sequence (from the first frame; every frame unless --stride says)")
    m.add_argument("--size", type=parse_size, default=(Protocol.width, Protocol.height),
                   help="frame size after resize + centre crop, WIDTHxHEIGHT (default 512x288; --toy: the short "
                        "side, square)")
    m.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    m.add_argument("--overwrite", action="store_true", help="replace an earlier --json report of this command")
    add_motion_args(m)
    m.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=cmd_bench_motion)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench quality`` and ``bench motion`` to the CLI's subparsers (handlers under ``func``)."""
    b = subparsers.add_parser("bench", help="benchmarks (editing quality on the toy world, knowing what moves)",
                              description="Benchmarks that anyone can re-run offline.")
    bs = b.add_subparsers(dest="bench_command", metavar="{quality,motion}")
    bs.required = True
    q = bs.add_parser("quality", help="toy-world editing suite: regeneration vs P2P vs P2P + MMI",
                      description="Run a fixed suite of toy-world edits (colour, shape and background swaps of "
                                  "moving objects) with three methods and write quality.md + quality.json.")
    q.add_argument("--suite", choices=SUITES, default=BenchSettings.suite,
                   help=f"single = one object per scene ({len(TASKS)} tasks), motion = multi-object scenes where only "
                        f"motion tells which object to edit, all = both (default {BenchSettings.suite})")
    q.add_argument("--tasks", type=int, default=None, help="the first N tasks of each suite (default all)")
    q.add_argument("--steps", type=int, default=BenchSettings.steps,
                   help=f"DDIM steps for inversion and sampling (default {BenchSettings.steps})")
    q.add_argument("--frames", type=int, default=BenchSettings.frames, help="frames per video (default 8)")
    q.add_argument("--size", type=int, default=BenchSettings.size, help="frame side in pixels (default 64)")
    q.add_argument("--seed", type=int, default=BenchSettings.seed, help="sampling seed (default 33)")
    q.add_argument("--inversion", choices=INVERSION_METHODS, default=BenchSettings.inversion,
                   help=f"inversion method (default {BenchSettings.inversion})")
    q.add_argument("--chunk-frames", default=str(BenchSettings.chunk_frames), metavar="N|auto",
                   help=f"frames per model call (default {BenchSettings.chunk_frames})")
    q.add_argument("--model", default="embedded", help="model: 'embedded' (toy model, default) or a folder")
    q.add_argument("--device", default="cpu", help="device (default cpu)")
    from attentionflow.commands.common import parse_threads

    q.add_argument("--threads", type=parse_threads, default=None, help="torch CPU threads (default: torch's choice)")
    q.add_argument("--out", default="outputs/bench_quality", help="output folder for quality.md / quality.json")
    q.add_argument("--overwrite", action="store_true", help="replace an earlier quality.md / quality.json of this "
                   "command there (never another file)")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    q.set_defaults(func=cmd_bench_quality)
    _add_motion_bench_parser(bs)
