"""Attention control: video attention processors, prompt-to-prompt controllers, token utilities."""

from __future__ import annotations

from .base import AttentionController, AttentionSite, AttentionState, ControllerChain
from .p2p import AttentionStore, LocalBlend, P2PEdit
from .processors import (
    AttentionRuntime,
    FrameAttnProcessor,
    attention_resolutions,
    attention_sites,
    install_attention,
)
from .tokens import (
    check_prompt_length,
    choose_edit_mode,
    content_token_mask,
    prompt_words,
    refine_mapper,
    replace_mapper,
    reweight_vector,
    word_positions,
    word_token_indices,
)

__all__ = [
    "AttentionController",
    "AttentionRuntime",
    "AttentionSite",
    "AttentionState",
    "AttentionStore",
    "ControllerChain",
    "FrameAttnProcessor",
    "LocalBlend",
    "P2PEdit",
    "attention_resolutions",
    "attention_sites",
    "check_prompt_length",
    "choose_edit_mode",
    "content_token_mask",
    "install_attention",
    "prompt_words",
    "refine_mapper",
    "replace_mapper",
    "reweight_vector",
    "word_positions",
    "word_token_indices",
]
