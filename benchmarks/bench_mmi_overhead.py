"""MMI overhead: the same edit with and without Motion Map Injection, in one run, with an A/A control.

    python benchmarks/bench_mmi_overhead.py [--model tiny|sd14|embedded] [--size 256] [--frames 4] [--steps 4]
                                            [--repeat 12] [--threads 2]

``tiny``: the random-weight tiny components used by the tests (64x64 frames by default).
``sd14``: a UNet and VAE with the Stable Diffusion v1.4 architecture (random weights; UNet 860M
parameters, 768-wide cross-attention) and a 768-wide one-layer CLIP text encoder, at ``--size``.
``embedded``: the demo edit itself (the shipped toy model, the demo clip and prompts, 25 steps, the default
inversion; ``--frames``/``--size``/``--steps`` ignored unless given).

One pipeline, one inversion shared by every edit. Each of ``--repeat`` rounds runs three edits back to back: without
MMI, with MMI, and **without MMI again** (the A/A control: the identical edit, whose ratio to the first must read 1),
in an order that cycles through all six permutations over the rounds. Every edit's denoising steps 2-N are timed one
by one (step 1 also holds the edit's set-up), and so is every cross-attention layer call of those steps. Figures:

* **direct**: each step's fastest time over the rounds, summed over the steps, with MMI / without (and the A/A
  control, without again / without). On a shared machine interference only ever slows a step down, so the fastest of
  several rounds estimates its undisturbed time (the ``timeit`` rule); the same with each step's median follows.
* **accounted**: MMI acts only inside the cross-attention layers (the injector and the figure's second store run in
  the attention processor, which also makes explicit probabilities where MMI alone needs them; nothing else of a
  denoising step changes), so its cost is the cross-attention calls' time with MMI minus without, each call (step,
  layer) at its fastest over the rounds, summed; the ratio is ``(without + that) / without``. Both sides of each
  difference are the same call of the same step, which leaves far less room for the machine's noise than whole steps.
* the time inside :class:`~attentionflow.mmi.inject.MotionInjector` itself and its share of the steps.

The rounds' own ratios (each round's summed steps) are printed with their quartiles too.

On a GPU: ``--device cuda --dtype fp16 --model sd14 --size 512`` (the reference's setting); every timed step and
layer call is then synchronised.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterator, Mapping, Sequence

import numpy as np

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


@dataclass
class EditTimes:
    """What one timed edit spent."""

    steps: list[float]
    """Seconds of each denoising step 2..N, in order."""
    cross: dict[tuple[int, int, str], float] = field(default_factory=dict)
    """Seconds of each cross-attention layer call of those steps, keyed by (step index, first frame, layer)."""
    injector: float = 0.0
    """Seconds inside :class:`~attentionflow.mmi.inject.MotionInjector` (steps 2..N)."""


def fastest_sum(runs: Sequence[Sequence[float]]) -> float:
    """``runs[r][j]``: round ``r``'s time of step ``j`` -> the sum over the steps of each step's fastest round."""
    return float(np.min(np.asarray(runs, dtype=float), axis=0).sum())


def median_sum(runs: Sequence[Sequence[float]]) -> float:
    """Like :func:`fastest_sum` with each step's median over the rounds."""
    return float(np.median(np.asarray(runs, dtype=float), axis=0).sum())


def accounted_extra(variant: Sequence[Mapping[Hashable, float]], base: Sequence[Mapping[Hashable, float]]) -> float:
    """Seconds the ``variant`` edits spend more than the ``base`` edits in the calls they share: per call key, the
    fastest time over the variant's rounds minus the fastest over the base's rounds, summed over the keys.

    Both must time the same calls (the same keys in every round); a key missing anywhere raises ``ValueError``."""
    keys = set(variant[0])
    if any(set(times) != keys for times in (*variant, *base)):
        raise ValueError("the edits timed different cross-attention calls; they cannot be compared call by call")
    return sum(min(t[k] for t in variant) - min(t[k] for t in base) for k in keys)


@contextmanager
def timed_edits(device: Any) -> Iterator[dict[str, Any]]:
    """Benchmark-only instrumentation for the ``with`` block: the returned dict's ``"edit"`` (an
    :class:`EditTimes`, replaced per edit by the caller) collects the seconds of every cross-attention processor call
    (keyed by step, first frame and layer) and of every :class:`MotionInjector` call from the second denoising step
    on. The classes' ``__call__`` are restored on exit."""
    import torch

    from attentionflow.attention.processors import FrameAttnProcessor
    from attentionflow.mmi.inject import MotionInjector

    sync = (lambda: torch.cuda.synchronize(device)) if torch.device(device).type == "cuda" else (lambda: None)
    log: dict[str, Any] = {"edit": None}
    processor_call, injector_call = FrameAttnProcessor.__call__, MotionInjector.__call__

    def processor(self: FrameAttnProcessor, attn: Any, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        state = self.runtime.state
        if not self.site.is_cross or state.step < 1 or log["edit"] is None:
            return processor_call(self, attn, hidden_states, *args, **kwargs)
        sync()
        start = time.perf_counter()
        out = processor_call(self, attn, hidden_states, *args, **kwargs)
        sync()
        key = (state.step, state.frame_start, self.site.name)
        log["edit"].cross[key] = log["edit"].cross.get(key, 0.0) + time.perf_counter() - start
        return out

    def injector(self: MotionInjector, probs: Any, site: Any, state: Any) -> Any:
        start = time.perf_counter()
        try:
            return injector_call(self, probs, site, state)
        finally:
            if state.step >= 1 and log["edit"] is not None:
                log["edit"].injector += time.perf_counter() - start

    FrameAttnProcessor.__call__, MotionInjector.__call__ = processor, injector
    try:
        yield log
    finally:
        FrameAttnProcessor.__call__, MotionInjector.__call__ = processor_call, injector_call


def run_edit(pipe: Any, frames: Any, plan: Any, inversion: Any, log: dict[str, Any]) -> EditTimes:
    """One edit, timed step by step (steps 2..N: from one step's end to the next's) and call by call."""
    import torch

    times = EditTimes(steps=[])
    marks: list[float] = []

    def callback(stage: str, step: int, total: int, latents: Any) -> None:
        if stage == "editing":
            if getattr(latents, "is_cuda", False):  # the step's kernels have finished
                torch.cuda.synchronize(latents.device)
            marks.append(time.perf_counter())

    log["edit"] = times
    try:
        pipe.edit(frames, plan, inversion=inversion, callback=callback)
    finally:
        log["edit"] = None
    times.steps = [b - a for a, b in zip(marks, marks[1:])]
    return times


def quartiles(ratios: Sequence[float]) -> str:
    q1, median, q3 = (float(x) for x in np.quantile(ratios, [0.25, 0.5, 0.75]))
    return f"median {median:.3f} (quartiles {q1:.3f}-{q3:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "sd14", "embedded"], default="tiny")
    ap.add_argument("--size", type=int, default=None, help="frame size (default 64 tiny, 256 sd14)")
    ap.add_argument("--frames", type=int, default=None, help="frames (default 8)")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default 10; embedded: the demo's 25)")
    ap.add_argument("--repeat", type=int, default=6, help="rounds of three edits (default 6: each order once)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    ap.add_argument("--save", type=Path, default=None,
                    help="also write every edit's step times (round, position in the round, start) to this JSON file")
    args = ap.parse_args()
    if args.repeat < 2:
        ap.error(f"--repeat {args.repeat}: use at least 2 rounds")
    import torch

    torch.set_num_threads(args.threads)
    from attentionflow.config import InversionSettings, MMIConfig
    from attentionflow.pipeline import AttentionFlowPipeline
    from tests.synthetic import MovingSquare, make_video

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    pipe = (AttentionFlowPipeline.from_pretrained("embedded", device=args.device) if args.model == "embedded"
            else AttentionFlowPipeline.from_components(build(args.model), device=args.device, dtype=dtype))
    pipe.set_progress_bar_config(disable=True)
    if args.model == "embedded":
        from attentionflow.commands.demo import DEMO_SOURCE, DEMO_STEPS, DEMO_TARGETS, demo_clip

        frames = demo_clip()[: args.frames]
        size = frames.shape[1]
        src, tgt = DEMO_SOURCE, list(DEMO_TARGETS)
        args.steps = args.steps or DEMO_STEPS
        settings = InversionSettings.default(num_inference_steps=args.steps)
    else:
        size = args.size or (64 if args.model == "tiny" else 256)
        args.frames, args.steps = args.frames or 8, args.steps or 10
        frames, _ = make_video(size=size, n_frames=args.frames,
                               squares=(MovingSquare(4, size // 3, size // 4, 3, 0),))
        src, tgt = "a car is moving on the road", ["a car is moving on the snow"]
        settings = InversionSettings.default(num_inference_steps=args.steps, inversion="ddim")
    plans = {"off": pipe.plan(src, tgt, mmi=MMIConfig(enabled=False), settings=settings),
             "on": pipe.plan(src, tgt, mmi=MMIConfig(motion_words=["moving"]), settings=settings)}
    plans["again"] = plans["off"]  # the A/A control: the identical edit without MMI
    inversion = pipe.invert(frames, src, settings, plans["on"].attention, seed=plans["on"].seed)

    print(f"model {args.model}, {len(frames)} frames {size}x{size}, {args.steps} steps, {len(tgt)} edit(s), CFG 7.5, "
          f"{settings.inversion} inversion, device {args.device} {args.dtype}, {args.threads} threads, "
          f"{args.repeat} rounds of three edits (without MMI, with, without again; the order cycles)")
    names = ("off", "on", "again")
    orders = list(itertools.permutations(names))
    runs: dict[str, list[EditTimes]] = {name: [] for name in names}
    record: list[dict[str, Any]] = []
    began = time.perf_counter()
    with timed_edits(args.device) as log:
        for r in range(args.repeat):
            for position, name in enumerate(orders[r % len(orders)]):
                start = time.perf_counter() - began
                runs[name].append(run_edit(pipe, frames, plans[name], inversion, log))
                record.append(dict(edit=name, round=r, position=position, start_s=round(start, 3),
                                   steps_s=runs[name][-1].steps, injector_s=runs[name][-1].injector))
    if args.save is not None:
        args.save.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(args).items()}, edits=record), indent=1))
    steps = {name: [t.steps for t in v] for name, v in runs.items()}  # (rounds, N - 1) per edit
    base, base_median = fastest_sum(steps["off"]), median_sum(steps["off"])
    n = args.steps
    print(f"direct, denoising steps 2-{n}, each step's fastest of the {args.repeat} rounds, summed: "
          f"without MMI {base:.2f} s, with {fastest_sum(steps['on']):.2f} s: ratio "
          f"{fastest_sum(steps['on']) / base:.3f}; A/A control (without again / without): "
          f"{fastest_sum(steps['again']) / base:.3f}")
    print(f"direct, each step's median of the rounds, summed: ratio {median_sum(steps['on']) / base_median:.3f}; "
          f"A/A control {median_sum(steps['again']) / base_median:.3f}")
    extra = accounted_extra([t.cross for t in runs["on"]], [t.cross for t in runs["off"]])
    control = accounted_extra([t.cross for t in runs["again"]], [t.cross for t in runs["off"]])
    calls = len(runs["on"][0].cross)
    print(f"accounted, the {calls} cross-attention layer calls of steps 2-{n} (each call's fastest of the rounds), "
          f"with MMI minus without: {1000 * extra:.0f} ms: ratio {(base + extra) / base:.3f}; A/A control "
          f"{1000 * control:+.0f} ms: {(base + control) / base:.3f}")
    rounds = [sum(a.steps) / sum(b.steps) for a, b in zip(runs["on"], runs["off"])]
    rounds_aa = [sum(a.steps) / sum(b.steps) for a, b in zip(runs["again"], runs["off"])]
    print(f"the rounds' own ratios (summed steps): with / without {quartiles(rounds)}; A/A {quartiles(rounds_aa)}")
    inside = float(np.median([t.injector for t in runs["on"]]))
    print(f"inside MotionInjector, steps 2-{n}: {1000 * inside:.0f} ms per edit (median of the rounds) = "
          f"{100 * inside / base:.2f}% of the steps without MMI")
    if torch.device(args.device).type != "cpu":
        print("(on an accelerator the injector's time is host-side: its kernels run asynchronously)")


if __name__ == "__main__":
    main()
