"""Shared fixtures: tiny random-weight SD components and an offline CLIP tokenizer (no downloads)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(1)

from attentionflow.models.factory import Components, tiny_components  # noqa: E402
from attentionflow.models.tokenizer import load_tokenizer, openai_clip_merges, write_tokenizer_folder  # noqa: E402


@pytest.fixture(scope="session")
def clip_tokenizer_dir(tmp_path_factory):
    """A folder holding the real CLIP BPE tokenizer (49,408 tokens), built offline."""
    folder = tmp_path_factory.mktemp("clip_tokenizer")
    write_tokenizer_folder(folder, openai_clip_merges())
    return folder


@pytest.fixture(scope="session")
def clip_tokenizer(clip_tokenizer_dir):
    """The real CLIP tokenizer (start token 49406 at index 0, end/pad 49407)."""
    return load_tokenizer(clip_tokenizer_dir)


@pytest.fixture()
def tiny(clip_tokenizer) -> Components:
    """Fresh tiny random-weight UNet/VAE/CLIP + CLIP tokenizer + SD DDIM scheduler (seed 0)."""
    return tiny_components(clip_tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, clip_tokenizer):
    """The tiny random-weight components saved as a diffusers Stable Diffusion folder."""
    from attentionflow.models.loading import save_components

    folder = tmp_path_factory.mktemp("tiny_sd")
    save_components(tiny_components(clip_tokenizer, seed=0), folder)
    return folder


@pytest.fixture(scope="session")
def square_video():
    """(frames (8, 32, 32, 3) uint8, masks (8, 32, 32) bool): a textured square moving right over texture."""
    from tests.synthetic import MovingSquare, make_video

    frames, masks = make_video(size=32, n_frames=8, squares=(MovingSquare(4, 10, 10, 2, 0),), seed=3)
    return frames, masks[:, 0]
