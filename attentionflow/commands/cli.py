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
from attentionflow.commands.common import (
    add_motion_args,
    add_sampling_args,
    apply_motion_args,
    parse_reweight,
    parse_threads,
)
from attentionflow.commands.demo import DEMO_SOURCE, DEMO_STEPS, DEMO_TARGETS
from attentionflow.config import EDIT_REGIONS, INVERSION_METHODS, MAX_SEED, parse_chunk_frames
from attentionflow.config import EditConfig as C
from attentionflow.config import MMIConfig as M
from attentionflow.config import P2PConfig as P
from attentionflow.config import ValidationDataConfig as V
from attentionflow.errors import AttentionFlowError, ConfigError, escape_controls, shown
from attentionflow.mmi.methods import SIMILARITY_METHODS


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


#: String options that may be given empty ('' means "none" for them); any other empty value is an error.
EMPTY_ALLOWED = frozenset({"inversion_prompt"})


def _check_empty_values(args: argparse.Namespace) -> None:
    """An empty string given for an option is an error, never silently the default (``--out ''``)."""
    for name, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        if name not in EMPTY_ALLOWED and any(isinstance(v, str) and not v.strip() for v in values):
            flag = name.upper() if name in ("video", "jobs") else "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} is empty; give a value or leave it out")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="attentionflow", description="Zero-shot text-driven video editing with "
                                     "Stable Diffusion and Motion Map Injection.")
    parser.add_argument("--version", action="version", version=f"attentionflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    e = sub.add_parser("edit", help="edit a video with text prompts",
                       description="Edit a video: invert it, then regenerate it with each target prompt.")
    e.add_argument("video", nargs="?", help="video file (mp4/avi/mov/webm/mkv/gif) or folder of frames")
    e.add_argument("--config", help="YAML config (vid2vid-zero format + p2p/mmi sections); flags override it")
    e.add_argument("--source", help="source prompt describing the video")
    e.add_argument("--target", action="append", help="target prompt (repeat for several edits)")
    e.add_argument(
        "--model", help=f"diffusers folder, cached hub id, or 'embedded' (default {C.pretrained_model_path})"
    )
    e.add_argument("--out", help="output folder")
    e.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    add_sampling_args(e)
    g = e.add_argument_group("diffusion")
    g.add_argument(
        "--steps", type=int, help=f"DDIM steps for inversion and sampling (default {V.num_inference_steps})"
    )
    g.add_argument("--guidance", type=float, help=f"classifier-free guidance scale (default {V.guidance_scale:g})")
    g.add_argument(
        "--seed",
        type=int,
        help=f"random seed, 0-{MAX_SEED} (default {C.seed}); recorded only: the "
        "default method is deterministic (DDIM eta 0, VAE posterior mean), so it does not change the result",
    )
    g.add_argument("--inversion", choices=INVERSION_METHODS,
                   help=f"inversion method (default {V.inversion}): direct = exact source branch, no optimisation; "
                        "negative-prompt = source prompt as the unconditional embedding; null-text = vid2vid-zero's "
                        "optimised embeddings; ddim = plain")
    g.add_argument("--direct-targets", action="store_true",
                   help="direct inversion: each edit adds its own prompt's offset on the trajectory "
                        "(PnP Inversion's add-target)")
    g.add_argument("--inversion-prompt", choices=["source", "empty"],
                   help=f"prompt the DDIM inversion is conditioned on (default {V.inversion_prompt}; "
                        "vid2vid-zero: empty)")
    g.add_argument("--no-null-text", action="store_true", help="same as --inversion ddim (kept for old scripts)")
    g.add_argument("--null-inner-steps", type=int, help="Adam iterations per step of null-text inversion")
    g.add_argument("--device", help=f"auto, cpu, cuda, cuda:N, mps (default {C.device})")
    g.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], help="compute dtype")
    g.add_argument("--no-sc-attn", action="store_true", help="disable sparse-causal cross-frame attention")
    g.add_argument("--no-st-attn", action="store_true", help="disable dense spatial-temporal attention")
    g.add_argument("--chunk-frames", type=parse_chunk_frames, metavar="N|auto",
                   help=f"frames per model call; a number bounds memory for long videos (default {C.chunk_frames}: "
                        f"all frames when they fit in half the free memory)")
    g.add_argument("--fps", type=float, help=f"frame rate of the written videos (default {C.fps:g})")
    g = e.add_argument_group("prompt-to-prompt")
    g.add_argument("--mode", choices=["auto", "replace", "refine"], help="P2P edit mode (auto from the prompts)")
    g.add_argument(
        "--cross-replace",
        type=float,
        help=f"fraction of steps with cross-attention replacement (default {P.cross_replace_steps:g})",
    )
    g.add_argument(
        "--self-replace",
        type=float,
        help=f"fraction of steps with self-attention replacement (default {P.self_replace_steps:g})",
    )
    g.add_argument("--blend-word", action="append", help="local blend word (once, or once per prompt: source first)")
    g.add_argument("--reweight", type=parse_reweight, action="append", help="WORD=FACTOR attention reweighting")
    g.add_argument(
        "--edit-region",
        choices=EDIT_REGIONS,
        help=f"where the edit may change the video (default {P.edit_region}): moving = only the moving "
        "object(s) of the motion maps (--direction picks movers going that way), static = all but them",
    )
    g.add_argument("--region-dilation", type=int,
                   help=f"latent pixels by which the moving-object mask grows (default {P.region_dilation})")
    g = e.add_argument_group("motion map injection")
    g.add_argument("--motion-word", action="append", help="motion word of the prompts (repeatable) or 'auto'")
    g.add_argument("--mmi-strength", type=float, help=f"injection strength lambda (default {M.strength:g})")
    g.add_argument(
        "--similarity", help=f"attention-motion similarity: {', '.join(SIMILARITY_METHODS)} (default {M.similarity})"
    )
    g.add_argument(
        "--mmi-branches", choices=["all", "source", "edits"], help=f"branches receiving MMI (default {M.branches})"
    )
    g.add_argument("--no-mmi", action="store_true", help="plain editor without MMI (for A/B comparisons)")
    add_motion_args(e)
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


def config_from_args(args: argparse.Namespace):
    """Load ``--config`` (or defaults) and apply the command-line overrides."""
    from attentionflow.config import EditConfig, load_config

    cfg = load_config(args.config) if getattr(args, "config", None) else EditConfig()
    inp, val, p2p, mmi = cfg.input_data, cfg.validation_data, cfg.p2p, cfg.mmi
    if args.video:
        inp.video_path = args.video
    if args.source:
        inp.prompt = args.source
    if args.target:
        val.prompts = list(args.target)
    if args.model:
        cfg.pretrained_model_path = args.model
    if args.out:
        cfg.output_dir = args.out
    if args.frames is not None:
        inp.n_sample_frames = val.video_length = args.frames
    if args.start is not None:
        inp.sample_start_idx = args.start
    if args.stride is not None:
        inp.sample_frame_rate = args.stride
    if args.size is not None:
        inp.width, inp.height = val.width, val.height = args.size
    if args.steps is not None:
        val.num_inference_steps = val.num_inv_steps = args.steps
    for flag, attr in (("guidance", "guidance_scale"), ("null_inner_steps", "null_inner_steps")):
        if getattr(args, flag) is not None:
            setattr(val, attr, getattr(args, flag))
    if args.no_null_text and args.inversion not in (None, "ddim"):
        raise ConfigError(f"--no-null-text means --inversion ddim, but --inversion {args.inversion} was given; "
                          "keep one")
    if args.inversion is not None or args.no_null_text:
        val.inversion, val.use_null_inv = args.inversion or "ddim", None  # the flag wins over a YAML's use_null_inv
    if args.direct_targets:
        val.direct_targets = True
    if args.inversion_prompt is not None:
        val.inversion_prompt = args.inversion_prompt
    for flag, attr in (("seed", "seed"), ("device", "device"), ("mixed_precision", "mixed_precision"), ("fps", "fps")):
        if getattr(args, flag) is not None:
            setattr(cfg, attr, getattr(args, flag))
    if args.no_sc_attn:
        cfg.use_sc_attn = False
    if args.no_st_attn:
        cfg.use_st_attn = False
    if args.chunk_frames is not None:
        cfg.chunk_frames = args.chunk_frames
    for flag, attr in (("mode", "mode"), ("cross_replace", "cross_replace_steps"),
                       ("self_replace", "self_replace_steps"), ("blend_word", "blend_words"),
                       ("edit_region", "edit_region"), ("region_dilation", "region_dilation")):
        if getattr(args, flag) is not None:
            setattr(p2p, attr, getattr(args, flag))
    if args.reweight:
        p2p.reweight = dict(args.reweight)
    if args.motion_word:
        mmi.motion_words = "auto" if args.motion_word == ["auto"] else list(args.motion_word)
    for flag, attr in (("mmi_strength", "strength"), ("similarity", "similarity"), ("mmi_branches", "branches")):
        if getattr(args, flag) is not None:
            setattr(mmi, attr, getattr(args, flag))
    apply_motion_args(args, mmi)
    if args.no_mmi:
        mmi.enabled = False
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


#: Config keys that `edit` flags set: (key, argparse dest, flag). An error naming such a key names the flag too
#: when the user gave it, e.g. "--size (input_data.width) must be a positive multiple of 8".
FLAG_KEYS = (
    ("input_data.n_sample_frames", "frames", "--frames"), ("input_data.sample_frame_rate", "stride", "--stride"),
    ("input_data.sample_start_idx", "start", "--start"), ("input_data.width", "size", "--size"),
    ("input_data.height", "size", "--size"), ("validation_data.num_inference_steps", "steps", "--steps"),
    ("validation_data.guidance_scale", "guidance", "--guidance"), ("mmi.strength", "mmi_strength", "--mmi-strength"),
    ("mmi.direction_tolerance", "direction_tolerance", "--direction-tolerance"),
    ("mmi.temporal_smoothing", "smoothing", "--smoothing"), ("p2p.cross_replace_steps", "cross_replace",
                                                              "--cross-replace"),
    ("p2p.self_replace_steps", "self_replace", "--self-replace"), ("p2p.edit_region", "edit_region", "--edit-region"),
    ("p2p.region_dilation", "region_dilation", "--region-dilation"), ("validation_data.null_inner_steps",
                                                                   "null_inner_steps", "--null-inner-steps"),
    ("chunk_frames", "chunk_frames", "--chunk-frames"),
)  # (fps and seed: the key is already the flag's name)


def name_flags(message: str, args: argparse.Namespace) -> str:
    """``message`` with each config key that a flag the user gave sets shown as ``--flag (key)``."""
    import re

    for key, dest, flag in FLAG_KEYS:
        if getattr(args, dest, None) is None or flag in message:
            continue
        message = re.sub(rf"(?<![\w.-]){re.escape(key)}(?![\w])", f"{flag} ({key})", message, count=1)
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
        _check_empty_values(args)
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
