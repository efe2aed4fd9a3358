"""``attentionflow batch``: the command handler and parser (jobs, resume and the summary live in
:mod:`attentionflow.batch`)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from attentionflow.batch import SUMMARY_NAME, check_summary_targets, collect_jobs, distributed_state, run_batch
from attentionflow.errors import ConfigError, InputError


def cmd_batch(args: argparse.Namespace) -> int:
    """``attentionflow batch``: exit 0 when every job is done or skipped, 1 when some failed."""
    summary_dir = Path(args.summary_dir)
    if summary_dir.exists() and not summary_dir.is_dir():
        raise InputError(f"--summary-dir {args.summary_dir} is a file; give a folder for batch_summary.md/.json")
    for parent in summary_dir.resolve().parents:
        if parent.exists():
            if not parent.is_dir() or not os.access(parent, os.W_OK):
                raise InputError(f"--summary-dir {args.summary_dir} cannot be created under {parent}; "
                                 f"give a writable folder")
            break
    if summary_dir.is_dir() and not os.access(summary_dir, os.W_OK):
        raise InputError(f"--summary-dir {args.summary_dir} is not writable; give a writable folder")
    if not (math.isfinite(args.gather_timeout) and args.gather_timeout > 0):
        raise ConfigError(f"--gather-timeout must be a positive number of hours, got {args.gather_timeout}")
    if summary_dir.is_dir():
        check_summary_targets(summary_dir)
    rank, world, state = distributed_state(args.gather_timeout)
    try:
        jobs = collect_jobs(args.jobs, out_root=args.out_root, model=args.model, device=args.device)
        summary = run_batch(jobs, summary_dir=args.summary_dir, force=args.force, progress=not args.quiet,
                            rank=rank, world_size=world, state=state)
    finally:
        if state is not None:
            state.destroy_process_group()
    if rank == 0 and not args.quiet:
        c = summary.counts
        print(f"batch: {len(jobs)} jobs, {c['done']} done, {c['skipped']} skipped, {c['failed']} failed; "
              f"summary in {Path(args.summary_dir) / (SUMMARY_NAME + '.md')}", file=sys.stderr)
        for r in summary.results:
            if r.status == "failed":
                print(f"  failed: {r.job}: {r.error}", file=sys.stderr)
    return 0 if summary.ok else 1


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``attentionflow batch`` to an argparse subparsers object (handler under ``func``)."""
    b = subparsers.add_parser(
        "batch", help="run many edit jobs (resumable; one share per process under accelerate launch)",
        description="Run edit jobs from config files, manifests (.jsonl, or YAML list / {defaults, jobs}) or "
                    "folders of them. Complete jobs (manifest.json present) are skipped, failures are recorded "
                    "and the rest go on; batch_summary.md/.json are written at the end. Under `accelerate "
                    "launch` or `torchrun` each process runs every W-th job.")
    b.add_argument("jobs", nargs="+", metavar="JOBS", help="config files, manifests or folders of them")
    b.add_argument("--summary-dir", default=".", help="where batch_summary.md/.json go (default: current folder)")
    b.add_argument("--out-root", default="outputs/batch",
                   help="parent folder for jobs that give no output_dir (default outputs/batch/<job name>)")
    b.add_argument("--model", help="use this model for every job (diffusers folder, hub id or 'embedded')")
    b.add_argument("--device", help="use this device for every job (auto: each process's own device)")
    b.add_argument("--force", action="store_true", help="re-run complete jobs too, replacing their outputs")
    b.add_argument("--gather-timeout", type=float, default=24.0,
                   help="hours the processes wait for each other at the end (default 24)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    b.set_defaults(func=cmd_batch)
