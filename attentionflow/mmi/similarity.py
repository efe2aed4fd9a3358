"""Attention-vs-motion similarity measures (pure torch, vectorised, device-preserving).

Every measure compares each of ``K`` attention maps with one motion map and returns a score in
``[0, 1]``, higher meaning more similar. Maps are flattened: the last dimension is the ``Q = h * w``
spatial positions. All leading dimensions (branches, frames, ...) are processed at once; the motion
map broadcasts over ``K`` and over any leading dimension it lacks.

Definitions (``a`` = one attention map, ``m`` = the motion map, both of length ``Q``;
``rho`` = Pearson correlation of ``a`` and ``m``):

``ncc`` (default, the reference's measure)
    ``(rho + 1) / 2``. ``rho`` is the zero-mean normalised cross-correlation, identical to OpenCV
    ``cv2.matchTemplate(a, m, cv2.TM_CCOEFF_NORMED)`` on equal-size inputs.
``zncc``
    ``max(rho, 0)``: zero-mean NCC clipped at 0 (anti-correlated maps score 0).
``cc``
    ``max(cos(a, m), 0)`` with ``cos = <a, m> / (|a| |m|)``: plain cross-correlation normalised
    without mean removal, identical to ``cv2.TM_CCORR_NORMED``. For non-negative inputs (attention
    probabilities, motion maps) the clip never acts.
``ssd``
    ``1 - mean((a' - m')**2)`` where ``a' = clip(a, 0) / max(clip(a, 0))`` (the map scaled to
    ``[0, 1]`` by its maximum; an all-zero map stays zero), likewise ``m'``. In ``[0, 1]``
    because both scaled maps are.
``mi``
    Normalised mutual information ``2 I(a'; m') / (H(a') + H(m'))`` of the scaled maps ``a'``, ``m'``
    (as for ``ssd``) quantised into ``bins`` equal bins over ``[0, 1]`` (bin ``i`` holds
    ``[i / bins, (i + 1) / bins)``, the last bin also holds 1, exactly like
    ``numpy.histogram2d(..., bins=bins, range=[[0, 1], [0, 1]])``); natural logarithms. Hard
    binning (not differentiable), vectorised with ``scatter_add_``. 0 when both maps are constant.

Degenerate inputs never produce NaN: a constant map (standard deviation below ``64 * eps`` of its
mean magnitude, i.e. what rounding leaves of a constant) has ``rho = 0`` (``ncc`` 0.5, ``zncc`` 0),
a zero map has ``cos = 0`` (``cc`` 0).

Cost: each measure makes at most one temporary of the attention maps' size; dot products with the
motion map are batched matrix-vector products (no per-map or per-token loops).

Half-precision inputs are computed in float32 (sums over thousands of positions) and returned in
the attention tensor's dtype; the result is always on the attention tensor's device.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from attentionflow.errors import ConfigError
from attentionflow.mmi.methods import SIMILARITY_METHODS

__all__ = ["CORRELATION_METHODS", "SIMILARITY_METHODS", "correlation_score", "motion_basis", "pearson_basis",
           "similarity"]

#: Default number of histogram bins of the ``mi`` measure.
MI_BINS = 16


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bfloat16 (and integer) inputs, the input dtype for float32/float64."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _rowdot(m: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``sum(a * m, -1)`` for ``a`` ``(..., K, Q)``, ``m`` ``(..., 1, Q)`` -> ``(..., K)``.

    A batched matrix-vector product: no ``(..., K, Q)`` temporary, fast for either memory layout
    of ``a`` (``(..., K, Q)`` or the transposed view of ``(..., Q, K)`` attention maps).
    """
    return (m @ a.transpose(-1, -2)).squeeze(-2)  # (..., 1, Q) @ (..., Q, K) -> (..., K)


def _constant_tolerance(q: int, dtype: torch.dtype) -> float:
    """Sum of squared deviations of ``q`` values at or below which a map counts as constant, relative to its mean
    squared: a standard deviation below ``64 * eps`` times the mean magnitude (what rounding leaves of a constant
    map)."""
    return (64.0 * torch.finfo(dtype).eps) ** 2 * q


def motion_basis(motion: torch.Tensor) -> torch.Tensor:
    """The three weight rows that give a map's Pearson statistics with ``motion`` ``(..., Q)`` -> ``(..., 3, Q)``.

    Row 0 is the centred unit motion map ``u = (m - mean(m)) / |m - mean(m)|`` (all zeros for a constant map, the
    same rule as the attention side of :func:`pearson_basis`, so that its correlation with anything is 0); row 1 is
    the uniform ``1 / Q``; row 2 is ``c / Q`` with ``c = 64 * eps * sqrt(Q)``, the constant-map bound. For a map
    ``a`` the statistics then come from one matrix product: ``<a, u>`` (``u`` sums to 0, so ``a`` need not be
    centred), ``mean(a)`` and ``c * mean(a)``; the Pearson correlation is ``<a, u> / |a - mean(a)|``, and ``a``
    counts as constant when ``|a - mean(a)| <= |c * mean(a)|``. The injector makes the basis once per video,
    resolution and frame range (:class:`attentionflow.mmi.inject.MotionInjector`).
    """
    m = motion.to(_compute_dtype(motion.dtype))
    q = m.shape[-1]
    mean = m.mean(dim=-1, keepdim=True)  # (..., 1)
    mc = m - mean  # (..., Q)
    ss = mc.square().sum(dim=-1, keepdim=True)  # (..., 1)
    bad = ss <= _constant_tolerance(q, m.dtype) * mean.square()  # (..., 1); includes ss == 0
    unit = mc.mul_(torch.rsqrt(ss)).masked_fill_(bad, 0.0)  # (..., Q)
    bound = math.sqrt(_constant_tolerance(q, m.dtype)) / q
    return torch.stack([unit, torch.full_like(unit, 1.0 / q), torch.full_like(unit, bound)], dim=-2)  # (..., 3, Q)


def pearson_basis(maps: torch.Tensor, basis: torch.Tensor, *, shift: float = 0.0, scale: float = 1.0
                  ) -> torch.Tensor:
    """Pearson correlation of the maps ``maps`` ``(..., K, Q)`` (one map per row, any strides) with the motion map of
    ``basis`` (:func:`motion_basis`, ``(..., 3, Q)``, broadcast over leading dims) -> ``shift + scale * rho``
    ``(..., K)``, clamped to ``shift +- scale`` (``rho`` in ``[-1, 1]``; ``shift=0.5, scale=0.5`` gives ``ncc``
    directly).

    ``rho`` is 0 where either map is constant: its sum of squared deviations at most ``(64 * eps)**2 * Q`` times
    its mean squared (what rounding leaves of a truly constant map), or zero. ``maps`` may carry any positive scale
    (the correlation does not depend on it, so a sum over heads scores like their mean).

    Three passes over the maps and few operations on purpose: the injector calls this at every cross-attention layer
    and step, where each operation's fixed cost outweighs its arithmetic. One matrix product gives ``<a, u>``,
    ``mean(a)`` and the constant-map bound; one ``(..., K, Q)`` temporary holds the centred maps, whose norm is
    ``|a - mean(a)|`` (accurate for nearly constant maps). A ``basis`` with the full leading shape of ``maps`` (the
    injector expands it over the branches once) saves the product a copy of it per call.
    """
    stats = torch.matmul(maps, basis.mT)  # (..., K, Q) @ (..., Q, 3) -> (..., K, 3)
    dot, mean, bound = stats.unbind(-1)  # (..., K) each: <a, u>, mean(a), c * mean(a) (>= 0 for non-negative maps)
    dev = torch.linalg.vector_norm(maps - mean.unsqueeze(-1), dim=-1)  # (..., K) |a - mean(a)|
    constant = dev <= bound.abs()  # (..., K); includes dev == 0
    out = torch.full_like(dot, shift).addcdiv_(dot, dev, value=scale)  # shift + scale * rho, (..., K)
    return out.masked_fill_(constant, shift).clamp_(shift - scale, shift + scale)


#: The measures :func:`correlation_score` computes from a :func:`motion_basis` (the injector's fast path).
CORRELATION_METHODS: tuple[str, ...] = ("ncc", "zncc")


def correlation_score(maps: torch.Tensor, basis: torch.Tensor, method: str) -> torch.Tensor:
    """``ncc`` ``(rho + 1) / 2`` or ``zncc`` ``max(rho, 0)`` of the maps ``(..., K, Q)`` (one map per row) against
    the motion map of ``basis`` (:func:`motion_basis`, ``(..., 3, Q)``) -> ``(..., K)``; ``method`` one of
    :data:`CORRELATION_METHODS`."""
    if method == "ncc":
        return pearson_basis(maps, basis, shift=0.5, scale=0.5)
    return pearson_basis(maps, basis).clamp_min_(0.0)


def _ncc(a: torch.Tensor, m: torch.Tensor, bins: int) -> torch.Tensor:
    return correlation_score(a, motion_basis(m.squeeze(-2)), "ncc")


def _zncc(a: torch.Tensor, m: torch.Tensor, bins: int) -> torch.Tensor:
    return correlation_score(a, motion_basis(m.squeeze(-2)), "zncc")


def _cc(a: torch.Tensor, m: torch.Tensor, bins: int) -> torch.Tensor:
    num = _rowdot(m, a)  # (..., K)
    den = torch.sqrt(a.square().sum(dim=-1) * m.square().sum(dim=-1))  # (..., K)
    bad = den == 0
    cos = num / torch.where(bad, torch.ones_like(den), den)
    return torch.where(bad, torch.zeros_like(cos), cos).clamp(0.0, 1.0)


def _safe_inverse(peak: torch.Tensor) -> torch.Tensor:
    """``1 / peak`` where ``peak > 0``, else 0 (an all-zero map stays zero after scaling)."""
    pos = peak > 0
    return torch.where(pos, 1.0 / torch.where(pos, peak, torch.ones_like(peak)), torch.zeros_like(peak))


def _unit_scale(x: torch.Tensor) -> torch.Tensor:
    """``clip(x, 0) / max(clip(x, 0))`` along the last dim (an all-zero map stays zero).

    Returns a new tensor (the input is not modified).
    """
    x = x.clamp_min(0.0)
    peak = x.amax(dim=-1, keepdim=True)  # (..., 1)
    return x.div_(torch.where(peak > 0, peak, torch.ones_like(peak)))


def _ssd(a: torch.Tensor, m: torch.Tensor, bins: int) -> torch.Tensor:
    # mean((a' - m')^2) expanded into sums, so the scaled attention maps are never materialised
    q = a.shape[-1]
    ap = a.clamp_min(0.0)  # (..., K, Q), the only large temporary
    inv = _safe_inverse(ap.amax(dim=-1))  # (..., K)
    ms = _unit_scale(m)  # (..., 1, Q)
    s_am = _rowdot(ms, ap) * inv  # (..., K) sum of a' m'
    s_aa = ap.square_().sum(dim=-1) * inv.square()  # (..., K) sum of a'^2 (in place on ap)
    s_mm = ms.square().sum(dim=-1)  # (..., 1) sum of m'^2
    msd = (s_aa - 2.0 * s_am + s_mm) / q  # (..., K)
    return (1.0 - msd).clamp(0.0, 1.0)


def _bin_codes(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index ``min(floor(x' * bins), bins - 1)`` of the unit-scaled maps ``x'``, as floats."""
    return _unit_scale(x).mul_(bins).floor_().clamp_max_(bins - 1)


def _mi(a: torch.Tensor, m: torch.Tensor, bins: int) -> torch.Tensor:
    lead = torch.broadcast_shapes(a.shape[:-1], m.shape[:-1])  # (..., K)
    q, n, cells = a.shape[-1], math.prod(lead), bins * bins
    if n * cells >= 2 ** 24:  # keep integer-valued float32 codes exact
        a = a.double()
    # joint histogram cell of every position, offset by its map's index, so that one bincount
    # builds all N = prod(lead) histograms at once
    offset = (torch.arange(n, device=a.device, dtype=a.dtype) * cells).reshape(*lead, 1)  # (..., K, 1)
    codes = _bin_codes(a, bins).mul_(bins)  # (..., K, Q) a-bin * bins (a temporary we own)
    if codes.shape != (*lead, q):  # a broadcasts against m: materialise the full shape
        codes = codes.expand(*lead, q).clone()
    codes.add_(_bin_codes(m, bins)).add_(offset)  # (..., K, Q) joint cell + offset
    if not codes.is_contiguous() and codes.transpose(-1, -2).is_contiguous():
        codes = codes.transpose(-1, -2)  # histograms ignore order: flatten in memory order
    counts = torch.bincount(codes.reshape(-1).to(torch.int64), minlength=n * cells)  # (N * cells,)
    p = (counts.to(a.dtype) / q).view(n, bins, bins)  # (N, bins_a, bins_m) joint distribution
    pa = p.sum(dim=2)  # (N, bins_a)
    pm = p.sum(dim=1)  # (N, bins_m)
    h_a = -torch.xlogy(pa, pa).sum(dim=1)  # (N,)
    h_m = -torch.xlogy(pm, pm).sum(dim=1)  # (N,)
    h_joint = -torch.xlogy(p, p).sum(dim=(1, 2))  # (N,)
    mutual = h_a + h_m - h_joint  # (N,)
    denom = h_a + h_m
    bad = denom <= 0
    nmi = 2.0 * mutual / torch.where(bad, torch.ones_like(denom), denom)
    nmi = torch.where(bad, torch.zeros_like(nmi), nmi).clamp(0.0, 1.0)
    return nmi.reshape(lead)  # (..., K)


_MEASURES: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "ncc": _ncc,
    "zncc": _zncc,
    "cc": _cc,
    "ssd": _ssd,
    "mi": _mi,
}


def similarity(attn: torch.Tensor, motion: torch.Tensor, method: str = "ncc", *,
               bins: int = MI_BINS) -> torch.Tensor:
    """Score each attention map against the motion map.

    Args:
        attn: ``(..., K, Q)`` attention maps (``K`` tokens, ``Q = h * w`` flattened positions).
        motion: ``(..., Q)`` motion map(s); broadcast over ``K`` and over missing leading dims
            (e.g. ``attn`` ``(B, F, K, Q)`` with ``motion`` ``(F, Q)``).
        method: one of :data:`SIMILARITY_METHODS` (see the module docstring for definitions).
        bins: histogram bins per map for ``mi`` (ignored by the other measures).

    Returns:
        ``(..., K)`` scores in ``[0, 1]`` (higher = more similar), on ``attn``'s device, in
        ``attn``'s dtype (float32 for non-float input).

    Raises:
        ConfigError: unknown ``method`` or ``bins < 2``.
        ValueError: ``attn`` and ``motion`` disagree on ``Q``.
    """
    try:
        measure = _MEASURES[method]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown similarity {method!r}; choose from: "
                          f"{', '.join(SIMILARITY_METHODS)}") from None
    if method == "mi" and bins < 2:
        raise ConfigError(f"mutual-information bins {bins} is too small; use an integer >= 2")
    if attn.dim() < 2 or motion.dim() < 1 or attn.shape[-1] != motion.shape[-1]:
        raise ValueError(f"attention maps {tuple(attn.shape)} (..., K, Q) and motion maps "
                         f"{tuple(motion.shape)} (..., Q) must share Q")
    out_dtype = attn.dtype if attn.is_floating_point() else torch.float32
    work = _compute_dtype(attn.dtype)
    a = attn.to(work)  # (..., K, Q)
    m = motion.to(device=attn.device, dtype=work).unsqueeze(-2)  # (..., 1, Q)
    return measure(a, m, bins).to(out_dtype)
