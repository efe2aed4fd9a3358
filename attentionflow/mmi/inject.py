"""Motion Map Injection: the :class:`MotionInjector` attention controller.

At every selected cross-attention layer and denoising step the injector edits the conditional half
of the attention probabilities ``probs`` ``(G*B*F, heads, Q, K)`` (see
:mod:`attentionflow.attention.base` for the batch layout):

1. **Similarity.** The head-averaged map of every token ``k`` of every frame ``f``,
   ``A[b, f, :, k]`` (``Q`` values), is scored against the frame's motion map ``M[f]`` with
   :func:`attentionflow.mmi.similarity.similarity`: ``C[b, f, k]`` in ``[0, 1]``. Only the tokens that
   something reads are scored: the span from the first to the last prompt token of any branch (content
   tokens, motion words and auto-mode candidates all lie in it), gathered once per edit; start, end and
   padding tokens are skipped (their ``C`` reads 0 in :attr:`MotionInjector.last_similarity`).
2. **Fusion** (content tokens ``k``, i.e. not start/end/padding, at steps ``t >= 1``, ``t`` being
   the denoising step index, 0 at the noisiest step)::

       probs[k] <- probs[k] + strength * C[b, f, k] * M[f] / t        (every head)

3. **Swap** (the motion word's tokens ``j`` of each branch, in that branch's own prompt, every step
   in range)::

       probs[j] <- strength * M[f]                                    (every head)

The probabilities are **not renormalised** afterwards (as in the reference implementation): the
rows of the edited maps no longer sum to 1; the added mass is small (``strength`` 0.09 by default).

Only the selected branches are edited; the unconditional half of a classifier-free-guidance batch is
never touched. Motion maps are fixed per video: they are reshaped and moved to the probabilities'
device/dtype once per resolution and cached.

**Auto mode** (``motion_tokens=None``): during the first ``auto_steps`` steps the injector only
observes (fusion still applies, no swap) and accumulates, for the source branch, each candidate
word's mean similarity (over its tokens, frames and cross-attention layers). At the first call of a
step ``>= auto_steps`` it picks the best-scoring word, takes every branch's token indices of that
word from ``auto_candidates[b]`` and swaps from then on (see :attr:`MotionInjector.ranking`,
:attr:`MotionInjector.chosen_word`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Collection, Literal, Mapping, Sequence

import torch

from attentionflow.attention.base import AttentionController, AttentionSite, AttentionState, head_sum, index_span
from attentionflow.attention.windows import step_window
from attentionflow.mmi.similarity import CORRELATION_METHODS, SIMILARITY_METHODS, correlation_score, motion_basis
from attentionflow.mmi.similarity import similarity as _similarity

__all__ = ["BRANCH_CHOICES", "PLACES", "MotionInjector"]

logger = logging.getLogger(__name__)

BranchChoice = Literal["all", "source", "edits"]
#: Accepted values of ``branches``.
BRANCH_CHOICES: tuple[str, ...] = ("all", "source", "edits")
#: Accepted values in ``places``.
PLACES: tuple[str, ...] = ("down", "mid", "up")


#: Calls whose similarity is kept before it is summed (:meth:`MotionInjector._fold`): summing once per this many
#: calls keeps the per-call work to a list append.
_FOLD_CALLS = 256


@dataclass(frozen=True)
class _CallMotion:
    """One resolution's motion maps for one call's frames, in the forms the injector's arithmetic uses."""

    maps: torch.Tensor
    """``(F, Q)`` the maps."""
    basis: torch.Tensor
    """``(B, F, 3, Q)`` their :func:`~attentionflow.mmi.similarity.motion_basis` (ncc, zncc), the same for every
    branch, contiguous: the similarity's matrix product then needs no copy of it per call."""
    fuse: torch.Tensor
    """``(F, 1, 1, Q)`` view of ``maps`` that broadcasts over heads and tokens of the span's rows (fusion)."""
    swap: torch.Tensor
    """``(F, 1, 1, Q)`` ``strength * maps``, broadcast over branches, heads and tokens of the span's rows (swap)."""


@dataclass(frozen=True)
class InjectionSettings:
    """How :class:`MotionInjector` injects (the numbers of an ``mmi:`` section); each field is documented there."""

    strength: float = 0.09
    similarity: str = "ncc"
    branches: BranchChoice = "all"
    places: Collection[str] = PLACES
    sizes: Collection[tuple[int, int]] | None = None
    step_range: tuple[float, float] = (0.0, 1.0)
    auto_steps: int = 3
    swap: bool = True
    fusion: bool = True


class MotionInjector(AttentionController):
    """Injects per-frame motion maps into cross-attention maps (fusion + swap + auto motion word).

    Args:
        motion_maps: ``(h, w) -> (F, h, w)`` motion maps in ``[0, 1]``, one entry per attention
            resolution that will be edited (looked up with ``state.map_size(Q)``).
        motion_tokens: per branch ``b`` (0 = source, 1.. = edits), the token indices of that
            branch's motion word(s) in its own prompt (several words = union of their indices; may
            be empty). ``None`` selects auto mode.
        content_tokens: ``(B, K)`` bool, True for real prompt tokens (not start/end/padding); only
            these receive fusion.
        auto_candidates: auto mode only: per branch, candidate word -> its token indices in that
            branch's prompt.
        settings: :class:`InjectionSettings`, whose fields are:
        strength: lambda, the injection strength (>= 0; 0 disables the injector).
        similarity: similarity measure, one of :data:`~attentionflow.mmi.similarity.SIMILARITY_METHODS`.
        branches: which branches are edited: ``all``, ``source`` (branch 0) or ``edits`` (1..).
        places: which cross-attention layers: any of ``down``, ``mid``, ``up``.
        sizes: if given, only layers whose map size ``(h, w)`` is in this collection (None = all).
        step_range: ``[start, end)`` fractions of the denoising steps during which injection
            applies; step ``t`` of ``T`` is in range when ``int(start * T) <= t < int(end * T)``
            (:func:`~attentionflow.attention.base.step_window`, the convention P2P uses too).
        auto_steps: auto mode only: number of initial steps that score the candidates.
        swap: apply the swap.
        fusion: apply the fusion.
    """

    def __init__(
        self,
        *,
        motion_maps: Mapping[tuple[int, int], torch.Tensor],
        motion_tokens: Sequence[Sequence[int]] | None,
        content_tokens: torch.Tensor,
        auto_candidates: Sequence[Mapping[str, Sequence[int]]] | None = None,
        settings: InjectionSettings = InjectionSettings(),
    ) -> None:
        strength, similarity, branches, places = settings.strength, settings.similarity, settings.branches, \
            settings.places
        sizes, step_range, auto_steps = settings.sizes, settings.step_range, settings.auto_steps
        swap, fusion = settings.swap, settings.fusion
        if similarity not in SIMILARITY_METHODS:
            raise ValueError(f"unknown similarity {similarity!r}; choose from: "
                              f"{', '.join(SIMILARITY_METHODS)}")
        if branches not in BRANCH_CHOICES:
            raise ValueError(f"unknown MMI branches {branches!r}; choose from: "
                              f"{', '.join(BRANCH_CHOICES)}")
        bad_places = sorted(set(places) - set(PLACES))
        if bad_places or not places:
            raise ValueError(f"invalid MMI places {sorted(places)!r}; use a non-empty subset of: "
                              f"{', '.join(PLACES)}")
        if not math.isfinite(strength) or strength < 0:
            raise ValueError(f"MMI strength {strength!r} is invalid; use a finite number >= 0")
        start, end = (float(v) for v in step_range)
        if not 0.0 <= start < end <= 1.0:  # the config's rule (EditConfig.validate)
            raise ValueError(f"MMI step range {tuple(step_range)!r} is invalid; "
                             f"use (start, end) with 0 <= start < end <= 1")
        if content_tokens.dim() != 2 or content_tokens.dtype != torch.bool:
            raise ValueError(f"content_tokens must be a (B, K) bool tensor, got "
                             f"{tuple(content_tokens.shape)} {content_tokens.dtype}")
        num_branches, num_tokens = content_tokens.shape
        if motion_tokens is None:
            if auto_candidates is None:
                raise ValueError("auto mode (motion_tokens=None) needs auto_candidates")
            if len(auto_candidates) != num_branches:
                raise ValueError(f"auto_candidates has {len(auto_candidates)} branches, "
                                 f"content_tokens has {num_branches}")
            if auto_steps < 1:
                raise ValueError(f"MMI auto steps {auto_steps!r} is invalid; use an integer >= 1")
            for cands in auto_candidates:
                for word, idx in cands.items():
                    self._check_indices(idx, num_tokens, f"candidate {word!r}")
        else:
            if len(motion_tokens) != num_branches:
                raise ValueError(f"motion_tokens has {len(motion_tokens)} branches, "
                                 f"content_tokens has {num_branches}")
            for idx in motion_tokens:
                self._check_indices(idx, num_tokens, "motion token")
        for size, maps in motion_maps.items():
            h, w = size
            if maps.dim() != 3 or tuple(maps.shape[1:]) != (h, w):
                raise ValueError(f"motion map for size {size} must be (F, {h}, {w}), "
                                 f"got {tuple(maps.shape)}")

        self.motion_maps: dict[tuple[int, int], torch.Tensor] = {
            (int(h), int(w)): m for (h, w), m in motion_maps.items()}
        self.content_tokens = content_tokens.cpu()  # a small (B, K) table, read on the host: no per-step copy back
        self.strength = float(strength)
        self.similarity = similarity
        self.branches: BranchChoice = branches
        self.places = frozenset(places)
        self.sizes = None if sizes is None else frozenset((int(h), int(w)) for h, w in sizes)
        self.step_range = (start, end)
        self.auto = motion_tokens is None
        self.auto_candidates = (None if auto_candidates is None
                                else [{w: list(i) for w, i in c.items()} for c in auto_candidates])
        self.auto_steps = int(auto_steps)
        self.swap = bool(swap)
        self.fusion = bool(fusion)
        self._given_tokens = None if motion_tokens is None else [list(i) for i in motion_tokens]
        # the token span that is scored: every content, motion and candidate token of any branch
        needed = content_tokens.nonzero()[:, 1].tolist()
        needed += [k for idx in (motion_tokens or []) for k in idx]
        needed += [k for c in (auto_candidates or []) for idx in c.values() for k in idx]
        self._span = index_span(needed) or (0, 0)

        # caches: fixed per video (kept across reset())
        self._map_cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}
        self._call_cache: dict[tuple, _CallMotion] = {}
        self._fuse_cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}
        self.reset()

    @staticmethod
    def _check_indices(idx: Sequence[int], num_tokens: int, what: str) -> None:
        for i in idx:
            if not 0 <= int(i) < num_tokens:
                raise ValueError(f"{what} index {i} outside [0, {num_tokens})")

    # ------------------------------------------------------------------ run state
    def reset(self) -> None:
        """Forget per-run state: auto-mode scores and choice, similarity statistics."""
        self.motion_tokens: list[list[int]] | None = (
            None if self._given_tokens is None else [list(i) for i in self._given_tokens])
        # auto mode: source-prompt candidate words with their mean similarity, best first
        self.ranking: list[tuple[str, float]] = []
        # auto mode: the word picked after ``auto_steps`` steps (None before, or if none scored)
        self.chosen_word: str | None = None
        # (B, F, K') similarity on the scored token span of the last edited layer call (see last_similarity)
        self._last_span: torch.Tensor | None = None
        self._decided = not self.auto
        self._auto_calls: list[torch.Tensor] = []  # (F, K') source-branch similarity per observing call
        self._auto_count = 0  # frames in them
        self._sim_calls: list[torch.Tensor] = []  # (B, F, K') similarity per call since the last fold
        self._sim_total: torch.Tensor | None = None  # (B, K') float32 sums over frames of the folded calls
        self._sim_count = 0  # frames in all calls

    def _full(self, span_values: torch.Tensor) -> torch.Tensor:
        """``(..., K')`` values of the scored token span -> ``(..., K)``, 0 outside the span."""
        lo, hi = self._span
        out = span_values.new_zeros(*span_values.shape[:-1], self.content_tokens.shape[1])  # (..., K)
        out[..., lo:hi] = span_values
        return out

    @property
    def last_similarity(self) -> torch.Tensor | None:
        """``(B, F, K)`` similarity of the last edited layer call (0 outside the scored token span), or None."""
        return None if self._last_span is None else self._full(self._last_span)

    def token_similarity(self) -> torch.Tensor:
        """``(B, K)`` mean similarity per branch and token over all edited calls and frames.

        On the probabilities' device; float32 zeros on the CPU before the first call.
        """
        self._fold()
        if self._sim_total is None:
            return torch.zeros(self.content_tokens.shape, dtype=torch.float32)
        return self._full(self._sim_total / self._sim_count)

    def _fold(self) -> None:
        """Add the kept calls' similarity (summed over frames) to the running total and forget them."""
        if self._sim_calls:
            total = torch.stack([s.sum(dim=1, dtype=torch.float32) for s in self._sim_calls]).sum(dim=0)  # (B, K')
            self._sim_total = total if self._sim_total is None else self._sim_total + total
            self._sim_calls.clear()

    # ------------------------------------------------------------------ gating
    def _in_range(self, state: AttentionState) -> bool:
        lo, hi = step_window(*self.step_range, state.num_steps)
        return lo <= state.step < hi

    def _observing(self, state: AttentionState) -> bool:
        return self.auto and state.step < self.auto_steps

    def _branch_mask(self, num_branches: int) -> list[bool]:
        if self.branches == "source":
            return [b == 0 for b in range(num_branches)]
        if self.branches == "edits":
            return [b > 0 for b in range(num_branches)]
        return [True] * num_branches

    def wants_probs(self, site: AttentionSite, state: AttentionState) -> bool:
        """True at cross-attention sites of the selected places and sizes while injection (or
        auto-mode scoring) runs. Sites of unknown level are filtered by size in :meth:`__call__`."""
        if not site.is_cross or self.strength == 0 or site.place not in self.places:
            return False
        size = state.site_size(site)
        if self.sizes is not None and size is not None and size not in self.sizes:
            return False
        if not (self._in_range(state) or self._observing(state)):
            return False
        return any(self._branch_mask(state.num_branches)) or self._observing(state)

    # ------------------------------------------------------------------ cached tensors
    def _call_motion(self, num_queries: int, state: AttentionState, probs: torch.Tensor) -> "_CallMotion":
        """This resolution's motion maps for the call's frames on ``probs``' device/dtype, in the forms the
        arithmetic uses (cached per video, resolution, frame range and number of branches)."""
        frames = state.frames
        key = (num_queries, probs.device, probs.dtype, frames.start, frames.stop, state.num_branches)
        cached = self._call_cache.get(key)
        if cached is not None:
            return cached
        whole_key = (num_queries, probs.device, probs.dtype)
        whole = self._map_cache.get(whole_key)
        if whole is None:
            size = state.map_size(num_queries)
            if size not in self.motion_maps:
                raise ValueError(f"no motion map for attention size {size}; "
                                 f"have {sorted(self.motion_maps)}")
            maps = self.motion_maps[size]
            whole = maps.to(device=probs.device, dtype=probs.dtype).reshape(maps.shape[0], -1)  # (F, Q)
            self._map_cache[whole_key] = whole
        if whole.shape[0] != state.video_frames:
            raise ValueError(f"motion maps have {whole.shape[0]} frames, the video has "
                             f"{state.video_frames}")
        maps = whole[frames]  # (F, Q): the call's frames (a chunk of the video, or all of it)
        basis = motion_basis(maps)  # (F, 3, Q) in the similarity's dtype
        cached = _CallMotion(maps=maps, basis=basis.expand(state.num_branches, *basis.shape).contiguous(),
                             fuse=maps[:, None, None, :],  # (F, 1, 1, Q): over heads and tokens
                             swap=(self.strength * maps)[:, None, None, :])  # (F, 1, 1, Q)
        self._call_cache[key] = cached
        return cached

    def _fuse_weights(self, probs: torch.Tensor, num_branches: int, step: int) -> torch.Tensor:
        """``(B, 1, K')`` fusion weights of the scored span at ``step`` (cached): ``strength / step`` at the content
        tokens of the selected branches, else 0."""
        key = (step, probs.device, probs.dtype)
        cached = self._fuse_cache.get(key)
        if cached is None:
            lo, hi = self._span
            sel = torch.tensor(self._branch_mask(num_branches))  # (B,)
            mask = (self.content_tokens & sel[:, None])[:, None, lo:hi]  # (B, 1, K')
            cached = (mask.to(torch.float64) * (self.strength / step)).to(device=probs.device, dtype=probs.dtype)
            self._fuse_cache[key] = cached
        return cached

    # ------------------------------------------------------------------ auto mode
    def _decide(self) -> None:
        """Pick the best-scoring source candidate and set every branch's motion tokens."""
        self._decided = True
        assert self.auto_candidates is not None
        if not self._auto_calls:
            logger.warning("MMI auto mode: no cross-attention was scored in the first %d steps; "
                           "no motion word chosen", self.auto_steps)
            return
        total = torch.cat(self._auto_calls).sum(dim=0, dtype=torch.float32)  # (K',) over calls and frames
        per_token = self._full(total / self._auto_count).tolist()  # (K,); one sync per run
        scores = [(word, sum(per_token[i] for i in idx) / len(idx))
                  for word, idx in self.auto_candidates[0].items() if idx]
        self.ranking = sorted(scores, key=lambda s: s[1], reverse=True)
        if not self.ranking:
            logger.warning("MMI auto mode: no candidate word with tokens in the source prompt")
            return
        self.chosen_word = self.ranking[0][0]
        self.motion_tokens = [list(c.get(self.chosen_word, [])) for c in self.auto_candidates]
        logger.info("MMI auto mode chose %r (ranking %s)", self.chosen_word, self.ranking)

    # ------------------------------------------------------------------ the edit
    def __call__(self, probs: torch.Tensor, site: AttentionSite, state: AttentionState) -> torch.Tensor:
        """Edit ``probs`` ``(G*B*F, heads, Q, K)``; returns the edited tensor (in place unless
        ``probs`` requires grad, then an edited copy)."""
        if not self.wants_probs(site, state):
            return probs
        num_queries, num_tokens = probs.shape[-2:]
        if self.sizes is not None and state.map_size(num_queries) not in self.sizes:
            return probs
        num_branches = state.num_branches
        if tuple(self.content_tokens.shape) != (num_branches, num_tokens):
            raise ValueError(f"content_tokens {tuple(self.content_tokens.shape)} does not match "
                             f"(B, K) = ({num_branches}, {num_tokens})")
        if self.auto and not self._decided and state.step >= self.auto_steps:
            self._decide()

        if probs.requires_grad:
            probs = probs.clone()
        motion = self._call_motion(num_queries, state, probs)
        in_range = self._in_range(state)
        observing = self._observing(state)
        # similarity is always computed: fusion, auto-mode scoring and token_similarity() use it; only on the
        # span of tokens that are read (a narrow view: no copy of the probabilities). Every measure is blind to
        # a map's scale, so the heads' sum is scored (it ranks and scores exactly like their mean).
        # The heads are summed token-major: the processor writes the probabilities token-major (each token's map
        # one contiguous row), so the span is a contiguous block per head (any other layout gives the same values).
        lo, hi = self._span
        rows = state.cond_rows(probs, (lo, hi))  # (B, F, heads, K', Q) view of the span, K' = hi - lo
        sums = head_sum(rows, 2)  # (B, F, K', Q) head sums (one head: a view)
        if self.similarity in CORRELATION_METHODS:  # Pearson with the motion side prepared once per video
            work = sums if sums.dtype in (torch.float32, torch.float64) else sums.float()
            sim_span = correlation_score(work, motion.basis, self.similarity).to(probs.dtype)  # (B, F, K')
        else:
            sim_span = _similarity(sums, motion.maps, self.similarity)  # (B, F, K')
        kept = sim_span.detach() if sim_span.requires_grad else sim_span  # fusion below keeps the graph
        self._last_span = kept
        # kept per call and summed over frames when read (token_similarity): the same means whether the frames come
        # at once or in chunks, and no arithmetic here
        self._sim_calls.append(kept)
        self._sim_count += state.num_frames
        if len(self._sim_calls) >= _FOLD_CALLS:  # bounded memory over long videos (steps x layers x chunks calls)
            self._fold()
        if observing:
            self._auto_calls.append(kept[0])  # (F, K') source branch
            self._auto_count += state.num_frames

        if self.fusion and in_range and state.step >= 1:
            weight = sim_span * self._fuse_weights(probs, num_branches, state.step)  # (B, F, K')
            # += weight[b, f, k] * M[f, q] in every head
            rows.addcmul_(motion.fuse, weight.view(num_branches, -1, 1, hi - lo, 1))

        if self.swap and in_range and not observing and self.motion_tokens is not None:
            selected = self._branch_mask(num_branches)
            for b, tokens in enumerate(self.motion_tokens):
                if selected[b] and tokens:  # (F, heads, k', Q) <- strength * M, in every head
                    rows[b, :, :, [k - lo for k in tokens]] = motion.swap
        return probs
