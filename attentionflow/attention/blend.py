"""Where an edit may change the latents: prompt-to-prompt's local blend (from the blend words' attention) and the
edit region (from the moving-object masks)."""

from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F

from attentionflow.attention.base import AttentionController, AttentionSite, AttentionState, DeviceTables
from attentionflow.attention.store import AttentionStore

__all__ = ["LocalBlend", "RegionBlend", "region_blend_mask"]

log = logging.getLogger(__name__)


class LocalBlend(AttentionController):
    """Restricts the latent change of each edit branch to where the blend words attend (P2P).

    After every step from ``int(start_blend * T)`` on, the mask of branch ``b`` is the cross-attention of its blend
    words accumulated over every step so far (prompt-to-prompt's running ``attention_store``; summed over the words'
    tokens, averaged over heads and layers) at the attention resolution
    closest to ``latent / resolution_hint`` per side, max-pooled (3x3, stride 1), upsampled (nearest)
    to the latent size, divided by its maximum and thresholded. The edit keeps its latents inside the
    union of its own and the source's masks, and takes the source's latents outside.

    Args:
        positions: per prompt (source first), the token positions of its blend words
            (:attr:`attentionflow.attention.tables.P2PTables.blend_positions`).
        num_tokens: L, the padded token sequence's length.
        threshold: mask threshold after max-normalisation.
        resolution_hint: latent side / attention side to aim for (4: 16x16 maps for 64x64 latents).
        start_blend: the fraction of the steps before blending starts (prompt-to-prompt's 0.2: the first steps'
            maps are still noise).
        store: an :class:`AttentionStore` that someone else feeds (e.g. also in the controller
            chain); None = an own store fed by this controller at the blend resolution only.
    """

    def __init__(self, positions: Sequence[Sequence[int]], num_tokens: int, threshold: float = 0.3,
                 resolution_hint: int = 4, store: AttentionStore | None = None, start_blend: float = 0.2) -> None:
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"local blend threshold {threshold!r} must be in [0, 1)")
        if resolution_hint < 1:
            raise ValueError(f"local blend resolution_hint {resolution_hint!r} must be >= 1")
        if not 0.0 <= start_blend <= 1.0:
            raise ValueError(f"local blend start_blend {start_blend!r} must be in [0, 1]")
        self.start_blend = float(start_blend)
        mask = torch.zeros(len(positions), num_tokens)
        for b, ks in enumerate(positions):
            mask[b, list(ks)] = 1.0
        self.word_mask = mask  # (B, L)
        self.threshold = float(threshold)
        self.resolution_hint = int(resolution_hint)
        self._own_store = store is None
        self.store = store if store is not None else AttentionStore(keep_step=False)
        self._tables = DeviceTables(word_mask=mask)

    @property
    def num_branches(self) -> int:
        return int(self.word_mask.shape[0])

    def target_size(self, state: AttentionState) -> tuple[int, int]:
        """The attention resolution closest to ``latent_size / resolution_hint`` (ties: the larger)."""
        if not state.resolutions or min(state.latent_size) <= 0:
            raise ValueError("LocalBlend needs state.latent_size and state.resolutions "
                             "(see processors.attention_resolutions)")
        th = state.latent_size[0] / self.resolution_hint
        tw = state.latent_size[1] / self.resolution_hint
        return min(state.resolutions.values(), key=lambda s: (abs(s[0] - th) + abs(s[1] - tw), -s[0] * s[1]))

    def wants_probs(self, site: AttentionSite, state: AttentionState) -> bool:
        if not self._own_store or not site.is_cross or state.num_branches < 2:
            return False
        target = self.target_size(state)
        size = state.site_size(site)
        return size is None or size == target

    def __call__(self, probs: torch.Tensor, site: AttentionSite, state: AttentionState) -> torch.Tensor:
        if self._own_store:
            self.store.resolution = self.target_size(state)
            return self.store(probs, site, state)
        return probs

    def mask(self, state: AttentionState, latent_size: tuple[int, int]) -> torch.Tensor | None:
        """Blend mask of the edit branches ``(B-1, F, 1, h, w)`` in {0, 1} for the call's frames; None before any
        maps exist."""
        target = self.target_size(state)
        if not self.store.has_maps(target):
            return None
        stored = self.store.stored_frames
        if stored != list(range(len(stored))):
            raise ValueError("local blend needs a store that keeps every frame's maps")
        maps = self.store.maps(target, frames=state.frames)  # (B, F, hr, wr, K): mean over the steps so far
        b, f, hr, wr, k = maps.shape
        word_mask = self._tables.on(maps)["word_mask"]
        if word_mask.shape != (b, k):
            raise ValueError(f"local blend words are for {word_mask.shape[0]} prompts x {word_mask.shape[1]} "
                             f"tokens, maps have {b} branches x {k} tokens")
        m = torch.einsum("bfhwk,bk->bfhw", maps, word_mask).reshape(b * f, 1, hr, wr)  # (B*F, 1, hr, wr)
        m = F.max_pool2d(m, kernel_size=3, stride=1, padding=1)
        m = F.interpolate(m, size=latent_size)  # nearest, as P2P
        m = m / m.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(m.dtype).tiny)
        hit = (m > self.threshold).view(b, f, 1, *latent_size)  # (B, F, 1, h, w)
        return (hit[:1] | hit[1:]).float()  # union with the source's mask: (B-1, F, 1, h, w)

    def step_end(self, latents: torch.Tensor, state: AttentionState) -> torch.Tensor:
        """``latents`` ``(B*F, C, h, w)``: edit branches := source + mask * (edit - source)."""
        if self._own_store:
            self.store.step_end(latents, state)
        if state.num_branches < 2 or state.step < int(self.start_blend * state.num_steps):
            return latents
        mask = self.mask(state, tuple(latents.shape[-2:]))
        if mask is None:
            log.debug("local blend: no attention maps at step %d, latents unchanged", state.step)
            return latents
        x = latents.view(state.num_branches, state.num_frames, *latents.shape[1:])  # (B, F, C, h, w)
        mask = mask.to(latents.dtype)
        edits = x[:1] + mask * (x[1:] - x[:1])
        return torch.cat([x[:1], edits]).view_as(latents)

    def reset(self) -> None:
        if self._own_store:
            self.store.reset()


def region_blend_mask(moving: torch.Tensor, latent_size: tuple[int, int], region: str,
                      dilation: int = 1) -> torch.Tensor:
    """The latent blend mask of ``edit_region`` from pixel masks of the moving object(s).

    Args:
        moving: ``(F, H, W)`` bool or {0, 1} pixel masks (``attentionflow/flow/regions.py``).
        latent_size: ``(h, w)`` of the latents (``H / h`` pixels per latent pixel).
        region: ``"moving"`` (1 on the movers) or ``"static"`` (1 everywhere else).
        dilation: latent pixels by which the movers' mask grows (a square of side ``2 * dilation + 1``).

    Returns:
        ``(F, 1, h, w)`` float in {0, 1}: 1 where the edit may change the latents. A latent pixel counts as moving
        when at least half of its pixels are (in a frame where that leaves nothing, when any of them is), then the
        mask grows by ``dilation``: room for a new shape, without the whole ring of latent pixels that merely touch
        the object (measured on the "motion decides" suite, docs/quality.md). ``"static"`` is the complement of the
        same grown mask, so the movers and a margin around them stay the source's.
    """
    if region not in ("moving", "static"):
        raise ValueError(f"region {region!r} must be 'moving' or 'static'")
    m = moving.float().unsqueeze(1)  # (F, 1, H, W)
    share = F.adaptive_avg_pool2d(m, latent_size)  # (F, 1, h, w): moving share of each latent pixel
    touched = F.adaptive_max_pool2d(m, latent_size)
    half = (share >= 0.5).float()
    empty = half.flatten(1).amax(dim=1) == 0  # (F,) frames whose object is under half a latent pixel everywhere
    m = torch.where(empty[:, None, None, None], touched, half)
    if dilation > 0:
        m = F.max_pool2d(m, kernel_size=2 * dilation + 1, stride=1, padding=dilation)
    return m if region == "moving" else 1.0 - m


class RegionBlend(AttentionController):
    """Restricts the latent change of every edit branch to a fixed region (``edit_region``).

    After every step, edit branches := source + mask * (edit - source), with ``mask`` ``(F, 1, h, w)`` the same for
    every branch (:func:`region_blend_mask`). Chained after a :class:`LocalBlend`, the two masks multiply: the edit
    may change only where both allow it (their intersection). With direct inversion the source branch is the
    inversion trajectory, so outside the region the edit's final latents are the input video's own.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise ValueError(f"region mask of shape {tuple(mask.shape)} must be (F, 1, h, w)")
        self.region = mask

    def step_end(self, latents: torch.Tensor, state: AttentionState) -> torch.Tensor:
        """``latents`` ``(B*F, C, h, w)``: edit branches := source + mask * (edit - source)."""
        if state.num_branches < 2:
            return latents
        x = latents.view(state.num_branches, state.num_frames, *latents.shape[1:])  # (B, F, C, h, w)
        mask = self.region  # (F_video, 1, h, w), made on the latents' device and dtype by the pipeline
        if mask.shape[0] != state.video_frames or mask.shape[-2:] != latents.shape[-2:] or mask.dtype != latents.dtype:
            raise ValueError(f"region mask {tuple(mask.shape)} {mask.dtype} does not fit {state.video_frames} "
                             f"frames of latents {tuple(latents.shape[-2:])} {latents.dtype}")
        mask = mask[state.frames]  # (F, 1, h, w): the call's frames
        edits = x[:1] + mask * (x[1:] - x[:1])
        return torch.cat([x[:1], edits]).view_as(latents)
