"""The edit plan: one typed object between configuration and computation, built by the one validator.

``EditPlan.build(config, tokenizer)`` checks every rule of user input (the config's values through
:meth:`attentionflow.config.EditConfig.validate`, then the prompts and words with the tokenizer) and
returns everything the pipeline needs: the prompts, the typed settings, the P2P and MMI sections, the
edit mode of each target, the token positions of the motion words (or the candidates of ``auto``) and of
each prompt's content tokens. It imports no torch: a bad prompt fails in about a second. The pipeline
builds its attention controllers from the plan (:meth:`attentionflow.pipeline.AttentionFlowPipeline.edit`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from attentionflow.attention.tables import P2PTables, p2p_tables
from attentionflow.attention.tokens import check_prompt_length, content_positions, prompt_words, word_token_indices
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
    """Prompt-to-prompt section (a copy: the config is never aliased)."""
    mmi: MMIConfig
    """Motion Map Injection section (a copy)."""
    p2p_tables: P2PTables
    """Prompt-to-prompt resolved with the tokenizer: modes, token maps, windows, reweighting, blend positions."""
    motion: Any
    """The :class:`~attentionflow.flow.motion.MotionOptions` the motion maps and the edit region are built with."""
    attention_map_level: int
    """Resolution level of the stored attention maps (0 = latent size)."""
    seed: int
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
    def edit_modes(self) -> tuple[str, ...]:
        """'replace' or 'refine' per target prompt."""
        return self.p2p_tables.modes

    @classmethod
    def build(cls, config: EditConfig, tokenizer: Any) -> "EditPlan":
        """Check ``config`` and its prompts and words with ``tokenizer``; raise a one-line AttentionFlowError."""
        config.validate()
        inp, val = config.input_data, config.validation_data
        source, targets = inp.prompt, tuple(val.prompts)
        prompts = [source, *targets]
        for p in prompts:
            check_prompt_length(p, tokenizer)
        p2p, mmi = copy.deepcopy(config.p2p), copy.deepcopy(config.mmi)
        tables = p2p_tables(tokenizer, prompts, val.num_inference_steps, cross_replace_steps=p2p.cross_replace_steps,
                            self_replace_steps=p2p.self_replace_steps, mode=p2p.mode, reweight=p2p.reweight,
                            blend_words=p2p.blend_words)
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
                   attention=AttentionSettings.from_config(config), p2p=p2p, mmi=mmi, p2p_tables=tables,
                   motion=mmi.motion_options(), attention_map_level=config.attention_map_level, seed=config.seed,
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
