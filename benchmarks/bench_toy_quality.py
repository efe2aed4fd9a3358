"""Quality and speed of the toy model (default: the shipped ``embedded`` one).

    python benchmarks/bench_toy_quality.py [--model embedded] [--n 48] [--steps 50] [--guidance 7.5]
                                           [--threads 2] [--grid grid.png] [--json out.json]

Prints, with the pixel-level judge of ``attentionflow.toyworld``:

* text-to-image accuracy on ``--n`` fixed captions / fixed seeds (DDIM ``--steps``, CFG ``--guidance``):
  object colour, background class and shape correct (targets: >= 90%, >= 90%, >= 70%);
* VAE reconstruction PSNR on held-out toy video frames (target: >= 28 dB);
* the time of one UNet forward on 48 latents (3 branches x 2 CFG halves x 8 frames), the demo's batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attentionflow.models.loading import load_components  # noqa: E402
from attentionflow.toyworld.quality import evaluate_generation, vae_psnr  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grid", type=Path, default=None, help="save the generated images as a PNG grid")
    p.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    comps = load_components(args.model, device="cpu", dtype=torch.float32)

    t0 = time.perf_counter()
    report, images = evaluate_generation(comps, n=args.n, guidance_scale=args.guidance, steps=args.steps,
                                         seed=args.seed)
    t_gen = time.perf_counter() - t0
    print(f"generation ({args.n} images, {args.steps} DDIM steps, guidance {args.guidance}): "
          f"{report.summary()} in {t_gen:.1f} s")
    for prompt, (c, s, b) in zip(report.prompts, report.judged):
        print(f"  {prompt:45s} -> judge: {c} {s} on the {b}")

    t0 = time.perf_counter()
    vae_db = vae_psnr(comps)
    print(f"VAE reconstruction PSNR on held-out frames: {vae_db:.2f} dB ({time.perf_counter() - t0:.1f} s)")

    unet = comps.unet
    side = unet.config.sample_size
    x = torch.randn(48, unet.config.in_channels, side, side)
    ctx = torch.randn(48, comps.tokenizer.model_max_length, unet.config.cross_attention_dim)
    times = []
    with torch.no_grad():
        unet(x, 500, encoder_hidden_states=ctx)
        for _ in range(5):
            t0 = time.perf_counter()
            unet(x, 500, encoder_hidden_states=ctx)
            times.append(time.perf_counter() - t0)
    unet_s = statistics.median(times)
    print(f"UNet forward, batch 48 of {side}x{side} latents, {args.threads} threads: {unet_s * 1000:.0f} ms "
          "(median of 5)")

    if args.grid is not None:
        from PIL import Image

        cols = 8
        rows = -(-len(images) // cols)
        pad = np.zeros((rows * cols - len(images), *images.shape[1:]), np.uint8)
        tiles = np.concatenate([images, pad]).reshape(rows, cols, *images.shape[1:])  # (rows, cols, H, W, 3)
        grid = tiles.transpose(0, 2, 1, 3, 4).reshape(rows * images.shape[1], cols * images.shape[2], 3)
        Image.fromarray(grid).save(args.grid)
        print(f"grid: {args.grid}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "n": report.n, "steps": args.steps, "guidance": args.guidance,
            "colour": report.colour, "background": report.background, "shape": report.shape,
            "vae_psnr_db": vae_db, "unet_batch48_s": unet_s, "threads": args.threads,
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
