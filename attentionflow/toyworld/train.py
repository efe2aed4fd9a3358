"""Train the toy Stable Diffusion model on the procedural world.

Stages (each resumable from ``<work>/ckpt_<stage>.pt``):

1. ``vae``: AutoencoderKL on fresh random scenes, MSE + L1 reconstruction + a tiny KL term.
2. ``latents``: encode a fixed bank of scenes (posterior means); ``scaling_factor = 1 / std``.
3. ``unet``: text encoder + UNet with the DDPM epsilon loss on Stable Diffusion's scaled-linear
   betas, 10% caption dropout (empty caption) for classifier-free guidance, EMA weights.
4. ``export``: a Stable Diffusion diffusers folder (safetensors) at ``<work>/model`` (and ``--export``).

Usage (runs in the background fine; progress goes to the log file and a tqdm bar)::

    python -m attentionflow.toyworld.train --work runs/toytrain --export attentionflow/assets/toy_model

Every random draw depends only on ``--seed`` and the step index, so a resumed run continues exactly.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from attentionflow.toyworld.model import (
    ToyModelConfig,
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
    save_model_folder,
)
from attentionflow.toyworld.world import sample_training_masks

logger = logging.getLogger("attentionflow.toyworld.train")


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults: the shipped model's run).

    ``max_minutes_*`` end a stage early and tie its cosine LR decay to wall time, so a run on a busy
    2-core CPU still finishes within budget (the shipped run stopped the VAE at step 1893 and the
    UNet at step 3931 by these limits). Set them to 0 to train by step count only.
    """

    seed: int = 0
    vae_steps: int = 3000
    vae_batch: int = 16
    vae_lr: float = 1.5e-3
    kl_weight: float = 1e-6
    bank_size: int = 8000
    unet_steps: int = 4000
    unet_batch: int = 32
    unet_lr: float = 6e-4
    text_lr: float = 3e-4
    caption_dropout: float = 0.1
    ema_decay: float = 0.998
    warmup: int = 100
    checkpoint_seconds: float = 180.0
    max_minutes_vae: float = 25.0
    max_minutes_unet: float = 55.0
    object_weight: float = 0.0
    """VAE: extra weight of the squared error on object pixels (small objects are few pixels of the loss)."""
    unet_object_weight: float = 0.0
    """UNet: extra weight of the noise-prediction error on the latent pixels an object covers (its area share per
    latent pixel), so that the shapes of small objects weigh in the loss."""
    multi_object: float = 0.0
    """Share of training scenes with 1-2 extra static objects beside the captioned one (half of them look-alikes)."""
    init_from: str = ""
    """Fine-tune: a toy model folder whose VAE, UNet and text encoder are the starting point (``vae_steps 0`` keeps
    its VAE and latent scale as they are). Empty: train from scratch."""


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def _progress_step(step: int, total: int, elapsed_s: float, max_minutes: float) -> int:
    """The schedule position: the step, or further along when the stage's time limit comes first.

    Ties the cosine decay to whichever budget (steps or wall time) ends the stage first, so a run on
    a busy machine still finishes its schedule.
    """
    by_time = int(total * elapsed_s / (60.0 * max_minutes)) if 0 < max_minutes < 1e8 else 0
    return max(step, by_time)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` -> ``(N, 3, H, W) float32`` in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (N, 3, H, W)


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


class _Clock:
    """Calls back every ``seconds`` (checkpointing)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.last = seconds, time.monotonic()

    def due(self) -> bool:
        if time.monotonic() - self.last >= self.seconds:
            self.last = time.monotonic()
            return True
        return False


def _folder_vae(folder: str) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(Path(folder) / "vae", use_safetensors=True)


def train_vae(work: Path, cfg: ToyModelConfig, tc: TrainConfig, progress: bool = True) -> torch.nn.Module:
    """Stage 1: train (or resume, or load the finished) VAE; returns it in eval mode."""
    done = work / "vae_final.pt"
    vae = build_vae(cfg)
    if tc.init_from and tc.vae_steps == 0 and not done.exists():
        vae.load_state_dict(_folder_vae(tc.init_from).state_dict())
        torch.save(vae.state_dict(), done)
        logger.info("vae: kept from %s", tc.init_from)
    if done.exists():
        vae.load_state_dict(torch.load(done, weights_only=True))
        return vae.eval()
    opt = torch.optim.AdamW(vae.parameters(), lr=tc.vae_lr, weight_decay=0.0)
    ckpt, start, elapsed0 = work / "ckpt_vae.pt", 0, 0.0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, elapsed0 = state["step"], state.get("elapsed", 0.0)
        logger.info("vae: resumed at step %d", start)
    else:
        torch.manual_seed(tc.seed)
        vae = build_vae(cfg)
        if tc.init_from:
            vae.load_state_dict(_folder_vae(tc.init_from).state_dict())
            logger.info("vae: fine-tuning from %s", tc.init_from)
        opt = torch.optim.AdamW(vae.parameters(), lr=tc.vae_lr, weight_decay=0.0)
    vae.train()
    clock, t0 = _Clock(tc.checkpoint_seconds), time.monotonic()
    bar = tqdm(range(start, tc.vae_steps), initial=start, total=tc.vae_steps, desc="vae", disable=not progress)
    step = start
    for step in bar:
        rng = np.random.default_rng([tc.seed, 1, step])
        images, _, objects = sample_training_masks(rng, tc.vae_batch, cfg.image_size, tc.multi_object)
        x = _to_tensor(images)  # (B, 3, H, W)
        weight = torch.from_numpy(objects).float().unsqueeze(1)  # (B, 1, H, W) object pixels
        gen = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)  # (B, 4, h, w)
        rec = vae.decode(z).sample  # (B, 3, H, W)
        mse = F.mse_loss(rec, x)
        loss = mse + 0.1 * F.l1_loss(rec, x) + tc.kl_weight * post.kl().mean()
        if tc.object_weight > 0:
            loss = loss + tc.object_weight * ((rec - x) ** 2 * weight).sum() / (3 * weight.sum()).clamp_min(1.0)
        f = _lr_factor(_progress_step(step, tc.vae_steps, elapsed0 + time.monotonic() - t0, tc.max_minutes_vae),
                       tc.vae_steps, tc.warmup)
        for g in opt.param_groups:
            g["lr"] = tc.vae_lr * f
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        psnr = 10 * math.log10(4.0 / max(mse.item(), 1e-10))  # range [-1, 1] -> peak-to-peak 2
        bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr:.1f}")
        if step % 50 == 0:
            logger.info("vae step %d loss %.5f psnr %.2f elapsed %.0fs", step, loss.item(), psnr,
                        time.monotonic() - t0)
        if clock.due():
            _save(ckpt, {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                         "elapsed": elapsed0 + time.monotonic() - t0})
        if 0 < tc.max_minutes_vae < (elapsed0 + time.monotonic() - t0) / 60:
            logger.info("vae: time limit reached at step %d", step)
            break
    torch.save(vae.state_dict(), done)
    logger.info("vae: done (%d steps)", step + 1)
    return vae.eval()


@torch.no_grad()
def encode_bank(work: Path, vae: torch.nn.Module, cfg: ToyModelConfig, tc: TrainConfig,
                progress: bool = True) -> tuple[torch.Tensor, list[str], float]:
    """Stage 2: latents ``(bank_size, 4, h, w)`` (posterior means), captions, scaling factor.

    The object masks of the same scenes, as each latent pixel's object area share ``(bank_size, 1, h, w)``,
    are kept in ``work / "masks.pt"`` (see :func:`bank_masks`).
    """
    path = work / "latents.pt"
    if path.exists():
        state = torch.load(path, weights_only=False)
        return state["latents"], state["captions"], state["scale"]
    chunks, captions = [], []
    for i in tqdm(range(math.ceil(tc.bank_size / 64)), desc="encode", disable=not progress):
        images, caps, _ = _bank_chunk(tc, cfg, i)
        chunks.append(vae.encode(_to_tensor(images)).latent_dist.mean)  # (n, 4, h, w)
        captions += caps
    latents = torch.cat(chunks)  # (bank_size, 4, h, w)
    scale = float(1.0 / latents.std())
    if tc.init_from and tc.vae_steps == 0:  # a kept VAE keeps its latent scale (the UNet learned it)
        scale = float(json.loads((Path(tc.init_from) / "vae" / "config.json").read_text())["scaling_factor"])
    torch.save({"latents": latents, "captions": captions, "scale": scale}, path)
    logger.info("latents: %d encoded, std %.4f -> scaling_factor %.4f", len(captions), 1 / scale, scale)
    return latents, captions, scale


def _bank_chunk(tc: TrainConfig, cfg: ToyModelConfig, i: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The bank's ``i``-th chunk of (at most) 64 scenes: images, captions, object masks (the same draws each time)."""
    rng = np.random.default_rng([tc.seed, 2, i])
    return sample_training_masks(rng, min(64, tc.bank_size - 64 * i), cfg.image_size, tc.multi_object)


def bank_masks(work: Path, cfg: ToyModelConfig, tc: TrainConfig, latent_size: int,
               progress: bool = True) -> torch.Tensor:
    """Object area share per latent pixel of the bank's scenes, ``(bank_size, 1, latent_size, latent_size)``.

    Regenerated from the bank's seeds (no VAE needed), so a bank encoded without masks gets them too; cached in
    ``work / "masks.pt"``.
    """
    path = work / "masks.pt"
    if path.exists():
        return torch.load(path)
    chunks = []
    for i in tqdm(range(math.ceil(tc.bank_size / 64)), desc="masks", disable=not progress):
        _, _, masks = _bank_chunk(tc, cfg, i)  # (n, size, size) bool
        full = torch.from_numpy(masks).float().unsqueeze(1)  # (n, 1, size, size)
        chunks.append(F.adaptive_avg_pool2d(full, latent_size))  # (n, 1, latent, latent): area share
    out = torch.cat(chunks)
    torch.save(out, path)
    return out


def _ema_update(ema: Sequence[torch.Tensor], params: Sequence[torch.Tensor], decay: float) -> None:
    with torch.no_grad():
        torch._foreach_mul_(list(ema), decay)
        torch._foreach_add_(list(ema), list(params), alpha=1 - decay)


def train_unet(work: Path, cfg: ToyModelConfig, tc: TrainConfig, latents: torch.Tensor,
               captions: list[str], scale: float, tokenizer, progress: bool = True):
    """Stage 3: text encoder + UNet (epsilon loss, SD betas, caption dropout, optionally object-weighted);
    returns EMA models."""
    masks = bank_masks(work, cfg, tc, latents.shape[-1], progress) if tc.unet_object_weight > 0 else None
    if masks is not None and masks.shape[0] != latents.shape[0]:
        raise ValueError(f"{work / 'masks.pt'} holds {masks.shape[0]} scenes, the latent bank {latents.shape[0]}: "
                         f"the work folder's bank was made with other settings; use a new --work folder")
    torch.manual_seed(tc.seed + 1)
    unet = build_unet(cfg)
    text_encoder = build_text_encoder(cfg, len(tokenizer))
    if tc.init_from:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        unet = UNet2DConditionModel.from_pretrained(Path(tc.init_from) / "unet", use_safetensors=True)
        text_encoder = CLIPTextModel.from_pretrained(Path(tc.init_from) / "text_encoder")
        logger.info("unet, text encoder: fine-tuning from %s", tc.init_from)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW([
        {"params": list(unet.parameters()), "lr": tc.unet_lr, "base": tc.unet_lr},
        {"params": list(text_encoder.parameters()), "lr": tc.text_lr, "base": tc.text_lr},
    ], weight_decay=0.01)
    ema = [p.detach().clone() for p in params]
    ckpt, start, elapsed0 = work / "ckpt_unet.pt", 0, 0.0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        for e, v in zip(ema, state["ema"]):
            e.copy_(v)
        start, elapsed0 = state["step"], state.get("elapsed", 0.0)
        logger.info("unet: resumed at step %d", start)
    sched = build_scheduler()
    alphas = sched.alphas_cumprod.float()  # (1000,)
    # Tokenize the finite caption set once.
    uniq = sorted(set(captions) | {""})
    index = {c: i for i, c in enumerate(uniq)}
    ids = tokenizer(uniq, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids  # (n_captions, 77)
    cap_idx = torch.tensor([index[c] for c in captions])  # (bank,)
    empty = index[""]
    unet.train()
    text_encoder.train()
    clock, t0 = _Clock(tc.checkpoint_seconds), time.monotonic()
    bar = tqdm(range(start, tc.unet_steps), initial=start, total=tc.unet_steps, desc="unet", disable=not progress)
    step, avg = start, None
    for step in bar:
        gen = torch.Generator().manual_seed(tc.seed * 1_000_003 + step)
        pick = torch.randint(0, len(captions), (tc.unet_batch,), generator=gen)
        x0 = latents[pick] * scale  # (B, 4, h, w)
        drop = torch.rand(tc.unet_batch, generator=gen) < tc.caption_dropout
        cidx = torch.where(drop, torch.full_like(cap_idx[pick], empty), cap_idx[pick])
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (tc.unet_batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = text_encoder(ids[cidx]).last_hidden_state  # (B, 77, hidden)
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred, noise)
        if masks is not None:
            share = masks[pick]  # (B, 1, h, w)
            err = ((pred - noise) ** 2 * share).sum() / (pred.shape[1] * share.sum()).clamp_min(1.0)
            loss = loss + tc.unet_object_weight * err
        f = _lr_factor(_progress_step(step, tc.unet_steps, elapsed0 + time.monotonic() - t0, tc.max_minutes_unet),
                       tc.unet_steps, tc.warmup)
        for g in opt.param_groups:
            g["lr"] = g["base"] * f
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(tc.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema, [p.detach() for p in params], decay)
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        bar.set_postfix(loss=f"{avg:.4f}")
        if step % 50 == 0:
            logger.info("unet step %d loss %.5f (avg %.5f) elapsed %.0fs", step, loss.item(), avg,
                        time.monotonic() - t0)
        if clock.due():
            _save(ckpt, {"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(),
                         "opt": opt.state_dict(), "ema": ema, "step": step + 1,
                         "elapsed": elapsed0 + time.monotonic() - t0})
        if 0 < tc.max_minutes_unet < (elapsed0 + time.monotonic() - t0) / 60:
            logger.info("unet: time limit reached at step %d", step)
            break
    _save(ckpt, {"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(),
                 "opt": opt.state_dict(), "ema": ema, "step": step + 1,
                 "elapsed": elapsed0 + time.monotonic() - t0})
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    logger.info("unet: done (%d steps)", step + 1)
    return unet.eval(), text_encoder.eval()


README = """# AttentionFlow toy model

A tiny model with the Stable Diffusion architecture, **trained** in this repository on the procedural
toy world of `attentionflow.toyworld` (coloured circles / squares / triangles on road, grass, snow,
sand and water; captions like "a red circle is moving on the road"). It loads through the same code
path as real Stable Diffusion diffusers folders and makes real, visible edits offline on a CPU.

- vae: AutoencoderKL, blocks {vae_channels}, 64x64 RGB -> 16x16x4 latents, scaling_factor {scale:.4f}
- text_encoder: CLIPTextModel, hidden {text_hidden}, {text_layers} layers, 77 positions
- tokenizer: CLIP BPE format over the world's words (one token per word; "purple" = "pur" + "ple</w>")
- unet: UNet2DConditionModel, blocks {unet_channels}, cross-attention at 16x16, 8x8, 4x4
- scheduler: DDIMScheduler with Stable Diffusion's configuration

Training: `python -m attentionflow.toyworld.train --work runs/toytrain --export attentionflow/assets/toy_model`
(seed {seed}; {vae_steps} VAE steps, {unet_steps} UNet/text-encoder steps; CPU, 1 thread).

{quality}
"""


def export(work: Path, dest: Sequence[Path], cfg: ToyModelConfig, tc: TrainConfig, vae, unet, text_encoder,
           scale: float, quality: str = "") -> list[Path]:
    """Stage 4: write the diffusers folder(s) (weights in float32 safetensors)."""
    vae.register_to_config(scaling_factor=scale)
    readme = README.format(scale=scale, seed=tc.seed, vae_steps=tc.vae_steps, unet_steps=tc.unet_steps,
                           quality=quality, **cfg.to_json())
    out = []
    for folder in [work / "model", *dest]:
        save_model_folder(folder, unet, vae, text_encoder, tokenizer_src=work / "tokenizer", readme=readme)
        out.append(folder)
    return out


def run(work: Path, cfg: ToyModelConfig, tc: TrainConfig, export_to: Sequence[Path] = (),
        progress: bool = True) -> list[Path]:
    """Run (or resume) all stages; returns the exported folders."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps({"model": cfg.to_json(), "train": tc.__dict__}, indent=2))
    tokenizer = build_tokenizer(work / "tokenizer")
    vae = train_vae(work, cfg, tc, progress)
    for p in vae.parameters():
        p.requires_grad_(False)
    latents, captions, scale = encode_bank(work, vae, cfg, tc, progress)
    unet, text_encoder = train_unet(work, cfg, tc, latents, captions, scale, tokenizer, progress)
    return export(work, [Path(p) for p in export_to], cfg, tc, vae, unet, text_encoder, scale)


def _tiny_model_config() -> ToyModelConfig:
    return ToyModelConfig(vae_channels=(16, 16, 16), unet_channels=(16, 32), unet_heads=(1, 1),
                          text_hidden=32, text_layers=1, text_heads=2)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``python -m attentionflow.toyworld.train``."""
    p = argparse.ArgumentParser(prog="python -m attentionflow.toyworld.train", description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=Path("runs/toytrain"), help="checkpoints, logs, latents")
    p.add_argument("--export", type=Path, action="append", default=[], help="also write the model folder here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="a tiny architecture (tests)")
    p.add_argument("--no-progress", action="store_true")
    for name, val in TrainConfig().__dict__.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(val), default=val)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    handler = logging.FileHandler(args.work / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        tc = TrainConfig(**{k: getattr(args, k) for k in TrainConfig().__dict__})
        cfg = _tiny_model_config() if args.tiny else ToyModelConfig()
        t0 = time.monotonic()
        folders = run(args.work, cfg, tc, args.export, progress=not args.no_progress)
        logger.info("finished in %.1f min; model folders: %s", (time.monotonic() - t0) / 60,
                    ", ".join(str(f) for f in folders))
    finally:
        logger.removeHandler(handler)
        handler.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
