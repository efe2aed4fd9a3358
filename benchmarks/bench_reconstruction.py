"""How faithfully inversion reproduces the input, per null-text setting, and what each setting costs.

    python benchmarks/bench_reconstruction.py [--model embedded] [--video configs/videos/red-circle-road]
        [--prompt "a red circle is moving on the road"] [--frames 8] [--size 64] [--steps 25] [--threads 2]
        [--edit "a red circle is moving on the snow"] [--grid recon.png]

For each setting it inverts the clip once (:meth:`AttentionFlowPipeline.invert`), regenerates it with
the source prompt from that inversion and prints the reconstruction PSNR against the input with the
inversion time and the sampling time. With ``--edit`` each setting also makes that edit from the same
inversion and ``--grid`` saves input / reconstruction / edit rows per setting, so the price of a
tighter reconstruction (null-text embeddings fitted harder to the source prompt) can be seen.

(The four inversion methods side by side: ``benchmarks/bench_inversion.py``.)

Settings: plain DDIM at guidance 1 (no null-text), vid2vid-zero's defaults (1 Adam step, lr 0.01,
optimised embeddings used on the last half of the steps), and stronger variants.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attentionflow.config import InversionSettings, MMIConfig  # noqa: E402
from attentionflow.evaluation.metrics import psnr  # noqa: E402
from attentionflow.io.video import read_frames  # noqa: E402
from attentionflow.pipeline import AttentionFlowPipeline  # noqa: E402

#: (label, InversionSettings changes)
SETTINGS: list[tuple[str, dict]] = [
    ("plain DDIM, guidance 1 (no null-text)", dict(guidance_scale=1.0, inversion="ddim")),
    ("vid2vid-zero default: 1 step, lr 0.01, last half", dict(inversion="null-text")),
    ("1 step, lr 0.01, all steps", dict(null_uncond_ratio=1.0, inversion="null-text")),
    ("10 steps, lr 0.01, all steps", dict(null_inner_steps=10, null_uncond_ratio=1.0, inversion="null-text")),
    (
        "3 steps, lr 0.1, all steps",
        dict(null_inner_steps=3, null_base_lr=0.1, null_uncond_ratio=1.0, inversion="null-text"),
    ),
    (
        "5 steps, lr 0.1, all steps",
        dict(null_inner_steps=5, null_base_lr=0.1, null_uncond_ratio=1.0, inversion="null-text"),
    ),
    ("5 steps, lr 0.03, last half", dict(null_inner_steps=5, null_base_lr=0.03, inversion="null-text")),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--video", default="configs/videos/red-circle-road")
    p.add_argument("--prompt", default="a red circle is moving on the road")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--edit", default=None, help="also make this edit (MMI on 'moving') from each inversion")
    p.add_argument("--grid", type=Path, default=None, help="PNG: input / reconstruction (/ edit) per setting")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    pipe = AttentionFlowPipeline.from_pretrained(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    frames = read_frames(args.video, n_frames=args.frames, width=args.size, height=args.size)
    print(f"{args.video}: {len(frames)} frames {args.size}x{args.size}, {args.steps} steps, "
          f"{torch.get_num_threads()} threads, model {args.model}")
    print("| null-text setting | reconstruction PSNR (dB) | inversion s | sampling s |")
    print("|---|---:|---:|---:|")
    rows = [frames]
    for label, kw in SETTINGS:
        t0 = time.perf_counter()
        settings = InversionSettings.default(num_inference_steps=args.steps, **kw)
        inv = pipe.invert(frames, args.prompt, settings)
        t_inv = time.perf_counter() - t0
        t0 = time.perf_counter()
        # the source prompt as its own "target": the source branch is the reconstruction
        out = pipe.edit(frames, pipe.plan(args.prompt, [args.prompt], settings), inv)
        t_sample = time.perf_counter() - t0
        print(f"| {label} | {psnr(frames, out.reconstruction):.2f} | {t_inv:.1f} | {t_sample:.1f} |", flush=True)
        rows.append(out.reconstruction)
        if args.edit:
            edit = pipe.edit(frames, pipe.plan(args.prompt, [args.edit], settings,
                                               mmi=MMIConfig(motion_words=["moving"])), inv)
            rows.append(edit.edits[0])
    if args.grid is not None:
        from PIL import Image

        grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)  # (rows*H, F*W, 3)
        Image.fromarray(grid).save(args.grid)
        print(f"grid: {args.grid} (row 1 input, then per setting: reconstruction{', edit' if args.edit else ''})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
