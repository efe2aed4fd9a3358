"""How far a bf16 edit lies from the fp32 edit, and what null-text costs in bf16 (issue 31).

    python benchmarks/bench_half_precision.py [--steps 25] [--threads 2]

On the CPU bf16 is the only half type, the stand-in for a GPU's fp16 path. The embedded toy model edits the demo's
clip ("a red circle is moving on the road", 8 frames of 64x64) three ways: prompt-to-prompt + MMI with direct
inversion; the same with refine, a local blend and a reweight; null-text inversion. For each it prints the PSNR of
the bf16 edit (and reconstruction) against the fp32 one, and the seconds of each stage in both precisions; fp32 runs
twice, and the ratio of its two runs is the A/A control of the timing ratios (this machine's speed varies).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from attentionflow.commands.demo import demo_clip  # noqa: E402
from attentionflow.config import AttentionSettings, InversionSettings, MMIConfig, P2PConfig  # noqa: E402
from attentionflow.evaluation.metrics import psnr  # noqa: E402
from attentionflow.pipeline import AttentionFlowPipeline  # noqa: E402

SOURCE = "a red circle is moving on the road"
CASES = {
    "P2P + MMI, direct": ("direct", "a blue circle is moving on the road",
                          dict(mmi=MMIConfig(motion_words=["moving"]))),
    "refine + blend + reweight + MMI": ("direct", "a big blue circle is moving on the road",
                                        dict(p2p=P2PConfig(blend_words=["circle"], reweight={"blue": 1.5}),
                                             mmi=MMIConfig(motion_words=["moving"]))),
    "null-text + P2P + MMI": ("null-text", "a blue circle is moving on the road",
                              dict(mmi=MMIConfig(motion_words=["moving"]))),
}


def run(precision: str, steps: int, frames) -> dict[str, tuple]:
    pipe = AttentionFlowPipeline.from_pretrained("embedded", device="cpu", mixed_precision=precision)
    pipe.set_progress_bar_config(disable=True)
    out = {}
    for name, (method, target, kw) in CASES.items():
        settings = InversionSettings.default(num_inference_steps=steps, inversion=method)
        plan = pipe.plan(SOURCE, [target], settings, AttentionSettings.default(), **kw)
        start = time.perf_counter()
        result = pipe.edit(frames, plan)
        out[name] = (result, time.perf_counter() - start)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    frames = demo_clip()
    fp32, bf16, again = run("no", args.steps, frames), run("bf16", args.steps, frames), run("no", args.steps, frames)
    print(f"## bf16 against fp32 ({time.strftime('%Y-%m-%d')}, `python benchmarks/bench_half_precision.py --steps "
          f"{args.steps} --threads {args.threads}`, embedded toy model, CPU)\n")
    print("| edit | PSNR edit (dB) | PSNR reconstruction (dB) | seconds fp32 / bf16 (ratio) | fp32 A/A ratio |")
    print("|---|---:|---:|---:|---:|")
    for name in CASES:
        (a, ta), (b, tb), (_, tc) = fp32[name], bf16[name], again[name]
        print(f"| {name} | {psnr(b.edits[0], a.edits[0]):.2f} | {psnr(b.reconstruction, a.reconstruction):.2f} | "
              f"{ta:.1f} / {tb:.1f} ({tb / ta:.2f}) | {tc / ta:.2f} |")
    name = "null-text + P2P + MMI"
    a, b, c = fp32[name][0].timings, bf16[name][0].timings, again[name][0].timings
    print(f"\nNull-text stage ({args.steps} steps, one Adam iteration each): fp32 {a['null_text']:.2f} s, bf16 "
          f"{b['null_text']:.2f} s (ratio {b['null_text'] / a['null_text']:.2f}; fp32 A/A "
          f"{c['null_text'] / a['null_text']:.2f}).")


if __name__ == "__main__":
    main()
