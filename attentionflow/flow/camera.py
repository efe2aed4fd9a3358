"""The camera's motion, removed from a flow field: a RANSAC homography, else an affine map by least median of squares,
else the flow's median translation (the default ``homography`` mode), or per frame pair the homography or the epipolar
geometry, whichever GRIC prefers (``compensate``).

Pure NumPy/OpenCV: this module knows nothing about diffusers or torch.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from attentionflow.flow.segment import pixel_grid

__all__ = [
    "MIN_POINTS",
    "SAMPLE_BORDER",
    "SAMPLE_POINTS",
    "camera_flow",
    "compensate_camera_motion",
    "compensate_camera_motion_robust",
    "estimate_camera_motion",
    "gric",
    "sampson_distance",
]

logger = logging.getLogger(__name__)


#: About this many flow vectors, on a regular grid, are sampled per fit ...
SAMPLE_POINTS: int = 2000
#: ... away from this share of the height and width at each border (flow is least reliable there).
SAMPLE_BORDER: float = 0.05
#: Fewer finite flow vectors than this in the sample: no camera model (the flow is left as it is).
MIN_POINTS: int = 12


def _correspondences(flow: np.ndarray, max_points: int, border: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The finite flow vectors of a regular grid of at most ~``max_points`` pixels of ``flow (H, W, 2)``: their
    integer ``(ys, xs)`` ``(P,)`` and the correspondences ``src = (x, y)``, ``dst = src + flow`` ``(P, 2)`` float32."""
    h, w = flow.shape[:2]
    by, bx = int(border * h), int(border * w)
    y0, y1 = by, max(by + 1, h - by)
    x0, x1 = bx, max(bx + 1, w - bx)
    step = max(1, int(math.ceil(math.sqrt((y1 - y0) * (x1 - x0) / max(1, max_points)))))
    ys, xs = np.meshgrid(np.arange(y0, y1, step), np.arange(x0, x1, step), indexing="ij")  # (gy, gx) each
    ys, xs = ys.ravel(), xs.ravel()
    src = np.stack([xs, ys], axis=1).astype(np.float32)  # (P, 2) x, y
    dst = src + flow[ys, xs].astype(np.float32)  # (P, 2)
    ok = np.isfinite(dst).all(axis=1)
    return ys[ok], xs[ok], src[ok], dst[ok]


def estimate_camera_motion(
    flow: np.ndarray,
    *,
    ransac_threshold: float = 1.0,
    max_points: int = SAMPLE_POINTS,
    border: float = SAMPLE_BORDER,
    min_points: int = MIN_POINTS,
    min_inlier_ratio: float = 0.25,
) -> tuple[np.ndarray | None, str]:
    """The camera's (dominant) motion in a flow field: a RANSAC homography; where none explains at least
    ``min_inlier_ratio`` of the sample within ``ransac_threshold`` pixels (rippling water, waves, heavy noise), an
    affine map by least median of squares, which needs no threshold, so noise that leaves no consensus within a pixel
    still leaves a fit: a zoom or a roll under ripples stays the camera's (affine, not projective: fewer parameters
    for the noise to bend, least at the corners); where that degenerates too, the translation of the flow's median.
    Raw flow there would put the camera's whole motion on the moving water and none on a subject the camera follows.

    Args:
        flow: ``(H, W, 2)`` flow in pixels (x, y; y down).
        ransac_threshold: RANSAC reprojection threshold in pixels.
        max_points, border: the sample (:data:`SAMPLE_POINTS`, :data:`SAMPLE_BORDER`).
        min_points: fewer finite flow vectors than this -> no model.

    Returns:
        ``(matrix, kind)``: the ``3 x 3`` float64 matrix mapping homogeneous pixel coordinates ``(x, y, 1)`` of the
        frame to the next frame and ``"homography"``, ``"affine"`` (the least-median fallback) or ``"translation"``;
        ``(None, "none")`` without enough flow.
    """
    h, w = flow.shape[:2]
    ys, xs, src, dst = _correspondences(flow, max_points, border)
    if len(src) < max(min_points, 4):
        logger.debug("camera-motion fit skipped: %d correspondences", len(src))
        return None, "none"
    matrix, inliers = cv2.findHomography(src, dst, cv2.RANSAC, ransac_threshold)
    # The projective denominator must stay positive over the whole image (no point sent to infinity).
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64)
    if matrix is not None and inliers is not None and np.isfinite(matrix).all() \
            and np.count_nonzero(inliers) / len(src) >= min_inlier_ratio and (corners @ matrix[2]).min() > 1e-6:
        return matrix.astype(np.float64), "homography"
    affine, _ = cv2.estimateAffine2D(src, dst, method=cv2.LMEDS)  # (2, 3) or None
    if affine is not None and np.isfinite(affine).all() and np.linalg.det(affine[:, :2]) > 0:  # not collapsed
        logger.debug("no homography explains the flow within the threshold: an affine map by least median")
        return np.vstack([affine, [0.0, 0.0, 1.0]]).astype(np.float64), "affine"
    logger.debug("no homography explains the flow: its median translation")
    tx, ty = np.median(flow[ys, xs].astype(np.float64), axis=0)
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]]), "translation"


def camera_flow(matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """Flow induced by a ``3 x 3`` pixel transform: ``(H, W, 2)`` float32, ``T(p) - p`` at every pixel."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)  # (H, W) each
    m = matrix
    den = m[2, 0] * xs + m[2, 1] * ys + m[2, 2]
    u = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]) / den - xs
    v = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]) / den - ys
    return np.stack([u, v], axis=-1).astype(np.float32)  # (H, W, 2)


def compensate_camera_motion(flow: np.ndarray, **fit_kwargs: object) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Subtract the camera's motion (:func:`estimate_camera_motion`) from one flow field.

    Args:
        flow: ``(H, W, 2)`` float32 flow.
        **fit_kwargs: passed to :func:`estimate_camera_motion`.

    Returns:
        ``(residual (H, W, 2) float32, 3 x 3 matrix or None, kind)``, ``kind`` ``"homography"``, ``"affine"``,
        ``"translation"`` or ``"none"`` (too few finite flow vectors: ``flow`` itself, unchanged).
    """
    matrix, kind = estimate_camera_motion(flow, **fit_kwargs)  # type: ignore[arg-type]
    if matrix is None:
        return flow, None, kind
    return (flow - camera_flow(matrix, flow.shape[0], flow.shape[1])).astype(np.float32), matrix, kind


def gric(squared_errors: np.ndarray, sigma2: float, dimension: int, parameters: int) -> float:
    """Torr's geometric robust information criterion of a two-view model (lower is better).

    ``squared_errors``: ``(n,)`` squared residuals (pixels^2) of ``n`` correspondences (r = 4 coordinates each);
    ``sigma2``: the noise variance; ``dimension``: the model's manifold dimension (homography 2, fundamental matrix
    3); ``parameters``: its degrees of freedom (8, 7). ``sum(min(e^2 / sigma^2, 2 (r - d))) + ln(r) d n + ln(r n) k``.
    """
    n, r = len(squared_errors), 4
    rho = np.minimum(squared_errors / sigma2, 2.0 * (r - dimension))
    return float(rho.sum() + math.log(r) * dimension * n + math.log(r * n) * parameters)


def sampson_distance(flow: np.ndarray, fundamental: np.ndarray, points: tuple[np.ndarray, np.ndarray] | None = None
                     ) -> np.ndarray:
    """Sampson distance (pixels) of correspondences ``(p, p + flow(p))`` from the epipolar geometry ``fundamental``.

    ``flow``: ``(H, W, 2)``; ``points``: ``(ys, xs)`` integer pixels to score (None: every pixel). Returns ``(H, W)``
    (or ``(P,)`` for ``points``) float32: ``|x2^T F x1| / sqrt((F x1)_1^2 + (F x1)_2^2 + (F^T x2)_1^2 + (F^T x2)_2^2)``
    with ``x1 = (x, y, 1)`` and ``x2 = x1 + (u, v, 0)``, written out per element (float32: a 512x512 frame in a few
    milliseconds).
    """
    f = fundamental.astype(np.float64) / max(float(np.abs(fundamental).max()), 1e-12)  # scale-free
    f = f.astype(np.float32)
    if points is None:
        ys, xs = pixel_grid(flow.shape[0], flow.shape[1])  # (H, W) each
        u, v = flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32)
    else:
        ys, xs = points[0].astype(np.float32), points[1].astype(np.float32)
        u, v = flow[points[0], points[1], 0].astype(np.float32), flow[points[0], points[1], 1].astype(np.float32)
    x2, y2 = xs + u, ys + v
    a = f[0, 0] * xs + f[0, 1] * ys + f[0, 2]  # F x1: the epipolar line in the second view
    b = f[1, 0] * xs + f[1, 1] * ys + f[1, 2]
    c = f[2, 0] * xs + f[2, 1] * ys + f[2, 2]
    a2 = f[0, 0] * x2 + f[1, 0] * y2 + f[2, 0]  # F^T x2: the epipolar line in the first view
    b2 = f[0, 1] * x2 + f[1, 1] * y2 + f[2, 1]
    num = np.abs(x2 * a + y2 * b + c)
    return (num / np.sqrt(np.maximum(a * a + b * b + a2 * a2 + b2 * b2, 1e-12))).astype(np.float32)


def compensate_camera_motion_robust(
    flow: np.ndarray, *, max_points: int = SAMPLE_POINTS, border: float = SAMPLE_BORDER,
    epipolar_threshold: float = 0.5, floor: float = 2.0, plane_share: float = 0.7, still_motion: float = 0.5,
    fit_points: int = 500,
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Remove the camera's motion from one flow field, a homography or the epipolar geometry, whichever fits.

    1. A quick homography (USAC, ``fit_points`` of the grid's correspondences): when it explains at least
       ``plane_share`` of them within 1 pixel, the camera stands still, rotates, zooms or pans over a far or flat
       scene. The fundamental matrix is degenerate there (it would also explain an object translating along the
       epipolar direction), so the homography of :func:`compensate_camera_motion` is used: the same result as
       ``camera_motion="homography"``. Measured (``benchmarks/bench_motion_maps.py``): static and panning shots
       0.84-1.0 of the points, tracking shots and a swimming swan 0.34-0.55. The same when the median motion is
       under ``still_motion`` pixels: a camera that does not move shows no parallax (a large object in a small
       static frame can leave the homography under ``plane_share``: 0.69 on a toy clip).
    2. Otherwise a fundamental matrix is fitted too (USAC), and GRIC (:func:`gric`, noise from the median residual of
       the better-fitting model) picks one. The fundamental matrix (a moving camera over a scene with depth: every
       static point lies on its epipolar line, whatever its depth; an independently moving one does not): the
       residual's magnitude is the pixel's Sampson distance minus ``floor`` times the frame's median distance (flow
       noise), zero where the pixel leaves the frame (no correspondence), and its direction the quick homography's
       residual (for direction guidance).

    Returns:
        ``(residual (H, W, 2) float32, homography or None, kind)`` with ``kind`` ``"homography"``, ``"affine"`` or
        ``"translation"`` (:func:`estimate_camera_motion`'s fallbacks), ``"epipolar"`` or ``"none"`` (too few finite
        flow vectors: ``flow`` unchanged).
    """
    h, w = flow.shape[:2]

    def plane() -> tuple[np.ndarray, np.ndarray | None, str]:  # exactly the ``homography`` mode's result
        return compensate_camera_motion(flow, max_points=max_points, border=border)

    ys, xs, src, dst = _correspondences(flow, max_points, border)  # (P,) x2, (P, 2) x2
    if len(src) < 16:
        return flow, None, "none"
    step = max(1, len(src) // fit_points)
    fit_src, fit_dst = src[::step], dst[::step]  # (P', 2): enough for the quick fits
    moves = np.linalg.norm(dst - src, axis=1)  # (P,) the raw motion
    quick, _ = cv2.findHomography(fit_src, fit_dst, cv2.USAC_FAST, 1.0)
    if quick is not None and np.isfinite(quick).all():
        e_h = np.linalg.norm(cv2.perspectiveTransform(src[None], quick)[0] - dst, axis=1)  # (P,)
    else:
        quick, e_h = None, moves  # no plane: the raw motion
    still = float(np.median(moves)) < still_motion  # no measurable parallax
    if quick is not None and (still or float((e_h < 1.0).mean()) >= plane_share):
        return plane()
    fundamental, _ = cv2.findFundamentalMat(fit_src, fit_dst, cv2.USAC_FAST, epipolar_threshold, 0.999)
    if fundamental is None or fundamental.shape != (3, 3) or not np.isfinite(fundamental).all():
        return plane()
    e_f = sampson_distance(flow, fundamental, (ys, xs))  # (P,)
    sigma = max(1.4826 * float(np.median(np.minimum(e_h, e_f))), 0.05)  # robust noise scale, pixels
    if quick is not None and \
            gric(e_h.astype(np.float64) ** 2, sigma**2, 2, 8) <= gric(e_f.astype(np.float64) ** 2, sigma**2, 3, 7):
        return plane()
    distance = sampson_distance(flow, fundamental)  # (H, W)
    score = np.maximum(distance - floor * float(np.median(distance)), 0.0)  # (H, W) pixels above the noise
    gy, gx = pixel_grid(h, w)
    tx, ty = gx + flow[..., 0], gy + flow[..., 1]  # where each pixel goes
    score[(tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)] = 0.0  # it leaves the frame: no correspondence
    moved = flow.astype(np.float32) if quick is None else (flow - camera_flow(quick, h, w)).astype(np.float32)
    length = np.sqrt(moved[..., 0] ** 2 + moved[..., 1] ** 2)[..., None]  # (H, W, 1)
    return (moved * (score[..., None] / np.maximum(length, 1e-6))).astype(np.float32), quick, "epipolar"
