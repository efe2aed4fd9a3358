"""Quality of a toy-world model: judged text-to-image accuracy and VAE reconstruction PSNR.

A plain text-to-image sampler (DDIM + classifier-free guidance, no attention tricks) over loaded
:class:`~attentionflow.models.factory.Components`, and the judge of :mod:`attentionflow.toyworld.judge`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler
from tqdm.auto import tqdm

from attentionflow.evaluation import metrics
from attentionflow.inversion import guided_noise
from attentionflow.models.factory import Components
from attentionflow.toyworld.judge import judge
from attentionflow.toyworld.world import make_video, parse_caption, random_caption


@torch.no_grad()
def encode_prompts(components: Components, prompts: Sequence[str]) -> torch.Tensor:
    """Text embeddings ``(len(prompts), 77, hidden)`` (last hidden state, as Stable Diffusion)."""
    tok = components.tokenizer
    ids = tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids.to(components.unet.device)  # (P, 77)
    return components.text_encoder(ids).last_hidden_state


@torch.no_grad()
def generate_images(components: Components, prompts: Sequence[str], seeds: Sequence[int],
                    guidance_scale: float = 7.5, steps: int = 50, batch_size: int = 16,
                    progress: bool = False) -> np.ndarray:
    """Text-to-image with DDIM + classifier-free guidance.

    Args:
        prompts, seeds: one prompt and one noise seed per image (same length).
        guidance_scale: CFG scale; steps: DDIM steps; batch_size: images per UNet batch.

    Returns:
        ``(len(prompts), H, W, 3) uint8`` images.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    unet, vae = components.unet, components.vae
    device, dtype = unet.device, unet.dtype
    scheduler = DDIMScheduler.from_config(components.scheduler.config)
    side = unet.config.sample_size
    uncond = encode_prompts(components, [""])  # (1, 77, hidden)
    out = []
    starts = range(0, len(prompts), batch_size)
    for s in tqdm(starts, desc="generate", disable=not progress):
        ps, ss = list(prompts[s : s + batch_size]), list(seeds[s : s + batch_size])
        cond = encode_prompts(components, ps)  # (b, 77, hidden)
        ctx = torch.cat([uncond.expand(len(ps), -1, -1), cond])  # (2b, 77, hidden): uncond half first
        x = torch.stack([
            torch.randn((unet.config.in_channels, side, side), generator=torch.Generator().manual_seed(int(seed)))
            for seed in ss
        ]).to(device, dtype)  # (b, 4, h, w)
        scheduler.set_timesteps(steps)
        x = x * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            eps = unet(torch.cat([x, x]), t, encoder_hidden_states=ctx).sample  # (2b, 4, h, w)
            eps_u, eps_c = eps.chunk(2)
            x = scheduler.step(guided_noise(eps_u, eps_c, guidance_scale), t, x).prev_sample
        img = vae.decode(x / vae.config.scaling_factor).sample  # (b, 3, H, W) in [-1, 1]
        img = ((img.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1)  # (b, H, W, 3)
        out.append(img.cpu().numpy())
    return np.concatenate(out)


@dataclass
class QualityReport:
    """Judged accuracy of generated images (fractions in [0, 1])."""

    colour: float
    background: float
    shape: float
    n: int
    prompts: list[str] = field(default_factory=list)
    judged: list[tuple[str | None, str | None, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``colour 95.8% background 100.0% shape 81.2% (n=48)``."""
        return (f"colour {100 * self.colour:.1f}% background {100 * self.background:.1f}% "
                f"shape {100 * self.shape:.1f}% (n={self.n})")


def evaluation_prompts(n: int = 48, seed: int = 2024) -> list[str]:
    """``n`` fixed evaluation captions (verb "moving"), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    return [random_caption(rng, verb="moving") for _ in range(n)]


def judge_images(images: np.ndarray, prompts: Sequence[str]) -> QualityReport:
    """Judge ``images (N, H, W, 3) uint8`` against the captions they were generated from."""
    c = b = s = 0
    judged = []
    for img, prompt in zip(images, prompts):
        colour, shape, background = parse_caption(prompt)
        j = judge(img)
        judged.append((j.colour, j.shape, j.background))
        c += j.colour == colour
        b += j.background == background
        s += j.shape == shape
    n = max(1, len(prompts))
    return QualityReport(c / n, b / n, s / n, len(prompts), list(prompts), judged)


def evaluate_generation(components: Components, n: int = 48, guidance_scale: float = 7.5, steps: int = 50,
                        seed: int = 0, progress: bool = False) -> tuple[QualityReport, np.ndarray]:
    """Generate ``n`` images for :func:`evaluation_prompts` (noise seeds ``seed .. seed + n - 1``) and
    judge them. Returns the report and the images ``(n, H, W, 3) uint8``."""
    prompts = evaluation_prompts(n)
    images = generate_images(components, prompts, [seed + i for i in range(n)], guidance_scale, steps,
                             progress=progress)
    return judge_images(images, prompts), images


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images (H, W, 3): :func:`attentionflow.evaluation.metrics.psnr` on one frame."""
    return metrics.psnr(a[None], b[None])


@torch.no_grad()
def vae_psnr(components: Components, n_videos: int = 8, frames: int = 8, seed: int = 100_000) -> float:
    """Mean per-frame PSNR (dB) of VAE encode -> decode on held-out toy videos.

    Held out: :func:`make_video` frames (seeded from ``seed``) are never drawn by the training sampler.
    """
    vae = components.vae
    rng = np.random.default_rng(seed)
    values = []
    for i in range(n_videos):
        video = make_video(random_caption(rng), frames=frames, seed=seed + i, path=("straight", "curved")[i % 2])
        x = torch.from_numpy(video.frames).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # (N, 3, H, W)
        x = x.to(vae.device, vae.dtype)
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        rec = ((rec.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        values += [psnr(f, r) for f, r in zip(video.frames, rec)]
    return float(np.mean(values))

