"""``attentionflow evaluate``: score an edited video against its source.

Usage::

    attentionflow evaluate SOURCE EDITED [--mask MASKS] [--prompt TEXT] [--source-prompt TEXT]
                                         [--clip PATH] [--json OUT]
    attentionflow evaluate OUTPUT_FOLDER          # the folder an ``edit`` run wrote

SOURCE / EDITED are anything :func:`attentionflow.io.video.read_frames` reads (mp4/avi/mov/webm/mkv,
gif, a folder of PNG/JPG frames). The edited video must have the source's frame count; a different
size is resized to the source's. Metrics are those of :mod:`attentionflow.evaluation.metrics`:

- ``warp_error``: temporal consistency (source flow, occlusions masked), 0-255 grey levels, lower better;
- ``motion_epe``: flow end-point error between source and edited video (pixels), lower better;
- ``psnr`` / ``ssim`` against the source (whole frame), and ``psnr_outside`` / ``ssim_outside``
  outside the edit mask (``--mask``: frames/video of masks with white = edited region, or a ``.npy``
  ``(F, H, W)`` bool array);
- ``flicker``: mean absolute change of the per-frame mean intensity against the source's;
- with ``--clip PATH`` (a local transformers CLIP folder): ``clip_score`` (100 x cosine of each frame
  with the target prompt, averaged), ``clip_frame_consistency`` (mean cosine of consecutive frame
  embeddings) and ``clip_frame_accuracy`` (share of frames closer to the target than to the source
  prompt). Without a CLIP folder (or without the prompts they need) they are absent (``null``).

In the JSON an infinite PSNR (identical pixels) is written as the string ``"inf"``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from attentionflow.errors import ConfigError, InputError, ModelError

if TYPE_CHECKING:  # heavy imports are deferred so that building the CLI parser stays fast
    import numpy as np
    import torch

logger = logging.getLogger(__name__)

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")  # as attentionflow.io.video.IMAGE_EXTENSIONS

#: Metric keys, in table order: (key, column title, higher_is_better).
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("warp_error", "warp err", False),
    ("motion_epe", "motion EPE", False),
    ("psnr", "PSNR", True),
    ("ssim", "SSIM", True),
    ("psnr_outside", "PSNR out", True),
    ("ssim_outside", "SSIM out", True),
    ("flicker", "flicker", False),
    ("clip_score", "CLIP", True),
    ("clip_frame_consistency", "CLIP cons", True),
    ("clip_frame_accuracy", "CLIP acc", True),
)
_MASK_KEYS = ("psnr_outside", "ssim_outside")
_CLIP_KEYS = ("clip_score", "clip_frame_consistency", "clip_frame_accuracy")


@dataclass
class EditedInput:
    """One edited video to score."""

    name: str
    path: str
    prompt: str | None = None
    """Target prompt (for CLIP score / accuracy)."""
    is_reconstruction: bool = False
    """The source-prompt reconstruction of an edit run (frame accuracy is not defined for it)."""


@dataclass
class EvaluationInputs:
    """What to evaluate: a source, its edits, and the prompts."""

    source: str
    edited: list[EditedInput]
    source_prompt: str | None = None
    mask: str | None = None
    manifest: str | None = None


@dataclass
class VideoScores:
    """Scores of one edited video (``None`` = absent)."""

    name: str
    path: str
    prompt: str | None
    metrics: dict[str, float | None] = field(default_factory=dict)


# -------------------------------------------------------------------------------------------------
# inputs


def _video_in(folder: Path, name: str) -> Path | None:
    """Lossless frames ``frames/<name>/`` first, then ``<name>.mp4`` / ``<name>.gif``."""
    frames = folder / "frames" / name
    if frames.is_dir() and any(p.suffix.lower() in _IMAGE_EXTENSIONS for p in frames.iterdir()):
        return frames
    for ext in (".mp4", ".gif"):
        if (folder / f"{name}{ext}").is_file():
            return folder / f"{name}{ext}"
    return None


def is_output_folder(path: str | Path) -> bool:
    """True for a folder written by ``attentionflow edit`` / ``demo`` (it has a ``manifest.json``)."""
    p = Path(path)
    return p.is_dir() and (p / "manifest.json").is_file()


def find_inputs(source: str, edited: str | None = None, *, prompt: str | None = None,
                source_prompt: str | None = None, mask: str | None = None) -> EvaluationInputs:
    """Resolve the command's positional arguments.

    ``evaluate SOURCE EDITED``: one pair. ``evaluate OUTPUT_FOLDER``: the input, the reconstruction and
    every edit listed in the folder's ``manifest.json`` (prompts from the manifest unless given).

    Raises:
        InputError: missing paths, or a single argument that is not an edit output folder.
    """
    if edited is not None:
        return EvaluationInputs(source=source, edited=[EditedInput(Path(edited).stem or str(edited), edited, prompt)],
                                source_prompt=source_prompt, mask=mask)
    folder = Path(source)
    if not is_output_folder(folder):
        raise InputError(f"'{source}' is not an edit output folder (no manifest.json); give SOURCE and EDITED, "
                         "or the folder an 'attentionflow edit' run wrote")
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {manifest_path} ({exc}); expected the JSON manifest of an edit run") from None
    src = _video_in(folder, "input")
    if src is None:
        raise InputError(f"no input video in {folder} (frames/input/, input.mp4 or input.gif)")
    src_prompt = source_prompt if source_prompt is not None else manifest.get("source_prompt")
    items: list[EditedInput] = []
    rec = _video_in(folder, "reconstruction")
    if rec is not None:
        items.append(EditedInput("reconstruction", str(rec), src_prompt, is_reconstruction=True))
    for entry in manifest.get("edits", []):
        name = entry.get("outputs")
        path = _video_in(folder, name) if name else None
        if path is None:
            raise InputError(f"edit '{name}' listed in {manifest_path} has no video in {folder}")
        items.append(EditedInput(name, str(path), prompt if prompt is not None else entry.get("prompt")))
    if not items:
        raise InputError(f"{manifest_path} lists no edits and {folder} has no reconstruction to evaluate")
    return EvaluationInputs(source=str(src), edited=items, source_prompt=src_prompt, mask=mask,
                            manifest=str(manifest_path))


def load_masks(path: str | Path, num_frames: int, height: int, width: int) -> np.ndarray:
    """Edit masks ``(num_frames, height, width)`` bool (True = edited region).

    ``path``: a ``.npy`` array ``(F, H, W)`` (bool, or numbers > 0.5 = edited), or any video input
    of mask images (white = edited; grey level > 127). Masks of another size are resized (nearest).

    Raises:
        InputError: unreadable masks or a frame count other than ``num_frames``.
    """
    import numpy as np

    from attentionflow.evaluation import metrics
    from attentionflow.io.video import read_frames

    p = Path(path)
    if p.suffix.lower() == ".npy":
        if not p.is_file():
            raise InputError(f"mask file not found: {p}")
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read mask array {p} ({exc}); expected a .npy (F, H, W) bool array") from None
        if arr.ndim == 2:
            arr = np.broadcast_to(arr, (num_frames, *arr.shape))
        if arr.ndim != 3:
            raise InputError(f"mask array {p} has shape {arr.shape}; expected (F, H, W)")
        masks = arr.astype(bool) if arr.dtype == bool else np.asarray(arr, np.float32) > 0.5
    else:
        frames = read_frames(p)  # (F, H, W, 3)
        masks = frames.astype(np.float32).mean(axis=-1) > 127.0  # (F, H, W)
    if masks.shape[0] != num_frames:
        raise InputError(f"masks {p} have {masks.shape[0]} frames but the source has {num_frames}; "
                         "give one mask per source frame")
    mh, mw = masks.shape[1:]
    if abs(mw / mh - width / height) > 0.02 * width / height:  # a mask of another shape would be stretched
        raise InputError(f"masks {p} are {mw}x{mh} but the source is {width}x{height}; give masks of the source's "
                         f"size (or the same aspect ratio)")
    return metrics.resize_video(np.ascontiguousarray(masks), height, width, nearest=True)


def load_edited(path: str | Path, num_frames: int, height: int, width: int) -> np.ndarray:
    """Read an edited video and bring it to the source's size ``(num_frames, height, width, 3)`` uint8.

    Raises:
        InputError: unreadable, or a frame count other than ``num_frames``.
    """
    from attentionflow.evaluation import metrics
    from attentionflow.io.video import read_frames

    frames = read_frames(path)
    if frames.shape[0] != num_frames:
        raise InputError(f"edited video {path} has {frames.shape[0]} frames but the source has {num_frames}; "
                         "evaluate videos with the same frames (sample the source the way the edit did)")
    return metrics.resize_video(frames, height, width)


# -------------------------------------------------------------------------------------------------
# CLIP


class ClipScorer:
    """Frame and prompt embeddings from a transformers ``CLIPModel`` (no torchvision needed).

    Args:
        model: a ``transformers.CLIPModel`` (eval mode).
        tokenizer: its ``CLIPTokenizer``.
        mean, std: image normalisation (CLIP's unless the folder's preprocessor config says otherwise).
    """

    def __init__(self, model: Any, tokenizer: Any, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, batch_size: int = 16) -> None:
        from attentionflow.evaluation import metrics

        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.mean = tuple(mean) if mean is not None else metrics.CLIP_MEAN
        self.std = tuple(std) if std is not None else metrics.CLIP_STD
        self.image_size = int(model.config.vision_config.image_size)
        self.max_length = int(min(getattr(tokenizer, "model_max_length", 77),
                                  model.config.text_config.max_position_embeddings))
        self.batch_size = batch_size
        self.device = next(model.parameters()).device

    @classmethod
    def from_folder(cls, path: str | Path, device: str | torch.device = "cpu") -> "ClipScorer":
        """Load a local CLIP folder (``config.json`` + weights + tokenizer files, root or ``tokenizer/``).

        Raises:
            ModelError: missing folder, or it does not load as ``CLIPModel`` / ``CLIPTokenizer``.
        """
        from transformers import CLIPModel, CLIPTokenizer

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise ModelError(f"CLIP folder '{path}' not found or has no config.json; give a local folder saved "
                             "with CLIPModel.save_pretrained (plus its tokenizer files)")
        tok_dir = folder if (folder / "vocab.json").is_file() else folder / "tokenizer"
        try:
            model = CLIPModel.from_pretrained(str(folder), local_files_only=True).to(device)
            tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True, model_max_length=77)
        except (OSError, ValueError, KeyError) as exc:
            msg = " ".join(str(exc).split())[:200]
            raise ModelError(f"cannot load CLIP from '{path}' ({msg}); expected a transformers CLIPModel folder "
                             "with vocab.json/merges.txt") from None
        mean = std = None
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            try:
                cfg = json.loads(pre.read_text(encoding="utf-8"))
                mean, std = cfg.get("image_mean"), cfg.get("image_std")
            except ValueError:
                logger.warning("ignoring unreadable %s; using CLIP's mean/std", pre)
        return cls(model, tokenizer, mean, std)

    def image_embeddings(self, frames: np.ndarray) -> torch.Tensor:
        """``(F, H, W, 3)`` uint8 -> ``(F, D)`` projected image embeddings."""
        import torch

        from attentionflow.evaluation import metrics

        x = metrics.clip_preprocess(frames, self.image_size, self.mean, self.std, device=self.device)
        dtype = next(self.model.parameters()).dtype
        out = []
        with torch.no_grad():
            for chunk in x.split(self.batch_size):  # (b, 3, S, S)
                pooled = self.model.vision_model(pixel_values=chunk.to(dtype)).pooler_output  # (b, hidden)
                out.append(self.model.visual_projection(pooled))  # (b, D)
        return torch.cat(out).float()

    def text_embedding(self, prompt: str) -> torch.Tensor:
        """Prompt -> ``(D,)`` projected text embedding (truncated to the model's context)."""
        import torch

        ids = self.tokenizer([prompt], padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt").input_ids.to(self.device)  # (1, L)
        with torch.no_grad():
            pooled = self.model.text_model(input_ids=ids).pooler_output  # (1, hidden)
            return self.model.text_projection(pooled)[0].float()  # (D,)

    def scores(self, frames: np.ndarray, prompt: str | None, source_prompt: str | None,
               accuracy: bool = True) -> dict[str, float | None]:
        """``clip_score``, ``clip_frame_consistency``, ``clip_frame_accuracy`` (absent ones ``None``)."""
        from attentionflow.evaluation import metrics

        emb = self.image_embeddings(frames)  # (F, D)
        cons = metrics.frame_consistency(emb)
        out: dict[str, float | None] = {"clip_score": None,
                                        "clip_frame_consistency": None if math.isnan(cons) else cons,
                                        "clip_frame_accuracy": None}
        if prompt:
            target = self.text_embedding(prompt)
            out["clip_score"] = float(metrics.clip_text_scores(emb, target).mean())
            if accuracy and source_prompt and source_prompt != prompt:
                out["clip_frame_accuracy"] = metrics.frame_accuracy(emb, target, self.text_embedding(source_prompt))
        return out


# -------------------------------------------------------------------------------------------------
# evaluation


def _clean(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def score_video(source: np.ndarray, edited: np.ndarray, source_fwd: np.ndarray, source_bwd: np.ndarray,
                estimator: Any, mask: np.ndarray | None = None) -> dict[str, float | None]:
    """The metrics that need no model, for one edited video.

    Args:
        source, edited: ``(F, H, W, 3)`` uint8 of the same shape.
        source_fwd, source_bwd: ``(F-1, H, W, 2)`` source flows ``t -> t+1`` and ``t+1 -> t``.
        estimator: flow estimator for the edited video's own flow.
        mask: optional ``(F, H, W)`` bool edit mask (True = edited).
    """
    from attentionflow.evaluation import metrics

    if source.shape != edited.shape:
        raise InputError(f"source {source.shape} and edited {edited.shape} must have the same shape")
    out: dict[str, float | None] = {k: None for k, _, _ in METRICS}
    if len(source) >= 2:
        edited_fwd, _ = metrics.pair_flows(edited, estimator, backward=False)
        out["warp_error"] = _clean(metrics.warp_error(edited, source_fwd, source_bwd))
        out["motion_epe"] = _clean(metrics.flow_epe(source_fwd, edited_fwd))
        out["flicker"] = metrics.flicker(source, edited)
    out["psnr"] = _clean(metrics.psnr(source, edited))
    out["ssim"] = _clean(metrics.ssim(source, edited))
    if mask is not None:
        out["psnr_outside"] = _clean(metrics.psnr(source, edited, mask=~mask))
        out["ssim_outside"] = _clean(metrics.ssim(source, edited, mask=~mask))
    return out


def run_evaluation(inputs: EvaluationInputs, *, clip: str | None = None, flow: str = "dis",
                   device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Score every edited video of ``inputs``; returns the JSON-ready report.

    Report keys: ``source``, ``source_prompt``, ``frames``, ``size``, ``flow``, ``mask``, ``clip``,
    ``source_warp_error`` (the source's own warp error: the floor the flow allows), ``results``
    (``[{"name", "path", "prompt", "metrics": {key: value or None}}]``), ``absent`` (why metrics are
    missing), ``created``.
    """
    from attentionflow.io.video import probe_video, read_frames

    probe_video(inputs.source)  # first: a bad video costs no import of the flow and metric stack
    for item in inputs.edited:
        probe_video(item.path)
    from tqdm.auto import tqdm

    from attentionflow.evaluation import metrics
    from attentionflow.flow import available_flow_estimators, get_flow_estimator

    if flow.lower() not in available_flow_estimators():
        raise ConfigError(f"unknown flow method '{flow}'; choose from: {', '.join(available_flow_estimators())}")
    scorer = None
    if clip:
        from attentionflow.models.loading import select_device

        scorer = ClipScorer.from_folder(clip, device=select_device(device))
    source = read_frames(inputs.source)  # (F, H, W, 3)
    num_frames, height, width = source.shape[:3]
    mask = load_masks(inputs.mask, num_frames, height, width) if inputs.mask else None
    estimator = get_flow_estimator(flow)
    source_warp: float | None = None
    fwd = bwd = None
    if num_frames >= 2:
        fwd, bwd = metrics.pair_flows(source, estimator)  # (F-1, H, W, 2) each
        source_warp = _clean(metrics.warp_error(source, fwd, bwd))
    results: list[VideoScores] = []
    for item in tqdm(inputs.edited, desc="evaluate", disable=not progress, leave=False):
        edited = load_edited(item.path, num_frames, height, width)
        scores = score_video(source, edited, fwd, bwd, estimator, mask)
        if scorer is not None:
            scores.update(scorer.scores(edited, item.prompt, inputs.source_prompt,
                                        accuracy=not item.is_reconstruction))
        results.append(VideoScores(item.name, item.path, item.prompt, scores))
    absent: dict[str, str] = {}
    if scorer is None:
        absent.update({k: "no --clip model folder given" for k in _CLIP_KEYS})
    else:
        if not any(r.prompt for r in results):
            absent.update({k: "no --prompt given" for k in ("clip_score", "clip_frame_accuracy")})
        elif not inputs.source_prompt:
            absent["clip_frame_accuracy"] = "no --source-prompt given"
    if mask is None:
        absent.update({k: "no --mask given" for k in _MASK_KEYS})
    if num_frames < 2:
        absent.update({k: "a single frame has no motion" for k in ("warp_error", "motion_epe", "flicker")})
    return {
        "source": inputs.source,
        "source_prompt": inputs.source_prompt,
        "manifest": inputs.manifest,
        "frames": int(num_frames),
        "size": {"width": int(width), "height": int(height)},
        "flow": flow.lower(),
        "mask": inputs.mask,
        "clip": clip,
        "source_warp_error": source_warp,
        "results": [{"name": r.name, "path": r.path, "prompt": r.prompt, "metrics": r.metrics} for r in results],
        "absent": absent,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table (one row per edited video; columns whose metric is absent everywhere are left
    out and listed below the table)."""
    keys = [(k, title, hib) for k, title, hib in METRICS
            if any(r["metrics"].get(k) is not None for r in report["results"])]
    header = ["video"] + [f"{title} {'^' if hib else 'v'}" for _, title, hib in keys]
    rows = [[r["name"]] + [_fmt(r["metrics"].get(k)) for k, _, _ in keys] for r in report["results"]]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"source: {report['source']} ({report['frames']} frames, {report['size']['width']}x"
             f"{report['size']['height']}); source's own warp error: {_fmt(report['source_warp_error'])}",
             "^ higher is better, v lower is better; warp err / flicker in 0-255 grey levels, EPE in pixels"]
    missing: dict[str, list[str]] = {}
    for k, why in report["absent"].items():
        missing.setdefault(why, []).append(k)
    notes += [f"absent ({why}): {', '.join(ks)}" for why, ks in missing.items()]
    return "\n".join(lines + [""] + notes)


#: The mark of this command's ``--json`` reports (their ``report`` key): only such a file may be replaced.
REPORT_KIND = "attentionflow evaluate"


def to_json(report: dict[str, Any]) -> str:
    """Strict JSON text of a report: infinite values become the string ``"inf"``, NaN becomes null."""

    def fix(obj: Any) -> Any:
        if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
            obj = obj.item()  # numpy / torch scalars
        if isinstance(obj, float) and math.isnan(obj):
            return None
        if isinstance(obj, float) and math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        if isinstance(obj, dict):
            return {k: fix(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [fix(v) for v in obj]
        return obj

    return json.dumps(fix(report), indent=2, allow_nan=False)


# -------------------------------------------------------------------------------------------------
# CLI
