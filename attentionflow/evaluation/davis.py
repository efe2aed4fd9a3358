"""How well the tool knows what moves, on DAVIS sequences or on toy scenes (``attentionflow bench motion``).

Per sequence, the frames are read exactly as an edit reads them (``--frames``, ``--stride``, ``--size``: sampled,
resized and centre-cropped; the true masks go through the same resize and crop). The moving-object masks that
``--edit-region moving`` would use and the maps that MMI injects (:func:`attentionflow.flow.motion.motion_maps`) are
scored with :func:`attentionflow.evaluation.segmentation.score_masks`: J (IoU), F (boundary F-measure), the map's
mass on the object; with the camera model of each frame pair and the seconds per frame (flow included).

Two data sources, one scorer:

- a DAVIS folder: ``JPEGImages[/480p]/<seq>/*.jpg`` and ``Annotations[/480p]/<seq>/*.png`` (or ``Full-Resolution``
  for ``480p``; any frame size; a mask pixel is the object wherever it is not 0, so DAVIS-2016's 0/255 masks, 0/1
  masks and DAVIS-2017's palette masks with several object ids, whose union is the moving object, all read right);
  each frame read is scored against the annotation of its own name, and a frame without one is an error before any
  flow is computed;
- ``--toy``: the scenes of the "motion decides" suite (:data:`attentionflow.evaluation.bench.motion.MOTION_TASKS`),
  whose masks
  are exact (the named mover; direction guidance where the task has a direction).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attentionflow.errors import InputError

__all__ = ["LEVELS", "REPORT_KIND", "DavisSequence", "Protocol", "davis_sources", "find_sequences",
           "format_motion_report", "load_davis", "run_motion_scores", "sequence_files", "toy_sources"]

#: The report's own mark (its JSON ``report`` key): a file that carries it may be replaced with ``--overwrite``.
REPORT_KIND = "attentionflow bench motion"


@dataclass(frozen=True)
class DavisSequence:
    """One sequence of a DAVIS-layout folder."""

    name: str
    images: Path
    annotations: Path


#: DAVIS's resolution levels, the first one present used (480p decodes faster; the protocol resizes either way).
LEVELS = ("480p", "Full-Resolution")


def _level(root: Path, kind: str) -> Path:
    folder = root / kind
    return next((folder / level for level in LEVELS if (folder / level).is_dir()), folder)


def find_sequences(root: str | Path, names: Sequence[str] | None = None) -> list[DavisSequence]:
    """The sequences of a DAVIS folder (with a level of :data:`LEVELS` or none), sorted by name; ``names``: only these.

    Raises:
        InputError: not a DAVIS layout, or a named sequence that it does not hold.
    """
    root = Path(root)
    images, annotations = _level(root, "JPEGImages"), _level(root, "Annotations")
    if not images.is_dir() or not annotations.is_dir():
        raise InputError(f"--davis {root} is not a DAVIS folder; expected JPEGImages[/480p]/<sequence>/*.jpg and "
                         "Annotations[/480p]/<sequence>/*.png in it (or Full-Resolution for 480p)")
    found = {p.name: DavisSequence(p.name, p, annotations / p.name) for p in sorted(images.iterdir())
             if p.is_dir() and (annotations / p.name).is_dir()}
    if not found:
        raise InputError(f"--davis {root} holds no sequence with both frames and annotations")
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise InputError(f"--sequences: {', '.join(missing)} not in {root}; it has: {', '.join(found)}")
        return [found[n] for n in names]
    return list(found.values())


@dataclass(frozen=True)
class Protocol:
    """How frames are read: ``frames`` from the first at ``stride`` (``frames=None``: every frame), resized and
    centre-cropped to ``width x height``."""

    frames: int | None = 16
    stride: int = 2
    width: int = 512
    height: int = 288


def sequence_files(sequence: DavisSequence, protocol: Protocol) -> list[tuple[Path, Path]]:
    """The ``(frame, mask)`` files the protocol reads from a sequence: frames from the first at ``protocol.stride``,
    ``protocol.frames`` of them (a shorter sequence whole), each with the annotation of the same name (stem).

    Cheap (lists two folders): the command checks every sequence with it before any flow is computed.

    Raises:
        InputError: a frame read has no annotation of its name (a set that annotates only some frames, such as
            DAVIS's test sets with the first frame alone, cannot be scored).
    """
    from attentionflow.io.video import frame_files

    picked = frame_files(sequence.images)[::protocol.stride][:protocol.frames]
    masks = {p.stem: p for p in frame_files(sequence.annotations)}
    missing = [p.stem for p in picked if p.stem not in masks]
    if missing:
        raise InputError(f"--davis: {sequence.annotations} has no mask for {len(missing)} of the {len(picked)} "
                         f"frames read (first: {missing[0]}); every frame read needs a mask of its name")
    return [(p, masks[p.stem]) for p in picked]


def load_davis(sequence: DavisSequence, protocol: Protocol) -> tuple[np.ndarray, np.ndarray]:
    """``(frames (N, H, W, 3) uint8, masks (N, H, W) bool)`` of a sequence (:func:`sequence_files`), each frame and
    its mask resized and centre-cropped like an edit reads a video, one at a time."""
    return _read_pairs(sequence_files(sequence, protocol), protocol)


def _read_pairs(pairs: list[tuple[Path, Path]], protocol: Protocol) -> tuple[np.ndarray, np.ndarray]:
    from attentionflow.io.video import read_image, resize_center_crop

    size = (protocol.width, protocol.height)
    frames, masks = [], []
    for image, annotation in pairs:
        frames.append(resize_center_crop(read_image(image)[None], *size)[0])
        ids = read_image(annotation)  # (h, w, 3) as stored
        # object = any id but 0, made 0/255 before the resize, so that a 0/1 or palette mask resizes like a 0/255 one
        binary = np.where(ids.any(axis=-1, keepdims=True), 255, 0).astype(np.uint8).repeat(3, axis=-1)  # as RGB:
        # resize_center_crop resizes frames, and cv2.resize drops a lone channel axis
        masks.append(resize_center_crop(binary[None], *size)[0, ..., 0] >= 128)
    return np.stack(frames), np.stack(masks)


def toy_sources(frames: int, size: int) -> Iterator[tuple[str, np.ndarray, np.ndarray, str | None]]:
    from attentionflow.evaluation.bench.motion import MOTION_TASKS

    for task in MOTION_TASKS:
        if task.attribute == "background":
            continue  # the same scenes as the object tasks
        scene = task.scene(frames, size)
        truth = scene.objects[0].masks if task.direction else scene.moving_masks
        yield task.name.split(":", 1)[1].split("->")[0].strip() + f" ({task.kind}, seed {task.seed})", \
            scene.frames, truth, task.direction


def run_motion_scores(sources: Iterator[tuple[str, np.ndarray, np.ndarray, str | None]], options: Any, *,
                      total: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Score every ``(name, frames, truth, direction)`` of ``sources`` with ``options``
    (:class:`~attentionflow.flow.motion.MotionOptions`; a source's direction overrides it), one source in memory at a
    time (``total``: how many, for the progress bar). Returns the report:
    ``sequences`` (name, frames, size, J, F, mass, object share, camera models, seconds per frame) and ``mean``."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    from attentionflow.evaluation.segmentation import score_masks
    from attentionflow.flow.motion import motion_maps

    rows = []
    for name, frames, truth, direction in tqdm(sources, total=total, desc="bench motion", disable=not progress):
        opts = replace(options, direction=direction) if direction else options
        start = time.perf_counter()
        result = motion_maps(frames, opts)
        seconds = (time.perf_counter() - start) / len(frames)
        scores = score_masks(result.masks, truth, result.maps)
        kinds = result.camera_model_kinds
        rows.append({"sequence": name, "frames": len(frames), "size": f"{frames.shape[2]}x{frames.shape[1]}",
                     **scores, "object_share": float(truth.mean()),
                     "camera_models": {k: kinds.count(k) for k in dict.fromkeys(kinds)},
                     "seconds_per_frame": seconds})
    keys = ("J", "F", "mass", "object_share", "seconds_per_frame")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys} if rows else {}
    if rows:
        mean["J_min"] = float(min(r["J"] for r in rows))
    return {"report": REPORT_KIND, "sequences": rows, "mean": mean}


def format_motion_report(report: dict[str, Any]) -> str:
    """The report as markdown: one row per sequence, then the means."""
    lines = [f"# Knowing what moves: {report.get('source', '')}", "",
             f"Generated {report.get('created', '')} by `{report.get('command', 'attentionflow bench motion')}`.", "",
             "| sequence | frames | J ↑ | F ↑ | mass on object ↑ | object share | camera models | s / frame |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in report["sequences"]:
        models = ", ".join(f"{n} {k}" for k, n in r["camera_models"].items())
        lines.append(f"| {r['sequence']} | {r['frames']} | {r['J']:.3f} | {r['F']:.3f} | {r['mass']:.3f} | "
                     f"{r['object_share']:.3f} | {models} | {r['seconds_per_frame']:.3f} |")
    m = report["mean"]
    if m:
        lines.append(f"| **mean of {len(report['sequences'])}** | | **{m['J']:.3f}** | **{m['F']:.3f}** | "
                     f"**{m['mass']:.3f}** | {m['object_share']:.3f} | | {m['seconds_per_frame']:.3f} |")
        lines += ["", f"Lowest J: {m['J_min']:.3f}."]
    return "\n".join(lines) + "\n"


def davis_sources(sequences: Sequence[DavisSequence], protocol: Protocol
                  ) -> Iterator[tuple[str, np.ndarray, np.ndarray, str | None]]:
    """``(name, frames, masks, None)`` of each sequence, read with ``protocol`` one at a time (bounded memory).

    Every sequence's files are checked here, before the first is read (:func:`sequence_files`): a missing mask is
    one clear error before any flow is computed, not after hours of it.
    """
    pairs = [sequence_files(seq, protocol) for seq in sequences]
    return ((seq.name, *_read_pairs(files, protocol), None) for seq, files in zip(sequences, pairs))
