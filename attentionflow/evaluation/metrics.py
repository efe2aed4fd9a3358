"""Video-editing quality metrics: pure functions on arrays (numpy / OpenCV / torch; no file I/O).

Conventions: a video is ``(F, H, W, 3)`` RGB (uint8, or float on the 0-255 scale); a mask video is
``(F, H, W)`` bool; a flow is ``(H, W, 2)`` float32 ``(u, v)`` in pixels (x right, y down) such that
pixel ``(x, y)`` of frame ``a`` moves to ``(x + u, y + v)`` in frame ``b`` (the convention of
:mod:`attentionflow.flow.estimators`).

Metrics (lower is better unless stated):

- :func:`warp_error` - temporal consistency: edited frame ``t+1`` warped back onto frame ``t`` with
  the *source's* flow, mean absolute RGB difference (0-255 scale) over pixels that are not occluded
  (forward-backward consistency check) and stay inside the frame.
- :func:`flow_epe` - motion fidelity: mean end-point error (pixels) between two flow fields.
- :func:`psnr` / :func:`ssim` - structure preservation against the source (higher is better; PSNR
  from the whole video's MSE, SSIM averaged over frames),
  optionally restricted to a region (e.g. outside an edit mask).
- :func:`flicker` - mean absolute difference between the frame-to-frame change of the per-frame
  mean intensity of the edited video and that of the source.
- CLIP metrics on precomputed embeddings: :func:`clip_text_scores`, :func:`frame_consistency`,
  :func:`frame_accuracy`; :func:`clip_preprocess` prepares frames for a CLIP vision tower.
- Toy-world benchmark helpers: :func:`centroid_path`, :func:`path_error`,
  :func:`attention_localisation`.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from attentionflow.errors import InputError
from attentionflow.io.video import check_video

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "attention_localisation",
    "centroid_path",
    "clip_preprocess",
    "clip_text_scores",
    "flicker",
    "flow_epe",
    "frame_accuracy",
    "frame_consistency",
    "occlusion_mask",
    "pair_flows",
    "path_error",
    "psnr",
    "resize_video",
    "ssim",
    "warp_errors",
    "warp_error",
    "warp_frame",
]

#: CLIP image normalisation (OpenAI CLIP preprocessing).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


# -------------------------------------------------------------------------------------------------
# shape checks and helpers


def _video(frames: np.ndarray, name: str = "video") -> np.ndarray:
    """Check ``(F, H, W, 3)`` and return float32 (0-255 scale)."""
    return check_video(np.asarray(frames), name, uint8=False).astype(np.float32, copy=False)


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise InputError(f"{what}: shapes {a.shape} and {b.shape} differ; resize/sample them to the same shape")


def _masks(mask: np.ndarray | None, shape: tuple[int, int, int], name: str = "mask") -> np.ndarray | None:
    """``None`` or a ``(F, H, W)`` bool mask matching ``shape`` (an ``(H, W)`` mask is broadcast)."""
    if mask is None:
        return None
    m = np.asarray(mask).astype(bool)
    if m.ndim == 2:
        m = np.broadcast_to(m, shape)
    if m.shape != shape:
        raise InputError(f"{name} has shape {m.shape}; expected {shape} (frames, height, width)")
    return m


def resize_video(frames: np.ndarray, height: int, width: int, *, nearest: bool = False) -> np.ndarray:
    """Resize every frame of ``(F, H, W[, C])`` to ``(F, height, width[, C])`` (same dtype).

    Area interpolation when shrinking, bilinear when enlarging; ``nearest=True`` for masks/labels.
    """
    arr = np.asarray(frames)
    if arr.shape[1:3] == (height, width):
        return arr
    shrink = height * width < arr.shape[1] * arr.shape[2]
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    src = arr.astype(np.uint8) if arr.dtype == bool else arr
    out = np.stack([cv2.resize(np.ascontiguousarray(f), (width, height), interpolation=interp) for f in src])
    return out.astype(bool) if arr.dtype == bool else out


# -------------------------------------------------------------------------------------------------
# flow, warping, temporal consistency


def pair_flows(frames: np.ndarray, estimator: Callable[[np.ndarray, np.ndarray], np.ndarray],
               backward: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Forward and backward flows between consecutive frames.

    Args:
        frames: ``(F, H, W, 3)`` uint8, ``F >= 2``.
        estimator: ``estimator(a, b) -> (H, W, 2)`` flow from ``a`` to ``b`` (see
            :func:`attentionflow.flow.get_flow_estimator`).
        backward: also compute ``t+1 -> t``.

    Returns:
        ``fwd (F-1, H, W, 2)`` (``t -> t+1``) and ``bwd (F-1, H, W, 2)`` (``t+1 -> t``) or None.
    """
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[0] < 2:
        raise InputError(f"flow needs at least 2 frames of shape (F, H, W, 3), got {arr.shape}")
    fwd = np.stack([np.asarray(estimator(arr[t], arr[t + 1]), np.float32) for t in range(len(arr) - 1)])
    bwd = (np.stack([np.asarray(estimator(arr[t + 1], arr[t]), np.float32) for t in range(len(arr) - 1)])
           if backward else None)
    return fwd, bwd


def _sample_coords(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Target coordinates ``x + u``, ``y + v`` (each ``(H, W)`` float32) of a flow ``(H, W, 2)``."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)  # (H, W) each
    return xs + flow[..., 0], ys + flow[..., 1]


def warp_frame(frame: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward-warp ``frame`` (frame ``t+1``) onto frame ``t`` with the flow ``t -> t+1``.

    ``out[y, x] = frame[y + v, x + u]`` (bilinear).

    Args:
        frame: ``(H, W, C)`` or ``(H, W)`` array.
        flow: ``(H, W, 2)`` flow ``t -> t+1``.

    Returns:
        ``warped`` (same shape as ``frame``, float32) and ``inside (H, W) bool``: the sample point lies
        inside the frame.
    """
    h, w = flow.shape[:2]
    if frame.shape[:2] != (h, w):
        raise InputError(f"frame {frame.shape[:2]} and flow {flow.shape[:2]} sizes differ")
    map_x, map_y = _sample_coords(flow)
    warped = cv2.remap(np.ascontiguousarray(frame, dtype=np.float32), map_x, map_y, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return warped, inside


def occlusion_mask(fwd: np.ndarray, bwd: np.ndarray, alpha: float = 0.01, beta: float = 0.5) -> np.ndarray:
    """Occluded or leaving pixels of frame ``t`` by forward-backward consistency (Sundaram et al. 2010).

    A pixel is occluded when ``|f + b(x + f)|^2 > alpha (|f|^2 + |b(x + f)|^2) + beta`` or when
    ``x + f`` leaves the frame.

    Args:
        fwd: ``(H, W, 2)`` flow ``t -> t+1``; bwd: ``(H, W, 2)`` flow ``t+1 -> t``.

    Returns:
        ``(H, W)`` bool, True = occluded / not comparable.
    """
    if fwd.shape != bwd.shape or fwd.ndim != 3 or fwd.shape[-1] != 2:
        raise InputError(f"forward/backward flows must both be (H, W, 2), got {fwd.shape} and {bwd.shape}")
    bwd_at, inside = warp_frame(bwd, fwd)  # (H, W, 2): b sampled at x + f
    diff = np.sum((fwd + bwd_at) ** 2, axis=-1)
    bound = alpha * (np.sum(fwd ** 2, axis=-1) + np.sum(bwd_at ** 2, axis=-1)) + beta
    return (diff > bound) | ~inside


def warp_errors(frames: np.ndarray, fwd: np.ndarray, bwd: np.ndarray | None = None,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Per-pair warp error of a video under given flows.

    Args:
        frames: ``(F, H, W, 3)`` video whose consistency is measured (the edited one).
        fwd: ``(F-1, H, W, 2)`` flows ``t -> t+1`` (estimated on the source video).
        bwd: ``(F-1, H, W, 2)`` flows ``t+1 -> t``; with them occluded pixels are left out.
        mask: optional ``(F, H, W)`` bool region of frame ``t`` to measure (e.g. outside an edit).

    Returns:
        ``(F-1,)`` float64: mean absolute RGB difference (0-255 scale) between frame ``t`` and frame
        ``t+1`` warped onto it, over valid pixels (NaN for a pair without valid pixels).
    """
    video = _video(frames, "video")
    f, h, w = video.shape[:3]
    fwd = np.asarray(fwd, np.float32)
    if fwd.shape != (f - 1, h, w, 2):
        raise InputError(f"forward flows have shape {fwd.shape}; expected {(f - 1, h, w, 2)} for a video of "
                         f"{f} frames of {w}x{h}")
    if bwd is not None and np.shape(bwd) != fwd.shape:
        raise InputError(f"backward flows have shape {np.shape(bwd)}; expected {fwd.shape}")
    region = _masks(mask, (f, h, w))
    out = np.empty(f - 1, np.float64)
    for t in range(f - 1):
        warped, valid = warp_frame(video[t + 1], fwd[t])  # (H, W, 3), (H, W)
        if bwd is not None:
            valid &= ~occlusion_mask(fwd[t], np.asarray(bwd[t], np.float32))
        if region is not None:
            valid &= region[t]
        err = np.abs(video[t] - warped).mean(axis=-1)  # (H, W)
        out[t] = float(err[valid].mean()) if valid.any() else math.nan
    return out


def warp_error(frames: np.ndarray, fwd: np.ndarray, bwd: np.ndarray | None = None,
               mask: np.ndarray | None = None) -> float:
    """Mean of :func:`warp_errors` over frame pairs (NaN pairs ignored; NaN if all are)."""
    errs = warp_errors(frames, fwd, bwd, mask)
    return float(np.nanmean(errs)) if np.isfinite(errs).any() else math.nan


def flow_epe(flow_a: np.ndarray, flow_b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean end-point error ``|flow_a - flow_b|`` in pixels.

    Args:
        flow_a, flow_b: ``(..., H, W, 2)`` flows of the same shape (e.g. ``(F-1, H, W, 2)``).
        mask: optional bool mask of shape ``(..., H, W)`` selecting the pixels to average.
    """
    a, b = np.asarray(flow_a, np.float32), np.asarray(flow_b, np.float32)
    _same_shape(a, b, "flow end-point error")
    epe = np.linalg.norm(a - b, axis=-1)  # (..., H, W)
    if mask is not None:
        m = np.asarray(mask, bool)
        if m.shape != epe.shape:
            raise InputError(f"mask has shape {m.shape}; expected {epe.shape}")
        return float(epe[m].mean()) if m.any() else math.nan
    return float(epe.mean())


# -------------------------------------------------------------------------------------------------
# structure preservation


def psnr(source: np.ndarray, edited: np.ndarray, mask: np.ndarray | None = None,
         data_range: float = 255.0) -> float:
    """PSNR (dB) of ``edited`` against ``source`` over the whole video.

    The mean squared error is taken over every selected pixel (and channel) of every frame, then
    ``10 log10(data_range^2 / MSE)``; one identical frame therefore does not make the result infinite.

    Args:
        source, edited: ``(F, H, W, 3)`` videos of the same shape.
        mask: optional ``(F, H, W)`` (or ``(H, W)``) bool: only these pixels count (e.g. outside an
            edit mask).
        data_range: peak value (255 for uint8).

    Returns:
        dB; ``inf`` when the (selected) pixels are identical, NaN when nothing is selected.
    """
    a, b = _video(source, "source"), _video(edited, "edited")
    _same_shape(a, b, "PSNR")
    region = _masks(mask, a.shape[:3])
    sq = ((a - b) ** 2).mean(axis=-1)  # (F, H, W)
    if region is not None:
        if not region.any():
            return math.nan
        sq = sq[region]
    mse = float(sq.mean(dtype=np.float64))
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range ** 2 / mse)


def _ssim_map(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """SSIM map ``(H, W)`` of two ``(H, W, C)`` float images, averaged over channels (Wang et al. 2004)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x ** 2
    syy = blur(y * y) - mu_y ** 2
    sxy = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2)
    s = num / den
    return s.mean(axis=-1) if s.ndim == 3 else s


def ssim(source: np.ndarray, edited: np.ndarray, mask: np.ndarray | None = None,
         data_range: float = 255.0) -> float:
    """Mean over frames of the SSIM of ``edited`` against ``source`` (higher is better, 1 = identical).

    Gaussian window (11x11, sigma 1.5), constants K1 = 0.01, K2 = 0.03 (Wang et al. 2004), per RGB
    channel, averaged. With ``mask`` ``(F, H, W)`` bool the SSIM map is averaged over those pixels only.
    """
    a, b = _video(source, "source"), _video(edited, "edited")
    _same_shape(a, b, "SSIM")
    region = _masks(mask, a.shape[:3])
    values = []
    for t in range(a.shape[0]):
        s = _ssim_map(a[t], b[t], data_range)  # (H, W)
        if region is not None:
            if not region[t].any():
                continue
            s = s[region[t]]
        values.append(float(s.mean()))
    return float(np.mean(values)) if values else math.nan


def flicker(source: np.ndarray, edited: np.ndarray) -> float:
    """Flicker of ``edited`` relative to ``source`` (0-255 scale; 0 = same brightness dynamics).

    ``mean_t |(m_e[t+1] - m_e[t]) - (m_s[t+1] - m_s[t])|`` where ``m[t]`` is the mean intensity
    (all pixels and channels) of frame ``t``. Needs ``F >= 2`` frames; both videos ``(F, H, W, 3)``
    with the same frame count (sizes may differ: only means are compared).
    """
    a, b = _video(source, "source"), _video(edited, "edited")
    if a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise InputError(f"flicker needs two videos with the same number (>= 2) of frames, got "
                         f"{a.shape[0]} and {b.shape[0]}")
    ms, me = a.mean(axis=(1, 2, 3)), b.mean(axis=(1, 2, 3))  # (F,) each
    return float(np.abs(np.diff(me) - np.diff(ms)).mean())


# -------------------------------------------------------------------------------------------------
# CLIP metrics (on embeddings; the model call lives in attentionflow.evaluation.evaluate)


def clip_preprocess(frames: np.ndarray, image_size: int, mean: Sequence[float] = CLIP_MEAN,
                    std: Sequence[float] = CLIP_STD, device: torch.device | str | None = None) -> torch.Tensor:
    """OpenAI CLIP preprocessing without torchvision.

    Resize the shortest side to ``image_size`` (bicubic), center-crop ``image_size`` square, scale to
    [0, 1] and normalise with ``mean``/``std``.

    Args:
        frames: ``(F, H, W, 3)`` uint8 RGB.

    Returns:
        ``(F, 3, image_size, image_size)`` float32 on ``device``.
    """
    video = check_video(np.asarray(frames), uint8=False)
    h, w = video.shape[1:3]
    scale = image_size / min(h, w)
    nh, nw = max(image_size, round(h * scale)), max(image_size, round(w * scale))
    out = np.empty((len(video), image_size, image_size, 3), np.float32)
    for i, frame in enumerate(video):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        r = cv2.resize(np.ascontiguousarray(frame), (nw, nh), interpolation=interp)
        top, left = (nh - image_size) // 2, (nw - image_size) // 2
        out[i] = r[top:top + image_size, left:left + image_size]
    x = torch.from_numpy(out).to(device if device is not None else "cpu")
    x = x.permute(0, 3, 1, 2) / 255.0  # (F, 3, S, S) in [0, 1]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def clip_text_scores(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """CLIP score of each frame with a prompt: ``100 * cos(image, text)``.

    Args:
        image_emb: ``(F, D)`` frame embeddings; text_emb: ``(D,)`` or ``(1, D)`` prompt embedding.

    Returns:
        ``(F,)`` scores in [-100, 100], on the input's device.
    """
    text = text_emb.reshape(1, -1)  # (1, D)
    if image_emb.ndim != 2 or image_emb.shape[1] != text.shape[1]:
        raise InputError(f"image embeddings {tuple(image_emb.shape)} and text embedding {tuple(text_emb.shape)} "
                         "do not match; expected (F, D) and (D,)")
    return 100.0 * (_unit(image_emb) @ _unit(text).T)[:, 0]


def frame_consistency(image_emb: torch.Tensor) -> float:
    """Mean cosine similarity of consecutive frame embeddings ``(F, D)`` (1.0 for identical frames).

    NaN for a single frame.
    """
    if image_emb.ndim != 2:
        raise InputError(f"frame embeddings have shape {tuple(image_emb.shape)}; expected (F, D)")
    if image_emb.shape[0] < 2:
        return math.nan
    u = _unit(image_emb)
    return float((u[1:] * u[:-1]).sum(dim=-1).mean())


def frame_accuracy(image_emb: torch.Tensor, target_emb: torch.Tensor, source_emb: torch.Tensor) -> float:
    """Share of frames closer (cosine) to the target prompt than to the source prompt.

    Args:
        image_emb: ``(F, D)``; target_emb, source_emb: ``(D,)`` or ``(1, D)``.

    Returns:
        Fraction in [0, 1].
    """
    to_target = clip_text_scores(image_emb, target_emb)  # (F,)
    to_source = clip_text_scores(image_emb, source_emb)  # (F,)
    return float((to_target > to_source).float().mean())


# -------------------------------------------------------------------------------------------------
# toy-world benchmark helpers


def centroid_path(masks: np.ndarray) -> np.ndarray:
    """Centroid ``(x, y)`` of each mask: ``(F, H, W)`` bool -> ``(F, 2)`` float64 (NaN for an empty mask)."""
    m = np.asarray(masks, bool)
    if m.ndim != 3:
        raise InputError(f"masks have shape {m.shape}; expected (F, H, W)")
    h, w = m.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w]  # (H, W) each
    area = m.sum(axis=(1, 2)).astype(np.float64)  # (F,)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (m * xs).sum(axis=(1, 2)) / area
        cy = (m * ys).sum(axis=(1, 2)) / area
    return np.stack([cx, cy], axis=1)


def path_error(path: np.ndarray, reference: np.ndarray, remove_offset: bool = False) -> float:
    """Mean Euclidean distance (pixels) between two ``(F, 2)`` paths; frames with NaN are skipped.

    With ``remove_offset`` each path is first centred on its own mean (over the frames valid in both),
    so a constant displacement (e.g. a triangle's centroid sitting lower than a circle's) is no error
    and only the motion is compared.
    """
    p, r = np.asarray(path, np.float64), np.asarray(reference, np.float64)
    _same_shape(p, r, "path error")
    if remove_offset:
        valid = np.isfinite(p).all(axis=-1) & np.isfinite(r).all(axis=-1)  # (F,)
        if not valid.any():
            return math.nan
        p = p - p[valid].mean(axis=0)
        r = r - r[valid].mean(axis=0)
    d = np.linalg.norm(p - r, axis=-1)  # (F,)
    return float(np.nanmean(d)) if np.isfinite(d).any() else math.nan


def attention_localisation(maps: torch.Tensor | np.ndarray, masks: np.ndarray | torch.Tensor) -> float:
    """Share of attention mass inside an object mask.

    Args:
        maps: ``(F, h, w)`` non-negative attention maps (e.g. a word's cross-attention per frame);
            negative values are clipped to 0.
        masks: ``(F, H, W)`` bool object masks at image resolution; they are area-downsampled to
            ``(h, w)`` (fractional coverage per cell) and weight the mass.

    Returns:
        ``sum(map * coverage) / sum(map)`` over all frames, in [0, 1]; NaN if the maps carry no mass.
        Computed with torch on the maps' device.
    """
    a = maps if isinstance(maps, torch.Tensor) else torch.from_numpy(np.asarray(maps, np.float32))
    m = masks if isinstance(masks, torch.Tensor) else torch.from_numpy(np.asarray(masks, bool))
    if a.ndim != 3 or m.ndim != 3 or a.shape[0] != m.shape[0]:
        raise InputError(f"attention maps {tuple(a.shape)} and masks {tuple(m.shape)} must be (F, h, w) and (F, H, W)")
    a = a.detach().float().clamp_min(0.0)
    h, w = a.shape[1:]
    m = m.to(device=a.device, dtype=torch.float32)[:, None]  # (F, 1, H, W)
    cover = torch.nn.functional.adaptive_avg_pool2d(m, (h, w))[:, 0]  # (F, h, w) coverage in [0, 1]
    total = float(a.sum())
    return float((a * cover).sum()) / total if total > 0 else math.nan
