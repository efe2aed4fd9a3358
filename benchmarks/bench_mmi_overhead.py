"""MMI overhead: the same edit with and without Motion Map Injection, in one run.

    python benchmarks/bench_mmi_overhead.py [--model tiny|sd14|embedded] [--size 256] [--frames 4] [--steps 4]

``tiny``: the random-weight tiny components used by the tests (64x64 frames by default).
``sd14``: a UNet and VAE with the Stable Diffusion v1.4 architecture (random weights; UNet 860M
parameters, 768-wide cross-attention) and a 768-wide one-layer CLIP text encoder, at ``--size``.
``embedded``: the demo edit itself (the shipped toy model, the demo clip and prompts, 25 steps, the default
inversion; ``--frames``/``--size``/``--steps`` ignored unless given).
Both runs share everything (inversion included); the reported ratio is (edit with MMI) / (edit
without MMI) over the editing stage and over the whole call. The two configurations run in ``--repeat``
back-to-back pairs (the order alternates between pairs, so a drift in machine speed favours neither); the
figure is the **median of the pairs' ratios** (with its quartiles), which a slow moment of a shared machine
moves far less than a ratio of two independent minima (also printed).

On a GPU: ``--device cuda --dtype fp16 --model sd14 --size 512`` (the reference's setting).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(model: str):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from attentionflow.models.factory import Components, sd_scheduler, tiny_components
    from attentionflow.models.tokenizer import load_tokenizer, openai_clip_merges, write_tokenizer_folder

    tok_dir = Path("/tmp") / "attentionflow_bench_tokenizer"
    if not (tok_dir / "vocab.json").exists():
        write_tokenizer_folder(tok_dir, openai_clip_merges())
    tok = load_tokenizer(tok_dir)
    if model == "tiny":
        return tiny_components(tok)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)  # SD v1.x UNet defaults
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072,
                                        num_attention_heads=12, num_hidden_layers=1, max_position_embeddings=77))
    return Components(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=sd_scheduler())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "sd14", "embedded"], default="tiny")
    ap.add_argument("--size", type=int, default=None, help="frame size (default 64 tiny, 256 sd14)")
    ap.add_argument("--frames", type=int, default=None, help="frames (default 8)")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default 10; embedded: the demo's 25)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    args = ap.parse_args()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from attentionflow.config import InversionSettings, MMIConfig
    from attentionflow.pipeline import AttentionFlowPipeline
    from tests.synthetic import MovingSquare, make_video

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if args.model == "embedded":
        from attentionflow.demo import DEMO_SOURCE, DEMO_STEPS, DEMO_TARGETS, demo_clip

        pipe = AttentionFlowPipeline.from_pretrained("embedded", device=args.device)
        frames = demo_clip()[: args.frames]
        size = frames.shape[1]
        src, tgt = DEMO_SOURCE, list(DEMO_TARGETS)
        args.steps = args.steps or DEMO_STEPS
        common = dict(settings=InversionSettings.default(num_inference_steps=args.steps))
    else:
        size = args.size or (64 if args.model == "tiny" else 256)
        args.frames, args.steps = args.frames or 8, args.steps or 10
        pipe = AttentionFlowPipeline.from_components(build(args.model), device=args.device, dtype=dtype)
        frames, _ = make_video(size=size, n_frames=args.frames,
                               squares=(MovingSquare(4, size // 3, size // 4, 3, 0),))
        src, tgt = "a car is moving on the road", ["a car is moving on the snow"]
        common = dict(settings=InversionSettings.default(num_inference_steps=args.steps, inversion="ddim"))
    pipe.set_progress_bar_config(disable=True)
    # Time spent inside the injector itself (robust to machine load, unlike the wall-time ratio).
    from attentionflow.mmi.inject import MotionInjector

    inside = {"s": 0.0}
    original_call = MotionInjector.__call__

    def timed_call(self, probs, site, state):
        start = time.perf_counter()
        try:
            return original_call(self, probs, site, state)
        finally:
            inside["s"] += time.perf_counter() - start

    MotionInjector.__call__ = timed_call  # benchmark-only instrumentation
    configs = {"off": MMIConfig(enabled=False), "on": MMIConfig(motion_words=["moving"])}
    best: dict[str, dict[str, float]] = {"off": {}, "on": {}}
    pair_ratios: list[float] = []
    for pair in range(args.repeat):
        runs = {}
        for name in (("off", "on") if pair % 2 == 0 else ("on", "off")):
            inside["s"] = 0.0
            start = time.perf_counter()
            out = pipe.edit(frames, pipe.plan(src, tgt, mmi=configs[name], **common))
            total = time.perf_counter() - start
            runs[name] = dict(out.timings, total=total, injector=inside["s"])
            best[name] = {k: min(v, best[name].get(k, float("inf"))) for k, v in runs[name].items()}
        pair_ratios.append(runs["on"]["editing"] / runs["off"]["editing"])
    off, on = best["off"], best["on"]
    q1, median, q3 = (float(x) for x in np.quantile(pair_ratios, [0.25, 0.5, 0.75]))
    print(f"model {args.model}, {len(frames)} frames {size}x{size}, {args.steps} steps, {len(tgt)} edit(s), CFG 7.5, "
          f"{common['settings'].inversion} inversion, "
          f"device {args.device} {args.dtype}, {args.threads} threads, {args.repeat} pairs")
    if pipe.device.type != "cpu":
        print("(on an accelerator the stage and injector times are host-side (kernels run asynchronously); "
              "the whole-call ratio is synchronised: the edit returns frames on the host)")
    print(f"editing stage, with / without MMI: median of {len(pair_ratios)} paired ratios {median:.3f} "
          f"(quartiles {q1:.3f}-{q3:.3f}); pairs: {' '.join(f'{r:.3f}' for r in pair_ratios)}")
    print(f"editing stage, best of {args.repeat} each: without MMI {off['editing']:.2f} s, with MMI "
          f"{on['editing']:.2f} s, ratio {on['editing'] / off['editing']:.3f}")
    print(f"inside MotionInjector: {on['injector']:.3f} s = {100 * on['injector'] / on['editing']:.2f}% of the "
          f"editing stage with MMI")
    mm = on.get("motion_maps", 0.0)
    print(f"whole call:    without MMI {off['total']:.2f} s, with MMI {on['total']:.2f} s (motion maps {mm:.2f} s), "
          f"ratio {on['total'] / off['total']:.3f}")


if __name__ == "__main__":
    main()
