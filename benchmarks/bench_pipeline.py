"""Wall time per stage and peak memory of one edit vs. number of frames (tiny random-weight model).

    python benchmarks/bench_pipeline.py [--frames 4 8 16 32] [--size 64] [--steps 5] [--threads 2]

Each frame count runs in a fresh subprocess so that the peak resident memory (ru_maxrss) is its own.
With ``--attention sc`` (sparse-causal self-attention only) time and memory grow about linearly with
the number of frames; ``sc+st`` (the vid2vid-zero default: dense spatial-temporal attention at the
``st_attn_idx`` blocks as well) adds a part that is quadratic in frames.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_one(frames: int, size: int, steps: int, threads: int, attention: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    from attentionflow.config import AttentionSettings, InversionSettings, MMIConfig
    from attentionflow.models.factory import tiny_components
    from attentionflow.pipeline import AttentionFlowPipeline
    from benchmarks._tokenizer import clip_tokenizer
    from tests.synthetic import MovingSquare, make_video

    pipe = AttentionFlowPipeline.from_components(tiny_components(clip_tokenizer()), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    video, _ = make_video(size=size, n_frames=frames, squares=(MovingSquare(4, size // 3, size // 4, 2, 0),))
    settings = InversionSettings.default(num_inference_steps=steps, inversion="null-text")
    attn = AttentionSettings.default(st_attn_idx=0, use_sc_attn=True, use_st_attn=attention == "sc+st")
    start = time.perf_counter()
    plan = pipe.plan("a square is moving on the road", ["a square is moving on the snow"], settings, attn,
                     mmi=MMIConfig(motion_words=["moving"]))
    out = pipe.edit(video, plan)
    total = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"frames": frames, "total_s": total, "peak_rss_mb": rss_mb, **{k: v for k, v in out.timings.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attention", choices=["sc", "sc+st"], default="sc",
                    help="sc: sparse-causal only; sc+st: plus dense attention at the st_attn_idx blocks")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(run_one(args.child, args.size, args.steps, args.threads, args.attention)))
        return
    rows = []
    for f in args.frames:
        cmd = [sys.executable, __file__, "--child", str(f), "--size", str(args.size), "--steps", str(args.steps),
               "--threads", str(args.threads), "--attention", args.attention]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{f} frames failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.splitlines()[-1]))
    stages = ["motion_maps", "encode", "inversion", "null_text", "editing", "decode"]
    mode = {"sc": "sparse-causal", "sc+st": "sparse-causal + dense ST blocks"}[args.attention]
    print(f"tiny model, {args.size}x{args.size}, {args.steps} steps, null-text on, MMI on, {mode}, "
          f"{args.threads} threads")
    print("| frames | " + " | ".join(stages) + " | total s | s/frame | peak RSS MB |")
    print("|---" * (len(stages) + 4) + "|")
    for r in rows:
        print(f"| {r['frames']} | " + " | ".join(f"{r.get(s, 0):.2f}" for s in stages)
              + f" | {r['total_s']:.2f} | {r['total_s'] / r['frames']:.3f} | {r['peak_rss_mb']:.0f} |")
    first, last = rows[0], rows[-1]
    ratio_f = last["frames"] / first["frames"]
    print(f"time ratio {last['frames']}/{first['frames']} frames: {last['total_s'] / first['total_s']:.2f} "
          f"(linear would be {ratio_f:.1f}); editing-stage ratio: {last['editing'] / first['editing']:.2f}")


if __name__ == "__main__":
    main()
