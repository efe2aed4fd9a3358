"""Long videos: peak memory and time per stage against the number of frames, with frame chunks and without.

    python benchmarks/bench_long_video.py [--model embedded|sd14] [--frames 16 64 128 256] [--chunks 8 all]
                                          [--attention sc|sc+st] [--steps 5] [--threads 2] [--device cpu]

``embedded``: the shipped toy model at 64x64 (default frames 16, 64, 128, 256). ``sd14``: a UNet and VAE with the
Stable Diffusion v1.4 architecture and random weights (``benchmarks/bench_mmi_overhead.py``) at 256x256 (default
frames 8, 32, 64). The video is the real clip ``configs/videos/car-turn.mp4`` (16 frames): longer videos loop it
back and forth (frames 0..15, 14..1, 0..15, ...: a ping-pong loop, so the motion never jumps), and the table says so.

Every (frames, chunk) pair runs in a fresh subprocess, so that its peak resident memory (``ru_maxrss``; CUDA: peak
allocated) is its own. The edit is the CLI's: the default inversion (direct), prompt-to-prompt, MMI on the word
"moving", then ``jobs.write_outputs`` (videos, GIFs, frames, grid, attention figure, motion maps) into a temporary
folder. Printed: seconds per stage, total, peak memory, the model's own memory (after loading, before the edit), and
the ratios the goals of docs/long_videos.md name.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLIP = Path(__file__).resolve().parents[1] / "configs" / "videos" / "car-turn.mp4"
SOURCE = "a jeep car is moving on the road"
TARGET = "a jeep car is moving on the snow"


def ping_pong(frames, count: int):
    """``count`` frames of the clip looped back and forth (no jump between the end and the start)."""
    import numpy as np

    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    return np.stack([frames[order[i % len(order)]] for i in range(count)])


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(model: str, frames: int, chunk: str, steps: int, threads: int, device: str, attention_mode: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    from attentionflow.config import AttentionSettings, InversionSettings, MMIConfig
    from attentionflow.io.video import read_frames
    from attentionflow.jobs import write_outputs
    from attentionflow.pipeline import AttentionFlowPipeline

    size = 64 if model == "embedded" else 256
    if model == "embedded":
        pipe = AttentionFlowPipeline.from_pretrained("embedded", device=device)
    else:
        from benchmarks.bench_mmi_overhead import build

        pipe = AttentionFlowPipeline.from_components(build("sd14"), device=device)
    pipe.set_progress_bar_config(disable=True)
    clip = read_frames(str(CLIP), n_frames=16, width=size, height=size)
    video = ping_pong(clip, frames)
    loaded_mb = rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    settings = InversionSettings.default(num_inference_steps=steps)
    attention = AttentionSettings.default(chunk_frames=chunk if chunk == "auto" else int(chunk),
                                          use_st_attn=attention_mode == "sc+st")
    start = time.perf_counter()
    plan = pipe.plan(SOURCE, [TARGET], settings, attention, mmi=MMIConfig(motion_words=["moving"]))
    out = pipe.edit(video, plan)
    edit_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_outputs(Path(tmp), video, out, fps=8.0)
        write_s = time.perf_counter() - start
    row = {"frames": frames, "chunk": chunk, "used": out.chunk_frames, "edit_s": edit_s, "write_outputs": write_s,
           "total_s": edit_s + write_s, "peak_mb": rss_mb(), "model_mb": loaded_mb, **out.timings}
    if device.startswith("cuda"):
        row["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["embedded", "sd14"], default="embedded")
    ap.add_argument("--frames", type=int, nargs="+", default=None,
                    help="frame counts (default 16 64 128 256 embedded, 8 32 64 sd14)")
    ap.add_argument(
        "--chunks",
        nargs="+",
        default=["8", "all"],
        help="chunk sizes to compare: numbers, 'auto', or 'all' (every frame in one call: the unchunked path)",
    )
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--attention", choices=["sc", "sc+st"], default="sc+st",
                    help="sc: sparse-causal only; sc+st: plus dense ST attention at the st_attn_idx blocks (default)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        frames, chunk = int(args.child[0]), args.child[1]
        chunk = str(frames) if chunk == "all" else chunk
        print(json.dumps(run_one(args.model, frames, chunk, args.steps, args.threads, args.device, args.attention)))
        return
    counts = args.frames or ([16, 64, 128, 256] if args.model == "embedded" else [8, 32, 64])
    rows = []
    for chunk in args.chunks:
        for f in counts:
            cmd = [sys.executable, __file__, "--model", args.model, "--steps", str(args.steps), "--threads",
                   str(args.threads), "--device", args.device, "--attention", args.attention, "--child", str(f), chunk]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{f} frames, chunk {chunk} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.splitlines()[-1])
            row["label"] = chunk
            rows.append(row)
            print(f"  done: {f} frames, chunk {chunk}: {row['total_s']:.1f} s, peak {row['peak_mb']:.0f} MB",
                  file=sys.stderr)
    size = 64 if args.model == "embedded" else 256
    stages = ["motion_maps", "encode", "inversion", "editing", "decode", "write_outputs"]
    cuda = any("cuda_peak_mb" in r for r in rows)
    mode = {"sc": "sparse-causal attention", "sc+st": "sparse-causal + dense ST attention (the defaults)"}[
        args.attention
    ]
    print(f"{time.strftime('%Y-%m-%d')}, model {args.model}, {size}x{size}, {args.steps} steps, direct inversion, "
          f"P2P + MMI, {mode}, {args.threads} threads, {args.device}; "
          f"video: configs/videos/car-turn.mp4 (16 frames) looped back and forth to the frame count")
    print("| chunk | frames | " + " | ".join(stages) + " | total s | s/frame | write share | peak RSS MB | model MB |"
          + (" CUDA peak MB |" if cuda else ""))
    print("|---" * (len(stages) + 7 + int(cuda)) + "|")
    for r in rows:
        label = "all (unchunked)" if r["label"] == "all" else r["label"]
        print(
            f"| {label} | {r['frames']} | "
            + " | ".join(f"{r.get(s, 0):.2f}" for s in stages)
            + f" | {r['total_s']:.1f} | {r['total_s'] / r['frames']:.3f} | {r['write_outputs'] / r['total_s']:.1%}"
            f" | {r['peak_mb']:.0f} | {r['model_mb']:.0f} |" + (f" {r.get('cuda_peak_mb', 0):.0f} |" if cuda else "")
        )
    for chunk in args.chunks:
        mine = {r["frames"]: r for r in rows if r["label"] == chunk}
        lo, hi = min(mine), max(mine)
        activations = (mine[hi]["peak_mb"] - mine[hi]["model_mb"]) / max(mine[lo]["peak_mb"] - mine[lo]["model_mb"], 1)
        print(
            f"chunk {chunk}: peak memory {hi}/{lo} frames = {mine[hi]['peak_mb'] / mine[lo]['peak_mb']:.2f}x "
            f"(activations only: {activations:.2f}x); "
            f"time {hi}/{lo} = {mine[hi]['total_s'] / mine[lo]['total_s']:.2f} (linear: {hi / lo:.1f}); "
            f"editing stage {mine[hi]['editing'] / mine[lo]['editing']:.2f}"
        )
        if 16 in mine and 128 in mine and lo != 16:
            print(f"  peak 128/16 = {mine[128]['peak_mb'] / mine[16]['peak_mb']:.2f}x, time 128/16 = "
                  f"{mine[128]['total_s'] / mine[16]['total_s']:.2f}")


if __name__ == "__main__":
    main()
