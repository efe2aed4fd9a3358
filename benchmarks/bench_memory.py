"""The full-size path measured: peak memory against the estimate, and seconds per UNet call (issue 31, part 3).

    python benchmarks/bench_memory.py [--cases sd14-512x2 toy-64 toy-256] [--steps-sd14 3] [--threads 2]

Cases, each in a fresh subprocess so that its peak resident memory is its own:

- ``sd14-512x2``: a UNet, VAE and text encoder with the Stable Diffusion v1.4 architecture and random weights
  (``benchmarks/bench_mmi_overhead.py``; the text encoder has one layer) at 512x512, 2 frames, 3 steps;
- ``toy-64``, ``toy-256``: the embedded toy model at 64x64, 64 and 256 frames, 5 steps.

Every controller is on: direct inversion, prompt-to-prompt (word swap with self-attention replacement), a local blend,
MMI on the word "moving", ``edit_region: moving`` and dense spatio-temporal attention (the defaults), ``chunk_frames:
auto``. The video is ``configs/videos/car-turn.mp4`` looped back and forth to the frame count.

Measured (Linux ``/proc/self/status``): the resident memory once the modules are imported (the baseline), after the
model is built, the peak of the edit up to decoding and the peak while decoding (the kernel's high-water mark is
reset in between through ``/proc/self/clear_refs``). Estimated: :meth:`AttentionFlowPipeline.memory_estimate`
(``attentionflow.resources.edit_memory``: weights, frame data, the UNet's activations for the chunk, the VAE's for its
batch). The goal: the estimate within 25% of the measured peak above the baseline. Seconds per UNet call come from
forward hooks, grouped by the call's latent rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIP = ROOT / "configs" / "videos" / "car-turn.mp4"
SOURCE, TARGET = "a jeep car is moving on the road", "a jeep car is moving on the snow"
CASES = {"sd14-512x2": ("sd14", 512, 2), "toy-64": ("embedded", 64, 64), "toy-256": ("embedded", 64, 256)}
MB = 2**20


def _status(key: str) -> int:
    """A ``/proc/self/status`` figure in bytes (``VmRSS``: resident now; ``VmHWM``: the peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to VmRSS (Linux >= 4.0)


def run_case(name: str, steps: int, threads: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from attentionflow.config import AttentionSettings, InversionSettings, MMIConfig, P2PConfig
    from attentionflow.inversion import skips_source_uncond
    from attentionflow.io.video import read_frames
    from attentionflow.pipeline import AttentionFlowPipeline
    from attentionflow.resources import latent_rows

    model, size, frames = CASES[name]
    base = _status("VmRSS")
    if model == "embedded":
        pipe = AttentionFlowPipeline.from_pretrained("embedded", device="cpu")
    else:
        from benchmarks.bench_mmi_overhead import build

        pipe = AttentionFlowPipeline.from_components(build("sd14"), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    clip = read_frames(str(CLIP), n_frames=16, width=size, height=size)
    order = list(range(len(clip))) + list(range(len(clip) - 2, 0, -1))
    video = np.stack([clip[order[i % len(order)]] for i in range(frames)])

    calls: list[tuple[int, float]] = []  # (latent rows, seconds) per UNet call
    started: list[float] = []
    pipe.unet.register_forward_pre_hook(lambda module, args: started.append(time.perf_counter()))
    pipe.unet.register_forward_hook(
        lambda module, args, output: calls.append((int(args[0].shape[0]), time.perf_counter() - started.pop())))
    phases: dict[str, int] = {}
    decode = pipe.decode_latents

    def decode_with_reset(*args, **kwargs):  # the peak up to decoding, then the decoder's own
        phases["before_decode"] = _status("VmHWM")
        _reset_peak()
        phases["decode_start"] = _status("VmRSS")
        return decode(*args, **kwargs)

    pipe.decode_latents = decode_with_reset
    loaded = _status("VmRSS")
    _reset_peak()
    settings = InversionSettings.default(num_inference_steps=steps)
    attention = AttentionSettings.default()
    plan = pipe.plan(SOURCE, [TARGET], settings, attention, mmi=MMIConfig(motion_words=["moving"]),
                     p2p=P2PConfig(blend_words=["jeep", "jeep"], edit_region="moving"))
    start = time.perf_counter()
    out = pipe.edit(video, plan)
    seconds = time.perf_counter() - start
    decode_peak = _status("VmHWM")
    branches = len(plan.prompts)
    skip = skips_source_uncond(settings.inversion, settings.guidance_scale)
    rows = latent_rows(branches, settings.guidance_scale, skip)
    estimate = pipe.memory_estimate(frames, (size, size), branches, rows, out.chunk_frames,
                                    vae_batch=pipe.vae_batch("auto", out.chunk_frames, (size, size)))
    by_rows: dict[int, list[float]] = {}
    for n, s in calls:
        by_rows.setdefault(n, []).append(s)
    return {
        "case": name, "size": size, "frames": frames, "steps": steps, "chunk": out.chunk_frames, "seconds": seconds,
        "baseline_mb": base / MB, "model_mb": (loaded - base) / MB,
        "to_decode_mb": (phases["before_decode"] - loaded) / MB,
        "decode_mb": (decode_peak - phases["decode_start"]) / MB,
        "retained_mb": (phases["decode_start"] - loaded) / MB,
        "peak_mb": (max(phases["before_decode"], decode_peak) - base) / MB,
        "estimate": {k: getattr(estimate, k) / MB for k in ("weights", "data", "unet", "vae", "total")},
        "unet_calls": {str(n): {"calls": len(s), "mean_s": sum(s) / len(s)} for n, s in sorted(by_rows.items())},
        "timings": out.timings,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--steps-sd14", type=int, default=3)
    ap.add_argument("--steps-toy", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        steps = args.steps_sd14 if CASES[args.child][0] == "sd14" else args.steps_toy
        print(json.dumps(run_case(args.child, steps, args.threads)))
        return
    rows = []
    for name in args.cases:
        cmd = [sys.executable, __file__, "--child", name, "--steps-sd14", str(args.steps_sd14), "--steps-toy",
               str(args.steps_toy), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.splitlines()[-1]))
        print(f"  done: {name} in {rows[-1]['seconds']:.0f} s", file=sys.stderr)
    print(f"## Peak memory against the estimate ({time.strftime('%Y-%m-%d')}, `python benchmarks/bench_memory.py "
          f"--threads {args.threads}`, CPU)\n")
    print("| case | frames | chunk | model MB (estimate: weights) | to decoding MB (estimate: data + UNet) | "
          "decoding MB (estimate: VAE) | peak above baseline MB | estimate MB | measured / estimate |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        e = r["estimate"]
        print(f"| {r['case']} ({r['size']}x{r['size']}, {r['steps']} steps) | {r['frames']} | {r['chunk']} | "
              f"{r['model_mb']:.0f} ({e['weights']:.0f}) | {r['to_decode_mb']:.0f} ({e['data'] + e['unet']:.0f}) | "
              f"{r['decode_mb']:.0f} ({e['vae']:.0f}) | {r['peak_mb']:.0f} | {e['total']:.0f} | "
              f"{r['peak_mb'] / e['total']:.2f} |")
    print("\nDecoding starts with the memory the UNet phase left allocated (retained, MB): "
          + ", ".join(f"{r['case']} {r['retained_mb']:.0f}" for r in rows) + ".\n")
    print("| case | latent rows per UNet call: calls x mean seconds | edit seconds | stages (s) |")
    print("|---|---|---:|---|")
    for r in rows:
        calls = ", ".join(f"{n} rows: {c['calls']} x {c['mean_s']:.2f} s" for n, c in r["unet_calls"].items())
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["timings"].items())
        print(f"| {r['case']} | {calls} | {r['seconds']:.1f} | {stages} |")


if __name__ == "__main__":
    main()
