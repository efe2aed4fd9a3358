"""Prompt-to-prompt attention control for video batches (Replace, Refine, Reweight, LocalBlend).

All controllers act on the conditional half of the batch only, through
``state.cond_view(probs)`` -> ``(B, F, heads, Q, K)``; branch 0 is the source, branches ``1..B-1``
the edits (one per target prompt). They keep their tables on the device of the probabilities and
ask for explicit probabilities (``wants_probs``) only where and when they act.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from attentionflow.attention.base import AttentionController, AttentionSite, AttentionState, head_sum
from attentionflow.attention.tables import P2PTables
from attentionflow.attention.windows import StepWindow
from attentionflow.errors import PromptError

__all__ = ["AttentionStore", "LocalBlend", "P2PEdit", "StepWindow"]

log = logging.getLogger(__name__)

_DEFAULT_KEY = "default_"


class _DeviceTables:
    """Small constant tensors, copied once per (device, dtype) instead of on every layer call."""

    def __init__(self, **tables: torch.Tensor) -> None:
        self._cpu = tables
        self._cache: dict[tuple[torch.device, torch.dtype], dict[str, torch.Tensor]] = {}

    def on(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = {k: (v.to(like.device, like.dtype) if v.is_floating_point() else v.to(like.device))
                                for k, v in self._cpu.items()}
        return self._cache[key]


class AttentionStore(AttentionController):
    """Accumulates head-averaged attention maps of the conditional half, per resolution.

    Keeps running sums (memory bounded by one map per resolution and stored frame, not per step): over the whole
    run (:meth:`maps`, what :class:`LocalBlend` and the attention figure read) and over the current step
    (:meth:`step_maps`). When the video
    is processed in frame chunks, the step's maps are the current chunk's (a chunk's ``step_end`` reads them), and
    the run's maps are kept per video frame.

    Args:
        resolution: only store maps of this ``(h, w)``; None = every cross-attention resolution.
        store_self: also store self-attention maps with at most ``max_self_queries`` queries
            (never 64x64 self-attention: 4096 x 8192 per head and frame).
        max_self_queries: the self-attention query limit.
        frames: the video frames whose run maps are kept (e.g. the few an attention figure shows); None = all.
        keep_total: False keeps the current step's maps only.
        keep_step: False keeps the run's maps only (an attention figure's store: nothing reads its step maps).
        tokens: ``(lo, hi)``: keep the maps of the key tokens ``lo .. hi - 1`` only (e.g. the prompts' words, all an
            attention figure shows); the maps read 0 at the other tokens. None keeps every token.

    The maps are kept token-major, ``(B, F, K', Q)``: each token's map one contiguous row, as the attention processor
    makes explicit probabilities (:func:`attentionflow.attention.base.is_token_major`), so that a call reads the
    kept tokens' rows and adds them in memory order.
    """

    def __init__(self, resolution: tuple[int, int] | None = None, store_self: bool = False,
                 max_self_queries: int = 32 * 32, frames: Sequence[int] | None = None,
                 keep_total: bool = True, keep_step: bool = True, tokens: tuple[int, int] | None = None) -> None:
        if not (keep_total or keep_step):
            raise ValueError("an AttentionStore that keeps neither the run's nor the step's maps stores nothing")
        if tokens is not None and not 0 <= tokens[0] < tokens[1]:
            raise ValueError(f"stored tokens {tokens!r} must be (lo, hi) with 0 <= lo < hi")
        self.tokens = None if tokens is None else (int(tokens[0]), int(tokens[1]))
        self.resolution = resolution
        self.store_self = store_self
        self.max_self_queries = max_self_queries
        self.frames = None if frames is None else sorted({int(f) for f in frames})
        self.keep_total = keep_total
        self.keep_step = keep_step
        self.reset()

    def reset(self) -> None:
        self._total: dict[tuple[bool, int, int], torch.Tensor] = {}  # (B, S, K', Q) sums over calls
        self._total_n: dict[tuple[bool, int, int], torch.Tensor] = {}  # (S,) calls per stored frame
        self._step_sum: dict[tuple[bool, int, int], torch.Tensor] = {}  # (B, F, K', Q) the chunk's sums
        self._step_n: dict[tuple[bool, int, int], int] = {}
        self._step: tuple[int, int] | None = None
        self._step_closed = False
        self._stored: list[int] = []
        self._index_cache: dict[tuple[int, int, int, torch.device], tuple[torch.Tensor, torch.Tensor] | slice] = {}

    def _accepts(self, is_cross: bool, num_queries: int) -> bool:
        if not (is_cross or self.store_self):
            return False
        if self.resolution is not None and num_queries != self.resolution[0] * self.resolution[1]:
            return False
        return is_cross or num_queries <= self.max_self_queries

    def wants_probs(self, site: AttentionSite, state: AttentionState) -> bool:
        if not (site.is_cross or self.store_self):
            return False
        size = state.site_size(site)
        return size is None or self._accepts(site.is_cross, size[0] * size[1])

    def _positions(self, state: AttentionState, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | slice:
        """Where the call's frames go in the run sums (slots: indices in :attr:`stored_frames`): a slice when the
        call's frames are stored slots in order (every frame stored: a plain add), else ``(local, slot)`` long
        tensors (indices in the chunk, their slots). Cached per chunk position."""
        key = (state.frame_start, state.num_frames, state.video_frames, device)
        if key not in self._index_cache:
            wanted = self.frames if self.frames is not None else list(range(state.video_frames))
            pairs = [(f - state.frame_start, slot) for slot, f in enumerate(wanted)
                     if state.frame_start <= f < state.frame_start + state.num_frames]
            local = [p[0] for p in pairs]
            slots = [p[1] for p in pairs]
            if local == list(range(state.num_frames)) and slots == list(range(slots[0], slots[0] + len(slots))):
                self._index_cache[key] = slice(slots[0], slots[0] + len(slots))
            else:
                self._index_cache[key] = (torch.tensor(local, dtype=torch.long, device=device),
                                          torch.tensor(slots, dtype=torch.long, device=device))
        return self._index_cache[key]

    def __call__(self, probs: torch.Tensor, site: AttentionSite, state: AttentionState) -> torch.Tensor:
        """Record ``probs`` ``(G*B*F, heads, Q, K)``; returns it unchanged."""
        num_queries, num_keys = probs.shape[-2:]
        if not self._accepts(site.is_cross, num_queries):
            return probs
        lo, hi = self.tokens if self.tokens is not None else (0, num_keys)
        if hi > num_keys:
            raise ValueError(f"stored tokens {self.tokens} outside the {num_keys} keys at {site.name}")
        rows = state.cond_rows(probs.detach() if probs.requires_grad else probs, (lo, hi))  # (B, F, heads, K', Q)
        maps = head_sum(rows, 2).float()  # (B, F, K', Q)
        if rows.shape[2] > 1:
            maps = maps / rows.shape[2]  # mean over heads
        key = (site.is_cross, num_queries, num_keys)
        if self.keep_step:
            if self._step != (state.step, state.frame_start) or self._step_closed:
                self._step_sum.clear()
                self._step_n.clear()
                self._step, self._step_closed = (state.step, state.frame_start), False
            if key in self._step_sum and self._step_sum[key].shape == maps.shape:
                self._step_sum[key] += maps
                self._step_n[key] += 1
            else:
                self._step_sum[key] = maps.clone()
                self._step_n[key] = 1
        if not self.keep_total:
            return probs
        stored = len(self.frames) if self.frames is not None else state.video_frames
        if len(self._stored) != stored:
            self._stored = list(self.frames) if self.frames is not None else list(range(state.video_frames))
        where = self._positions(state, maps.device)
        shape = (maps.shape[0], stored, *maps.shape[2:])  # (B, S, K', Q)
        if key not in self._total or self._total[key].shape != shape:
            self._total[key] = maps.new_zeros(shape)
            self._total_n[key] = torch.zeros(stored, dtype=torch.long, device=maps.device)
        if isinstance(where, slice):
            self._total[key][:, where] += maps
            self._total_n[key][where] += 1
        elif where[0].numel():
            local, slot = where
            self._total[key].index_add_(1, slot, maps.index_select(1, local))
            self._total_n[key].index_add_(0, slot, torch.ones_like(slot))
        return probs

    def step_end(self, latents: torch.Tensor, state: AttentionState) -> torch.Tensor:
        """Marks the step (or the chunk's part of it) finished: its maps stay readable until the next attention
        call."""
        self._step_closed = True
        return latents

    @property
    def stored_frames(self) -> list[int]:
        """The video frames of :meth:`maps`, in order (after the first call)."""
        return list(self._stored)

    def _lookup(self, sums: dict[tuple[bool, int, int], torch.Tensor], counts: dict[tuple[bool, int, int], Any],
                size: tuple[int, int], cross: bool, what: str) -> torch.Tensor:
        h, w = size
        keys = [k for k in sums if k[0] == cross and k[1] == h * w]
        if not keys:
            stored = sorted((k[1], k[2]) for k in sums)
            raise KeyError(f"no {'cross' if cross else 'self'}-attention maps of size {size} stored {what}; "
                           f"stored (queries, keys): {stored}")
        if len(keys) > 1:
            raise ValueError(f"several key counts stored at {size}: {sorted(k[2] for k in keys)}")
        n = counts[keys[0]]
        if isinstance(n, torch.Tensor):
            if bool((n == 0).any()):
                raise ValueError(f"attention maps of size {size} were not recorded for every stored frame")
            n = n.to(sums[keys[0]].dtype)[None, :, None, None]  # (1, S, 1, 1)
        kept = sums[keys[0]] / n  # (B, F, K', Q)
        lo, hi = self.tokens if self.tokens is not None else (0, keys[0][2])
        mean = kept.new_zeros(*kept.shape[:2], h, w, keys[0][2])  # (B, F, h, w, K)
        mean[..., lo:hi] = kept.transpose(-1, -2).view(*kept.shape[:2], h, w, hi - lo)  # (B, F, Q, K') as (h, w)
        return mean

    def has_maps(self, size: tuple[int, int], *, cross: bool = True, step: bool = False) -> bool:
        """Whether maps of ``size`` were recorded (in the current step if ``step``)."""
        sums = self._step_sum if step else self._total
        return any(k[0] == cross and k[1] == size[0] * size[1] for k in sums)

    def maps(self, size: tuple[int, int], *, cross: bool = True, frames: slice | None = None) -> torch.Tensor:
        """Average over all recorded calls at resolution ``size``: ``(B, S, h, w, K)`` for the
        :attr:`stored_frames` (S of them: every frame, or the ``frames`` given at construction); ``frames`` here: only
        these positions of the stored frames (a chunk's, whose later neighbours are not recorded yet).

        Raises KeyError when nothing of that size was recorded.
        """
        sums, counts = self._total, self._total_n
        if frames is not None:
            sums = {k: v[:, frames] for k, v in sums.items()}
            counts = {k: v[frames] for k, v in counts.items()}
        return self._lookup(sums, counts, size, cross, "in this run")

    def step_maps(self, size: tuple[int, int], *, cross: bool = True) -> torch.Tensor:
        """Average over the current (or just finished) step's calls: ``(B, F, h, w, K)`` for the frames of the
        current call (the chunk's).

        Raises KeyError when nothing of that size was recorded in this step.
        """
        return self._lookup(self._step_sum, self._step_n, size, cross, "in this step")

    @property
    def sizes(self) -> list[tuple[bool, int, int]]:
        """Stored ``(is_cross, Q, K)`` keys."""
        return sorted(self._total)


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
        self._tables = _DeviceTables(word_mask=mask)

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


class P2PEdit(AttentionController):
    """Prompt-to-prompt control of the edits of the source (branch 0), from tables resolved once
    (:func:`attentionflow.attention.tables.p2p_tables`; the controller never sees a tokenizer).

    Cross-attention, for the steps of each token's window (``cross_replace_steps``, per word if a dict
    ``{word: window, "default_": window}`` is given, as P2P's ``get_time_words_attention_alpha``):
    ``edit := a * mapped(source) + (1 - a) * edit``; *replace* maps with the ``(L, L)`` token mapper,
    *refine* takes the aligned source token (``a`` = 0 for new tokens). Then *reweight* multiplies the
    edit maps at the chosen words by their factors, inside each token's own cross window (prompt-to-prompt's
    ``AttentionReweight``: the equalizer scales the replaced maps, which the time alpha then blends in; a new token
    of a refine edit is scaled too); ``reweight_steps``, an extension, gives the reweighting a window of its own
    instead. Self-attention, for steps in ``self_replace_steps`` and at sites with
    at most ``self_max_queries`` queries: ``edit := source``.

    Args:
        tables: :class:`~attentionflow.attention.tables.P2PTables`: modes, token maps, windows, reweighting.
        local_blend: optional :class:`LocalBlend` (called after each step).
        self_max_queries: largest self-attention query count that is replaced.
    """

    def __init__(self, tables: P2PTables, local_blend: LocalBlend | None = None,
                 self_max_queries: int = 32 * 32) -> None:
        if int(tables.num_steps) < 1:
            raise ValueError(f"num_steps {tables.num_steps!r} must be >= 1")
        num_edits, size = len(tables.token_maps), tables.num_tokens
        if local_blend is not None and local_blend.num_branches != num_edits + 1:
            raise PromptError(f"local blend has words for {local_blend.num_branches} prompts, "
                              f"the edit has {num_edits + 1} prompts")
        self.tables = tables
        self.num_steps = int(tables.num_steps)
        self.self_max_queries = int(self_max_queries)
        self.local_blend = local_blend
        self.modes: list[str] = list(tables.modes)
        mapper = torch.stack([m.matrix() for m in tables.token_maps]) if num_edits \
            else torch.zeros(0, size, size)  # (E, L, L): target = source @ mapper
        token_alpha = torch.tensor([m.alphas for m in tables.token_maps]).reshape(num_edits, size)  # (E, L)
        steps = torch.arange(self.num_steps)
        time_alpha = torch.zeros(self.num_steps, num_edits, size)  # (T, E, L)
        for e, windows in enumerate(tables.cross_windows):
            for k, (lo, hi) in enumerate(windows):
                time_alpha[lo:hi, e, k] = 1.0
        self.cross_alpha = time_alpha * token_alpha  # (T, E, L)

        # the reweighting's factor of every step, edit and token, once: the equalizer inside each token's cross window
        # (prompt-to-prompt) or inside reweight_steps (the extension), 1 elsewhere
        self.reweight_factors: torch.Tensor | None = None  # (T, E, L)
        if any(tables.reweight):
            eq = torch.ones(num_edits, size)  # (E, L)
            for e, factors in enumerate(tables.reweight):
                for k, factor in factors:
                    eq[e, k] = factor
            if tables.reweight_window is None:
                inside = time_alpha.bool()
            else:
                lo, hi = tables.reweight_window
                inside = ((steps >= lo) & (steps < hi)).view(-1, 1, 1).expand_as(time_alpha)
            self.reweight_factors = torch.where(inside, eq.expand_as(time_alpha), torch.ones(()))
        reweighted = self.reweight_factors.ne(1).flatten(1).any(dim=1) if self.reweight_factors is not None \
            else torch.zeros(self.num_steps, dtype=torch.bool)  # (T,)
        self._reweighted = reweighted.tolist()
        self._self_window = tables.self_window
        self._cross_active = (self.cross_alpha.flatten(1).ne(0).any(dim=1) | reweighted).tolist()  # (T,)
        self._tables = _DeviceTables(mapper=mapper, cross_alpha=self.cross_alpha,
                                     reweight=self.reweight_factors if self.reweight_factors is not None
                                     else torch.ones(1))

    @property
    def num_branches(self) -> int:
        return len(self.tables.token_maps) + 1

    def _in_self_window(self, step: int) -> bool:
        return self._self_window[0] <= step < self._self_window[1]

    def _cross_on(self, step: int) -> bool:
        return 0 <= step < self.num_steps and self._cross_active[step]

    def _check(self, state: AttentionState) -> None:
        if state.num_branches != self.num_branches:
            raise ValueError(f"P2PEdit was built for {self.num_branches} prompts but the batch has "
                             f"state.num_branches={state.num_branches}")

    def wants_probs(self, site: AttentionSite, state: AttentionState) -> bool:
        if self.num_branches < 2:
            return False
        self._check(state)
        if site.is_cross:
            blend = self.local_blend is not None and self.local_blend.wants_probs(site, state)
            return blend or self._cross_on(state.step)
        if not self._in_self_window(state.step):
            return False
        return state.site_size(site) is None  # unknown size: decide on the probabilities in __call__

    def shares_source_self_attention(self, site: AttentionSite, state: AttentionState) -> bool:
        """Self-attention replacement at sites of known size <= ``self_max_queries`` (no probabilities)."""
        if site.is_cross or self.num_branches < 2 or not self._in_self_window(state.step):
            return False
        size = state.site_size(site)
        return size is not None and size[0] * size[1] <= self.self_max_queries

    def __call__(self, probs: torch.Tensor, site: AttentionSite, state: AttentionState) -> torch.Tensor:
        """Edit the conditional half of ``probs`` ``(G*B*F, heads, Q, K)`` (in place unless it needs grad)."""
        if self.num_branches < 2:
            return probs
        self._check(state)
        if site.is_cross:
            if self._cross_on(state.step):
                probs = self._edit_cross(probs, state)
            if self.local_blend is not None and self.local_blend.wants_probs(site, state):
                probs = self.local_blend(probs, site, state)
            return probs
        if self._in_self_window(state.step) and probs.shape[-2] <= self.self_max_queries:
            probs = self._writable(probs)
            cond = state.cond_view(probs)  # (B, F, heads, Q, K)
            cond[1:] = cond[:1]
        return probs

    @staticmethod
    def _writable(probs: torch.Tensor) -> torch.Tensor:
        return probs.clone() if probs.requires_grad else probs

    def _edit_cross(self, probs: torch.Tensor, state: AttentionState) -> torch.Tensor:
        num_keys = probs.shape[-1]
        tables = self._tables.on(probs)
        if tables["mapper"].shape[-1] != num_keys:
            raise ValueError(f"cross-attention has {num_keys} keys; the prompt mappers have "
                             f"{tables['mapper'].shape[-1]} (tokenizer.model_max_length)")
        probs = self._writable(probs)
        cond = state.cond_view(probs)  # (B, F, heads, Q, K)
        alpha = tables["cross_alpha"][state.step]  # (E, K)
        equalizer = tables["reweight"][state.step] if self._reweighted[state.step] else None  # (E, K)
        # edit <- edit + alpha * (mapped - edit) [* equalizer], in place, token by token: each token's map is one
        # contiguous row where the processor makes the probabilities token-major (every SD layer; any layout works)
        tokens = cond.transpose(-1, -2)  # (B, F, heads, K, Q)
        mapper = tables["mapper"]  # (E, K, K): source token w -> edit token n
        for e in range(mapper.shape[0]):
            mapped = torch.matmul(mapper[e].T, tokens[0])  # (K, K) @ (F, heads, K, Q) -> (F, heads, K, Q)
            edit = tokens[1 + e]
            edit.add_(mapped.sub_(edit).mul_(alpha[e].view(num_keys, 1)))
            if equalizer is not None:
                edit.mul_(equalizer[e].view(num_keys, 1))
        return probs

    def step_end(self, latents: torch.Tensor, state: AttentionState) -> torch.Tensor:
        if self.local_blend is not None:
            latents = self.local_blend.step_end(latents, state)
        return latents

    def reset(self) -> None:
        if self.local_blend is not None:
            self.local_blend.reset()
