"""Benchmark: vectorised attention-vs-motion similarity vs the reference's per-token OpenCV loop.

The reference implementation scored every (frame, token) pair separately: it averaged the token's
cross-attention map over heads, moved it to the CPU as a numpy array and called
``cv2.matchTemplate(map, motion, cv2.TM_CCOEFF_NORMED)`` on equal-size inputs, once per layer call.
:func:`attentionflow.mmi.similarity.similarity` computes all pairs at once on the tensor's device.

Both sides get identical inputs: attention probabilities ``(F, heads, Q, K)`` (softmax over K) and
motion maps ``(F, h, w)``. Two comparisons are timed:

* ``full``: from the per-head probabilities (head averaging included on both sides; the reference
  averages per token inside its loop, as it did),
* ``maps``: from pre-averaged maps ``(F, Q, K)`` (only the similarity itself).

Usage::

    python benchmarks/bench_similarity.py [--frames 8] [--size 64] [--tokens 77] [--heads 8]
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

from attentionflow.mmi.similarity import SIMILARITY_METHODS, similarity


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device, repeat: int) -> tuple[float, float]:
    """(median, min) wall time in seconds over ``repeat`` runs after one warm-up run.

    The minimum is the better estimate on a shared machine (other load only adds time)."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def reference_full(probs: torch.Tensor, motion: torch.Tensor) -> np.ndarray:
    """The reference loop. ``probs`` ``(F, heads, Q, K)``, ``motion`` ``(F, h, w)`` -> ``(F, K)``."""
    frames, _, _, tokens = probs.shape
    h, w = motion.shape[1:]
    out = np.zeros((frames, tokens), dtype=np.float32)
    for f in range(frames):
        m = motion[f].cpu().numpy()  # (h, w)
        for k in range(tokens):
            a = probs[f, :, :, k].mean(dim=0).reshape(h, w).cpu().numpy()  # (h, w) head average
            out[f, k] = (cv2.matchTemplate(a, m, cv2.TM_CCOEFF_NORMED)[0, 0] + 1) / 2
    return out


def reference_maps(maps: torch.Tensor, motion: torch.Tensor) -> np.ndarray:
    """The reference loop on pre-averaged maps ``(F, Q, K)`` -> ``(F, K)``."""
    frames, _, tokens = maps.shape
    h, w = motion.shape[1:]
    out = np.zeros((frames, tokens), dtype=np.float32)
    for f in range(frames):
        m = motion[f].cpu().numpy()  # (h, w)
        for k in range(tokens):
            a = maps[f, :, k].reshape(h, w).cpu().numpy()  # (h, w)
            out[f, k] = (cv2.matchTemplate(a, m, cv2.TM_CCOEFF_NORMED)[0, 0] + 1) / 2
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="attention map side (Q = size**2)")
    parser.add_argument("--tokens", type=int, default=77)
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
    maps = probs.mean(dim=1)  # (F, Q, K)

    def ours_full() -> torch.Tensor:
        return similarity(probs.mean(dim=1).transpose(-1, -2), motion_flat, "ncc")  # (F, K)

    def ours_maps(method: str = "ncc") -> torch.Tensor:
        return similarity(maps.transpose(-1, -2), motion_flat, method)  # (F, K)

    ref = reference_full(probs, motion)
    diff = np.abs(ours_full().float().cpu().numpy() - ref).max()
    print(f"inputs: F={args.frames} heads={args.heads} Q={q} ({args.size}x{args.size}) "
          f"K={args.tokens} device={device} torch threads={torch.get_num_threads()}")
    print(f"max |ours - cv2 reference| (ncc) = {diff:.2e}")

    rows = [
        ("full (head average + NCC)", lambda: reference_full(probs, motion), ours_full),
        ("maps (NCC only)", lambda: reference_maps(maps, motion), lambda: ours_maps("ncc")),
    ]
    for name, ref_fn, our_fn in rows:
        ref_med, ref_min = _time(ref_fn, device, max(3, args.repeat // 3))
        our_med, our_min = _time(our_fn, device, args.repeat)
        print(f"{name:26s} reference loop {ref_med * 1e3:8.2f} ms (min {ref_min * 1e3:8.2f})   "
              f"vectorised {our_med * 1e3:7.3f} ms (min {our_min * 1e3:7.3f})   "
              f"speed-up {ref_med / our_med:6.1f}x (min/min {ref_min / our_min:6.1f}x)")
    for method in SIMILARITY_METHODS:
        med, low = _time(lambda m=method: ours_maps(m), device, args.repeat)
        print(f"measure {method:5s} on pre-averaged maps: {med * 1e3:8.3f} ms (min {low * 1e3:7.3f})")


if __name__ == "__main__":
    main()
