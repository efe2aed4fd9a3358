"""Benchmark: MMI's attention-vs-motion similarity against the reference implementation's loop.

The reference (``calculate_correlation_score_many_method`` in the MMI code) scores one layer call like this: for
every frame it averages the cross-attention probabilities over heads once, then loops over the prompt's **words**
(about 8), moves each word's ``(h, w)`` map to the CPU as a numpy array and calls
``cv2.matchTemplate(map, motion, cv2.TM_CCOEFF_NORMED)`` on equal-size inputs, rescaled as ``(rho + 1) / 2``.
This project's injector (:class:`attentionflow.mmi.inject.MotionInjector`) sums the heads (the measures are blind
to scale, so the sum scores like the mean) over only the span of prompt tokens that it reads, and correlates the
sums with the motion map through two weight rows (the centred unit map and the mean) that it makes once per video
and resolution (:func:`attentionflow.mmi.similarity.motion_basis`, :func:`attentionflow.mmi.similarity.correlation_score`),
in one vectorised call on the tensor's device.

Rows, all on identical inputs (attention probabilities ``(F, heads, Q, K)``, softmax over K; motion maps
``(F, h, w)``), each timed from the per-head probabilities (the heads' mean or sum included):

* ``faithful reference, W words``: the reference as it is (head average once per frame, a loop over the words);
* ``reference over all K tokens``: the same loop over every token position (what an earlier version of this
  benchmark called "the reference"; labelled, kept for comparison);
* ``this project, W words``: the injector's computation (heads' sum and correlation on the words' span; the
  motion map's basis is made once per video, outside the timing, as the injector caches it);
* ``this project, all K tokens``: the same over every token position (what the injector did before);
* ``reading floor`` rows: the heads' sums alone, over the words' span and over every token: what any method must
  read from query-major probabilities. The span floor bounds the speed-up any such method can reach (printed as
  the *ceiling*): the words' few floats per query sit inside the query's row, and memory moves whole cache lines.

Every timed run first rewrites the probabilities (untimed), as the softmax of a real layer call has just done;
re-reading one tensor whose span stayed in the caches made this project's side look about twice as fast as it is in
an edit. The speed-up is also measured from back-to-back pairs (reference, then this project, each on freshly
written probabilities), which keeps both under the same machine conditions.

With ``--device cuda`` the reference also pays a device-to-host copy per word, exactly as it did on a GPU.

Usage::

    python benchmarks/bench_similarity.py [--frames 8] [--size 64] [--tokens 77] [--words 8] [--heads 8]
                                          [--device cpu] [--threads 1] [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import cv2
import numpy as np
import torch

from attentionflow.mmi.similarity import SIMILARITY_METHODS, correlation_score, motion_basis, similarity


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _once(fn: Callable[[], object], device: torch.device, before: Callable[[], object] | None) -> float:
    """Seconds of one run of ``fn``; ``before`` runs first, untimed."""
    if before is not None:
        before()
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _time(fn: Callable[[], object], device: torch.device, repeat: int,
          before: Callable[[], object] | None = None) -> tuple[float, float]:
    """(median, min) wall time in seconds over ``repeat`` runs after one warm-up run; ``before`` runs (untimed)
    before each of them.

    The minimum is the better estimate on a shared machine (other load only adds time)."""
    times = [_once(fn, device, before) for _ in range(repeat + 1)][1:]
    return statistics.median(times), min(times)


def _paired_ratios(slow: Callable[[], object], fast: Callable[[], object], device: torch.device, repeat: int,
                   before: Callable[[], object]) -> list[float]:
    """``repeat`` ratios t(slow) / t(fast), each from one run of both back to back (``before`` before each run),
    after one warm-up pair.

    Alternating the two keeps them under the same machine conditions: on this project's shared 2-core machine the
    memory bandwidth drifts by 1.5x within a minute, which blocks of runs of one and then the other turn into a
    spread of the ratio."""
    pairs = [(_once(slow, device, before), _once(fast, device, before)) for _ in range(repeat + 1)][1:]
    return [t_slow / t_fast for t_slow, t_fast in pairs]


def reference(probs: torch.Tensor, motion: torch.Tensor, tokens: range) -> np.ndarray:
    """The reference's loop. ``probs`` ``(F, heads, Q, K)``, ``motion`` ``(F, h, w)`` -> ``(F, len(tokens))``.

    Head average once per frame; per token a device-to-host copy and ``cv2.matchTemplate(TM_CCOEFF_NORMED)``."""
    frames = probs.shape[0]
    h, w = motion.shape[1:]
    out = np.zeros((frames, len(tokens)), dtype=np.float32)
    for f in range(frames):
        m = motion[f].cpu().numpy()  # (h, w)
        mean = probs[f].mean(dim=0)  # (Q, K): the heads averaged once per frame
        for j, k in enumerate(tokens):
            a = mean[:, k].reshape(h, w).cpu().numpy()  # (h, w), one copy per word
            out[f, j] = (cv2.matchTemplate(a, m, cv2.TM_CCOEFF_NORMED)[0, 0] + 1) / 2
    return out


def ours(probs: torch.Tensor, basis: torch.Tensor, tokens: range) -> torch.Tensor:
    """The injector's computation of ``ncc`` -> ``(F, len(tokens))``: the heads' sum over the token span (the
    correlation is blind to scale, so the sum scores like the mean) and its Pearson correlation with the motion map
    through the map's basis, which the injector makes once per video and resolution (``basis``, from
    :func:`attentionflow.mmi.similarity.motion_basis`, ``(F, 2, Q)``)."""
    span = probs[..., tokens.start:tokens.stop]  # (F, heads, Q, K') narrow view
    return correlation_score(span.sum(dim=1), basis, "ncc")  # (F, Q, K') head sums -> (F, K')


def ours_api(probs: torch.Tensor, motion_flat: torch.Tensor, tokens: range, method: str = "ncc") -> torch.Tensor:
    """The public :func:`attentionflow.mmi.similarity.similarity` on the span's head sums (any measure; the motion
    side is prepared in the call) -> ``(F, len(tokens))``."""
    span = probs[..., tokens.start:tokens.stop]  # (F, heads, Q, K') narrow view
    return similarity(span.sum(dim=1).transpose(-1, -2), motion_flat, method)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="attention map side (Q = size**2)")
    parser.add_argument("--tokens", type=int, default=77)
    parser.add_argument("--words", type=int, default=8, help="prompt words the reference loops over")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    device = torch.device(args.device)

    g = torch.Generator().manual_seed(0)
    q = args.size * args.size
    logits = torch.randn(args.frames, args.heads, q, args.tokens, generator=g)
    probs = logits.softmax(dim=-1).to(device)  # (F, heads, Q, K)
    motion = torch.rand(args.frames, args.size, args.size, generator=g).to(device)  # (F, h, w)
    motion_flat = motion.reshape(args.frames, q)  # (F, Q)
    words = range(1, 1 + args.words)  # the prompt's words follow the start token
    every = range(0, args.tokens)

    unit = motion_basis(motion_flat)  # (F, 2, Q): once per video in the injector
    written = probs.clone()

    def fresh() -> None:
        """Rewrite the probabilities (untimed) before every timed run: in an edit each layer call scores
        probabilities its softmax has just written, not ones that a previous run of the same code left in the
        caches."""
        probs.copy_(written)

    diff_words = np.abs(ours(probs, unit, words).float().cpu().numpy() - reference(probs, motion, words)).max()
    full = ours(probs, unit, every)
    diff_every = np.abs(full.float().cpu().numpy() - reference(probs, motion, every)).max()
    same_on_words = (ours(probs, unit, words) - full[:, words.start:words.stop]).abs().max().item()
    print(f"inputs: F={args.frames} heads={args.heads} Q={q} ({args.size}x{args.size}) K={args.tokens} "
          f"words={args.words} device={device} torch threads={torch.get_num_threads()}")
    print(f"max |ours - cv2 reference| (ncc): {args.words} words {diff_words:.2e}, all {args.tokens} tokens "
          f"{diff_every:.2e}; span vs all-token computation on the words: {same_on_words:.2e}")

    rows = [
        (f"faithful reference, {args.words} words", lambda: reference(probs, motion, words), max(3, args.repeat // 3)),
        (f"reference over all {args.tokens} tokens", lambda: reference(probs, motion, every), max(3, args.repeat // 3)),
        (f"this project, {args.words} words", lambda: ours(probs, unit, words), args.repeat),
        (f"this project, all {args.tokens} tokens", lambda: ours(probs, unit, every), args.repeat),
        (f"reading floor: the {args.words} words' head sums alone", lambda: probs[..., words.start:words.stop].sum(dim=1),
         args.repeat),
        (f"reading floor: the head sums of all {args.tokens} tokens", lambda: probs.sum(dim=1), args.repeat),
    ]
    times = {}
    print("| computation | ms per layer call (median) | min | faithful reference / this (median) |")
    print("|---|---:|---:|---:|")
    for name, fn, repeat in rows:
        times[name] = _time(fn, device, repeat, before=fresh)
    base = times[rows[0][0]][0]
    for name, (med, low) in times.items():
        print(f"| {name} | {med * 1e3:.2f} | {low * 1e3:.2f} | {base / med:.1f}x |")
    floor = times[f"reading floor: the {args.words} words' head sums alone"][0]
    print(f"ceiling: a method that reads the {args.words} words from these query-major probabilities needs at least "
          f"the span's head sums ({floor * 1e3:.2f} ms), so it is at most {base / floor:.1f}x faster than the faithful "
          f"reference here (memory traffic: each query's {args.tokens}-float row is read in whole cache lines)")
    ratios = _paired_ratios(rows[0][1], rows[2][1], device, args.repeat, before=fresh)
    q1, median, q3 = (float(x) for x in np.quantile(ratios, [0.25, 0.5, 0.75]))  # as bench_mmi_overhead.py
    print(f"paired runs (the faithful reference and this project back to back, {args.repeat} pairs): speed-up median "
          f"{median:.1f}x (quartiles {q1:.1f}x-{q3:.1f}x)")
    for method in SIMILARITY_METHODS:
        med, low = _time(lambda m=method: ours_api(probs, motion_flat, words, m), device, args.repeat, before=fresh)
        print(f"similarity() {method:5s} on {args.words} words (head sum included): {med * 1e3:8.3f} ms "
              f"(min {low * 1e3:7.3f})")


if __name__ == "__main__":
    main()
