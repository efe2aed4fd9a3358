"""MMI overhead: the same edit with and without Motion Map Injection, in one run.

    python benchmarks/bench_mmi_overhead.py [--model tiny|sd14|embedded] [--size 256] [--frames 4] [--steps 4]

``tiny``: the random-weight tiny components used by the tests (64x64 frames by default).
``sd14``: a UNet and VAE with the Stable Diffusion v1.4 architecture (random weights; UNet 860M
parameters, 768-wide cross-attention) and a 768-wide one-layer CLIP text encoder, at ``--size``.
``embedded``: the demo edit itself (the shipped toy model, the demo clip and prompts, 25 steps, the default
inversion; ``--frames``/``--size``/``--steps`` ignored unless given).
Both runs share everything (inversion included). By default (``--interleave steps``) the two edits run on two
copies of the pipeline in two threads that **take turns one denoising step at a time**, so that both see the same
machine conditions (this project's shared CPU changes speed by +-10% within seconds); the figure is the ratio (with
MMI / without) of the denoising steps 2-N, each step's time the median over ``--repeat`` pairs (the order alternates
between pairs), with the pairs' own ratios and the time inside the injector. ``--interleave edits`` runs whole edits
back to back in pairs instead and reports the median of the pairs' ratios over the editing stage and the whole call.

On a GPU: ``--device cuda --dtype fp16 --model sd14 --size 512`` (the reference's setting).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(model: str):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from attentionflow.models.factory import Components, sd_scheduler, tiny_components
    from benchmarks._tokenizer import clip_tokenizer

    tok = clip_tokenizer()
    if model == "tiny":
        return tiny_components(tok)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)  # SD v1.x UNet defaults
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072,
                                        num_attention_heads=12, num_hidden_layers=1, max_position_embeddings=77))
    return Components(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=sd_scheduler())


def interleaved_steps(runs: list[tuple[Any, Any, Any]]) -> list[list[float]]:
    """Run two edits ``(pipeline, frames, plan)`` in two threads that take turns one denoising step at a time, and
    return each edit's seconds in each of its denoising steps 2..N (from resuming after its previous step's callback
    to its next callback; step 1 also holds the edit's set-up and is left out).

    Taking turns every step (about half a second here) puts both edits under nearly the same machine conditions; this
    project's shared CPU changes speed by +-10% within seconds, which whole edits back to back turn into noise of that
    size. The pipelines must not share modules (each installs its own attention processors)."""
    import threading

    import torch

    turn = [threading.Semaphore(1), threading.Semaphore(0)]
    spent: list[list[float]] = [[], []]
    resumed = [0.0, 0.0]
    errors: list[BaseException] = []

    def worker(r: int) -> None:
        pipe, frames, plan = runs[r]

        def callback(stage: str, step: int, total: int, latents: Any) -> None:
            if stage != "editing":
                return
            if getattr(latents, "is_cuda", False):  # the step's kernels have finished
                torch.cuda.synchronize(latents.device)
            now = time.perf_counter()
            if step > 1:
                spent[r].append(now - resumed[r])
            turn[1 - r].release()  # the other edit's turn
            if step < total:
                turn[r].acquire()
                resumed[r] = time.perf_counter()

        turn[r].acquire()
        try:
            pipe.edit(frames, plan, callback=callback)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
            turn[1 - r].release()

    threads = [threading.Thread(target=worker, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return spent


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
    ap.add_argument("--interleave", choices=["steps", "edits"], default="steps",
                    help="steps: the two edits take turns one denoising step at a time (two pipelines, two threads); "
                         "edits: whole edits back to back in pairs")
    args = ap.parse_args()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from attentionflow.config import InversionSettings, MMIConfig
    from attentionflow.pipeline import AttentionFlowPipeline
    from tests.synthetic import MovingSquare, make_video

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]

    def make_pipe() -> AttentionFlowPipeline:
        made = (AttentionFlowPipeline.from_pretrained("embedded", device=args.device) if args.model == "embedded"
                else AttentionFlowPipeline.from_components(build(args.model), device=args.device, dtype=dtype))
        made.set_progress_bar_config(disable=True)
        return made

    pipe = make_pipe()
    if args.model == "embedded":
        from attentionflow.demo import DEMO_SOURCE, DEMO_STEPS, DEMO_TARGETS, demo_clip

        frames = demo_clip()[: args.frames]
        size = frames.shape[1]
        src, tgt = DEMO_SOURCE, list(DEMO_TARGETS)
        args.steps = args.steps or DEMO_STEPS
        common = dict(settings=InversionSettings.default(num_inference_steps=args.steps))
    else:
        size = args.size or (64 if args.model == "tiny" else 256)
        args.frames, args.steps = args.frames or 8, args.steps or 10
        frames, _ = make_video(size=size, n_frames=args.frames,
                               squares=(MovingSquare(4, size // 3, size // 4, 3, 0),))
        src, tgt = "a car is moving on the road", ["a car is moving on the snow"]
        common = dict(settings=InversionSettings.default(num_inference_steps=args.steps, inversion="ddim"))
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
    plans = {name: pipe.plan(src, tgt, mmi=configs[name], **common) for name in configs}

    def quartiles(ratios: list[float]) -> str:
        q1, median, q3 = (float(x) for x in np.quantile(ratios, [0.25, 0.5, 0.75]))
        return (f"median of {len(ratios)} pairs' ratios {median:.3f} (quartiles {q1:.3f}-{q3:.3f}); pairs: "
                f"{' '.join(f'{r:.3f}' for r in ratios)}")

    print(f"model {args.model}, {len(frames)} frames {size}x{size}, {args.steps} steps, {len(tgt)} edit(s), CFG 7.5, "
          f"{common['settings'].inversion} inversion, device {args.device} {args.dtype}, {args.threads} threads, "
          f"{args.repeat} pairs" + (" (the two edits take turns step by step)" if args.interleave == "steps" else ""))
    if args.interleave == "steps":
        twin = make_pipe()
        steps: dict[str, list[list[float]]] = {"off": [], "on": []}  # per pair, seconds of steps 2..N
        last_injector = 0.0
        for pair in range(args.repeat):
            order = ("off", "on") if pair % 2 == 0 else ("on", "off")
            inside["s"] = 0.0
            got = interleaved_steps([(pipe, frames, plans[order[0]]), (twin, frames, plans[order[1]])])
            for name, times in zip(order, got):
                steps[name].append(times)
            last_injector = inside["s"]
        per_step = {name: np.median(np.array(v), axis=0) for name, v in steps.items()}  # (N - 1,) per step index
        pair_ratios = [sum(a) / sum(b) for a, b in zip(steps["on"], steps["off"])]
        print(f"denoising steps 2-{args.steps}, with / without MMI, each step's median over the pairs, summed: "
              f"{per_step['on'].sum():.2f} s / {per_step['off'].sum():.2f} s = "
              f"{per_step['on'].sum() / per_step['off'].sum():.3f}")
        step_ratio = per_step["on"] / per_step["off"]  # (N - 1,) steps 2..N
        print("per step (each step's median with / without MMI), steps 2-N: "
              + " ".join(f"{r:.2f}" for r in step_ratio))
        print(quartiles(pair_ratios))
        print(f"inside MotionInjector (last pair, all steps): {last_injector:.3f} s = "
              f"{100 * last_injector / sum(steps['on'][-1]):.2f}% of that edit's steps 2-{args.steps}")
        return
    best: dict[str, dict[str, float]] = {"off": {}, "on": {}}
    pair_ratios: list[float] = []
    for pair in range(args.repeat):
        runs = {}
        for name in (("off", "on") if pair % 2 == 0 else ("on", "off")):
            inside["s"] = 0.0
            start = time.perf_counter()
            out = pipe.edit(frames, plans[name])
            total = time.perf_counter() - start
            runs[name] = dict(out.timings, total=total, injector=inside["s"])
            best[name] = {k: min(v, best[name].get(k, float("inf"))) for k, v in runs[name].items()}
        pair_ratios.append(runs["on"]["editing"] / runs["off"]["editing"])
    off, on = best["off"], best["on"]
    if pipe.device.type != "cpu":
        print("(on an accelerator the stage and injector times are host-side (kernels run asynchronously); "
              "the whole-call ratio is synchronised: the edit returns frames on the host)")
    print(f"editing stage, with / without MMI: {quartiles(pair_ratios)}")
    print(f"editing stage, best of {args.repeat} each: without MMI {off['editing']:.2f} s, with MMI "
          f"{on['editing']:.2f} s, ratio {on['editing'] / off['editing']:.3f}")
    print(f"inside MotionInjector: {on['injector']:.3f} s = {100 * on['injector'] / on['editing']:.2f}% of the "
          f"editing stage with MMI")
    mm = on.get("motion_maps", 0.0)
    print(f"whole call:    without MMI {off['total']:.2f} s, with MMI {on['total']:.2f} s (motion maps {mm:.2f} s), "
          f"ratio {on['total'] / off['total']:.3f}")


if __name__ == "__main__":
    main()
