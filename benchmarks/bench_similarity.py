"""Benchmark: MMI's attention-vs-motion similarity against the reference implementation's loop.

The reference (``calculate_correlation_score_many_method`` in the MMI code) scores one layer call like this: for
every frame it averages the cross-attention probabilities over heads once, then loops over the prompt's **words**
(about 8), moves each word's ``(h, w)`` map to the CPU as a numpy array and calls
``cv2.matchTemplate(map, motion, cv2.TM_CCOEFF_NORMED)`` on equal-size inputs, rescaled as ``(rho + 1) / 2``.
Its probabilities are query-major, as its attention writes them (``softmax(q k^T)``, each query's row of ``K``
token values contiguous).

This project's attention path writes the probabilities **token-major** (the softmax of ``k q^T`` over the tokens:
each token's map over the queries contiguous; :meth:`attentionflow.attention.processors.FrameAttnProcessor._probs`).
Its injector (:class:`attentionflow.mmi.inject.MotionInjector`) sums the heads (the measures are blind to scale, so
the sum scores like the mean) over only the span of prompt tokens that it reads, a contiguous block per head, and
correlates the sums with the motion map through two weight rows (the centred unit map and the mean) that it makes
once per video and resolution (:func:`attentionflow.mmi.similarity.motion_basis`,
:func:`attentionflow.mmi.similarity.correlation_score`), in one vectorised call on the tensor's device.

Rows, all on identical values (attention probabilities ``(F, heads, Q, K)``, softmax over K; motion maps
``(F, h, w)``), each timed from the per-head probabilities (the heads' mean or sum included):

* ``faithful reference, W words``: the reference as it is (head average once per frame, a loop over the words), on
  query-major probabilities;
* ``reference over all K tokens``: the same loop over every token position (what an earlier version of this
  benchmark called "the reference"; labelled, kept for comparison);
* ``this project, W words``: the injector's computation (heads' sum and correlation on the words' span; the
  motion map's basis is made once per video, outside the timing, as the injector caches it) on token-major
  probabilities, as this project's attention writes them;
* ``this project, all K tokens``: the same over every token position;
* ``this project on query-major probabilities, W words``: the same computation on the reference's layout (what the
  injector read before the attention path wrote token-major);
* ``reading floor`` rows: the heads' sums alone over the words' span, in each layout: what any method must read.
  In the query-major layout the words' few floats per query sit inside each query's row and memory moves whole
  cache lines, so that floor bounds any method reading query-major probabilities (printed as the *ceiling*).

What the layout costs where the probabilities are made is measured side by side too (``layout`` rows): the scores
and softmax, and the product with the values, in both layouts, from the same ``q``, ``k``, ``v`` (``--head-dim``,
40 at Stable Diffusion v1's 64x64 level), each into freshly allocated memory as in a layer call, and
prompt-to-prompt's cross-attention replace (:class:`attentionflow.attention.p2p.P2PEdit`) on each layout.

Every timed similarity run first rewrites the probabilities (untimed), as the softmax of a real layer call has just
done; re-reading one tensor whose span stayed in the caches made this project's side look about twice as fast as it
is in an edit. The speed-up is also measured from back-to-back pairs (reference, then this project, each on freshly
written probabilities), which keeps both under the same machine conditions.

With ``--device cuda`` the reference also pays a device-to-host copy per word, exactly as it did on a GPU.

Usage::

    python benchmarks/bench_similarity.py [--frames 8] [--size 64] [--tokens 77] [--words 8] [--heads 8]
                                          [--head-dim 40] [--device cpu] [--threads 1] [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from diffusers.models.attention_processor import Attention

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks._tokenizer

from attentionflow.attention.base import as_token_major, head_sum, is_token_major, token_rows  # noqa: E402
from attentionflow.attention.processors import FrameAttnProcessor  # noqa: E402
from attentionflow.mmi.similarity import SIMILARITY_METHODS, correlation_score, motion_basis, similarity  # noqa: E402


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
    """The injector's computation of ``ncc`` -> ``(F, len(tokens))``: the heads' sum over the token span, read
    token-major (the correlation is blind to scale, so the sum scores like the mean), and its Pearson correlation with
    the motion map through the map's basis, which the injector makes once per video and resolution (``basis``, from
    :func:`attentionflow.mmi.similarity.motion_basis`, ``(F, 3, Q)``). ``probs`` ``(F, heads, Q, K)`` in either
    layout (fast when token-major, as this project's attention writes them)."""
    sums = span_sums(probs, tokens)  # (F, K', Q)
    return correlation_score(sums, basis, "ncc")  # (F, K')


def ours_api(probs: torch.Tensor, motion_flat: torch.Tensor, tokens: range, method: str = "ncc") -> torch.Tensor:
    """The public :func:`attentionflow.mmi.similarity.similarity` on the span's head sums (any measure; the motion
    side is prepared in the call) -> ``(F, len(tokens))``."""
    return similarity(span_sums(probs, tokens), motion_flat, method)


def span_sums(probs: torch.Tensor, tokens: range) -> torch.Tensor:
    """The heads' sums of the span, read in ``probs``' memory order -> ``(F, K', Q)`` (alone: the reading floor)."""
    return head_sum(token_rows(probs, (tokens.start, tokens.stop)), 1)  # (F, heads, K', Q) view -> (F, K', Q)


def query_major_scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """The reference's layout: ``softmax(q k^T * scale)`` over the tokens, ``(F, heads, Q, K)`` contiguous."""
    return torch.matmul(q, k.transpose(-1, -2)).mul_(scale).softmax(dim=-1)


def p2p_by_layout(frames: int, heads: int, size: int, tokens: int, device: torch.device,
                  repeat: int) -> dict[str, tuple[float, float]]:
    """(median, min) seconds of :class:`attentionflow.attention.p2p.P2PEdit`'s cross-attention replace on one layer
    call's probabilities ``(2 * 2 * F, heads, Q, K)`` (CFG halves x source + one edit) in each layout, each run on a
    fresh copy (untimed)."""
    from attentionflow.attention.base import AttentionSite, AttentionState
    from attentionflow.attention.p2p import P2PEdit
    from attentionflow.attention.tables import p2p_tables
    from benchmarks._tokenizer import clip_tokenizer

    ctrl = P2PEdit(p2p_tables(clip_tokenizer(), ["a car is moving on the road", "a car is moving on the snow"], 10,
                              cross_replace_steps=0.8, self_replace_steps=0.0))
    q = size * size
    state = AttentionState(num_frames=frames, num_branches=2, cfg=True, step=2, num_steps=10, latent_size=(size, size),
                           resolutions={q: (size, size)})
    site = AttentionSite(name="down_blocks.0.attentions.0.transformer_blocks.0.attn2", is_cross=True, place="down",
                         block_index=0)
    g = torch.Generator().manual_seed(2)
    values = torch.randn(4 * frames, heads, q, tokens, generator=g).softmax(dim=-1).to(device)  # query-major
    layouts = {"query-major": values, "token-major": as_token_major(values)}
    work = {name: x.clone() for name, x in layouts.items()}  # clone keeps each layout
    results = {name: ctrl(work[name], site, state) for name in layouts}
    if not torch.allclose(results["query-major"], results["token-major"], atol=1e-6, rtol=0):
        raise AssertionError("prompt-to-prompt gives different results in the two layouts")
    out: dict[str, tuple[float, float]] = {}
    for name, x in layouts.items():
        out[name] = _time(lambda n=name: ctrl(work[n], site, state), device, repeat,
                          before=lambda n=name, x=x: work[n].copy_(x))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="attention map side (Q = size**2)")
    parser.add_argument("--tokens", type=int, default=77)
    parser.add_argument("--words", type=int, default=8, help="prompt words the reference loops over")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=40, help="query/key width per head (layout rows)")
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
    probs = logits.softmax(dim=-1).to(device)  # (F, heads, Q, K) query-major: the reference's layout
    probs_t = as_token_major(probs)  # the same values token-major: this project's
    motion = torch.rand(args.frames, args.size, args.size, generator=g).to(device)  # (F, h, w)
    motion_flat = motion.reshape(args.frames, q)  # (F, Q)
    words = range(1, 1 + args.words)  # the prompt's words follow the start token
    every = range(0, args.tokens)

    unit = motion_basis(motion_flat)  # (F, 3, Q): once per video in the injector
    written = probs.clone()

    def fresh() -> None:
        """Rewrite the probabilities (untimed) before every timed run: in an edit each layer call scores
        probabilities its softmax has just written, not ones that a previous run of the same code left in the
        caches."""
        probs.copy_(written)
        probs_t.copy_(written)

    diff_words = np.abs(ours(probs_t, unit, words).float().cpu().numpy() - reference(probs, motion, words)).max()
    full = ours(probs_t, unit, every)
    diff_every = np.abs(full.float().cpu().numpy() - reference(probs, motion, every)).max()
    same_on_words = (ours(probs_t, unit, words) - full[:, words.start:words.stop]).abs().max().item()
    print(f"inputs: F={args.frames} heads={args.heads} Q={q} ({args.size}x{args.size}) K={args.tokens} "
          f"words={args.words} device={device} torch threads={torch.get_num_threads()}")
    print(f"max |ours - cv2 reference| (ncc): {args.words} words {diff_words:.2e}, all {args.tokens} tokens "
          f"{diff_every:.2e}; span vs all-token computation on the words: {same_on_words:.2e}")

    floor_q = f"reading floor: the {args.words} words' head sums, query-major"
    rows = [
        (f"faithful reference, {args.words} words (query-major)", lambda: reference(probs, motion, words),
         max(3, args.repeat // 3)),
        (f"reference over all {args.tokens} tokens (query-major)", lambda: reference(probs, motion, every),
         max(3, args.repeat // 3)),
        (f"this project, {args.words} words (token-major)", lambda: ours(probs_t, unit, words), args.repeat),
        (f"this project, all {args.tokens} tokens (token-major)", lambda: ours(probs_t, unit, every), args.repeat),
        (f"this project on query-major probabilities, {args.words} words", lambda: ours(probs, unit, words),
         args.repeat),
        (floor_q, lambda: span_sums(probs, words), args.repeat),
        (f"reading floor: the {args.words} words' head sums, token-major", lambda: span_sums(probs_t, words),
         args.repeat),
        (f"reading floor: the head sums of all {args.tokens} tokens, query-major", lambda: probs.sum(dim=1),
         args.repeat),
    ]
    times = {}
    print("| computation | ms per layer call (median) | min | faithful reference / this (median) |")
    print("|---|---:|---:|---:|")
    for name, fn, repeat in rows:
        times[name] = _time(fn, device, repeat, before=fresh)
    base = times[rows[0][0]][0]
    for name, (med, low) in times.items():
        print(f"| {name} | {med * 1e3:.2f} | {low * 1e3:.2f} | {base / med:.1f}x |")
    floor_all = f"reading floor: the head sums of all {args.tokens} tokens, query-major"
    floor = min(times[floor_q][0], times[floor_all][0])
    print(f"ceiling for query-major probabilities: a method that reads the {args.words} words from them needs at "
          f"least the cheaper of the two query-major reading floors ({floor * 1e3:.2f} ms), so it is at most "
          f"{base / floor:.1f}x faster than the faithful reference here (each query's {args.tokens}-float row is read "
          f"in whole cache lines, so reading a few of its floats costs about as much as reading all of them)")
    ratios = _paired_ratios(rows[0][1], rows[2][1], device, args.repeat, before=fresh)
    q1, median, q3 = (float(x) for x in np.quantile(ratios, [0.25, 0.5, 0.75]))  # as bench_mmi_overhead.py
    print(f"paired runs (the faithful reference and this project back to back, {args.repeat} pairs): speed-up median "
          f"{median:.1f}x (quartiles {q1:.1f}x-{q3:.1f}x)")

    # What each layout costs where the probabilities are made (fresh memory each run, as in a layer call).
    gq = torch.Generator().manual_seed(1)
    qq = torch.randn(args.frames, args.heads, q, args.head_dim, generator=gq).to(device)  # (F, heads, Q, d)
    kk = torch.randn(args.frames, args.heads, args.tokens, args.head_dim, generator=gq).to(device)  # (F, heads, K, d)
    vv = torch.randn(args.frames, args.heads, args.tokens, args.head_dim, generator=gq).to(device)
    # this project's side is the processor's own code (token-major from TOKEN_MAJOR_MIN_QUERIES queries on)
    attn = Attention(query_dim=args.heads * args.head_dim, heads=args.heads, dim_head=args.head_dim)
    scale = attn.scale
    made = {
        "query-major": query_major_scores(qq, kk, scale),
        "token-major": FrameAttnProcessor._probs(attn, qq, kk, None),
    }
    diff_layout = (made["query-major"] - made["token-major"]).abs().max().item()
    if not is_token_major(made["token-major"]):
        raise AssertionError(f"the processor made query-major probabilities for Q={q}; the layout rows need "
                             "token-major")
    width = args.heads * args.head_dim

    def values_query_major() -> torch.Tensor:
        out = torch.matmul(made["query-major"], vv)  # (F, heads, Q, d)
        return out.transpose(1, 2).reshape(args.frames, q, width)  # (F, Q, heads*d) as the layer passes it on

    def values_token_major() -> torch.Tensor:
        return FrameAttnProcessor._apply(made["token-major"], vv)  # (F, Q, heads*d)

    diff_out = (values_query_major() - values_token_major()).abs().max().item()
    layout_rows = [
        ("scores + softmax, query-major (the reference's)", lambda: query_major_scores(qq, kk, scale)),
        ("scores + softmax, token-major (this project's)", lambda: FrameAttnProcessor._probs(attn, qq, kk, None)),
        ("probabilities x values -> (F, Q, heads*d), query-major", values_query_major),
        ("probabilities x values -> (F, Q, heads*d), token-major", values_token_major),
    ]
    print(f"layout cost where the probabilities are made and used (head dim {args.head_dim}; max |query-major - "
          f"token-major| {diff_layout:.1e} in the probabilities, {diff_out:.1e} in the output), runs back to back:")
    print("| step | ms per layer call (median) | min |")
    print("|---|---:|---:|")
    layout_times: dict[str, list[float]] = {name: [] for name, _ in layout_rows}
    for _ in range(args.repeat + 1):
        for name, fn in layout_rows:
            layout_times[name].append(_once(fn, device, None))
    med = {name: statistics.median(ts[1:]) for name, ts in layout_times.items()}
    for name, ts in layout_times.items():
        print(f"| {name} | {med[name] * 1e3:.2f} | {min(ts[1:]) * 1e3:.2f} |")
    qm_make, tm_make = (
        med[layout_rows[0][0]] + med[layout_rows[2][0]],
        med[layout_rows[1][0]] + med[layout_rows[3][0]],
    )
    print(f"the layer call's explicit attention with the similarity (medians summed): reference layout and loop "
          f"{(qm_make + base) * 1e3:.1f} ms; this project {(tm_make + times[rows[2][0]][0]) * 1e3:.1f} ms "
          f"(ratio {(qm_make + base) / (tm_make + times[rows[2][0]][0]):.2f}x)")

    p2p_times = p2p_by_layout(args.frames, args.heads, args.size, args.tokens, device, args.repeat)
    print("prompt-to-prompt's cross-attention replace (source + 1 edit, CFG: the conditional edit's maps from the "
          "source's), in place, by layout:")
    print("| layout | ms per layer call (median) | min |")
    print("|---|---:|---:|")
    for name, (med_p, low_p) in p2p_times.items():
        print(f"| {name} | {med_p * 1e3:.2f} | {low_p * 1e3:.2f} |")

    for method in SIMILARITY_METHODS:
        med, low = _time(lambda m=method: ours_api(probs_t, motion_flat, words, m), device, args.repeat, before=fresh)
        print(f"similarity() {method:5s} on {args.words} words (head sum included): {med * 1e3:8.3f} ms "
              f"(min {low * 1e3:7.3f})")


if __name__ == "__main__":
    main()
