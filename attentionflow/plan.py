"""The edit plan: one typed object between configuration and computation, built by the one validator.

``EditPlan.build(config, tokenizer)`` checks every rule of user input (the config's values through
:meth:`attentionflow.config.EditConfig.validate`, then the prompts and words with the tokenizer) and
returns everything the pipeline needs: the prompts, the typed settings, the P2P and MMI sections, the
edit mode of each target, the token positions of the motion words (or the candidates of ``auto``) and of
each prompt's content tokens. It imports no torch: a bad prompt fails in about a second. The pipeline
builds its attention controllers from the plan (:meth:`attentionflow.pipeline.AttentionFlowPipeline.edit`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from attentionflow.attention.tokens import (
    check_prompt_length,
    check_replace,
    choose_edit_mode,
    content_positions,
    edit_positions,
    prompt_words,
    word_token_indices,
)
from attentionflow.attention.windows import parse_window
from attentionflow.config import (
    AttentionSettings,
    EditConfig,
    InputDataConfig,
    InversionSettings,
    MMIConfig,
    P2PConfig,
    ValidationDataConfig,
)

#: Words never proposed as motion words by ``motion_words: auto``.
STOPWORDS = frozenset("a an the is are was were be on in at of to and or with by for from into onto over under "
                      "its it this that his her their".split())

_DEFAULT_KEY = "default_"  # the per-word cross_replace_steps table's default entry (prompt-to-prompt's name)


@dataclass(frozen=True)
class EditPlan:
    """A checked edit: prompts, settings and token positions (see the module docstring)."""

    source_prompt: str
    target_prompts: tuple[str, ...]
    settings: InversionSettings
    """Steps, guidance and null-text."""
    attention: AttentionSettings
    """Cross-frame attention."""
    p2p: P2PConfig
    """Prompt-to-prompt section."""
    mmi: MMIConfig
    """Motion Map Injection section."""
    attention_map_level: int
    """Resolution level of the stored attention maps (0 = latent size)."""
    seed: int
    edit_modes: tuple[str, ...]
    """'replace' or 'refine' per target prompt."""
    motion_words: tuple[str, ...]
    """The motion words given (empty in auto mode or without MMI)."""
    motion_tokens: tuple[tuple[int, ...], ...] | None
    """Per prompt (source first): token positions of the motion words; None in auto mode or without MMI."""
    candidates: tuple[dict[str, list[int]], ...] | None
    """Auto mode: per prompt, candidate word -> token positions; None otherwise."""
    content_positions: tuple[tuple[int, ...], ...]
    """Per prompt: positions of its own tokens in the padded sequence (no start/end/padding)."""

    @property
    def prompts(self) -> list[str]:
        """Source prompt first, then the targets (one branch each)."""
        return [self.source_prompt, *self.target_prompts]

    @property
    def blend_words(self) -> list[str] | None:
        """Local-blend word per prompt (source first), or None without local blend."""
        words = self.p2p.blend_words
        if not words:
            return None
        return list(words) if len(words) > 1 else list(words) * len(self.prompts)

    @classmethod
    def build(cls, config: EditConfig, tokenizer: Any) -> "EditPlan":
        """Check ``config`` and its prompts and words with ``tokenizer``; raise a one-line AttentionFlowError."""
        config.validate()
        inp, val = config.input_data, config.validation_data
        source, targets = inp.prompt, tuple(val.prompts)
        prompts = [source, *targets]
        for p in prompts:
            check_prompt_length(p, tokenizer)
        steps = val.num_inference_steps
        p2p, mmi = config.p2p, config.mmi
        blend = p2p.blend_words if not p2p.blend_words or len(p2p.blend_words) > 1 else p2p.blend_words * len(prompts)
        for prompt, word in zip(prompts, blend or []):
            word_token_indices(prompt, word, tokenizer)
        modes = []
        for target in targets:
            mode = choose_edit_mode(source, target, tokenizer) if p2p.mode == "auto" else p2p.mode
            if mode == "replace":
                check_replace(source, target, tokenizer)
            modes.append(mode)
        table = dict(p2p.cross_replace_steps) if isinstance(p2p.cross_replace_steps, dict) \
            else {_DEFAULT_KEY: p2p.cross_replace_steps}
        for word, window in table.items():
            parse_window(window, steps, "cross_replace_steps" if word == _DEFAULT_KEY
                         else f"cross_replace_steps[{word!r}]", cross=True)
            if word != _DEFAULT_KEY:
                edit_positions(word, targets, tokenizer, "cross_replace_steps word")
        parse_window(p2p.self_replace_steps, steps, "self_replace_steps")
        for word in p2p.reweight or {}:
            edit_positions(word, targets, tokenizer, "reweight word")
        words: tuple[str, ...] = ()
        motion_tokens = candidates = None
        if mmi.enabled:
            given = config.motion_words
            if given == "auto":
                candidates = tuple({w: word_token_indices(p, w, tokenizer)
                                    for w in dict.fromkeys(prompt_words(p, tokenizer)) if w.lower() not in STOPWORDS}
                                   for p in prompts)
            else:
                words = tuple(given)
                motion_tokens = tuple(tuple(sorted({i for w in words for i in word_token_indices(p, w, tokenizer)}))
                                      for p in prompts)
        return cls(source_prompt=source, target_prompts=targets, settings=InversionSettings.from_config(config),
                   attention=AttentionSettings.from_config(config), p2p=p2p, mmi=mmi,
                   attention_map_level=config.attention_map_level, seed=config.seed, edit_modes=tuple(modes),
                   motion_words=words, motion_tokens=motion_tokens, candidates=candidates,
                   content_positions=tuple(tuple(content_positions(p, tokenizer)) for p in prompts))

    @classmethod
    def from_prompts(cls, tokenizer: Any, source_prompt: str, target_prompts: Sequence[str],
                     settings: InversionSettings | None = None, attention: AttentionSettings | None = None, *,
                     p2p: P2PConfig | None = None, mmi: MMIConfig | None = None,
                     attention_map_level: int = EditConfig.attention_map_level,
                     seed: int = EditConfig.seed) -> "EditPlan":
        """The keyword form for Python use: the same rules as :meth:`build` (it builds a config and calls it).

        ``settings``/``attention`` None: the config defaults; ``p2p`` None: P2P defaults; ``mmi`` None: MMI off.
        """
        settings = settings or InversionSettings.default()
        attention = attention or AttentionSettings.default()
        validation = ValidationDataConfig(prompts=list(target_prompts),
                                          num_inv_steps=settings.num_inference_steps,
                                          **dataclasses.asdict(settings))
        config = EditConfig(input_data=InputDataConfig(prompt=source_prompt), validation_data=validation,
                            p2p=p2p or P2PConfig(), mmi=mmi or MMIConfig(enabled=False),
                            attention_map_level=attention_map_level, seed=seed, **dataclasses.asdict(attention))
        return cls.build(config, tokenizer)
