"""Prompt-to-prompt's tables, resolved once from the prompts with the tokenizer (torch-free).

:func:`p2p_tables` turns the ``p2p:`` section and the prompts into :class:`P2PTables`: per edit its mode and token
map, the step window of every token's cross-attention replacement, the self-attention window, the reweighting
factors and the local-blend token positions. :class:`~attentionflow.plan.EditPlan` keeps them;
:class:`~attentionflow.attention.p2p.P2PEdit` and :class:`~attentionflow.attention.blend.LocalBlend` are built from
them and never see a tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

from attentionflow.attention.tokens import (
    TokenMap,
    check_replace,
    choose_edit_mode,
    edit_positions,
    max_length,
    token_map,
    word_token_indices,
)
from attentionflow.attention.windows import StepWindow, parse_window
from attentionflow.errors import PromptError

#: The per-word ``cross_replace_steps`` table's default entry (prompt-to-prompt's name).
DEFAULT_KEY = "default_"

Window = tuple[int, int]
"""``[lo, hi)`` step indices."""


@dataclass(frozen=True)
class P2PTables:
    """Prompt-to-prompt of ``len(token_maps)`` edits, resolved (every position indexes the padded token sequence)."""

    num_steps: int
    """T, the denoising steps the windows index."""
    token_maps: tuple[TokenMap, ...]
    """Per edit: its mode and how its tokens take the source's maps."""
    cross_windows: tuple[tuple[Window, ...], ...]
    """Per edit, per token position: the steps whose cross-attention map is replaced (prompt-to-prompt's rule,
    ``int(f * (T + 1))``)."""
    self_window: Window
    """The steps whose self-attention is the source's."""
    reweight: tuple[tuple[tuple[int, float], ...], ...] = ()
    """Per edit: ``(position, factor)`` of the reweighted tokens; empty without reweighting."""
    reweight_window: Window | None = None
    """An extension: the steps of the reweighting; None = prompt-to-prompt's rule (each token's cross window)."""
    blend_positions: tuple[tuple[int, ...], ...] | None = None
    """Local blend: per prompt (source first), the positions of its blend words; None without local blend."""

    @property
    def modes(self) -> tuple[str, ...]:
        """``replace`` or ``refine`` per edit."""
        return tuple(m.mode for m in self.token_maps)

    @property
    def num_tokens(self) -> int:
        """L, the padded token sequence's length."""
        return len(self.token_maps[0].alphas) if self.token_maps else 0


def _word_windows(spec: Union[StepWindow, Mapping[str, StepWindow]], targets: Sequence[str], num_steps: int,
                  tokenizer: Any) -> tuple[tuple[Window, ...], ...]:
    size = max_length(tokenizer)
    table = dict(spec) if isinstance(spec, Mapping) else {DEFAULT_KEY: spec}
    default = parse_window(table.get(DEFAULT_KEY, (0.0, 1.0)), num_steps, "cross_replace_steps", cross=True)
    windows = [[default] * size for _ in targets]
    for word, value in table.items():
        if word == DEFAULT_KEY:
            continue
        window = parse_window(value, num_steps, f"cross_replace_steps[{word!r}]", cross=True)
        for e, positions in enumerate(edit_positions(word, targets, tokenizer, "cross_replace_steps word")):
            for k in positions:
                windows[e][k] = window
    return tuple(tuple(w) for w in windows)


def p2p_tables(tokenizer: Any, prompts: Sequence[str], num_steps: int, *,
               cross_replace_steps: Union[StepWindow, Mapping[str, StepWindow]] = 0.8,
               self_replace_steps: StepWindow = 0.4, mode: str = "auto",
               reweight: Mapping[str, float] | None = None, blend_words: Sequence[str] | None = None,
               reweight_steps: StepWindow | None = None) -> P2PTables:
    """Resolve prompt-to-prompt for ``prompts`` (source first) over ``num_steps`` steps; a one-line
    :class:`~attentionflow.errors.PromptError` or :class:`~attentionflow.errors.ConfigError` for a word that is not
    there, a Replace the prompts cannot do or a window out of range. ``blend_words``: one per prompt (or one for
    all), or None."""
    if mode not in ("auto", "replace", "refine"):
        raise ValueError(f"edit mode {mode!r} is not one of: auto, replace, refine")
    source, targets = prompts[0], list(prompts[1:])
    maps = []
    for target in targets:
        m = choose_edit_mode(source, target, tokenizer) if mode == "auto" else mode
        if m == "replace":
            check_replace(source, target, tokenizer)
        maps.append(token_map(source, target, m, tokenizer))  # type: ignore[arg-type]
    factors: list[list[tuple[int, float]]] = [[] for _ in targets]
    for word, factor in (reweight or {}).items():
        for e, positions in enumerate(edit_positions(word, targets, tokenizer, "reweight word")):
            factors[e] += [(k, float(factor)) for k in positions]
    blend = None
    if blend_words:
        words = list(blend_words) if len(blend_words) > 1 else list(blend_words) * len(prompts)
        if isinstance(blend_words, str) or len(words) != len(prompts):
            raise PromptError(f"local blend needs one word (or list of words) per prompt, or one for all: got "
                              f"{blend_words!r} for {len(prompts)} prompts")
        blend = tuple(tuple(sorted({k for w in ([ws] if isinstance(ws, str) else ws)
                                    for k in word_token_indices(p, w, tokenizer)}))
                      for p, ws in zip(prompts, words))
    return P2PTables(
        num_steps=num_steps, token_maps=tuple(maps),
        cross_windows=_word_windows(cross_replace_steps, targets, num_steps, tokenizer),
        self_window=parse_window(self_replace_steps, num_steps, "self_replace_steps"),
        reweight=tuple(tuple(f) for f in factors),
        reweight_window=None if reweight_steps is None else parse_window(reweight_steps, num_steps, "reweight_steps",
                                                                          cross=True),
        blend_positions=blend)
