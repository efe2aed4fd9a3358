"""Where a model lives and what its folder promises, read without loading any weights (no torch import).

:func:`resolve_model_path` turns ``embedded``, a local diffusers folder or a cached hub id into a
checked folder; :func:`model_limits` reads the few configuration values that bound user input
(training timesteps, downsampling factors) from the folder's JSON files.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from attentionflow.errors import ModelError, shown
from attentionflow.resources import ModelShape

EMBEDDED = "embedded"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
#: What the model predicts (the scheduler's ``prediction_type``): every one diffusers' DDIM and DDIM inverse schedulers
#: turn into latents (SD 1.x: epsilon; SD 2.x at 768: v_prediction).
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder")


def embedded_model_path() -> Path:
    """Folder of the toy model shipped inside the package (diffusers layout)."""
    return Path(str(resources.files("attentionflow") / "assets" / "toy_model"))


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

#: Folder names of well-known Stable Diffusion checkpoints -> their hub ids (for download advice only).
KNOWN_HUB_IDS = {
    "stable-diffusion-v1-4": "CompVis/stable-diffusion-v1-4",
    "stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "stable-diffusion-2-1": "stabilityai/stable-diffusion-2-1",
    "stable-diffusion-2-1-base": "stabilityai/stable-diffusion-2-1-base",
}
#: First path parts that name a local folder, not a hub user (vid2vid-zero's configs use checkpoints/).
_LOCAL_PARENTS = frozenset({"checkpoints", "models", "weights", "data", "ckpt", "pretrained"})


def hub_cli() -> str:
    """The download command the installed huggingface_hub provides: ``hf`` (1.x and later) or ``huggingface-cli``."""
    from importlib import metadata

    try:
        names = {e.name for e in metadata.distribution("huggingface_hub").entry_points
                 if e.group == "console_scripts"}
    except metadata.PackageNotFoundError:  # pragma: no cover - a declared dependency
        names = set()
    return "hf" if "hf" in names or "huggingface-cli" not in names else "huggingface-cli"


def download_advice(name: str) -> str:
    """How to get the model ``name`` names: a missing local folder (``checkpoints/stable-diffusion-v1-4``) gets the
    hub id that fills it and that folder; a hub id gets a folder under ``models/``."""
    parts = Path(name).parts
    local = (len(parts) != 2 or parts[0] in _LOCAL_PARENTS or Path(parts[0]).is_dir()
             or name.startswith((".", "/", "~")))
    files = '--include "*.json" "*.txt" "*.safetensors"'
    if local:
        repo = KNOWN_HUB_IDS.get(parts[-1] if parts else "", "REPO_ID")
        return (f"model folder not found: {name}; on a machine with internet run `{hub_cli()} download {repo} "
                f"--local-dir {name} {files}`" + ("" if repo != "REPO_ID" else " with the hub id of the model") +
                ", or set --model / pretrained_model_path to a diffusers folder you have")
    folder = f"models/{parts[-1]}"
    return (f"model '{name}' is not a local folder and not in the Hugging Face cache; on a machine with internet run "
            f"`{hub_cli()} download {name} --local-dir {folder} {files}` and pass --model {folder}")


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
    hint = download_advice(repo_id)
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") or hint.startswith("model folder"):
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
            raise ModelError(
                f"the embedded model is missing from the installation ({folder}); reinstall attentionflow"
            )
    else:
        folder = Path(text).expanduser()
        try:
            folder.stat()
        except FileNotFoundError:
            pass
        except (OSError, RuntimeError) as exc:  # a name over the OS limit, a loop of symlinks
            raise ModelError(f"model path {shown(text)}: "
                             f"{getattr(exc, 'strerror', None) or 'a loop of symlinks'}") from None
        if not folder.exists():
            if not _HUB_ID.fullmatch(text):
                if Path(text).name in KNOWN_HUB_IDS:
                    raise ModelError(download_advice(text))
                raise ModelError(f"model folder not found: {text} (expected a diffusers folder with "
                                 f"{', '.join(COMPONENTS)}, a hub id like CompVis/stable-diffusion-v1-4, or "
                                 "'embedded')")
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



@dataclass(frozen=True)
class ModelLimits:
    """Bounds a model folder puts on user input (from its ``*/config.json`` files)."""

    num_train_timesteps: int
    """The scheduler's training timesteps: the most DDIM steps there can be."""
    vae_scale: int
    """Pixels per latent cell (8 for Stable Diffusion)."""
    unet_factor: int
    """How often the UNet halves the latent grid, as a factor (2 ** (down blocks - 1))."""
    vae_channels: int
    """Widest VAE feature map at full resolution (its first block's channels), for memory estimates."""
    trained_size: int | None = None
    """Frame side the UNet was trained at (its ``sample_size`` x ``vae_scale``: 512 for SD 1.x, 64 for the toy
    model)."""
    unet_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    """The UNet's ``block_out_channels`` (for memory estimates)."""
    parameters: int = 0
    """Weights of the UNet, VAE and text encoder (elements, from the weight files' headers; for memory estimates)."""

    @property
    def shape(self) -> ModelShape:
        """What :func:`attentionflow.resources.edit_memory` needs of this model."""
        return ModelShape(unet_channels=self.unet_channels, vae_channels=self.vae_channels,
                          vae_scale=self.vae_scale, parameters=self.parameters)

    @property
    def min_size(self) -> int:
        """Smallest frame side whose latent survives every UNet downsampling."""
        return self.vae_scale * self.unet_factor


def read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` ({} when missing); a broken file is a one-line ModelError naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ModelError(f"{path} is not valid JSON ({detail}); restore the model folder's file") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


#: Largest safetensors header read (SD's UNet header is ~100 KB).
MAX_HEADER_BYTES = 64 * 2**20


def safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor table of a ``.safetensors`` file (name -> dtype, shape, offsets), read from its header only.

    Raises a one-line ModelError for a file that is not a regular file, is empty, truncated, or whose header is not
    the format's JSON (the data must end exactly where the table says)."""
    try:
        mode, size = path.stat().st_mode, path.stat().st_size
        if not stat.S_ISREG(mode):
            raise ModelError(f"{path} is not a regular file (a FIFO, device or socket); restore the weights file")
        with open(path, "rb") as f:
            head = f.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
                raise ModelError(f"{path} is not a safetensors file ({size} bytes: empty, truncated or another "
                                 f"format); restore the weights file")
            table = json.loads(f.read(length).decode("utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(f"{path} has a broken safetensors header; restore the weights file") from None
    if not isinstance(table, dict):
        raise ModelError(f"{path} has a broken safetensors header; restore the weights file")
    table.pop("__metadata__", None)
    try:
        end = max((int(t["data_offsets"][1]) for t in table.values()), default=0)
        shapes_ok = all(isinstance(t["shape"], list) for t in table.values())
    except (TypeError, KeyError, ValueError, IndexError):
        end, shapes_ok = -1, False
    if not shapes_ok or 8 + length + end != size:
        raise ModelError(f"{path} is truncated or corrupt (its header describes {8 + length + max(end, 0)} bytes, "
                         f"the file has {size}); restore the weights file")
    return table


def _shape(tables: dict[str, Any], suffix: str) -> list[int] | None:
    return next((t["shape"] for name, t in tables.items() if name == suffix or name.endswith("." + suffix)), None)


def _config_types(path: Path, data: dict[str, Any], expected: dict[str, str]) -> None:
    """Refuse a config value of the wrong type: ``expected`` maps key -> 'int', 'ints' (a list of positive ints),
    'strs' (a list of names) or 'int|ints'. Absent keys are the library's defaults."""
    for key, kind in expected.items():
        if key not in data:
            continue
        value = data[key]
        is_int = isinstance(value, int) and not isinstance(value, bool) and value > 0
        is_ints = isinstance(value, list) and bool(value) and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ok = {"int": is_int, "ints": is_ints, "int|ints": is_int or is_ints,
              "strs": isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)}[kind]
        if not ok:
            want = {"int": "a positive integer", "ints": "a list of positive integers", "strs": "a list of block "
                    "names", "int|ints": "a positive integer or a list of them"}[kind]
            raise ModelError(f"{path}: {key} must be {want}, got {shown(value)}; restore the model's file")


def weight_headers(folder: Path) -> dict[str, dict[Path, dict[str, Any]]]:
    """Per weight component (unet, vae, text_encoder), each ``.safetensors`` file's tensor table
    (:func:`safetensors_header`), sorted by name."""
    return {comp: {path: safetensors_header(path) for path in sorted((folder / comp).glob("*.safetensors"))}
            for comp in _WEIGHT_COMPONENTS}


def check_model_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Check a resolved model folder's configs and weight headers against each other, reading no weights: the
    value types diffusers relies on, a scheduler config, every ``.safetensors`` header, and that each component's
    weights are that component's, in the shapes its config names (first and last convolution, token embedding).
    Returns the configs read: ``unet``, ``vae``, ``text_encoder`` and ``scheduler``, and under ``weights`` each
    weight component's ``{file: tensor table}`` headers (read once, for :func:`parameter_count` too)."""
    sched_path = folder / "scheduler" / "scheduler_config.json"
    if not sched_path.is_file():
        raise ModelError(f"model folder {folder} has no scheduler/scheduler_config.json; restore the model's file")
    configs = {name: read_json_file(folder / name / "config.json") for name in _WEIGHT_COMPONENTS}
    configs["scheduler"] = read_json_file(sched_path)
    _config_types(sched_path, configs["scheduler"], {"num_train_timesteps": "int"})
    prediction = configs["scheduler"].get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise ModelError(f"{sched_path}: prediction_type {shown(prediction)} is not one DDIM can sample and invert; "
                         f"use one of: {', '.join(PREDICTION_TYPES)}")
    _config_types(folder / "unet" / "config.json", configs["unet"], {
        "down_block_types": "strs", "up_block_types": "strs", "block_out_channels": "ints", "in_channels": "int",
        "out_channels": "int", "sample_size": "int|ints", "cross_attention_dim": "int|ints",
        "attention_head_dim": "int|ints", "layers_per_block": "int|ints"})
    _config_types(folder / "vae" / "config.json", configs["vae"], {
        "block_out_channels": "ints", "down_block_types": "strs", "up_block_types": "strs", "in_channels": "int",
        "out_channels": "int", "latent_channels": "int", "layers_per_block": "int"})
    _config_types(folder / "text_encoder" / "config.json", configs["text_encoder"], {
        "hidden_size": "int", "vocab_size": "int", "num_hidden_layers": "int", "max_position_embeddings": "int"})
    unet, vae = configs["unet"], configs["vae"]
    expect = {  # component -> [(tensor name suffix, the leading dims its config implies)]
        "unet": [("conv_in.weight", [_first(unet, "block_out_channels"), unet.get("in_channels")]),
                 ("conv_out.weight", [unet.get("out_channels")])],
        "vae": [("encoder.conv_in.weight", [_first(vae, "block_out_channels"), vae.get("in_channels")]),
                ("decoder.conv_out.weight", [vae.get("out_channels")])],
        "text_encoder": [("embeddings.token_embedding.weight", [configs["text_encoder"].get("vocab_size"),
                                                                 configs["text_encoder"].get("hidden_size")])],
    }
    headers = weight_headers(folder)
    for comp, checks in expect.items():
        tables: dict[str, Any] = {}
        for table in headers[comp].values():
            tables.update(table)
        for suffix, want in checks:
            shape = _shape(tables, suffix)
            if shape is None:
                raise ModelError(f"the weights in {folder / comp} have no {suffix}: they are not a {comp}'s "
                                 f"weights; restore the model's {comp} folder")
            if any(w is not None and w != got for w, got in zip(want, shape)):
                raise ModelError(f"{folder / comp}: {suffix} has shape {shape} but config.json describes "
                                 f"{want} ...; the config and the weights disagree")
    configs["weights"] = headers
    return configs


def _first(config: dict[str, Any], key: str) -> int | None:
    value = config.get(key)
    return value[0] if isinstance(value, list) and value else None


def parameter_count(folder: Path, headers: dict[str, dict[Path, dict[str, Any]]] | None = None) -> int:
    """Weights of a model folder's UNet, VAE and text encoder, as diffusers loads them: the elements the
    ``.safetensors`` headers list (the files without a variant such as ``.fp16`` when there are any, else one
    variant's), or, for ``.bin`` files only (no header to read without unpickling), their size over 4. ``headers``:
    what :func:`check_model_files` read (``["weights"]``), so that no header is read twice."""
    if headers is None:
        headers = weight_headers(folder)
    count = 0
    for comp in _WEIGHT_COMPONENTS:
        files = _one_variant(sorted(headers.get(comp, {})))
        for weights in files:
            count += sum(math.prod(int(d) for d in t["shape"]) for t in headers[comp][weights].values())
        if not files:
            count += sum(path.stat().st_size // 4 for path in _one_variant(sorted((folder / comp).glob("*.bin"))))
    return count


def _one_variant(files: list[Path]) -> list[Path]:
    """The files of one checkpoint: those without a variant (``name.ext``), else those of the first file's."""
    plain = [f for f in files if f.name.count(".") == 1]
    if plain or not files:
        return plain
    variant = files[0].name.split(".")[-2]
    return [f for f in files if f.name.split(".")[-2] == variant]


def model_limits(folder: Path) -> ModelLimits:
    """Read the limits of a resolved model folder (see :func:`resolve_model_path`); a broken JSON file of its
    scheduler, UNet, VAE or tokenizer, a config value of the wrong type, or weights that are broken or disagree
    with their config are a one-line ModelError naming the file (:func:`check_model_files`)."""
    configs = check_model_files(folder)
    sched, unet, vae = configs["scheduler"], configs["unet"], configs["vae"]
    for name in ("vocab.json", "tokenizer.json", "tokenizer_config.json"):  # named now, before transformers loads
        read_json_file(folder / "tokenizer" / name)
    vae_blocks = vae.get("block_out_channels") or [128, 256, 512, 512]
    down = unet.get("down_block_types") or [None] * 4
    return ModelLimits(unet_channels=tuple(unet.get("block_out_channels") or ModelLimits.unet_channels),
                       parameters=parameter_count(folder, configs["weights"]),
                       num_train_timesteps=int(sched.get("num_train_timesteps", 1000)),
                       vae_scale=2 ** (len(vae_blocks) - 1), unet_factor=2 ** (len(down) - 1),
                       vae_channels=int(vae_blocks[0]),
                       trained_size=int(unet["sample_size"]) * 2 ** (len(vae_blocks) - 1)
                       if isinstance(unet.get("sample_size"), int) else None)
