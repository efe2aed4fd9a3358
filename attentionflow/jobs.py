"""One edit job end to end: check everything cheap first, run the pipeline, write all outputs atomically.

Output folder layout::

    input.mp4 / input.gif                 the sampled, resized, cropped input frames
    reconstruction.mp4 / .gif             the inversion reconstruction (source prompt)
    edit_01_<slug>.mp4 / .gif, ...        one per target prompt
    frames/<name>/frame_0000.png ...      every video above as PNG frames
    grid.mp4 / grid.gif                   input | reconstruction | each edit, side by side
    attention/edit_01_<slug>.png ...      per-token cross-attention maps without / with MMI (+ motion maps)
    motion/                               flow images, motion maps, overlay video, .npy (when MMI is on)
    config.yaml                           the fully resolved configuration
    manifest.json                         versions, seed, device, dtype, timings, frames, size, MMI report
"""

from __future__ import annotations

import logging
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np

from attentionflow.config import EditConfig, config_to_dict, dump_config
from attentionflow.errors import ConfigError, InputError
from attentionflow.figures import figure_frames
from attentionflow.io.grid import grid_frames
from attentionflow.io.outputs import atomic_output_dir, check_output_dir, probe_output_location, seal_output
from attentionflow.io.video import read_frames
from attentionflow.io.writers import write_frames, write_gif, write_mp4
from attentionflow.models.paths import EMBEDDED, ModelLimits, embedded_model_path, model_limits, resolve_model_path
from attentionflow.resources import (
    available_memory,
    check_device,
    check_memory,
    data_bytes,
    edit_memory,
    frames_per_call,
    latent_rows,
    unet_activation_bytes,
)

if TYPE_CHECKING:  # the pipeline imports torch: only after every cheap check has passed
    from attentionflow.pipeline import AttentionFlowPipeline, ProgressCallback
    from attentionflow.pipeline_output import AttentionMaps, EditOutput
    from attentionflow.plan import EditPlan

logger = logging.getLogger(__name__)

_PACKAGES = ("attentionflow", "torch", "diffusers", "transformers", "accelerate", "av", "opencv-python-headless",
             "numpy", "pillow", "pyyaml")


def slug(text: str, max_len: int = 40) -> str:
    """File-name-safe short form of a prompt."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:max_len].rstrip("-") or "edit"


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


#: How the sampling settings are named in messages: the CLI flag and the config key (input_data.*), so that both
#: a command-line user and a YAML user recognise theirs.
SAMPLING_NAMES = ("--frames/n_sample_frames", "--stride/sample_frame_rate", "--start/sample_start_idx")


def load_input_frames(config: EditConfig) -> np.ndarray:
    """Read, sample, resize and crop the input video as the config says: (F, H, W, 3) uint8."""
    inp = config.input_data
    return read_frames(inp.video_path, n_frames=inp.n_sample_frames, start=inp.sample_start_idx,
                       stride=inp.sample_frame_rate, width=inp.width, height=inp.height, names=SAMPLING_NAMES)


SEED_NOTE = ("the method is deterministic (DDIM with eta 0, the VAE posterior mean, and every inversion method, "
             "null-text's Adam included): the seed does not change the result")


@dataclass
class CheckedJob:
    """What :func:`check_job` learned, so that a job is never read or checked twice."""

    frames: np.ndarray
    """(F, H, W, 3) uint8 input frames, sampled, resized and cropped."""
    model_dir: Path
    """The resolved diffusers folder."""
    plan: EditPlan
    """The checked edit (prompts, settings, token positions) the pipeline runs."""
    motion: tuple[Any, Any] = (None, None)
    """Motion maps and edit-region masks (:func:`attentionflow.flow.regions.motion_for_edit`), made before any model
    is loaded: an ``edit_region`` on a video without motion fails at once."""
    motion_seconds: float = 0.0
    """How long making them took (the manifest's ``motion_maps`` timing adds the pipeline's resizing)."""
    inputs: tuple[str, ...] = ()
    """Every input path of the job (video, local model, config files): the output may not overlap any of them."""


def job_inputs(config: EditConfig, extra: Sequence[str | os.PathLike[str]] = ()) -> tuple[str, ...]:
    """The paths an edit reads: its video or frame folder, a local model folder, and ``extra`` (config files)."""
    paths = [config.input_data.video_path, *map(os.fspath, extra)]
    if config.pretrained_model_path != EMBEDDED and Path(config.pretrained_model_path).exists():
        paths.append(config.pretrained_model_path)
    return tuple(p for p in paths if p)


def host_memory_needed(config: EditConfig, limits: ModelLimits, available: int | None = None) -> int:
    """Bytes of host memory an edit needs at its peak (:func:`attentionflow.resources.edit_memory`): on a CPU the
    weights, the frame data, the UNet's activations for the chunk ``chunk_frames`` gives (``auto``: the chunk the
    pipeline will pick from the memory left once the weights are loaded) and the VAE's; on a GPU the frame data only
    (the model and its activations live on the GPU, where ``auto`` chunks fit its free memory)."""
    inp, val = config.input_data, config.validation_data
    branches = 1 + len(val.prompts)
    if not _runs_on_host(config.device):
        return data_bytes(inp.n_sample_frames, inp.width, inp.height, branches)
    rows = latent_rows(branches, val.guidance_scale)  # an upper bound: direct inversion uses one row fewer
    dtype_bytes = 4 if config.mixed_precision == "no" else 2
    shape = limits.shape
    free = None
    if config.chunk_frames == "auto":
        available = available_memory() if available is None else available
        free = None if available is None else max(0, available - shape.parameters * dtype_bytes)
    latent = (inp.height // shape.vae_scale, inp.width // shape.vae_scale)
    chunk = frames_per_call(config.chunk_frames, inp.n_sample_frames,
                            rows * unet_activation_bytes(shape.unet_channels, latent, dtype_bytes), free)
    return edit_memory(inp.n_sample_frames, inp.width, inp.height, branches, shape, rows_per_frame=rows,
                       chunk=chunk, dtype_bytes=dtype_bytes).total


def _runs_on_host(device: str) -> bool:
    """Whether the edit will run in host memory (a CPU device; ``auto`` on a machine without an NVIDIA driver)."""
    return device == "cpu" or (device == "auto" and not Path("/proc/driver/nvidia").exists())


def check_job(config: EditConfig, overwrite: bool, inputs: Sequence[str | os.PathLike[str]] = ()) -> CheckedJob:
    """Every check that needs no model weights, cheapest first, before torch is imported.

    ``inputs``: files the job came from (config files), protected like the video and the model.

    Config values, the output folder, the model folder and its limits (steps, smallest size), the
    memory estimate, then the video is read and the prompts and words are checked with the tokenizer.
    """
    config.validate()
    check_device(config.device, config.mixed_precision)
    inp, val = config.input_data, config.validation_data
    if not inp.video_path:
        raise InputError("no input video given (input_data.video_path / VIDEO argument)")
    protect = job_inputs(config, inputs)
    check_output_dir(config.output_dir, overwrite, protect=protect)
    probe_output_location(config.output_dir)
    model_dir = resolve_model_path(config.pretrained_model_path)
    limits = model_limits(model_dir)
    if val.num_inference_steps > limits.num_train_timesteps:
        raise ConfigError(f"validation_data.num_inference_steps must be at most {limits.num_train_timesteps} "
                          f"(the scheduler's training timesteps), got {val.num_inference_steps}")
    for key, value in (("input_data.width", inp.width), ("input_data.height", inp.height)):
        if value < limits.min_size:
            raise ConfigError(f"{key} must be at least {limits.min_size} for this model (its UNet halves the latent "
                              f"grid {limits.unet_factor.bit_length() - 1} times), got {value}")
    check_memory(host_memory_needed(config, limits),
                 f"editing {inp.n_sample_frames} frames of {inp.width}x{inp.height}")
    frames = load_input_frames(config)
    from attentionflow.models.tokenizer import load_tokenizer
    from attentionflow.plan import EditPlan

    plan = EditPlan.build(config, load_tokenizer(model_dir / "tokenizer"))
    from attentionflow.flow.regions import motion_for_edit

    start = time.perf_counter()
    motion = motion_for_edit(frames, plan.motion, mmi=plan.mmi.enabled, region=plan.p2p.edit_region)
    return CheckedJob(frames=frames, model_dir=model_dir, plan=plan, motion=motion,
                      motion_seconds=time.perf_counter() - start, inputs=protect)


@dataclass
class JobResult:
    """What :func:`run_edit_job` made, typed: the folder, the plan it ran, the pipeline's result and the facts of the
    run. The manifest is written from these (:func:`build_manifest`), and so are the CLI's notes and the app's
    summary: nothing reads the manifest back."""

    output_dir: Path
    """The output folder (as the config names it)."""
    plan: EditPlan
    """The resolved plan the pipeline ran."""
    output: EditOutput
    """The edit itself: videos, attention maps, motion maps, modes, timings."""
    edit_names: list[str]
    """Per target prompt, the file stem of its outputs (``edit_1_<words>``)."""
    reconstruction_psnr_db: float | None
    """How closely the source branch reproduced the input video (None: exactly)."""
    timings: dict[str, float]
    """Seconds per stage of the whole job, ``total`` included."""
    device: str
    """Where the edit ran (``cpu``, ``cuda:0``, ...)."""
    embedded: bool
    """Whether the model was the embedded toy model."""
    command: str = "edit"
    """The command that ran the job (edit, demo, app, batch)."""
    manifest: dict[str, Any] = field(default_factory=dict)
    """Exactly what ``manifest.json`` holds (written from the fields above and the config)."""

    def notes(self) -> list[str]:
        """One-line readings of the run for a person (the CLI prints them): the reconstruction PSNR with what it
        means, which motion words MMI used, and, for the embedded toy model, what it knows."""
        out = self.output
        method = out.inversion_method
        db = self.reconstruction_psnr_db
        if db is None:
            reading = "exact"
        elif db >= RECONSTRUCTION_GOOD_DB:
            reading = f"{db:.1f} dB, good"
        elif db >= RECONSTRUCTION_POOR_DB:
            reading = f"{db:.1f} dB, fair"
        elif method == "direct":
            reading = (f"{db:.1f} dB, poor: direct inversion is exact up to the VAE, so the model's VAE cannot "
                       f"reproduce this video")
        else:
            reading = f"{db:.1f} dB, poor: the source branch does not reproduce the video; see --inversion direct"
        notes = [f"reconstruction PSNR {reading} ({method or 'the'} inversion)"]
        if self.plan.mmi.enabled:
            words = out.motion_words
            if self.plan.candidates is not None and not out.motion_ranking:
                notes.append("MMI: auto mode chose no word (it decides after mmi.auto_steps steps and none scored), "
                             "fusion only")
            elif out.motion_ranking:
                chosen = f"auto chose '{words[0]}'" if words else "auto chose none"
                notes.append(f"MMI: {chosen} (ranking: " + ", ".join(
                    f"{w} {s:.3f}" for w, s in out.motion_ranking[:4]) + ")")
            elif words:
                notes.append("MMI: motion word(s) " + ", ".join(f"'{w}'" for w in words) + " (fusion + swap)")
            else:
                notes.append("MMI: no motion word, fusion only (name one with --motion-word WORD, or --motion-word "
                             "auto)")
        if out.edit_region in ("moving", "static") and out.region is not None:
            kept = "changed only" if out.edit_region == "moving" else "kept"
            notes.append(f"edit region {out.edit_region}: the moving object(s), {100 * float(out.region.mean()):.1f}% "
                         f"of the frame, {kept} (see motion/edit_mask_overlay.gif)")
        if self.embedded and self.command != "demo":
            size = model_limits(embedded_model_path()).trained_size
            notes.append(f"note: the embedded toy model knows only the toy world (coloured shapes on plain "
                         f"backgrounds) and was trained at {size}x{size}; real videos need Stable Diffusion "
                         f"weights (--model FOLDER)")
        return notes


#: Reconstruction PSNR readings (dB): at least GOOD is "good", below POOR "poor", between "fair".
RECONSTRUCTION_GOOD_DB, RECONSTRUCTION_POOR_DB = 30.0, 20.0


class PipelineCache:
    """One loaded pipeline per process, replaced when a job names another model, device or precision."""

    def __init__(self, inversion_cache_size: int = 0) -> None:
        self.inversion_cache_size = inversion_cache_size
        """Inversions the pipeline keeps (re-editing a clip with the same source prompt and settings reuses one)."""
        self._key: tuple[str, str, str] | None = None
        self._pipeline: AttentionFlowPipeline | None = None

    def get(self, model_dir: Path | str, device: str, mixed_precision: str) -> AttentionFlowPipeline:
        """The pipeline for this model folder, device and precision (loaded now if it is not the current one)."""
        from attentionflow.pipeline import AttentionFlowPipeline

        key = (str(model_dir), device, mixed_precision)
        if key != self._key or self._pipeline is None:
            self.clear()  # free the previous model before loading the next
            logger.info("loading model %s (%s, %s)", model_dir, device, mixed_precision)
            self._pipeline = AttentionFlowPipeline.from_pretrained(str(model_dir), device=device,
                                                                   mixed_precision=mixed_precision,
                                                                   inversion_cache_size=self.inversion_cache_size)
            self._key = key
        return self._pipeline

    def clear(self) -> None:
        """Drop the loaded pipeline."""
        self._pipeline, self._key = None, None


@dataclass
class PublicPaths:
    """How an output folder names server-side paths when it is handed to someone else (the app's zip)."""

    replace: dict[str, str]
    """Server path -> the name shown instead (the upload's own file name, the output folder's name)."""

    def apply(self, value: Any) -> Any:
        """``value`` (nested dicts/lists/strings) with every server path replaced."""
        if isinstance(value, str):
            for path in sorted(self.replace, key=len, reverse=True):
                value = value.replace(path, self.replace[path])
            return value
        if isinstance(value, dict):
            return {k: self.apply(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.apply(v) for v in value]
        return value


def run_edit_job(config: EditConfig, *, overwrite: bool = False, progress: bool = True,
                 pipeline: AttentionFlowPipeline | None = None, command: str = "edit",
                 callback: ProgressCallback | None = None, checked: CheckedJob | None = None,
                 public: PublicPaths | None = None, inputs: Sequence[str | os.PathLike[str]] = ()) -> JobResult:
    """Run one edit job and write its output folder; returns the folder, the edit and the manifest.

    Raises :class:`attentionflow.errors.AttentionFlowError` for bad input before any heavy compute:
    ``checked`` (from :func:`check_job`) saves checking again. The temporary output folder is created
    before the model is loaded, and nothing is left behind on failure or interruption. ``public``:
    write the manifest and config without the command line and with server paths replaced. ``inputs``: as
    :func:`check_job`'s.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if checked is None:
        checked = check_job(config, overwrite, inputs)
    frames, model_dir = checked.frames, checked.model_dir
    timings["read_video"] = max(0.0, time.perf_counter() - started - checked.motion_seconds)  # motion: its own stage
    protect = tuple(dict.fromkeys((*checked.inputs, *job_inputs(config, inputs))))
    with atomic_output_dir(config.output_dir, overwrite=overwrite, protect=protect) as tmp:
        from attentionflow.pipeline import AttentionFlowPipeline

        if pipeline is None:
            start = time.perf_counter()
            pipeline = AttentionFlowPipeline.from_pretrained(str(model_dir), device=config.device,
                                                             mixed_precision=config.mixed_precision)
            timings["load_model"] = time.perf_counter() - start
        pipeline.set_progress_bar_config(disable=not progress)
        out = pipeline.edit(frames, checked.plan, callback=callback, motion=checked.motion)
        timings.update(out.timings)
        if checked.motion[0] is not None:
            timings["motion_maps"] = checked.motion_seconds + out.timings.get("motion_maps", 0.0)
        start = time.perf_counter()
        names = write_outputs(tmp, frames, out, config.fps)
        timings["write_outputs"] = time.perf_counter() - start
        timings["total"] = time.perf_counter() - started
        from attentionflow.evaluation.metrics import psnr

        job = JobResult(output_dir=Path(config.output_dir), plan=checked.plan, output=out, edit_names=names,
                        reconstruction_psnr_db=_round_db(psnr(frames, out.reconstruction)), timings=timings,
                        device=str(pipeline.device), embedded=config.pretrained_model_path == EMBEDDED,
                        command=command)
        manifest = build_manifest(job, config, pipeline, model_dir)
        config_text = dump_config(config)
        if public is not None:
            manifest = public.apply({k: v for k, v in manifest.items() if k != "argv"})
            config_text = public.apply(config_text)
        (tmp / "config.yaml").write_text(config_text, encoding="utf-8")
        job.manifest = seal_output(tmp, manifest)  # last: lists every file, marks it complete
    return job


def write_outputs(folder: Path, frames: np.ndarray, out: EditOutput, fps: float) -> list[str]:
    """Write videos, frames, grid, attention images and motion outputs into ``folder``.

    Returns the file stem of each edit, in target order (``edit_01_<slug>``, ...: numbered, so that two
    identical target prompts get two sets of files).
    """
    videos = {"input": frames, "reconstruction": out.reconstruction}
    edit_names = [f"edit_{i:02d}_{slug(prompt)}" for i, prompt in enumerate(out.target_prompts, start=1)]
    videos.update(zip(edit_names, out.edits))
    for name, video in videos.items():
        write_mp4(video, folder / f"{name}.mp4", fps=fps)
        write_gif(video, folder / f"{name}.gif", fps=fps)
        write_frames(video, folder / "frames" / name)
    labels = ["input", "reconstruction", *out.target_prompts]
    # the grid is made frame by frame while it is encoded (a long video's grid is never held whole)
    write_mp4(grid_frames(list(videos.values()), labels=labels), folder / "grid.mp4", fps=fps)
    write_gif(grid_frames(list(videos.values()), labels=labels), folder / "grid.gif", fps=fps)
    if out.attention is not None:
        (folder / "attention").mkdir()
        for b, name in enumerate(["source", *edit_names]):
            image = attention_grid(out.attention, b)
            cv2.imwrite(str(folder / "attention" / f"{name}.png"), image[..., ::-1])
    if out.motion is not None:
        from attentionflow.flow.export import export_motion

        export_motion(frames, out.motion, folder / "motion", fps=fps)
    if out.region is not None:
        from attentionflow.flow.export import export_region

        export_region(frames, out.region, folder / "motion", fps=fps, kept=out.edit_region == "static")
    return edit_names


def _heat(m: np.ndarray, cell: int) -> np.ndarray:
    """(h, w) float map -> (cell, cell*w/h, 3) uint8 RGB heat map, min-max normalised."""
    m = m.astype(np.float32)
    lo, hi = float(m.min()), float(m.max())
    m = (m - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(m)
    h, w = m.shape
    img = cv2.resize((m * 255).astype(np.uint8), (max(1, round(cell * w / h)), cell), interpolation=cv2.INTER_NEAREST)
    return cv2.applyColorMap(img, cv2.COLORMAP_JET)[..., ::-1]


def attention_rows(maps: AttentionMaps, branch: int) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """The rows of the attention figure: ``(label, without (F, h, w), with (F, h, w) or None)``.

    First the motion map (when MMI ran), then one row per word of the branch's prompt: the mean of the maps of the
    word's tokens (a word the tokenizer splits, such as "jeep" into j, e, e, p, is one row).
    """
    without = maps.without_mmi[branch].float().cpu().numpy()  # (F, h, w, K)
    with_ = maps.with_mmi[branch].float().cpu().numpy() if maps.with_mmi is not None else None
    rows: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    if maps.motion is not None:
        motion = maps.motion.float().cpu().numpy()  # (F, h, w)
        rows.append(("motion map", motion, motion if with_ is not None else None))
    for word, positions in maps.words[branch]:
        rows.append((word, without[..., positions].mean(axis=-1),
                     with_[..., positions].mean(axis=-1) if with_ is not None else None))
    return rows


def attention_grid(maps: AttentionMaps, branch: int, cell: int = 48) -> np.ndarray:
    """Image: rows = motion map + each word of the prompt; columns = frames without MMI | frames with MMI.

    Each cell is one frame's head/step/layer-averaged cross-attention map (a word's tokens averaged), min-max
    normalised on its own; frame indices head the columns (at most ``figures.ATTENTION_FIGURE_FRAMES`` evenly spaced
    frames; the caption says so when frames are left out) and a colour bar at the bottom reads low -> high.
    Returns (H, W, 3) uint8 RGB.
    """
    rows = attention_rows(maps, branch)
    with_mmi = rows[0][2] is not None
    stored = maps.frame_indices  # the video frame of each stored map
    total = maps.video_frames
    keep = figure_frames(len(stored))  # positions in the stored maps: all of them, or evenly spaced ones
    shown = [stored[i] for i in keep]
    rows = [(label, without[keep], None if with_ is None else with_[keep]) for label, without, with_ in rows]
    num_frames = len(shown)
    font, black = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0)
    cw = _heat(rows[0][1][0], cell).shape[1]
    label_w, gap, title_h, index_h, bar_h = 110, 6, 18, 16, 34
    blocks = 2 if with_mmi else 1
    width = max(label_w + blocks * num_frames * cw + (gap if with_mmi else 0), label_w + 260)
    top = title_h + index_h
    height = top + len(rows) * (cell + 2) + bar_h
    image = np.full((height, width, 3), 255, np.uint8)
    for block, title in enumerate(["without MMI", "with MMI"][:blocks]):
        x0 = label_w + block * (num_frames * cw + gap)
        cv2.putText(image, title, (x0, 13), font, 0.45, black, 1, cv2.LINE_AA)
        for f, index in enumerate(shown):
            cv2.putText(image, str(index), (x0 + f * cw + 2, title_h + 11), font, 0.35, black, 1, cv2.LINE_AA)
    for r, (label, without, with_) in enumerate(rows):
        y = top + r * (cell + 2)
        cv2.putText(image, label[:14], (4, y + cell // 2 + 5), font, 0.45, black, 1, cv2.LINE_AA)
        for block, video in enumerate([without, with_][:blocks]):
            for f in range(num_frames):
                x = label_w + block * (num_frames * cw + gap) + f * cw
                image[y:y + cell, x:x + cw] = _heat(video[f], cell)
    # colour bar: the JET scale every cell uses (each cell normalised to its own min and max)
    y = height - bar_h + 6
    ramp = cv2.applyColorMap(np.tile(np.arange(256, dtype=np.uint8), (10, 1)), cv2.COLORMAP_JET)[..., ::-1]
    bar = cv2.resize(ramp, (200, 10), interpolation=cv2.INTER_LINEAR)
    image[y:y + 10, label_w:label_w + 200] = bar
    cv2.putText(image, "low", (label_w - 30, y + 9), font, 0.35, black, 1, cv2.LINE_AA)
    cv2.putText(image, "high", (label_w + 204, y + 9), font, 0.35, black, 1, cv2.LINE_AA)
    caption = "frame index above each column; every map min-max normalised"
    if num_frames < total:
        caption = f"{num_frames} of {total} frames, evenly spaced; " + caption
    cv2.putText(image, caption, (4, y + 24), font, 0.35, black, 1, cv2.LINE_AA)
    return image


def _round_db(value: float) -> float | None:
    """dB rounded for JSON; None for an exact match (infinite PSNR, not valid JSON)."""
    return round(value, 3) if np.isfinite(value) else None


def build_manifest(job: JobResult, config: EditConfig, pipeline: AttentionFlowPipeline, model_dir: Path
                   ) -> dict[str, Any]:
    """Run manifest, from the job's typed result and plan (the config is recorded whole under ``config``): what ran,
    on what, how long each stage took, and what MMI did."""
    import torch

    out, plan = job.output, job.plan
    frames = out.reconstruction  # (F, H, W, 3): the size of the input as edited
    model_note = None
    if job.embedded:
        readme = model_dir / "README.md"
        model_note = readme.read_text(encoding="utf-8").splitlines()[0].lstrip("# ") if readme.exists() else None
    return {
        "command": job.command,
        "argv": sys.argv,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": package_versions(),
        "model": {
            "path": str(model_dir),
            "name": config.pretrained_model_path,
            "embedded": job.embedded,
            "note": model_note,
        },
        "seed": plan.seed,
        "seed_note": SEED_NOTE,
        "device": job.device,
        "threads": torch.get_num_threads(),
        "dtype": str(pipeline.dtype).replace("torch.", ""),
        "frames": int(frames.shape[0]),
        "size": {"width": int(frames.shape[2]), "height": int(frames.shape[1])},
        "source_prompt": out.source_prompt,
        "edits": [
            {"prompt": p, "mode": m, "outputs": n}
            for p, m, n in zip(out.target_prompts, out.edit_modes, job.edit_names)
        ],
        "mmi": {
            "enabled": plan.mmi.enabled,
            "motion_words": out.motion_words,
            "auto_ranking": [{"word": w, "score": round(float(s), 6)} for w, s in out.motion_ranking],
            "strength": plan.mmi.strength,
            "similarity": plan.mmi.similarity,
            "flow": plan.motion.flow,
            "camera_motion": plan.motion.camera_motion,
            "camera_models": None if out.motion is None else list(out.motion.camera_model_kinds),
        },
        "edit_region": {
            "mode": out.edit_region,
            "dilation_latent_px": plan.p2p.region_dilation,
            "moving_share": None if out.region is None else round(float(out.region.mean()), 4),
            "mask": None if out.region is None else "motion/edit_mask.npy",
        },
        "chunk_frames": {"setting": plan.attention.chunk_frames, "used": out.chunk_frames},
        "inversion": {
            "method": out.inversion_method,
            "carries": out.inversion_carries,
            "reused": out.inversion_reused,
            "reconstruction_psnr_db": job.reconstruction_psnr_db,
        },
        "timings_s": {k: round(v, 4) for k, v in job.timings.items()},
        "config": config_to_dict(config),
    }
