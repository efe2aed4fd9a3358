"""The four inversion methods side by side, in one run: reconstruction, cost, and editing quality.

    python benchmarks/bench_inversion.py [--steps 25] [--threads 2] [--tasks 12] [--grid demo.png]
                                         [--no-reconstruction] [--no-demo] [--no-suite]

1. Reconstruction: on the demo clip, four other toy clips and the real clips of ``configs/videos`` (8 frames,
   64x64, the embedded model), per method: the source branch's PSNR against the input next to the VAE round trip's
   (the ceiling), and the inversion stage's wall time (``invert()``, the fastest of three round-robin runs)
   relative to plain DDIM inversion on the same clip.
2. The demo job (``attentionflow demo``'s config) with null-text (the old default) and with each other method:
   process CPU seconds of the whole job (the faster of two round-robin runs, after a warm-up job) and the
   manifest's stage timings.
3. The toy editing suite (``attentionflow bench quality``) with prompt-to-prompt, once per inversion method: edit
   success, background PSNR, warp error, centroid error, reconstruction PSNR.

Prints markdown tables (docs/quality.md and the README carry them with the date and this command).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attentionflow.commands.demo import DEMO_SOURCE, DEMO_TARGETS, demo_clip, demo_config  # noqa: E402
from attentionflow.config import INVERSION_METHODS, InversionSettings, MMIConfig  # noqa: E402
from attentionflow.evaluation.metrics import psnr  # noqa: E402
from attentionflow.io.video import read_frames  # noqa: E402
from attentionflow.io.writers import write_frames  # noqa: E402
from attentionflow.pipeline import AttentionFlowPipeline  # noqa: E402
from attentionflow.toyworld.world import make_video  # noqa: E402

#: (name, source prompt, target prompt, frames or a clip path)
TOY = [
    (
        "toy: green square on grass",
        "a green square is moving on the grass",
        "a purple square is moving on the grass",
        1,
    ),
    ("toy: blue triangle on sand", "a blue triangle is moving on the sand", "a blue circle is moving on the sand", 2),
    (
        "toy: yellow circle on water",
        "a yellow circle is moving on the water",
        "a yellow circle is moving on the snow",
        3,
    ),
    ("toy: white square on snow", "a white square is moving on the snow", "a red square is moving on the snow", 4),
]
REAL = [
    (
        "real: car-turn",
        "configs/videos/car-turn.mp4",
        "a jeep car is moving on the road",
        "a red car is moving on the road",
    ),
    (
        "real: black-swan",
        "configs/videos/black-swan.mp4",
        "a blackswan is swimming on the water",
        "a white swan is swimming on the water",
    ),
    ("real: man-running", "configs/videos/man-running.mp4", "a man is running", "a robot is running"),
    (
        "real: horse-running",
        "configs/videos/horse-running.mp4",
        "a horse is running on the beach",
        "a zebra is running on the beach",
    ),
]


def clips(frames: int, size: int) -> list[tuple[str, np.ndarray, str, str]]:
    """(name, frames (F, H, W, 3) uint8, source prompt, target prompt) of every clip of the comparison."""
    out = [("demo clip", demo_clip(), DEMO_SOURCE, DEMO_TARGETS[0])]
    for name, src, tgt, seed in TOY:
        out.append((name, make_video(src, frames=frames, size=size, seed=seed).frames, src, tgt))
    for name, path, src, tgt in REAL:
        out.append((name, read_frames(ROOT / path, n_frames=frames, width=size, height=size), src, tgt))
    return out


def reconstruction_table(pipe: AttentionFlowPipeline, steps: int, frames: int, size: int,
                         grid: Path | None) -> None:
    print(f"\n### Reconstruction and inversion cost ({steps} steps, {frames} frames of {size}x{size}, "
          f"{torch.get_num_threads()} threads)\n")
    header = " | ".join(f"{m} dB" for m in INVERSION_METHODS)
    cost = " | ".join(f"{m} cost" for m in INVERSION_METHODS if m != "ddim")
    print(f"| clip | VAE only dB | {header} | {cost} |")
    print("|---|---:|" + "---:|" * (2 * len(INVERSION_METHODS) - 1))
    rows = []
    totals: dict[str, list[float]] = {m: [] for m in INVERSION_METHODS}
    for name, video, src, tgt in clips(frames, size):
        vae = psnr(video, pipe.decode_latents(pipe.encode_frames(video)))
        cells, recon = [], {}
        settings = {m: InversionSettings.default(num_inference_steps=steps, inversion=m) for m in INVERSION_METHODS}
        seconds = {m: float("inf") for m in INVERSION_METHODS}
        inversions = {}
        for _ in range(3):  # round robin, the fastest of three: the ratios should not measure the machine's load
            for method in INVERSION_METHODS:
                t0 = time.perf_counter()
                inversions[method] = pipe.invert(video, src, settings[method])
                seconds[method] = min(seconds[method], time.perf_counter() - t0)
        for method in INVERSION_METHODS:
            mmi = MMIConfig(motion_words=["moving"]) if "moving" in src else None
            out = pipe.edit(video, pipe.plan(src, [tgt], settings[method], mmi=mmi), inversions[method])
            recon[method] = out
            db = psnr(video, out.reconstruction)
            totals[method].append(db - vae)
            cells.append(f"{db:.2f}")
        ratios = [f"{seconds[m] / seconds['ddim']:.2f}x" for m in INVERSION_METHODS if m != "ddim"]
        print(f"| {name} | {vae:.2f} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |", flush=True)
        if name == "demo clip":
            rows = [video] + [x for m in INVERSION_METHODS for x in (recon[m].reconstruction, recon[m].edits[0])]
    print("\nMean reconstruction PSNR minus the VAE round trip's: "
          + ", ".join(f"{m} {np.mean(v):+.2f} dB" for m, v in totals.items()))
    if grid is not None and rows:
        from PIL import Image

        image = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)  # (rows*H, F*W, 3)
        Image.fromarray(image).save(grid)
        print(f"grid: {grid} (row 1 input; then per method {', '.join(INVERSION_METHODS)}: reconstruction, edit)")


def demo_cost_table(steps: int) -> None:
    from attentionflow.jobs import run_edit_job

    print(f"\n### The demo job per method ({steps} steps; process CPU seconds of the whole job)\n")
    print("| method | CPU s | vs null-text | wall s | inversion s | null-text s | editing s | reconstruction dB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    methods = ("null-text", *[m for m in INVERSION_METHODS if m != "null-text"])
    best: dict[str, tuple[float, float, dict, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip"
        write_frames(demo_clip(), clip)
        # a warm-up job (imports, the model's first calls), then two round-robin rounds: the faster run counts
        for round_ in range(3):
            for method in (("null-text",) if round_ == 0 else methods):
                cfg = demo_config(str(Path(tmp) / f"out-{method}-{round_}"), steps)
                cfg.input_data.video_path = str(clip)
                cfg.validation_data.inversion = method
                cpu, wall = time.process_time(), time.perf_counter()
                result = run_edit_job(cfg, progress=False, command="demo")
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                if round_ and (method not in best or cpu < best[method][0]):
                    best[method] = (cpu, wall, result.manifest["timings_s"],
                                    result.manifest["inversion"]["reconstruction_psnr_db"])
    base = best["null-text"][0]
    for method in methods:
        cpu, wall, t, db = best[method]
        print(f"| {method} | {cpu:.1f} | {cpu / base:.2f} | {wall:.1f} | {t.get('inversion', 0):.2f} | "
              f"{t.get('null_text', 0):.2f} | {t.get('editing', 0):.2f} | {db} |", flush=True)


def suite_table(pipe: AttentionFlowPipeline, steps: int, tasks: int) -> None:
    from attentionflow.evaluation.bench.common import BenchSettings
    from attentionflow.evaluation.bench.single import METHODS, run_quality_bench

    p2p = [m for m in METHODS if m.name == "p2p"]
    print(f"\n### Toy editing suite with prompt-to-prompt, per inversion method ({tasks} tasks, {steps} steps)\n")
    print("| inversion | edit success | full caption | bg PSNR (dB) | warp err | centroid err (px) | "
          "reconstruction dB | s / task |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for method in INVERSION_METHODS:
        t0 = time.perf_counter()
        report = run_quality_bench(pipe, BenchSettings(tasks=tasks, steps=steps, inversion=method), progress=False,
                                   methods=p2p)
        s = report["summary"]["p2p"]
        print(f"| {method} | {s['success']:.1%} | {s['full']:.1%} | {s['bg_psnr']:.2f} | {s['warp_error']:.2f} | "
              f"{s['centroid_err']:.2f} | {report['reference']['reconstruction_psnr']:.2f} | "
              f"{(time.perf_counter() - t0) / tasks:.1f} |", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tasks", type=int, default=12, help="tasks of the toy suite (1..12)")
    p.add_argument("--no-suite", action="store_true", help="skip part 3 (the toy editing suite)")
    p.add_argument("--no-reconstruction", action="store_true", help="skip part 1 (reconstruction and inversion cost)")
    p.add_argument("--no-demo", action="store_true", help="skip part 2 (the demo job's cost)")
    p.add_argument("--grid", type=Path, default=None, help="PNG of the demo clip: input, then per method "
                                                             "reconstruction and edit rows")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = AttentionFlowPipeline.from_pretrained(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    print(f"bench_inversion {time.strftime('%Y-%m-%d %H:%M')}, model {args.model}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    if not args.no_reconstruction:
        reconstruction_table(pipe, args.steps, args.frames, args.size, args.grid)
    if not args.no_demo:
        demo_cost_table(args.steps)
    if not args.no_suite:
        suite_table(pipe, args.steps, args.tasks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
