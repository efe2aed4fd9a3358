"""Prompt-to-prompt attention control for video batches (Replace, Refine, Reweight; the local blend is in
:mod:`attentionflow.attention.blend`, the store in :mod:`attentionflow.attention.store`).

All controllers act on the conditional half of the batch only, through
``state.cond_view(probs)`` -> ``(B, F, heads, Q, K)``; branch 0 is the source, branches ``1..B-1``
the edits (one per target prompt). They keep their tables on the device of the probabilities and
ask for explicit probabilities (``wants_probs``) only where and when they act.
"""

from __future__ import annotations

import torch

from attentionflow.attention.base import AttentionController, AttentionSite, AttentionState, DeviceTables
from attentionflow.attention.blend import LocalBlend
from attentionflow.attention.tables import P2PTables
from attentionflow.attention.windows import StepWindow
from attentionflow.errors import PromptError

__all__ = ["P2PEdit", "StepWindow"]

_DEFAULT_KEY = "default_"

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
        self._tables = DeviceTables(mapper=mapper, cross_alpha=self.cross_alpha,
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
