"""The real CLIP tokenizer for benchmark scripts, built offline once into the system's temporary folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

from transformers import CLIPTokenizer

from attentionflow.models.tokenizer import load_tokenizer, openai_clip_merges, write_tokenizer_folder


def clip_tokenizer() -> CLIPTokenizer:
    """The CLIP BPE tokenizer (49,408 tokens), written to ``<tmp>/attentionflow_bench_tokenizer`` on first use."""
    folder = Path(tempfile.gettempdir()) / "attentionflow_bench_tokenizer"
    if not (folder / "vocab.json").exists():
        write_tokenizer_folder(folder, openai_clip_merges())
    return load_tokenizer(folder)
