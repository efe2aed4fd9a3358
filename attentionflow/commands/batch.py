"""``attentionflow batch JOBS...``: run many edit jobs, resumable, one process or many.

JOBS are any mix of

* a config file (``.yaml`` / ``.yml`` / ``.json``: one :class:`~attentionflow.config.EditConfig`),
* a manifest: a ``.jsonl`` file (one config mapping per line), or a YAML/JSON file holding a list of
  config mappings or a mapping ``{defaults: {...}, jobs: [...]}`` (``defaults`` is deep-merged under
  every job),
* a folder: every ``.yaml`` / ``.yml`` / ``.json`` / ``.jsonl`` file directly inside it, each read as above.

A job mapping may carry a ``name``; otherwise a config file's job is named after the file and a
manifest's jobs ``<manifest stem>-<index>``. A job without ``output_dir`` writes to
``<out-root>/<name>``. Relative paths in configs are relative to the current folder, as for
``attentionflow edit --config``.

Jobs are sorted (files by path, manifest entries in manifest order) and numbered; under
``accelerate launch`` / ``torchrun`` process ``r`` of ``W`` takes jobs ``r, r + W, r + 2W, ...``
(round-robin: deterministic, every job exactly once); on one process they run in turn. Each process
loads a model once and reuses it for all its jobs that name it. A job whose output folder already has
``manifest.json`` (written last and atomically by :func:`attentionflow.jobs.run_edit_job`) is
skipped, so re-running a batch resumes it. A failing job is recorded with its one-line error and
the others go on. At the end the main process writes ``batch_summary.md`` and ``batch_summary.json``
(job, status, time, output folder, error, process) to ``--summary-dir``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from attentionflow.errors import AttentionFlowError, ConfigError, InputError, first_line

logger = logging.getLogger(__name__)

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
MANIFEST_SUFFIXES = (".jsonl",)
JOB_SUFFIXES = CONFIG_SUFFIXES + MANIFEST_SUFFIXES
SUMMARY_NAME = "batch_summary"
#: The summary's own mark: the JSON's ``report`` value and the markdown's first line.
SUMMARY_REPORT, SUMMARY_HEADER = "batch", "# Batch summary"
STATUSES = ("done", "skipped", "failed")
#: Largest job file read (a manifest line is ~300 bytes: tens of thousands of jobs).
MAX_JOB_FILE_BYTES = 16 * 2**20
"""done: ran now; skipped: outputs already complete (resume); failed: error recorded."""


@dataclass
class BatchJob:
    """One edit job of a batch: its config, or the error that made its config unusable."""

    index: int
    """Position in the sorted job list (decides which process runs it)."""
    name: str
    """Display name (config file stem, manifest ``name`` or ``<stem>-<index>``)."""
    source: str
    """Where it came from: ``path`` or ``path:line`` / ``path[i]`` for manifest entries."""
    config: Any = None
    """The :class:`~attentionflow.config.EditConfig`, or None when ``error`` is set."""
    error: str | None = None
    """One-line reason the job cannot run (bad config, duplicate output folder)."""
    inputs: tuple[str, ...] = ()
    """Every job file of the batch: no job's output folder may hold or be one of them."""

    @property
    def output_dir(self) -> str:
        """The job's output folder ('' when its config could not be read)."""
        return self.config.output_dir if self.config is not None else ""


@dataclass
class JobOutcome:
    """What happened to one job."""

    index: int
    job: str
    source: str
    status: str
    """One of :data:`STATUSES`."""
    seconds: float
    output_dir: str
    error: str | None = None
    rank: int = 0
    """Process index that handled the job."""


@dataclass
class BatchSummary:
    """All job results (sorted by index) and the counts per status."""

    results: list[JobOutcome] = field(default_factory=list)
    world_size: int = 1

    @property
    def counts(self) -> dict[str, int]:
        """Number of jobs per status."""
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}

    @property
    def ok(self) -> bool:
        """True when no job failed."""
        return self.counts["failed"] == 0


# -------------------------------------------------------------------------------------------------
# collecting jobs


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``; nested mappings are merged, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _entries(path: Path) -> list[tuple[str, str | None, Any]]:
    """(source, explicit-name-or-None, raw mapping or an exception) for every job in one file."""
    suffix = path.suffix.lower()
    from attentionflow.config import parse_yaml

    try:
        if path.stat().st_size > MAX_JOB_FILE_BYTES:
            return [
                (str(path), None, InputError(f"job file {path} is over {MAX_JOB_FILE_BYTES // 2**20} MiB; split it"))
            ]
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as exc:
        return [(str(path), None, InputError(f"cannot read job file {path}: {first_line(exc)}"))]
    except UnicodeDecodeError as exc:
        return [(str(path), None, ConfigError(f"job file {path} is not UTF-8 text (byte offset {exc.start}); "
                                              f"save it as UTF-8"))]
    if suffix in MANIFEST_SUFFIXES:
        out: list[tuple[str, str | None, Any]] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            src = f"{path}:{lineno}"
            try:
                out.append((src, None, json.loads(line)))
            except json.JSONDecodeError as exc:
                out.append((src, None, ConfigError(f"{src} is not a JSON object: {exc.msg}")))
        return out
    try:
        # duplicate keys, tabs and non-UTF-8 text are named
        data = parse_yaml(raw, f"job file {path}", max_bytes=MAX_JOB_FILE_BYTES)
    except ConfigError as exc:
        return [(str(path), None, exc)]
    if isinstance(data, list):
        return [(f"{path}[{i}]", None, item) for i, item in enumerate(data)]
    if isinstance(data, dict) and "jobs" in data:
        jobs, defaults = data.get("jobs"), data.get("defaults") or {}
        extra = sorted(set(data) - {"jobs", "defaults"})
        if not isinstance(jobs, list) or not isinstance(defaults, dict) or extra:
            detail = f"; unexpected key(s) {', '.join(extra)}" if extra else ""
            return [(str(path), None, ConfigError(
                f"manifest {path} must be {{defaults: mapping, jobs: list of mappings}}{detail}"))]
        return [(f"{path}[{i}]", None, _deep_merge(defaults, item) if isinstance(item, dict) else item)
                for i, item in enumerate(jobs)]
    return [(str(path), path.stem, data if data is not None else {})]


def _files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in JOB_SUFFIXES
                           and not f.name.startswith((".", SUMMARY_NAME)))
            if not found:
                raise InputError(f"job folder {p} holds no {'/'.join(JOB_SUFFIXES)} files")
            files.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in JOB_SUFFIXES:
                raise InputError(f"job file {p} has an unsupported extension; use {', '.join(JOB_SUFFIXES)} "
                                 f"or a folder of them")
            files.append(p)
        else:
            raise InputError(f"job path not found: {p} (expected a config file, a manifest or a folder of them)")
    return sorted(dict.fromkeys(files), key=lambda f: str(f))


def _safe_name(name: str) -> bool:
    """A job name is used as one folder under ``--out-root``: it must be a single plain path component."""
    return (name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and not any(ord(c) < 32 or ord(c) == 127 for c in name))


def collect_jobs(paths: Sequence[str | os.PathLike[str]], *, out_root: str | os.PathLike[str] = "outputs/batch",
                 model: str | None = None, device: str | None = None) -> list[BatchJob]:
    """Read every job named by ``paths`` (files, manifests, folders) into a sorted, numbered list.

    Args:
        paths: config files, manifests (``.jsonl``, YAML/JSON list or ``{defaults, jobs}``) or folders.
        out_root: parent of the output folder of every job that gives no ``output_dir``.
        model: if given, replaces every job's ``pretrained_model_path``.
        device: if given, replaces every job's ``device``.

    Returns:
        Jobs numbered 0..N-1. A job whose config cannot be read or validated, or whose output
        folder is also used by an earlier job, carries ``error`` instead of failing the batch.

    Raises:
        InputError: a path does not exist, has an unsupported extension, or a folder has no job files.
    """
    from attentionflow.config import config_from_dict, resolve_relative_paths

    if not paths:
        raise InputError("no jobs given: pass config files, manifests (.jsonl/.yaml) or folders of them")
    jobs: list[BatchJob] = []
    used: dict[str, str] = {}
    names: dict[str, int] = {}
    files = _files(paths)
    inputs = tuple(map(str, files))
    for path in files:
        for i, (source, name, raw) in enumerate(_entries(path)):
            index = len(jobs)
            if isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"].strip():
                name = raw["name"].strip()
            name = name or f"{path.stem}-{i:03d}"
            names[name] = names.get(name, 0) + 1
            if names[name] > 1:
                name = f"{name}-{names[name]}"
            job = BatchJob(index=index, name=name, source=source, inputs=inputs)
            jobs.append(job)
            if not _safe_name(name):
                job.error = (f"job name {name!r} is not a plain folder name (it must stay under --out-root: no / "
                             "or \\, "
                             "not . or .., no control characters)")
                continue
            if isinstance(raw, Exception):
                job.error = first_line(raw)
                continue
            if not isinstance(raw, dict):
                job.error = f"{source} must be a config mapping, got {type(raw).__name__}"
                continue
            data = {k: v for k, v in raw.items() if k != "name"}
            try:
                cfg = resolve_relative_paths(config_from_dict(data), path.parent, output_dir="output_dir" in data)
                if "output_dir" not in data:
                    cfg.output_dir = str(Path(out_root) / name)
                if model is not None:
                    cfg.pretrained_model_path = model
                if device is not None:
                    cfg.device = device
                cfg.validate()
            except AttentionFlowError as exc:
                job.error = first_line(exc)
                continue
            job.config = cfg
            key = os.path.normcase(os.path.abspath(cfg.output_dir))
            if key in used:
                job.error = (f"output folder {cfg.output_dir} is also used by job '{used[key]}'; give each job "
                             f"its own output_dir")
                job.config = None
            else:
                used[key] = name
    return jobs


def shard(jobs: Sequence[BatchJob], rank: int, world_size: int) -> list[BatchJob]:
    """The jobs process ``rank`` of ``world_size`` runs: indices ``rank, rank + W, ...`` (round-robin)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return [j for j in jobs if j.index % world_size == rank]


def is_complete(output_dir: str | os.PathLike[str]) -> bool:
    """True when the output folder holds this tool's own ``manifest.json`` (the last file a job writes) and every
    file it lists, unchanged in size (another tool's manifest, or a folder missing a file, is not complete)."""
    from attentionflow.io.outputs import own_manifest

    manifest = own_manifest(output_dir) if str(output_dir) else None
    if manifest is None:
        return False
    folder = Path(output_dir)
    return all(isinstance(entry, dict) and (folder / rel).is_file()
               and (folder / rel).stat().st_size == entry.get("bytes") for rel, entry in manifest["files"].items())


# -------------------------------------------------------------------------------------------------
# running


#: Inversions kept per process (each is a few MB: x_T plus one null-text embedding per step).
INVERSION_CACHE_SIZE = 4


def run_job(job: BatchJob, cache: Any, *, force: bool = False, progress: bool = False,
            rank: int = 0) -> JobOutcome:
    """Run (or skip) one job and record the outcome; never raises for a job's own failure."""
    from attentionflow.jobs import check_job, run_edit_job

    start = time.perf_counter()  # cache: a jobs.PipelineCache

    def result(status: str, error: str | None = None) -> JobOutcome:
        return JobOutcome(index=job.index, job=job.name, source=job.source, status=status,
                         seconds=round(time.perf_counter() - start, 3), output_dir=job.output_dir,
                         error=error, rank=rank)

    if job.error is not None or job.config is None:
        return result("failed", job.error or "no config")
    cfg = job.config
    if not force and is_complete(cfg.output_dir):
        return result("skipped")
    try:
        checked = check_job(cfg, overwrite=force, inputs=job.inputs)
        pipeline = cache.get(checked.model_dir, cfg.device, cfg.mixed_precision)
        run_edit_job(cfg, overwrite=force, progress=progress, pipeline=pipeline, command="batch", checked=checked,
                     inputs=job.inputs)
    except AttentionFlowError as exc:
        return result("failed", first_line(exc).replace("pass --overwrite", "run the batch with --force"))
    except Exception as exc:  # one broken job must not stop the batch; keep the traceback in the log
        logger.warning("job %s failed", job.name, exc_info=True)
        _free_accelerator_memory()
        return result("failed", f"{type(exc).__name__}: {first_line(exc)}")
    return result("done")


def _free_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def distributed_state(gather_timeout_h: float = 24.0) -> tuple[int, int, Any]:
    """(rank, world size, accelerate PartialState or None) for this process.

    A single process (no ``WORLD_SIZE`` > 1 in the environment) needs no process group. Under
    ``accelerate launch`` / ``torchrun`` the state is initialised on the process's GPU, or with gloo
    on CPUs when there is no CUDA (or ``ACCELERATE_USE_CPU`` is set). The collective timeout is
    long because processes finish their shares at different times.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    import torch
    from accelerate import PartialState

    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    state = PartialState(cpu=cpu, timeout=datetime.timedelta(hours=gather_timeout_h))
    return state.process_index, state.num_processes, state


def run_batch(jobs: Sequence[BatchJob], *, summary_dir: str | os.PathLike[str] | None = ".", force: bool = False,
              progress: bool = True, rank: int | None = None, world_size: int | None = None,
              state: Any = None) -> BatchSummary:
    """Run this process's share of ``jobs`` and return the summary of all jobs.

    With ``rank``/``world_size`` unset they come from :func:`distributed_state`. Under several
    processes the results are gathered (``accelerate.utils.gather_object``) so that every process
    returns the full summary; the main process writes ``batch_summary.md`` / ``.json`` into
    ``summary_dir`` (None: write nothing). Jobs naming ``device: auto`` run on the process's device.
    """
    if rank is None or world_size is None:
        rank, world_size, state = distributed_state()
    mine = shard(jobs, rank, world_size)
    if world_size > 1 and state is not None:
        for job in mine:
            if job.config is not None and job.config.device == "auto":
                job.config.device = str(state.device)
    # Group by model so that each process loads every model once; results are re-sorted by index.
    order = sorted(mine, key=lambda j: (j.config is not None, j.config.pretrained_model_path if j.config else ""))
    from attentionflow.jobs import PipelineCache

    cache = PipelineCache(inversion_cache_size=INVERSION_CACHE_SIZE)  # jobs of one clip share its inversion
    results: list[JobOutcome] = []
    from tqdm.auto import tqdm

    bar = tqdm(order, desc=f"batch (process {rank})" if world_size > 1 else "batch", unit="job",
               disable=not progress, position=rank if world_size > 1 else None)
    for job in bar:
        bar.set_postfix_str(job.name)
        res = run_job(job, cache, force=force, progress=False, rank=rank)
        logger.info("job %s: %s in %.1f s%s", job.name, res.status, res.seconds,
                    f" ({res.error})" if res.error else "")
        results.append(res)
    bar.close()
    cache.clear()
    if world_size > 1:
        from accelerate.utils import gather_object

        gathered = gather_object([dataclasses.asdict(r) for r in results])
        results = [JobOutcome(**r) for r in gathered]
    summary = BatchSummary(results=sorted(results, key=lambda r: r.index), world_size=world_size)
    if summary_dir is not None and rank == 0:
        write_summary(summary, summary_dir)
    return summary


# -------------------------------------------------------------------------------------------------
# summary


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(summary: BatchSummary) -> str:
    """Markdown table: job, status, time, output folder, error (+ process when several)."""
    multi = summary.world_size > 1
    counts = summary.counts
    lines = [SUMMARY_HEADER, "",
             f"{len(summary.results)} jobs: {counts['done']} done, {counts['skipped']} skipped (already complete), "
             f"{counts['failed']} failed" + (f"; {summary.world_size} processes" if multi else "") + ".", "",
             "| # | job | status | time (s) | output folder | error |" + (" process |" if multi else ""),
             "|---:|---|---|---:|---|---|" + ("---:|" if multi else "")]
    for r in summary.results:
        row = (f"| {r.index} | {_cell(r.job)} | {r.status} | {r.seconds:.1f} | {_cell(r.output_dir)} | "
               f"{_cell(r.error or '')} |")
        lines.append(row + (f" {r.rank} |" if multi else ""))
    return "\n".join(lines) + "\n"


def write_summary(summary: BatchSummary, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``batch_summary.md`` and ``batch_summary.json`` into ``folder``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / f"{SUMMARY_NAME}.md", folder / f"{SUMMARY_NAME}.json"
    data = {"report": SUMMARY_REPORT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "world_size": summary.world_size, "counts": summary.counts,
            "jobs": [dataclasses.asdict(r) for r in summary.results]}
    from attentionflow.io.reports import write_report

    check_summary_targets(folder)  # again: a file may have appeared while the jobs ran
    for path, text in ((js, json.dumps(data, indent=2)), (md, summary_markdown(summary))):
        write_report(path, text)  # atomic: readers never see a half-written summary
    return md, js


def check_summary_targets(folder: str | os.PathLike[str]) -> None:
    """Refuse (one line) when ``batch_summary.md``/``.json`` in ``folder`` exist and are not earlier batch summaries.

    An earlier summary is the batch's own record and is replaced by every run (a resumed batch updates it); a
    user's file of that name is never touched."""
    from attentionflow.io.reports import check_report_target

    folder = Path(folder)
    check_report_target(folder / f"{SUMMARY_NAME}.json", SUMMARY_REPORT, True, flag="--summary-dir")
    check_report_target(folder / f"{SUMMARY_NAME}.md", SUMMARY_REPORT, True, flag="--summary-dir",
                        header=SUMMARY_HEADER)


# -------------------------------------------------------------------------------------------------
# CLI


# The command: handler and parser.

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
