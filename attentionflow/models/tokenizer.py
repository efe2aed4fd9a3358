"""Offline construction of CLIP tokenizers (diffusers ``tokenizer/`` folder format).

transformers 5 ignores ``vocab_file``/``merges_file`` given to the constructor; the portable way is
to write ``vocab.json`` + ``merges.txt`` into a folder and load it with ``from_pretrained``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Iterable, Sequence

from transformers import CLIPTokenizer

MODEL_MAX_LENGTH = 77
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode character table (transformers 5 no longer exports it)."""
    bs = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tokenizer_folder(folder: str | Path, merges: Sequence[str], extra_tokens: Iterable[str] = ()) -> Path:
    """Write a CLIP tokenizer folder from BPE ``merges`` (lines ``"a b"``).

    The vocabulary is CLIP's: the 256 byte characters, the same with ``</w>``, one entry per merge,
    any ``extra_tokens``, then the start and end tokens.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab_list += [t for t in extra_tokens if t not in vocab_list] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}, indent=2),
        encoding="utf-8",
    )
    return folder


def openai_clip_merges() -> list[str]:
    """The real CLIP BPE merges (first 48,894), read from the ``open-clip-torch`` wheel's data file."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open-clip-torch is needed for the real CLIP vocabulary: "
                                  "pip install --no-deps open-clip-torch")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    return lines[1 : 49152 - 256 - 2 + 1]


def load_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """Load a CLIP tokenizer folder with the standard 77-token limit.

    Raises:
        ModelError: a broken JSON file of the folder (one line naming it), or a folder transformers cannot load.
    """
    from attentionflow.errors import ModelError
    from attentionflow.models.paths import read_json_file

    folder = Path(folder)
    for name in ("vocab.json", "tokenizer.json", "tokenizer_config.json"):
        read_json_file(folder / name)  # {} when absent; a broken file is named here, not deep in transformers
    try:
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MODEL_MAX_LENGTH)
    except Exception as exc:  # the tokenizers library raises a bare Exception for a broken merges.txt
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot load the tokenizer in {folder}: {reason}; restore the model's tokenizer "
                         f"files") from None
