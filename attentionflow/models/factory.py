"""Builders for small random-weight Stable-Diffusion-architecture components.

Used by the tests, the benchmarks and as the architecture source of the shipped toy model. They
build exactly the diffusers/transformers classes real SD checkpoints load into, so every code path
(attention processors, inversion, VAE scaling) is the one real weights go through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

#: Stable Diffusion v1.x scheduler configuration (scaled-linear betas, epsilon prediction).
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


#: Stable Diffusion 2.x (768, "v2-1") scheduler configuration: the same betas, v-prediction.
SD2_SCHEDULER_CONFIG: dict[str, Any] = {**SD_SCHEDULER_CONFIG, "prediction_type": "v_prediction"}


@dataclass
class Components:
    """The five parts of a Stable Diffusion model."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDIMScheduler


def tiny_unet(cross_attention_dim: int = 32, block_out_channels: tuple[int, ...] = (32, 64),
              sample_size: int = 8, attention_heads: int | tuple[int, ...] = 2, sd2: bool = False
              ) -> UNet2DConditionModel:
    """A UNet2DConditionModel with cross-attention in every block (random weights). ``sd2``: Stable Diffusion 2.x's
    layout: linear projections in and out of the transformers, attention upcast to float32 (v2-1), and
    ``attention_heads`` as a per-block list."""
    n = len(block_out_channels)
    extra: dict[str, Any] = {"use_linear_projection": True, "upcast_attention": True} if sd2 else {}
    return UNet2DConditionModel(
        **extra,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=block_out_channels,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_heads,
        norm_num_groups=8,
    )


def tiny_vae(block_out_channels: tuple[int, ...] = (32, 64)) -> AutoencoderKL:
    """An AutoencoderKL with 4 latent channels; downsampling factor ``2 ** (len(blocks) - 1)``."""
    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=block_out_channels,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
    )


def tiny_text_encoder(vocab_size: int, hidden_size: int = 32, layers: int = 2) -> CLIPTextModel:
    """A CLIPTextModel with a small width; ``vocab_size`` must match the tokenizer."""
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_attention_heads=4,
        num_hidden_layers=layers,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModel(config)


def sd_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    """A DDIM scheduler with Stable Diffusion's training configuration (``v_prediction``: SD 2.x at 768)."""
    return DDIMScheduler(**{**SD_SCHEDULER_CONFIG, "prediction_type": prediction_type})


def tiny_components(tokenizer: CLIPTokenizer, seed: int = 0) -> Components:
    """Random-weight tiny SD components (UNet blocks (32, 64), VAE factor 2, 32-wide CLIP)."""
    torch.manual_seed(seed)
    unet = tiny_unet().eval()
    vae = tiny_vae().eval()
    text_encoder = tiny_text_encoder(len(tokenizer)).eval()
    return Components(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=sd_scheduler())


def tiny_sd2_components(tokenizer: CLIPTokenizer, seed: int = 0) -> Components:
    """Random-weight tiny components in Stable Diffusion 2.x's layout: a v-prediction scheduler, a UNet with linear
    projections, upcast attention and per-block head counts (2, 4), and a text encoder 1.5x as wide as
    :func:`tiny_components`' (SD 2's 1024 against SD 1's 768, scaled down)."""
    torch.manual_seed(seed)
    unet = tiny_unet(cross_attention_dim=48, attention_heads=(2, 4), sd2=True).eval()
    vae = tiny_vae().eval()
    text_encoder = tiny_text_encoder(len(tokenizer), hidden_size=48).eval()
    return Components(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                      scheduler=sd_scheduler("v_prediction"))
