"""What the attention was: running and per-step cross-/self-attention maps of chosen frames, resolutions and tokens
(read by :class:`attentionflow.attention.blend.LocalBlend` and the attention figure)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from attentionflow.attention.base import AttentionController, AttentionSite, AttentionState, head_sum

__all__ = ["AttentionStore"]


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
