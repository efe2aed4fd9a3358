"""What moves: a soft motion score and a moving-object mask per frame, from camera-compensated flow over the clip.

:func:`segment_motion` turns the residual (camera-compensated) motion of a clip into

- ``score`` ``(N, H, W)`` in ``[0, 1]``: how surely each pixel belongs to an independently moving object;
- ``masks`` ``(N, H, W)`` bool: the moving object(s) (what ``edit_region moving`` edits).

Steps (every constant below is a module constant; the figures that chose them are in ``docs/benchmarks.md``):

1. **Reliable motion.** A pixel's residual counts only where its flow is forward-backward consistent
   (:data:`FB_PIXELS` + :data:`FB_SHARE` of its own length: occlusions, reflections and splashes are not) and
   observed (:func:`observed`: a still-looking pixel on a patch without texture in two directions, such as sky, has
   no measured motion, and its residual, minus the camera's motion, is not evidence), scaled by
   its **coherence** along its trajectory over the next :data:`COHERENCE_STEPS` frames (``(|sum r| / sum |r|)^2``: a
   rigid mover keeps its heading, ripples and waves do not; not asked of the ``compensate`` mode's epipolar pairs,
   :mod:`.motion`).
2. **Per-frame evidence**: the magnitude above the frame's median, divided by its spread (the 99.5th percentile
   minus the median, at least :data:`SPREAD_FLOOR` pixels), clipped to ``[0, 1]``. A frame whose peak motion is
   below ``min_motion`` is static: 0.
3. **Along trajectories**: a forward and a backward pass carry each frame's evidence to the next along the flow,
   decaying by :data:`CARRY` per frame (``max`` with the frame's own), and the two passes are averaged: a part of a
   mover that is slow or still for a few frames keeps its evidence.
4. **Colour over the whole clip**: colour histograms (CIE Lab, 16 bins a channel) of the confident object pixels
   (evidence >= 0.5) and background pixels (< 0.2) of every frame give a per-pixel object posterior; the score is
   0.3 of the evidence plus 0.7 of that posterior (the posterior counts only where there is some evidence: a static
   look-alike of the mover stays out).
5. **Edges and time**: a guided filter (He et al.) on the frame's grey levels snaps the score to image edges, then
   the score is averaged with its neighbours' carried along the flow.
6. **Masks**, by hysteresis (as Canny's edges): a pixel is in when its score reaches :data:`THRESHOLD`, or reaches a
   lower threshold (:data:`LOW_RATIO` of the clip's median score over :data:`THRESHOLD`) and is connected to such a
   pixel through pixels that do (:func:`hysteresis`): the weakly moving parts of an object joined to its strongly
   moving core stay in, weak motion elsewhere stays out. Connected parts holding less than :data:`PART_SHARE` of the
   largest part's score are dropped; a frame left empty between frames that hold the object takes its neighbour's
   mask carried along the flow. Each mask is then snapped to the frame's colour edges with GrabCut
   (:func:`snap_to_edges`), kept only where the snapped mask still agrees with it.

Pure NumPy/OpenCV: this module knows nothing about diffusers or torch.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

__all__ = [
    "APERTURE_FLOW",
    "APERTURE_GRADIENT",
    "CARRY",
    "FB_PIXELS",
    "FB_SHARE",
    "LOW_RATIO",
    "PART_SHARE",
    "SPREAD_FLOOR",
    "THRESHOLD",
    "carry_along_flow",
    "clip_colour_posterior",
    "coherence",
    "edge_radius",
    "forward_backward_error",
    "guided_filter",
    "hysteresis",
    "observed",
    "pixel_grid",
    "reliable",
    "segment_motion",
    "snap_to_edges",
    "warp",
]

#: Forward-backward inconsistency (pixels) above which a pixel's flow is unreliable ...
FB_PIXELS: float = 1.5
#: ... plus this share of the flow's own length (fast motion is matched less exactly).
FB_SHARE: float = 0.05
#: A pixel whose flow is under this many pixels ...
APERTURE_FLOW: float = 0.5
#: ... on a patch whose grey levels change by less than this (levels of 255 per pixel, RMS) in their weakest
#: direction (the structure tensor's smaller eigenvalue, over :func:`edge_radius`) has no observed motion.
APERTURE_GRADIENT: float = 1.0
#: Frames ahead along a trajectory over which a pixel's residual motion must keep its heading (:func:`coherence`).
COHERENCE_STEPS: int = 3
#: Smallest spread (pixels) a frame's evidence is divided by: flow noise on a nearly still frame is not stretched.
SPREAD_FLOOR: float = 0.3
#: Share of evidence kept per frame as it is carried along a trajectory.
CARRY: float = 0.7
#: Carried evidence at and above which a pixel trains the clip's object colours ...
CONFIDENT_OBJECT: float = 0.5
#: ... and below which it trains the background colours.
CONFIDENT_BACKGROUND: float = 0.2
#: Weight of the clip's colour posterior in the score (the rest is motion evidence).
COLOUR_WEIGHT: float = 0.7
#: Colour's weight ramps from 0 to :data:`COLOUR_WEIGHT` as its separation of the confident object and background
#: samples (:func:`clip_colour_posterior`) goes from the first to the second value: colour that cannot tell them apart
#: (a textured object on the same texture) has no say.
COLOUR_SEPARATION: tuple[float, float] = (0.1, 0.2)
#: Weight of the neighbours' scores (carried along the flow) in a frame's final score.
TEMPORAL_WEIGHT: float = 0.5
#: Score at and above which a pixel is in the moving-object mask ...
THRESHOLD: float = 0.3
#: ... and, connected to such pixels, this share of the clip's median score over :data:`THRESHOLD` (at most
#: :data:`THRESHOLD`): the hysteresis's low threshold scales with how strongly the clip's objects stand out.
LOW_RATIO: float = 0.5
#: A connected part of a mask is kept when it holds at least this share of the largest part's score.
PART_SHARE: float = 0.3
#: A mask snapped to colour edges (:func:`snap_to_edges`) is kept only if its IoU with the unsnapped mask is at least
#: this: low enough that trimming a halo of the flow's bleed as wide as the object's own edge band is a snap.
SNAP_AGREEMENT: float = 0.4
#: GrabCut runs on at most about this many pixels (a larger crop is scaled down and its result scaled back up).
SNAP_PIXELS: int = 40_000
#: Outside the (dilated) masks, the soft map that MMI injects keeps this share of the score.
OUTSIDE_SHARE: float = 0.2


@functools.lru_cache(maxsize=8)
def pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ys, xs)`` float32 ``(H, W)`` pixel coordinates (cached: one per frame size; read-only)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def warp(values: np.ndarray, flow: np.ndarray, border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """``values`` sampled where each pixel goes: ``out(p) = values(p + flow(p))`` (bilinear; outside the frame 0, or
    the nearest edge value with ``border=cv2.BORDER_REPLICATE``).

    ``values``: ``(H, W)`` or ``(H, W, C)``; ``flow``: ``(H, W, 2)`` from this frame to the frame of ``values``.
    """
    ys, xs = pixel_grid(*flow.shape[:2])
    return cv2.remap(values.astype(np.float32), xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=border, borderValue=0)


def forward_backward_error(flow_ab: np.ndarray, flow_ba: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 forward-backward inconsistency ``|f_ab(p) + f_ba(p + f_ab(p))|`` in pixels.

    A pixel that is seen in both frames and matched correctly comes back where it started (about 0); occluded pixels,
    pixels leaving the frame and unreliable matches (specular reflections, splashes) do not. ``flow_ab``/``flow_ba``:
    ``(H, W, 2)`` flows between the same two frames in both directions.
    """
    back = warp(flow_ba, flow_ab, cv2.BORDER_REPLICATE)  # (H, W, 2)
    return np.hypot(flow_ab[..., 0] + back[..., 0], flow_ab[..., 1] + back[..., 1]).astype(np.float32)


def reliable(flow: np.ndarray, back: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: where ``flow (H, W, 2)`` comes back to its start under ``back`` (the reverse flow), within
    :data:`FB_PIXELS` + :data:`FB_SHARE` of its length."""
    return forward_backward_error(flow, back) <= FB_PIXELS + FB_SHARE * np.linalg.norm(flow, axis=-1)


def edge_radius(height: int, width: int) -> int:
    """Pixels over which the flow bleeds across an object's edge (8 at a 288-px short side): the window of the
    texture test, the guided filter and the masks' snapping ring."""
    return max(1, round(min(height, width) / 36))


def observed(frame: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: where the flow ``(H, W, 2)`` of ``frame (H, W, 3)`` uint8 RGB measures motion: it is at
    least :data:`APERTURE_FLOW` px, or the patch around it has texture in two directions (:data:`APERTURE_GRADIENT`).

    The aperture problem: on a patch without two-directional texture (sky, still water, a plain wall) a flow
    estimator has no data, and returns about zero or its neighbours' flow; the zero is not a measurement of
    stillness, so under a moving camera it would read as the camera's motion reversed."""
    radius = edge_radius(*frame.shape[:2])
    grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3) / 8  # Sobel's 3x3 kernel weighs a unit ramp 8
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3) / 8
    size = (2 * radius + 1, 2 * radius + 1)
    a, b, c = (cv2.boxFilter(v, -1, size) for v in (gx * gx, gx * gy, gy * gy))
    weakest = (a + c) / 2 - np.sqrt(((a - c) / 2) ** 2 + b * b)  # (H, W) smaller eigenvalue, levels^2 / px^2
    return (np.linalg.norm(flow, axis=-1) >= APERTURE_FLOW) | (weakest >= APERTURE_GRADIENT ** 2)


def coherence(residual: np.ndarray, forward: np.ndarray, steps: int = COHERENCE_STEPS) -> np.ndarray:
    """``(N, H, W)`` in ``[0, 1]``: how steadily each pixel's residual motion ``(N, H, W, 2)`` keeps its heading along
    its trajectory over the next ``steps`` frames (``forward (N-1, H, W, 2)``, entry ``i`` the flow ``i -> i+1``):
    ``(|sum r| / sum |r|)^2`` of the residuals met on the way (a rigid mover about 1; ripples, waves and jitter, whose
    motion turns back, much less; squared: a half-coherent path counts a quarter). The last frame takes the one
    before it's (1 for a single frame)."""
    n, h, w = residual.shape[:3]
    out = np.ones((n, h, w), np.float32)
    ys, xs = pixel_grid(h, w)
    for i in range(n - 1):
        px, py = xs.copy(), ys.copy()
        net = residual[i].astype(np.float32).copy()
        path = np.linalg.norm(net, axis=-1)
        for k in range(min(steps, n - 1 - i)):  # follow the trajectory one frame at a time
            step = cv2.remap(forward[i + k].astype(np.float32), px, py, cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
            px, py = px + step[..., 0], py + step[..., 1]
            met = cv2.remap(residual[i + k + 1].astype(np.float32), px, py, cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            net += met
            path += np.linalg.norm(met, axis=-1)
        out[i] = np.clip(np.linalg.norm(net, axis=-1) / (path + 1e-3), 0.0, 1.0) ** 2
    if n > 1:
        out[n - 1] = out[n - 2]
    return out


def carry_along_flow(evidence: np.ndarray, forward: np.ndarray, backward: np.ndarray, carry: float = CARRY
                     ) -> np.ndarray:
    """Evidence ``(N, H, W)`` accumulated along trajectories (step 3 of the module docstring).

    ``forward[i]``: flow ``i -> i+1``; ``backward[i]``: flow ``i+1 -> i`` (both ``(N-1, H, W, 2)``).
    """
    n = len(evidence)
    ahead = evidence.astype(np.float32).copy()
    for i in range(1, n):
        ahead[i] = np.maximum(evidence[i], carry * warp(ahead[i - 1], backward[i - 1]))
    behind = evidence.astype(np.float32).copy()
    for i in range(n - 2, -1, -1):
        behind[i] = np.maximum(evidence[i], carry * warp(behind[i + 1], forward[i]))
    return (ahead + behind) / 2


def clip_colour_posterior(frames: np.ndarray, evidence: np.ndarray) -> tuple[np.ndarray, float]:
    """``(N, H, W)`` object posterior of each pixel's colour, from Lab histograms over the whole clip of confident
    object (evidence >= 0.5) and background (< 0.2) pixels, and how well colour separates them (the mean posterior
    of the object samples minus the background samples', in ``[0, 1]``); ``frames`` ``(N, H, W, 3)`` uint8 RGB."""
    lab = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2LAB) for f in frames]) // 16  # (N, H, W, 3), 16 bins a channel
    index = (lab[..., 0].astype(np.int32) * 16 + lab[..., 1]) * 16 + lab[..., 2]  # (N, H, W)
    fg = (evidence >= CONFIDENT_OBJECT).ravel()
    bg = (evidence < CONFIDENT_BACKGROUND).ravel()
    if not fg.any() or not bg.any():
        return np.zeros(evidence.shape, np.float32), 0.0
    flat = index.ravel()
    h_fg = np.bincount(flat[fg], minlength=4096) + 1e-3
    h_bg = np.bincount(flat[bg], minlength=4096) + 1e-3
    prior = fg.sum() / (fg.sum() + bg.sum())
    p_fg, p_bg = h_fg / h_fg.sum() * prior, h_bg / h_bg.sum() * (1 - prior)
    posterior = (p_fg / (p_fg + p_bg)).astype(np.float32)[index]  # (N, H, W)
    flat_post = posterior.ravel()
    separation = float(np.clip(flat_post[fg].mean() - flat_post[bg].mean(), 0.0, 1.0))
    return posterior, separation


def guided_filter(guide: np.ndarray, values: np.ndarray, radius: int, eps: float = 1e-3) -> np.ndarray:
    """He et al.'s guided filter: ``values (H, W)`` smoothed within the edges of ``guide (H, W)`` float32 in
    ``[0, 1]``; box windows of ``2 radius + 1``."""
    size = (2 * radius + 1, 2 * radius + 1)
    g, v = guide.astype(np.float32), values.astype(np.float32)
    mean_g, mean_v = cv2.boxFilter(g, -1, size), cv2.boxFilter(v, -1, size)
    cov = cv2.boxFilter(g * v, -1, size) - mean_g * mean_v
    var = cv2.boxFilter(g * g, -1, size) - mean_g * mean_g
    a = cov / (var + eps)
    b = mean_v - a * mean_g
    return cv2.boxFilter(a, -1, size) * g + cv2.boxFilter(b, -1, size)


def _evidence(magnitudes: np.ndarray, min_motion: float) -> np.ndarray:
    flat = magnitudes.reshape(len(magnitudes), -1)
    low = np.median(flat, axis=1)
    spread = np.maximum(np.percentile(flat, 99.5, axis=1) - low, SPREAD_FLOOR)
    out = np.clip((magnitudes - low[:, None, None]) / spread[:, None, None], 0.0, 1.0)
    out[flat.max(axis=1) < min_motion] = 0.0  # a static frame: flow noise is not motion
    return out.astype(np.float32)


def hysteresis(score: np.ndarray, low: float, high: float) -> np.ndarray:
    """``(H, W)`` bool: the connected parts (8-connected) of ``score (H, W) >= low`` that hold a pixel ``>= high``."""
    count, labels = cv2.connectedComponents((score >= low).astype(np.uint8), connectivity=8)
    seeds = np.unique(labels[score >= high])
    return np.isin(labels, seeds[seeds > 0])


def _keep_strong_parts(mask: np.ndarray, score: np.ndarray) -> np.ndarray:
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    mass = np.bincount(labels.ravel(), weights=score.ravel(), minlength=count)[1:]  # (count - 1,)
    keep = np.flatnonzero(mass >= PART_SHARE * mass.max()) + 1
    return np.isin(labels, keep)


def _fill_empty(masks: np.ndarray, forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Frames with an empty mask take the nearest earlier (else later) frame's mask, carried along the flow."""
    out = masks.copy()
    empty = ~out.reshape(len(out), -1).any(axis=1)
    if empty.all() or not empty.any():
        return out
    for i in range(1, len(out)):  # forward: frame i-1 seen from frame i
        if empty[i] and not empty[i - 1]:
            out[i] = warp(out[i - 1].astype(np.float32), backward[i - 1]) >= 0.5
            empty[i] = not out[i].any()
    for i in range(len(out) - 2, -1, -1):
        if empty[i] and not empty[i + 1]:
            out[i] = warp(out[i + 1].astype(np.float32), forward[i]) >= 0.5
            empty[i] = not out[i].any()
    return out


def snap_to_edges(frame: np.ndarray, mask: np.ndarray, grow: int, iterations: int = 3) -> np.ndarray:
    """``mask (H, W)`` bool snapped to the colour edges of ``frame (H, W, 3)`` uint8 RGB with OpenCV's GrabCut: mask
    pixels start as "probably object", a ring of ``grow`` pixels around them as "probably background", everything
    farther as background. Returns the snapped mask, or ``mask`` itself when GrabCut cannot model the crop or its
    result agrees with ``mask`` by an IoU under :data:`SNAP_AGREEMENT` (it then explains something else)."""
    h, w = mask.shape
    if not mask.any():
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    near = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)  # (H, W)
    ys, xs = np.nonzero(near)
    y0, y1 = max(0, ys.min() - grow), min(h, ys.max() + 1 + grow)
    x0, x1 = max(0, xs.min() - grow), min(w, xs.max() + 1 + grow)
    init = np.full((h, w), cv2.GC_BGD, np.uint8)
    init[near] = cv2.GC_PR_BGD
    init[mask] = cv2.GC_PR_FGD
    labels = np.ascontiguousarray(init[y0:y1, x0:x1])
    if (labels == cv2.GC_BGD).sum() < 8:  # GrabCut needs both models
        return mask
    crop = np.ascontiguousarray(frame[y0:y1, x0:x1, ::-1])  # BGR, as OpenCV wants
    ch, cw = labels.shape
    scale = min(1.0, (SNAP_PIXELS / (ch * cw)) ** 0.5)  # GrabCut's time grows with the crop: bound it
    if scale < 1.0:
        size = (max(8, round(cw * scale)), max(8, round(ch * scale)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
    cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's global RNG: same input, same mask
    try:
        cv2.grabCut(crop, labels, None, np.zeros((1, 65)), np.zeros((1, 65)), iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return mask
    if scale < 1.0:
        labels = cv2.resize(labels, (cw, ch), interpolation=cv2.INTER_NEAREST)
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    union = (out | mask).sum()
    return out if union and (out & mask).sum() / union >= SNAP_AGREEMENT else mask


def segment_motion(frames: np.ndarray, magnitudes: np.ndarray, forward: np.ndarray, backward: np.ndarray,
                   min_motion: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft score, masks and the map MMI injects, from reliable, coherent residual motion (module docstring).

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB.
        magnitudes: ``(N, H, W)`` residual motion in pixels, already zero where unreliable and scaled by coherence.
        forward: ``(N-1, H, W, 2)``, entry ``i`` the flow ``i -> i+1``; backward: entry ``i`` the flow ``i+1 -> i``.
        min_motion: pixels; a frame whose peak is below it is static.

    Returns:
        ``(score (N, H, W) float32 in [0, 1], masks (N, H, W) bool, maps (N, H, W) float32)``: ``maps`` is the score
        outside the dilated masks kept at :data:`OUTSIDE_SHARE`, each frame divided by its maximum (all zero where
        nothing moves).
    """
    n, h, w = magnitudes.shape
    radius = edge_radius(h, w)
    evidence = _evidence(magnitudes, min_motion)
    if not evidence.any():
        zeros = np.zeros((n, h, w), np.float32)
        return zeros, zeros.astype(bool), zeros
    carried = carry_along_flow(evidence, forward, backward)
    colour, separation = clip_colour_posterior(frames, carried)
    low, high = COLOUR_SEPARATION
    weight = COLOUR_WEIGHT * float(np.clip((separation - low) / (high - low), 0.0, 1.0))
    score = (1 - weight) * carried + weight * colour * (carried > 0.05)
    grey = frames.mean(axis=-1, dtype=np.float32) / 255.0  # (N, H, W)
    score = np.clip(np.stack([guided_filter(grey[i], score[i], radius) for i in range(n)]), 0.0, 1.0)
    smoothed = score.copy()
    for i in range(n):
        near = [score[i]]
        if i > 0:
            near.append(warp(score[i - 1], backward[i - 1]))
        if i < n - 1:
            near.append(warp(score[i + 1], forward[i]))
        smoothed[i] = (1 - TEMPORAL_WEIGHT) * score[i] + TEMPORAL_WEIGHT * np.mean(near, axis=0)
    score = smoothed
    strong = score[score >= THRESHOLD]
    low = min(THRESHOLD, LOW_RATIO * float(np.median(strong))) if strong.size else THRESHOLD
    masks = np.stack([_keep_strong_parts(hysteresis(score[i], low, THRESHOLD), score[i]) for i in range(n)])
    masks = _fill_empty(masks, forward, backward)
    masks = np.stack([snap_to_edges(frames[i], masks[i], radius) for i in range(n)])
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    near_mask = np.stack([cv2.dilate(m.astype(np.uint8), kernel) for m in masks]).astype(bool)
    maps = score * np.where(near_mask, 1.0, OUTSIDE_SHARE).astype(np.float32)
    peak = maps.reshape(n, -1).max(axis=1)
    maps = np.where(peak[:, None, None] > 0, maps / np.maximum(peak, 1e-12)[:, None, None], 0.0)
    return score.astype(np.float32), masks, np.clip(maps, 0.0, 1.0).astype(np.float32)
