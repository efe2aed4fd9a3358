"""Loading Stable Diffusion components from a local diffusers folder, the HF cache, or the embedded model.

Only safetensors weights are loaded (``use_safetensors=True``): nothing is ever unpickled. Nothing is
downloaded unless the user allows network access (``HF_HUB_OFFLINE`` unset) and names a hub id.
"""

from __future__ import annotations

import json
import logging
import os
import re
from importlib import resources
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel
from transformers.utils import logging as tlog

from ..errors import ConfigError, ModelError
from .factory import Components
from .tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

EMBEDDED = "embedded"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder")
MIXED_PRECISION = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def embedded_model_path() -> Path:
    """Folder of the toy model shipped inside the package (diffusers layout)."""
    return Path(str(resources.files("attentionflow") / "assets" / "toy_model"))


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _hub_snapshot(repo_id: str) -> Path:
    """Find ``repo_id`` in the local Hugging Face cache, or download it when the network is allowed."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub ships with diffusers
        raise ModelError(f"model '{repo_id}' is not a local folder and huggingface_hub is missing") from exc
    patterns = ["*.json", "*.txt", "*.safetensors"]
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns))
    except Exception:
        pass
    hint = (f"model '{repo_id}' is not a local folder and not in the Hugging Face cache; on a machine with "
            f"internet run `huggingface-cli download {repo_id} --local-dir models/{repo_id.split('/')[-1]}` "
            f"and pass --model models/{repo_id.split('/')[-1]}")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelError(hint)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:
        raise ModelError(hint + f" (download failed: {type(exc).__name__})") from exc


def resolve_model_path(name: str | os.PathLike[str]) -> Path:
    """Turn a model name into a complete local diffusers folder, checking it cheaply (no weights read).

    ``name`` is ``"embedded"``, a local folder, or a hub id such as ``CompVis/stable-diffusion-v1-4``.
    Raises :class:`ModelError` for a missing folder or a folder missing a component.
    """
    text = str(name)
    if text == EMBEDDED:
        folder = embedded_model_path()
        if not (folder / "model_index.json").exists() and not (folder / "unet").exists():
            raise ModelError(f"the embedded model is missing from the installation ({folder}); reinstall attentionflow")
    else:
        folder = Path(text).expanduser()
        if not folder.exists():
            if not _HUB_ID.fullmatch(text):
                raise ModelError(f"model folder not found: {text} (expected a diffusers folder with "
                                 f"{', '.join(COMPONENTS)}, a hub id like CompVis/stable-diffusion-v1-4, or 'embedded')")
            folder = _hub_snapshot(text)
        elif not folder.is_dir():
            raise ModelError(f"model path {text} is a file; expected a diffusers folder with {', '.join(COMPONENTS)}")
    missing = [c for c in COMPONENTS if not (folder / c).is_dir()]
    if missing:
        raise ModelError(f"model folder {folder} is missing component(s) {', '.join(missing)}; "
                         f"a diffusers Stable Diffusion folder has {', '.join(COMPONENTS)}")
    for comp in _WEIGHT_COMPONENTS:
        if not any((folder / comp).glob("*.safetensors")):
            raise ModelError(f"model folder {folder}/{comp} has no .safetensors weights; only safetensors are "
                             f"loaded (convert with diffusers' save_pretrained(safe_serialization=True))")
    return folder


def select_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; otherwise the named device (checked to exist)."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available; use --device cpu or auto")
    return dev


def select_dtype(mixed_precision: str, device: torch.device) -> torch.dtype:
    """Map ``no``/``fp16``/``bf16`` to a dtype; fp16 needs an accelerator."""
    if mixed_precision not in MIXED_PRECISION:
        raise ConfigError(f"unknown mixed_precision '{mixed_precision}'; choose from: {', '.join(MIXED_PRECISION)}")
    if mixed_precision == "fp16" and device.type == "cpu":
        raise ConfigError("mixed_precision 'fp16' needs a GPU; on a CPU use 'no' or 'bf16'")
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
