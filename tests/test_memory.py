"""The memory estimate made before a model is loaded (:mod:`attentionflow.resources`, ``jobs.host_memory_needed``)
and the weight count it reads from a model folder's headers. How close it comes to a measured peak is the benchmark's
job (``benchmarks/bench_memory.py``, docs/benchmarks.md), not a test's."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from attentionflow.config import EditConfig
from attentionflow.jobs import host_memory_needed
from attentionflow.models.paths import ModelLimits, embedded_model_path, model_limits, parameter_count
from attentionflow.resources import AUTO_CHUNK_MEMORY_SHARE, GiB, edit_memory, unet_activation_bytes

LIMITS = ModelLimits(num_train_timesteps=1000, vae_scale=8, unet_factor=8, vae_channels=128,
                     unet_channels=(320, 640, 1280, 1280), parameters=1_000_000_000)


def _config(**changes: object) -> EditConfig:
    cfg = EditConfig()
    cfg.input_data.n_sample_frames, cfg.input_data.width, cfg.input_data.height = 8, 512, 512
    cfg.validation_data.prompts = ["a target"]  # two branches: source and target
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_on_a_cpu_the_weights_and_the_activations_count_on_a_gpu_only_the_frames() -> None:
    cpu = host_memory_needed(_config(device="cpu", chunk_frames=8), LIMITS)
    gpu = host_memory_needed(_config(device="cuda", chunk_frames=8), LIMITS)
    heavier = dataclasses.replace(LIMITS, parameters=2 * LIMITS.parameters)
    assert host_memory_needed(_config(device="cpu", chunk_frames=8), heavier) - cpu == 4 * LIMITS.parameters
    assert host_memory_needed(_config(device="cuda", chunk_frames=8), heavier) == gpu  # the weights live on the GPU
    assert gpu < 0.1 * GiB < 4 * GiB < cpu
    # bf16 halves the weights and the activations
    half = host_memory_needed(_config(device="cpu", chunk_frames=8, mixed_precision="bf16"), LIMITS)
    assert half < 0.6 * cpu


@pytest.mark.parametrize("chunk", [1, 4, 8])
def test_a_fixed_chunk_bounds_the_unet_activations(chunk: int) -> None:
    one = host_memory_needed(_config(device="cpu", chunk_frames=1), LIMITS)
    got = host_memory_needed(_config(device="cpu", chunk_frames=chunk), LIMITS)
    rows = 4  # two prompts (source, target) x two guidance halves
    assert got - one == (chunk - 1) * rows * unet_activation_bytes(LIMITS.unet_channels, (64, 64), 4)


@pytest.mark.parametrize("available_gib", [6, 12, 64])
def test_auto_chunks_fill_at_most_the_share_of_what_the_weights_leave(available_gib: int) -> None:
    available = available_gib * GiB
    needed = host_memory_needed(_config(device="cpu", chunk_frames="auto"), LIMITS, available=available)
    weights = 4 * LIMITS.parameters
    per_frame = 4 * unet_activation_bytes(LIMITS.unet_channels, (64, 64), 4)  # 4 latent rows a frame
    one = host_memory_needed(_config(device="cpu", chunk_frames=1), LIMITS)
    every = host_memory_needed(_config(device="cpu", chunk_frames=8), LIMITS)
    unet = needed - (one - per_frame)  # the activations of the chunk auto picks
    assert per_frame <= unet <= max(per_frame, AUTO_CHUNK_MEMORY_SHARE * (available - weights))
    assert unet + per_frame > AUTO_CHUNK_MEMORY_SHARE * (available - weights) or needed == every  # the most that fit
    if available_gib == 64:
        assert needed == every  # every frame fits: the unchunked estimate


def test_the_estimate_grows_with_frames_size_and_branches() -> None:
    base = edit_memory(8, 512, 512, 2, LIMITS.shape, rows_per_frame=4, chunk=8)
    assert edit_memory(16, 512, 512, 2, LIMITS.shape, rows_per_frame=4, chunk=8).data == 2 * base.data
    assert edit_memory(8, 1024, 1024, 2, LIMITS.shape, rows_per_frame=4, chunk=8).unet == 4 * base.unet
    assert edit_memory(8, 512, 512, 3, LIMITS.shape, rows_per_frame=6, chunk=8).unet == 1.5 * base.unet
    assert base.total == base.weights + base.data + base.unet + base.vae


def _write_weights(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: torch.zeros(shape) for name, shape in shapes.items()}, str(path))


def test_parameter_count_reads_the_headers_of_one_checkpoint_per_component(tmp_path: Path) -> None:
    _write_weights(tmp_path / "unet" / "diffusion_pytorch_model.safetensors", {"a": (3, 4), "b": (5,)})
    _write_weights(tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors", {"a": (3, 4), "b": (5,)})
    _write_weights(tmp_path / "vae" / "diffusion_pytorch_model.fp16.safetensors", {"c": (2, 2, 2)})
    _write_weights(tmp_path / "text_encoder" / "model-00001-of-00002.safetensors", {"d": (7,)})
    _write_weights(tmp_path / "text_encoder" / "model-00002-of-00002.safetensors", {"e": (1, 9)})
    assert parameter_count(tmp_path) == (12 + 5) + 8 + (7 + 9)  # the fp16 copy of the UNet is not counted twice


def test_the_embedded_models_count_is_what_torch_loads(tmp_path: Path) -> None:
    from attentionflow.pipeline import AttentionFlowPipeline

    folder = tmp_path / "model"
    shutil.copytree(embedded_model_path(), folder)
    pipe = AttentionFlowPipeline.from_pretrained(str(folder), device="cpu")
    assert model_limits(folder).shape == pipe.shape
