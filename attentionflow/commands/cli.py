"""Command-line interface: ``attentionflow edit | motion | demo | toyworld``.

Every user error is one line on stderr and exit code 2 (no traceback), raised before heavy compute.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Any, NoReturn, Sequence

from attentionflow import __version__
from attentionflow.commands.common import parse_threads
from attentionflow.commands.demo import DEMO_SOURCE, DEMO_STEPS, DEMO_TARGETS
from attentionflow.config import EditConfig
from attentionflow.errors import AttentionFlowError, escape_controls, shown
from attentionflow.options import add_options, apply_options, check_conflicts, check_empty_values, flag_keys


class OneLineParser(argparse.ArgumentParser):
    """argparse parser whose usage errors are one line (``attentionflow: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        message = escape_controls(message)
        if len(message) > 300:  # "unrecognized arguments: ..." can echo a whole command line
            message = message[:297] + "..."
        print(f"attentionflow: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, schedulers), handled like Ctrl-C: outputs in progress are removed."""


def _raise_terminated(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not break the clean-up
    raise Terminated()


def _raise_interrupted(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the clean-up
    raise KeyboardInterrupt()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="attentionflow", description="Zero-shot text-driven video editing with "
                                     "Stable Diffusion and Motion Map Injection.")
    parser.add_argument("--version", action="version", version=f"attentionflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    e = sub.add_parser("edit", help="edit a video with text prompts",
                       description="Edit a video: invert it, then regenerate it with each target prompt.")
    add_options(e)
    e.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    e.set_defaults(func=cmd_edit)

    d = sub.add_parser("demo", help="edit a toy video with the embedded model (offline, CPU, < 1 minute)",
                       description=f"Make a toy video ('{DEMO_SOURCE}') and edit it into "
                                   + " and ".join(f"'{t}'" for t in DEMO_TARGETS) + " with MMI on.")
    d.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo; a previous demo "
                   "output there is replaced)")
    d.add_argument("--steps", type=int, default=None, help=f"DDIM steps (default {DEMO_STEPS}, as configs/demo.yaml)")
    d.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=cmd_demo)

    from attentionflow.commands import app, batch, bench, evaluate, motion
    from attentionflow.toyworld import cli as toyworld

    for module in (motion, toyworld, app, batch, evaluate):
        module.register_cli(sub)
    for name in ("edit", "demo", "app", "batch"):
        sub.choices[name].add_argument(
            "--threads", type=parse_threads, help="torch CPU threads (default: torch's choice, one per core: the "
            "fastest on an idle machine; on a busy one, 1 can be several times faster)")
    bench.register_cli(sub)
    return parser


# -------------------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> EditConfig:
    """Load ``--config`` (or defaults) and apply the flags the user gave
    (:data:`attentionflow.options.EDIT_OPTIONS`)."""
    from attentionflow.config import load_config

    check_conflicts(args)
    cfg = load_config(args.config) if getattr(args, "config", None) else EditConfig()
    apply_options(cfg, args)
    return cfg


def _quiet_libraries() -> None:
    """Silence diffusers/transformers/hub logging and bars through their environment switches (read at their
    import), so that quieting them does not import them before the input is checked."""
    for name, value in (("DIFFUSERS_VERBOSITY", "error"), ("TRANSFORMERS_VERBOSITY", "error"),
                        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(name, value)


def cmd_edit(args: argparse.Namespace) -> int:
    from attentionflow.commands.batch import distributed_state
    from attentionflow.jobs import run_edit_job

    cfg = config_from_args(args)
    rank, world, _ = distributed_state()
    if rank != 0:
        logging.getLogger(__name__).info("process %d of %d: a single edit runs on the main process", rank, world)
        return 0
    start = time.perf_counter()
    result = run_edit_job(cfg, overwrite=args.overwrite, progress=not args.quiet, command="edit",
                          inputs=[args.config] if getattr(args, "config", None) else [])
    if not args.quiet:
        print(f"wrote {result.output_dir} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        for line in result.notes():
            print(line, file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from attentionflow.commands.demo import DEMO_SOURCE, DEMO_TARGETS, run_demo

    start = time.perf_counter()
    if not args.quiet:
        print(f"demo: '{DEMO_SOURCE}' -> " + ", ".join(f"'{t}'" for t in DEMO_TARGETS)
              + " (embedded toy model, CPU)", file=sys.stderr)
    result = run_demo(args.out, args.steps, overwrite=args.overwrite, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {result.output_dir} in {time.perf_counter() - start:.1f} s (grid: "
              f"{result.output_dir / 'grid.gif'})", file=sys.stderr)
        for line in result.notes():
            print(line, file=sys.stderr)
    return 0


def name_flags(message: str, args: argparse.Namespace) -> str:
    """``message`` with each config key that a flag the user gave sets shown as ``--flag (key)``."""
    import re

    for key, dest, flag in flag_keys():
        if getattr(args, dest, None) is None or flag in message:
            continue
        message = re.sub(rf"(?<![\w.-]){re.escape(key)}(?![\w]|\.\w)", f"{flag} ({key})", message, count=1)
    return message


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch: through the environment, which torch reads when it starts its thread
    pools (it is imported only after the input is checked), and directly if it is already imported."""
    if threads is None:
        return
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attentionflow`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    set_threads(getattr(args, "threads", None))
    if getattr(args, "quiet", False):
        _quiet_libraries()
    previous = None
    try:
        previous = (signal.signal(signal.SIGTERM, _raise_terminated), signal.signal(signal.SIGINT, _raise_interrupted))
    except ValueError:  # not the main thread (e.g. called from a test runner thread): leave signals alone
        pass
    try:
        check_empty_values(args)
        return int(args.func(args) or 0)
    except AttentionFlowError as exc:
        print(f"attentionflow: error: {escape_controls(name_flags(str(exc), args))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused (full disk, a name over its limit, no permission)
        name = os.fspath(exc.filename) if exc.filename is not None else ""
        where = f" ({shown(name)})" if name else ""
        print(f"attentionflow: error: {exc.strerror or exc}{where}; nothing was replaced and unfinished outputs "
              f"were removed", file=sys.stderr)
        return 2
    except Terminated:
        print("attentionflow: terminated (SIGTERM); unfinished outputs were removed", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("attentionflow: interrupted; unfinished outputs were removed", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
