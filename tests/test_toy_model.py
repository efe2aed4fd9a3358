"""The shipped (trained) toy model: loads like an SD folder, generates what the caption asks for."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel

from attentionflow.models.loading import embedded_model_path, load_components
from attentionflow.toyworld.judge import judge
from attentionflow.toyworld.model import SPLIT_WORDS, TOY_MODEL_DIR
from attentionflow.toyworld.quality import generate_images, psnr
from attentionflow.toyworld.world import WORLD_WORDS, make_video


@pytest.fixture(scope="module")
def toy():
    return load_components("embedded", device="cpu", dtype=torch.float32)


def test_shipped_folder_is_a_small_sd_diffusers_folder():
    folder = embedded_model_path()
    assert folder.resolve() == TOY_MODEL_DIR.resolve()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (folder / part).is_dir(), part
    weights = list(folder.rglob("*.safetensors"))
    assert len(weights) == 3 and not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert total <= 30 * 1024 * 1024
    assert "trained" in (folder / "README.md").read_text().lower()


def test_loads_through_the_sd_loader_with_the_toy_tokenizer(toy):
    assert isinstance(toy.unet, UNet2DConditionModel) and isinstance(toy.vae, AutoencoderKL)
    assert isinstance(toy.text_encoder, CLIPTextModel) and isinstance(toy.scheduler, DDIMScheduler)
    assert toy.scheduler.config.beta_schedule == "scaled_linear"
    assert toy.text_encoder.config.vocab_size == len(toy.tokenizer)
    assert toy.text_encoder.config.hidden_size == toy.unet.config.cross_attention_dim
    for word in WORLD_WORDS:
        assert len(toy.tokenizer.tokenize(word)) == len(SPLIT_WORDS.get(word, (word,)))
    # 64x64 images <-> 16x16x4 latents; the scaling factor was measured on training latents
    assert toy.unet.config.sample_size * 4 == 64
    assert toy.vae.config.scaling_factor != pytest.approx(0.18215)


@torch.no_grad()
def test_vae_reconstructs_held_out_frames(toy):
    video = make_video("a purple square is moving on the water", frames=4, seed=4242, path="curved")
    x = torch.from_numpy(video.frames).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # (N, 3, H, W)
    z = toy.vae.encode(x).latent_dist.mean
    assert z.shape == (4, 4, 16, 16)
    rec = ((toy.vae.decode(z).sample.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.mean([psnr(a, b) for a, b in zip(video.frames, rec)]) >= 28.0


# Fixed captions (one per colour, varied shapes/backgrounds) and fixed seeds: no cherry-picking by seed.
CASES = [
    ("a red circle is moving on the road", 0),
    ("a blue square is moving on the grass", 1),
    ("a yellow triangle is moving on the water", 2),
    ("a white circle is moving on the sand", 3),
    ("a green square is moving on the snow", 4),
    ("a purple circle is moving on the road", 5),
]


def test_generates_the_asked_colour_and_background(toy):
    prompts, seeds = [c for c, _ in CASES], [s for _, s in CASES]
    images = generate_images(toy, prompts, seeds, guidance_scale=7.5, steps=25)
    assert images.shape == (len(CASES), 64, 64, 3)
    verdicts = [judge(img) for img in images]
    colours = [v.colour for v in verdicts]
    backgrounds = [v.background for v in verdicts]
    want_colours = [p.split()[1] for p in prompts]
    want_backgrounds = [p.split()[-1] for p in prompts]
    assert sum(c == w for c, w in zip(colours, want_colours)) >= len(CASES) - 1, colours
    assert sum(b == w for b, w in zip(backgrounds, want_backgrounds)) >= len(CASES) - 1, backgrounds


def test_the_caption_controls_the_colour_for_the_same_noise(toy):
    prompts = ["a red circle is moving on the road", "a blue circle is moving on the road"]
    images = generate_images(toy, prompts, [7, 7], guidance_scale=7.5, steps=25)
    assert [judge(img).colour for img in images] == ["red", "blue"]
