"""Architecture, tokenizer and diffusers-folder export of the toy Stable Diffusion model.

The toy model is a real Stable Diffusion architecture at small scale:

* VAE: ``AutoencoderKL`` with 3 blocks (downsampling factor 4): 64x64 RGB -> 16x16x4 latents.
* Text encoder: ``CLIPTextModel`` (hidden 128, 3 layers, 77 positions) over the toy tokenizer.
* UNet: ``UNet2DConditionModel`` with cross-attention blocks at 16x16, 8x8 and 4x4 latents.
* Scheduler: ``DDIMScheduler`` with Stable Diffusion's configuration.

The folder written by :func:`save_model_folder` has the Stable Diffusion diffusers layout, so it
loads through exactly the code path of real SD weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from attentionflow.models.factory import SD_SCHEDULER_CONFIG
from attentionflow.models.tokenizer import load_tokenizer, write_tokenizer_folder
from attentionflow.toyworld.world import WORLD_WORDS

#: Words deliberately left as two BPE tokens, so multi-token words are exercised: word -> pieces.
SPLIT_WORDS: dict[str, tuple[str, ...]] = {"purple": ("pur", "ple")}

#: Where the shipped model lives inside the package.
TOY_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "toy_model"


@dataclass
class ToyModelConfig:
    """Sizes of the toy model (defaults are the shipped model's)."""

    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_layers_per_block: int = 1
    unet_channels: tuple[int, ...] = (32, 64, 128)
    unet_heads: tuple[int, ...] = (1, 2, 4)
    unet_layers_per_block: int = 1
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    image_size: int = 64

    @property
    def latent_size(self) -> int:
        """Latent side: ``image_size / 2 ** (len(vae_channels) - 1)``."""
        return self.image_size // 2 ** (len(self.vae_channels) - 1)

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ToyModelConfig":
        """Inverse of :meth:`to_json`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges (``ranks``: pair -> priority) to a symbol sequence, as CLIP does."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def toy_merges(words: tuple[str, ...] = WORLD_WORDS) -> list[str]:
    """BPE merges: one token per world word, except :data:`SPLIT_WORDS` (several tokens).

    Words are added in order; each word's pieces are first segmented with the merges so far, then
    joined left to right by new (lower-priority) merges, so earlier words keep their single token.
    """
    merges: list[str] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        pieces = SPLIT_WORDS.get(word, (word,))
        for k, piece in enumerate(pieces):
            chars = list(piece)
            if k == len(pieces) - 1:
                chars[-1] += "</w>"
            segs = _bpe(chars, ranks)
            acc = segs[0]
            for seg in segs[1:]:
                pair = (acc, seg)
                if pair not in ranks:
                    ranks[pair] = len(merges)
                    merges.append(f"{acc} {seg}")
                acc = acc + seg
    return merges


def build_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """Write the toy CLIP tokenizer folder (vocab.json + merges.txt) and load it.

    Every world word is one token ``word</w>``, except ``purple`` -> ``pur`` + ``ple</w>``.
    """
    write_tokenizer_folder(folder, toy_merges())
    tok = load_tokenizer(folder)
    for word in WORLD_WORDS:
        pieces = tok.tokenize(word)
        expected = 1 if word not in SPLIT_WORDS else len(SPLIT_WORDS[word])
        if len(pieces) != expected:  # a merge of one word split another: a bug in toy_merges
            raise RuntimeError(f"toy tokenizer splits {word!r} into {pieces}")
    return tok


def build_vae(cfg: ToyModelConfig) -> AutoencoderKL:
    """The toy ``AutoencoderKL`` (random weights)."""
    n = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels, latent_channels=4,
        layers_per_block=cfg.vae_layers_per_block, norm_num_groups=4, sample_size=cfg.image_size,
    )
    # Start with a small posterior std (logvar bias -6) so early training is not swamped by latent noise.
    with torch.no_grad():
        vae.quant_conv.bias[4:].fill_(-6.0)
    return vae


def build_text_encoder(cfg: ToyModelConfig, vocab_size: int) -> CLIPTextModel:
    """The toy ``CLIPTextModel`` (random weights); ``vocab_size`` = ``len(tokenizer)``."""
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=cfg.text_hidden, intermediate_size=cfg.text_hidden * 4,
        num_attention_heads=cfg.text_heads, num_hidden_layers=cfg.text_layers,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=cfg.text_hidden,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )
    return CLIPTextModel(config)


def build_unet(cfg: ToyModelConfig) -> UNet2DConditionModel:
    """The toy ``UNet2DConditionModel`` with cross-attention in every block (random weights)."""
    n = len(cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=cfg.latent_size, in_channels=4, out_channels=4,
        block_out_channels=cfg.unet_channels, layers_per_block=cfg.unet_layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * n, up_block_types=("CrossAttnUpBlock2D",) * n,
        cross_attention_dim=cfg.text_hidden, attention_head_dim=cfg.unet_heads, norm_num_groups=8,
    )


def build_scheduler() -> DDIMScheduler:
    """DDIM with Stable Diffusion's training configuration."""
    return DDIMScheduler(**SD_SCHEDULER_CONFIG)


MODEL_INDEX: dict[str, Any] = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def save_model_folder(folder: str | Path, unet: UNet2DConditionModel, vae: AutoencoderKL,
                      text_encoder: CLIPTextModel, tokenizer_src: str | Path | None = None,
                      dtype: torch.dtype = torch.float32, readme: str | None = None) -> Path:
    """Write a Stable Diffusion diffusers folder (safetensors weights).

    Args:
        folder: destination (created). tokenizer_src: an existing tokenizer folder to copy
            (None: build the toy tokenizer). dtype: storage dtype of the weights.
        readme: text of ``README.md`` inside the folder (None: none written).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
        if dtype == torch.float32:
            module.save_pretrained(folder / name, safe_serialization=True)
        else:  # save a cast copy; the caller's module keeps its dtype
            import copy

            copy.deepcopy(module).to(dtype).save_pretrained(folder / name, safe_serialization=True)
    tok_dir = folder / "tokenizer"
    if tokenizer_src is None:
        build_tokenizer(tok_dir)
    else:  # copy the CLIP-format files (vocab.json + merges.txt + configs) as they are
        import shutil

        shutil.rmtree(tok_dir, ignore_errors=True)
        shutil.copytree(tokenizer_src, tok_dir)
        load_tokenizer(tok_dir)  # fails early on an unusable folder
    build_scheduler().save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n", encoding="utf-8")
    if readme is not None:
        (folder / "README.md").write_text(readme, encoding="utf-8")
    return folder
