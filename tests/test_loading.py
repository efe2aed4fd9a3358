"""Model loading: diffusers folders, safetensors only, clear errors, embedded model, device/dtype."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from attentionflow.errors import ConfigError, ModelError
from attentionflow.models.loading import (
    embedded_model_path,
    load_components,
    resolve_model_path,
    select_device,
    select_dtype,
)


def test_roundtrip_loads_identical_weights(tiny_model_dir, tiny):
    loaded = load_components(tiny_model_dir)
    x, e = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.unet(x, 10, e).sample, tiny.unet(x, 10, e).sample)
    assert loaded.tokenizer("a car").input_ids == tiny.tokenizer("a car").input_ids
    assert loaded.scheduler.config.clip_sample is False and loaded.scheduler.config.set_alpha_to_one is False
    assert not any(p.requires_grad for p in loaded.unet.parameters())


def test_missing_component_is_named(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelError, match="missing component\\(s\\) vae"):
        resolve_model_path(broken)


def test_pickle_only_weights_are_refused(tiny_model_dir, tmp_path):
    broken = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, broken)
    for f in (broken / "unet").glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(ModelError, match="safetensors"):
        resolve_model_path(broken)


def test_missing_folder_and_uncached_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelError, match="not found"):
        resolve_model_path(tmp_path / "nothing")
    with pytest.raises(ModelError) as err:
        resolve_model_path("someone/some-model")
    assert "hf download someone/some-model --local-dir models/some-model" in str(err.value)
    assert "--model models/some-model" in str(err.value)


def test_the_installed_huggingface_hub_provides_the_advised_command():
    import importlib.metadata as md

    from attentionflow.models.paths import hub_cli

    scripts = {e.name for e in md.distribution("huggingface_hub").entry_points if e.group == "console_scripts"}
    assert hub_cli() in scripts


@pytest.mark.parametrize("name, command", [
    # vid2vid-zero's configs: a local folder, not a hub id; the advice fills that very folder
    ("checkpoints/stable-diffusion-v1-4",
     "hf download CompVis/stable-diffusion-v1-4 --local-dir checkpoints/stable-diffusion-v1-4"),
    ("models/stable-diffusion-2-1-base",
     "hf download stabilityai/stable-diffusion-2-1-base --local-dir models/stable-diffusion-2-1-base"),
    ("./weights/sd/stable-diffusion-v1-5",
     "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir ./weights/sd/stable-diffusion-v1-5"),
    ("CompVis/stable-diffusion-v1-4",  # a hub id
     "hf download CompVis/stable-diffusion-v1-4 --local-dir models/stable-diffusion-v1-4"),
])
def test_missing_model_advice_names_hub_id_and_folder(tmp_path, monkeypatch, name, command):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as err:
        resolve_model_path(name)
    msg = str(err.value)
    assert command in msg and "huggingface-cli" not in msg and "\n" not in msg


def test_embedded_model_resolves_and_loads():
    folder = resolve_model_path("embedded")
    assert folder == embedded_model_path()
    comps = load_components("embedded")
    assert comps.unet.config.cross_attention_dim == comps.text_encoder.config.hidden_size
    assert comps.text_encoder.config.vocab_size == len(comps.tokenizer)


def test_device_and_dtype_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    assert select_dtype("no", torch.device("cpu")) == torch.float32
    assert select_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16"):
        select_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ConfigError, match="fp8"):
        select_dtype("fp8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            select_device("cuda")


SD_PATH = os.environ.get("ATTENTIONFLOW_SD_PATH")


@pytest.mark.real_weights
@pytest.mark.skipif(not SD_PATH, reason="set ATTENTIONFLOW_SD_PATH to a Stable Diffusion v1.x diffusers folder")
@pytest.mark.parametrize("method, floor_db", [("null-text", 22.0), ("direct", 25.0)])
def test_real_sd_reconstructs_the_input(method, floor_db):
    """With real weights, null-text inversion reconstructs the input closely (PSNR > 22 dB); direct inversion gives
    the VAE round trip (SD's VAE reaches well above 25 dB on this synthetic clip)."""
    from attentionflow.config import InversionSettings, MMIConfig
    from attentionflow.pipeline import AttentionFlowPipeline
    from tests.synthetic import MovingSquare, make_video

    pipe = AttentionFlowPipeline.from_pretrained(SD_PATH, device="auto",
                                                 mixed_precision="fp16" if torch.cuda.is_available() else "no")
    frames, _ = make_video(size=256, n_frames=4, squares=(MovingSquare(40, 100, 60, 6, 0),), seed=1)
    plan = pipe.plan("a square is moving on the road", ["a square is moving on the snow"],
                     InversionSettings.default(num_inference_steps=20, inversion=method),
                     mmi=MMIConfig(motion_words=["moving"]))
    out = pipe.edit(frames, plan)
    mse = np.mean((out.reconstruction.astype(float) - frames.astype(float)) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > floor_db
