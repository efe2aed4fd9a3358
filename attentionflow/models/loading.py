"""Loading Stable Diffusion components from a local diffusers folder, the HF cache, or the embedded model.

Only safetensors weights are loaded (``use_safetensors=True``): nothing is ever unpickled. Nothing is
downloaded unless the user allows network access (``HF_HUB_OFFLINE`` unset) and names a hub id.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel
from transformers.utils import logging as tlog

from attentionflow.errors import ConfigError, ModelError
from attentionflow.models.factory import Components
from attentionflow.models.paths import COMPONENTS, EMBEDDED, embedded_model_path, resolve_model_path  # noqa: F401 (re-exported)
from attentionflow.models.tokenizer import load_tokenizer
from attentionflow.resources import check_device

logger = logging.getLogger(__name__)

MIXED_PRECISION = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def select_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; otherwise the named device, checked to exist
    (:func:`attentionflow.resources.check_device`, the one place that names what is valid)."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    check_device(device)
    return torch.device(device)


def select_dtype(mixed_precision: str, device: torch.device) -> torch.dtype:
    """Map ``no``/``fp16``/``bf16`` to a dtype; fp16 needs an accelerator."""
    if mixed_precision not in MIXED_PRECISION:
        raise ConfigError(f"unknown mixed_precision '{mixed_precision}'; choose from: {', '.join(MIXED_PRECISION)}")
    if device.type == "cpu":
        check_device("cpu", mixed_precision)  # fp16 on a CPU: the one message
    return MIXED_PRECISION[mixed_precision]


def load_components(path: str | os.PathLike[str], device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> Components:
    """Load unet, vae, text encoder, tokenizer and a DDIM scheduler from a diffusers folder.

    ``path`` as in :func:`resolve_model_path`. The scheduler configuration of the folder (DDIM, PNDM,
    ...) is turned into a :class:`DDIMScheduler` with the same betas.
    """
    folder = resolve_model_path(path)
    device = torch.device(device) if not isinstance(device, torch.device) else device
    kwargs = {"use_safetensors": True, "torch_dtype": dtype}
    bars = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()  # a per-file "Loading weights" bar is noise for a CLI user
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kwargs)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=True, dtype=dtype)
        tokenizer = load_tokenizer(folder / "tokenizer")
        scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(folder, subfolder="scheduler"))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"could not load the model in {folder}: {str(exc).splitlines()[0]}") from exc
    finally:
        if bars:
            tlog.enable_progress_bar()
    for module in (unet, vae, text_encoder):
        module.to(device).eval().requires_grad_(False)
    return Components(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def save_components(components: Components, folder: str | os.PathLike[str]) -> Path:
    """Write components as a diffusers Stable Diffusion folder (safetensors)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    components.unet.save_pretrained(folder / "unet", safe_serialization=True)
    components.vae.save_pretrained(folder / "vae", safe_serialization=True)
    components.text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    components.tokenizer.save_pretrained(folder / "tokenizer")
    components.scheduler.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": __import__("diffusers").__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
