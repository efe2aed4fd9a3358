"""DDIM inversion, null-text inversion, and the guided sampling loop with the inversion methods' corrections.

All work on a ``noise_fn(latents, t, embeddings) -> eps`` callable instead of a UNet, so they are exact and
testable with a stub predictor; the pipeline passes a closure around the UNet. The four inversion methods
(``validation_data.inversion``) differ only in what sampling does with the inversion:

- ``ddim``: sample from ``x_T`` with the empty prompt as the unconditional embedding;
- ``null-text``: the optimised unconditional embedding of each step (:func:`null_text_inversion`);
- ``negative-prompt`` (Miyake et al. 2023): the source prompt's embedding is the unconditional one, so the source
  branch's guided noise is its conditional noise whatever the guidance scale;
- ``direct`` (Ju et al., ICLR 2024, "PnP Inversion"): after each step the source branch is put back onto the stored
  inversion trajectory (:func:`direct_correction`), so the source branch is exact whatever sampling adds
  (cross-frame attention, prompt-to-prompt, MMI). With ``direct_targets`` each edit branch adds its own prompt's
  offset too (PnP Inversion's "add target", :func:`target_offsets`), computed on the trajectory before sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from diffusers import DDIMInverseScheduler, DDIMScheduler
from tqdm.auto import tqdm


class NoiseFn(Protocol):
    """``(latents (N, C, h, w), t (scalar tensor), embeddings (N or 1, L, D)) -> eps (N, C, h, w)``."""

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor: ...


StepCallback = Callable[[int, int, torch.Tensor], None]
"""``callback(i, total, latents)`` after step ``i`` (from 0) with the latent it produced."""

ChunkHook = Callable[[int, slice], None]
"""``before_chunk(i, frames)`` before the model call of step ``i`` on the video frames ``frames`` (a slice with
start and stop): the pipeline points its attention state at the chunk there."""


@dataclass(frozen=True)
class LoopHooks:
    """How a sampling or null-text loop runs, besides its maths: frame chunks, hooks around each model call,
    progress. ``chunks`` (:func:`frame_chunks`; None = all frames at once); ``before(i, frames)`` runs before the
    model call of step ``i`` on a chunk; ``after`` maps a chunk's latents ``(B * n, C, h, w)`` after its step
    (sampling only); ``callback(i, T, latents)`` gets every frame's latents after each step."""

    chunks: Sequence[slice] | None = None
    before: ChunkHook | None = None
    after: Callable[[torch.Tensor], torch.Tensor] | None = None
    progress: bool = True
    callback: StepCallback | None = None


@dataclass(frozen=True)
class DirectTrajectory:
    """Direct inversion's part of sampling: the trajectory ``[x_0 .. x_T]`` the source branch is put back onto,
    each edit prompt's ``offsets`` ``(T, (B-1)*F, C, h, w)`` (:func:`target_offsets`; None = none) and whether the
    unconditional half leaves out the source branch (:func:`skips_source_uncond`)."""

    trajectory: Sequence[torch.Tensor]
    offsets: torch.Tensor | None = None
    skip_source_uncond: bool = False


@dataclass(frozen=True)
class NullTextOptions:
    """Null-text optimisation: Adam ``inner_steps`` per step from ``base_lr`` (decaying as ``lr * (1 - i / 100)``),
    early stop below ``epsilon + i * 2e-5``, and the steps sampling uses (``use_steps``, :func:`null_step_mask`;
    None = all)."""

    inner_steps: int = 1
    base_lr: float = 1e-2
    epsilon: float = 1e-5
    use_steps: Sequence[bool] | None = None


def frame_chunks(num_frames: int, chunk_frames: int) -> list[slice]:
    """The video's frames in consecutive chunks of ``chunk_frames`` (the last one may be shorter), in frame order.

    Every loop here runs its steps over the chunks in this order, so a chunk's cross-frame attention can read the
    keys and values the earlier chunks of the same step left (``attentionflow/attention/processors.py``).
    """
    if num_frames < 1 or chunk_frames < 1:
        raise ValueError(f"frame_chunks needs num_frames >= 1 and chunk_frames >= 1, got {num_frames}, {chunk_frames}")
    return [slice(s, min(s + chunk_frames, num_frames)) for s in range(0, num_frames, chunk_frames)]


def _rows(latents: torch.Tensor, num_frames: int, frames: slice) -> torch.Tensor:
    """The rows of ``frames`` from every block of a frame-major batch: ``(n * F, ...)`` -> ``(n * len(frames), ...)``
    where the batch holds ``n`` videos (branches, guidance halves) of ``num_frames`` frames each."""
    blocks = latents.shape[0] // num_frames
    return latents.view(blocks, num_frames, *latents.shape[1:])[:, frames].reshape(-1, *latents.shape[1:])


def _put_rows(out: torch.Tensor, num_frames: int, frames: slice, rows: torch.Tensor) -> None:
    """Write ``rows`` (what :func:`_rows` took) back into ``out`` in place."""
    blocks = out.shape[0] // num_frames
    out.view(blocks, num_frames, *out.shape[1:])[:, frames] = rows.view(blocks, -1, *out.shape[1:])


def sampling_scheduler(scheduler: DDIMScheduler, num_steps: int, device: torch.device | str) -> DDIMScheduler:
    """A fresh DDIM scheduler with the given config and ``num_steps`` timesteps (descending)."""
    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(num_steps, device=device)
    return sched


@torch.no_grad()
def ddim_inversion(latents: torch.Tensor, noise_fn: NoiseFn, scheduler: DDIMScheduler, num_steps: int,
                   embeddings: torch.Tensor, loop: LoopHooks = LoopHooks()) -> list[torch.Tensor]:
    """Invert clean latents ``x_0`` to ``x_T`` along the timesteps the sampler uses.

    ``latents``: (N, C, h, w). Returns the trajectory ``[x_0, x_t1, ..., x_T]`` (``num_steps + 1``
    tensors, ascending noise), computed with diffusers' :class:`DDIMInverseScheduler` built from the
    sampler's own configuration, so that DDIM sampling from ``x_T`` retraces it. ``loop`` (:class:`LoopHooks`):
    each step calls ``noise_fn`` once per chunk of frames, in order, after ``loop.before(i, frames)``;
    ``loop.callback`` gets each step's latents (``loop.after`` is for sampling and not used here).
    """
    inverse = DDIMInverseScheduler.from_config(scheduler.config)
    inverse.set_timesteps(num_steps, device=latents.device)
    chunks = list(loop.chunks) if loop.chunks is not None else [slice(0, latents.shape[0])]
    trajectory = [latents]
    x = latents
    for i, t in enumerate(tqdm(inverse.timesteps, desc="DDIM inversion", disable=not loop.progress, leave=False)):
        x_next = torch.empty_like(x)
        for frames in chunks:
            if loop.before is not None:
                loop.before(i, frames)
            eps = noise_fn(x[frames], t, embeddings)
            x_next[frames] = inverse.step(eps, t, x[frames]).prev_sample
        x = x_next
        trajectory.append(x)
        if loop.callback is not None:
            loop.callback(i, num_steps, x)
    return trajectory


def guided_noise(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``eps_u + s * (eps_c - eps_u)`` (any matching shapes)."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def null_text_inversion(trajectory: list[torch.Tensor], noise_fn: NoiseFn, scheduler: DDIMScheduler,
                        cond_embeddings: torch.Tensor, uncond_embeddings: torch.Tensor, guidance_scale: float,
                        options: NullTextOptions = NullTextOptions(), loop: LoopHooks = LoopHooks()
                        ) -> list[torch.Tensor]:
    """Optimise one unconditional embedding per sampling step (vid2vid-zero's null-text inversion).

    ``trajectory``: output of :func:`ddim_inversion` (``T + 1`` tensors (N, C, h, w)).
    ``cond_embeddings``/``uncond_embeddings``: (1, L, D), broadcast over the N frames by ``noise_fn``.
    For sampling step i (timestep ``t_i``, noisiest first) Adam with lr ``base_lr * (1 - i / 100)``
    runs ``inner_steps`` iterations (:class:`NullTextOptions`) so that the guided DDIM step from the current latent
    lands on ``trajectory[T - i - 1]``; it stops early once the loss < ``epsilon + i * 2e-5``. Returns ``T``
    embeddings (1, L, D), in sampling order.

    ``use_steps`` (see :func:`null_step_mask`): the steps whose optimised embedding sampling will
    use. Other steps are not optimised: they return ``uncond_embeddings`` and the latent advances with
    it, exactly as sampling will, so the optimised steps aim from the trajectory sampling really
    takes; steps after the last used one are skipped. ``None``: every step.

    ``loop.chunks`` (:func:`frame_chunks`): frames go through the model one chunk at a time; the loss (the mean squared
    error over all frames) is the sum of the chunks' parts, and their gradients are accumulated before each Adam
    step, so only one chunk's graph is alive at once. With per-frame attention this is the unchunked result; with
    cross-frame attention the gradient leaves out what flows between chunks (the forward pass stays exact).
    """
    num_inner_steps, base_lr, epsilon, use_steps = options.inner_steps, options.base_lr, options.epsilon, \
        options.use_steps
    chunks, before_chunk, progress, callback = loop.chunks, loop.before, loop.progress, loop.callback
    num_steps = len(trajectory) - 1
    sched = sampling_scheduler(scheduler, num_steps, trajectory[0].device)
    use = list(use_steps) if use_steps is not None else [True] * num_steps
    last = max((i for i, u in enumerate(use) if u), default=-1)
    chunks = list(chunks) if chunks is not None else [slice(0, trajectory[0].shape[0])]
    latent = trajectory[-1]
    plain = uncond_embeddings.detach()
    uncond = plain.clone()
    result: list[torch.Tensor] = []

    def hook(i: int, frames: slice) -> None:
        if before_chunk is not None:
            before_chunk(i, frames)

    @torch.no_grad()
    def conditional(i: int, t: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """The conditional noise of every frame, chunk by chunk (one pass over the chunks, in order)."""
        eps_cond = torch.empty_like(latent)
        for frames in chunks:
            hook(i, frames)
            eps_cond[frames] = noise_fn(latent[frames], t, cond_embeddings)
        return eps_cond

    @torch.no_grad()
    def advance(i: int, t: torch.Tensor, latent: torch.Tensor, embedding: torch.Tensor,
                eps_cond: torch.Tensor | None) -> torch.Tensor:
        """The guided DDIM step of every frame with the unconditional ``embedding``."""
        eps_cond = conditional(i, t, latent) if eps_cond is None else eps_cond
        out = torch.empty_like(latent)
        for frames in chunks:
            hook(i, frames)
            e_u = noise_fn(latent[frames], t, embedding)
            out[frames] = sched.step(
                guided_noise(e_u, eps_cond[frames], guidance_scale), t, latent[frames]
            ).prev_sample
        return out

    for i, t in enumerate(tqdm(sched.timesteps, desc="null-text inversion", disable=not progress, leave=False)):
        if i > last:
            result.append(plain)
            if callback is not None:
                callback(i, num_steps, latent)
            continue
        if not use[i]:
            result.append(plain)
            latent = advance(i, t, latent, plain, None)
            if callback is not None:
                callback(i, num_steps, latent)
            continue
        target = trajectory[num_steps - i - 1]
        uncond = uncond.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([uncond], lr=base_lr * (1.0 - i / 100.0))
        eps_cond = conditional(i, t, latent)
        total = float(latent.numel())
        for _ in range(num_inner_steps):
            optimizer.zero_grad()
            loss = 0.0
            for frames in chunks:
                hook(i, frames)
                with torch.enable_grad():
                    eps_uncond = noise_fn(latent[frames], t, uncond)
                    eps = guided_noise(eps_uncond, eps_cond[frames], guidance_scale)
                    prev = sched.step(eps, t, latent[frames]).prev_sample
                    part = F.mse_loss(prev, target[frames], reduction="sum") / total  # this chunk's share
                    part.backward()
                loss += part.item()
            optimizer.step()
            if loss < epsilon + i * 2e-5:
                break
        uncond = uncond.detach()
        result.append(uncond)
        latent = advance(i, t, latent, uncond, eps_cond)
        if callback is not None:
            callback(i, num_steps, latent)
    return result


def direct_correction(latents: torch.Tensor, target: torch.Tensor,
                      target_offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Direct inversion's step: put the source branch onto the trajectory.

    ``latents``: (B*F, C, h, w) branch-major, source branch first, just after a sampling step; ``target``: (F, C, h, w)
    the inversion trajectory's latent at the same noise level. Returns a new tensor whose source rows are ``target``;
    ``target_offsets`` ((B-1)*F, C, h, w), each edit prompt's own offset (:func:`target_offsets`), is added to the
    edit rows (PnP Inversion's "add target").
    """
    num_frames = target.shape[0]
    out = latents.clone()
    out[:num_frames] = target
    if target_offsets is not None:
        out[num_frames:] += target_offsets
    return out


@torch.no_grad()
def target_offsets(trajectory: Sequence[torch.Tensor], noise_fn: NoiseFn, scheduler: DDIMScheduler, num_steps: int,
                   cond: torch.Tensor, unconds: Sequence[torch.Tensor], guidance_scale: float,
                   loop: LoopHooks = LoopHooks(progress=False)) -> torch.Tensor:
    """PnP Inversion's per-prompt offsets (``offset_calculate`` with every prompt, used by its "add target").

    At step ``i`` each edit prompt takes the guided DDIM step from the trajectory's own latent ``trajectory[T - i]``;
    its offset is what that step misses of ``trajectory[T - i - 1]``. Without attention control, an edit branch that
    adds its offsets follows the trajectory exactly; with it, only the controllers' changes remain.

    Args:
        trajectory: ``[x_0 .. x_T]`` of :func:`ddim_inversion`, each ``(F, C, h, w)``.
        cond: ``(E, L, D)`` the edit prompts' embeddings; ``unconds``: the unconditional embedding ``(1, L, D)`` of
            each step (:func:`unconditional_schedule`).
        loop: :class:`LoopHooks`: its frame chunks, ``before(i, frames)`` before each model call, and progress (its
            ``after`` and ``callback`` are for sampling and not used here).

    Returns:
        ``(T, E*F, C, h, w)`` branch-major offsets (``T * E`` latents of the video's size are kept).
    """
    num_frames = trajectory[0].shape[0]
    num_edits = cond.shape[0]
    sched = sampling_scheduler(scheduler, num_steps, trajectory[0].device)
    chunks = list(loop.chunks) if loop.chunks is not None else [slice(0, num_frames)]
    out = torch.empty(num_steps, num_edits * num_frames, *trajectory[0].shape[1:], dtype=trajectory[0].dtype,
                      device=trajectory[0].device)
    for i, t in enumerate(tqdm(sched.timesteps, desc="direct offsets", disable=not loop.progress, leave=False)):
        start, goal = trajectory[num_steps - i], trajectory[num_steps - i - 1]
        for frames in chunks:
            if loop.before is not None:
                loop.before(i, frames)
            x = start[frames]  # (n, C, h, w)
            n = x.shape[0]
            rows = cond.repeat_interleave(n, dim=0)  # (E*n, L, D)
            if guidance_scale > 1.0:  # one unconditional pass: every prompt shares it at the same latent
                emb = torch.cat([unconds[i].expand(n, -1, -1), rows])  # ((1 + E) * n, L, D)
                eps = noise_fn(x.repeat(1 + num_edits, 1, 1, 1), t, emb)
                eps = guided_noise(eps[:n].repeat(num_edits, 1, 1, 1), eps[n:], guidance_scale)
            else:
                eps = noise_fn(x.repeat(num_edits, 1, 1, 1), t, rows)
            stepped = sched.step(eps, t, x.repeat(num_edits, 1, 1, 1)).prev_sample  # (E*n, C, h, w)
            _put_rows(out[i], num_frames, frames, goal[frames].repeat(num_edits, 1, 1, 1) - stepped)
    return out


def unconditional_schedule(method: str, num_steps: int, uncond: torch.Tensor, source_cond: torch.Tensor,
                           null_embeddings: Sequence[torch.Tensor] | None = None,
                           null_ratio: float = -0.5) -> list[torch.Tensor]:
    """The unconditional embedding (1, L, D) of every sampling step for an inversion ``method``.

    ``uncond``: the empty prompt's embedding; ``source_cond``: the source prompt's (1, L, D); ``null_embeddings``: the
    result of :func:`null_text_inversion` (null-text only; None = it did not run), used on the steps
    :func:`null_step_mask` selects with ``null_ratio``.
    """
    if method == "negative-prompt":
        return [source_cond] * num_steps
    if method == "null-text" and null_embeddings is not None:
        use = null_step_mask(num_steps, null_ratio)
        return [null_embeddings[i] if use[i] else uncond for i in range(num_steps)]
    return [uncond] * num_steps


def skips_source_uncond(method: str, guidance_scale: float) -> bool:
    """Whether sampling leaves the source branch out of the unconditional half of the guidance batch.

    With direct inversion the source branch's guided step is replaced by the trajectory, so its unconditional noise
    is never used: the batch is ``[uncond edits, cond all]``, ``(2B - 1) * F`` rows instead of ``2B * F`` (the
    source's conditional pass stays: prompt-to-prompt and MMI read its attention).
    """
    return method == "direct" and guidance_scale > 1.0


def guided_sampling(x_t: torch.Tensor, noise_fn: NoiseFn, scheduler: DDIMScheduler, num_steps: int,
                    cond: torch.Tensor, unconds: Sequence[torch.Tensor], guidance_scale: float,
                    direct: DirectTrajectory | None = None, loop: LoopHooks = LoopHooks()) -> torch.Tensor:
    """Joint DDIM sampling of ``B`` branches from the shared ``x_t`` (F, C, h, w) -> (B*F, C, h, w), branch-major.

    ``cond``: (B, L, D) one prompt embedding per branch (source first); ``unconds``: the unconditional embedding
    (1, L, D) of each step (:func:`unconditional_schedule`); classifier-free guidance runs when
    ``guidance_scale > 1`` (one ``noise_fn`` call on ``[uncond half, cond half]``). ``direct``
    (:class:`DirectTrajectory`, direct inversion): after step ``i`` the source branch becomes
    ``trajectory[T - i - 1]`` (:func:`direct_correction`), each edit branch adds its own prompt's offset when
    ``offsets`` are given (PnP Inversion's "add target"), and with ``skip_source_uncond`` the unconditional half leaves
    out the source branch, whose guided step is discarded.

    ``loop`` (:class:`LoopHooks`): every step runs chunk by chunk, in frame order; a chunk carries every branch and
    both guidance halves of its frames (``(G * B * n)`` rows). ``loop.before(i, frames)`` runs before the model call
    of step ``i`` on a chunk, and ``loop.after`` maps the chunk's latents ``(B * n, C, h, w)`` after its step and
    correction (the pipeline points its attention state at the chunk and runs its controllers' ``step_end`` there).
    """
    trajectory, offsets = (direct.trajectory, direct.offsets) if direct is not None else (None, None)
    skip_source_uncond = direct is not None and direct.skip_source_uncond
    chunks, before_step, after_step = loop.chunks, loop.before, loop.after
    progress, callback = loop.progress, loop.callback
    num_frames = x_t.shape[0]
    sched = sampling_scheduler(scheduler, num_steps, x_t.device)
    chunks = list(chunks) if chunks is not None else [slice(0, num_frames)]
    num_branches = cond.shape[0]
    latents = x_t.repeat(num_branches, 1, 1, 1)  # (B*F, C, h, w), branch-major
    cond_rows: dict[int, torch.Tensor] = {}  # frames per chunk -> (B*n, L, D)
    for i, t in enumerate(tqdm(sched.timesteps, desc="editing", disable=not progress, leave=False)):
        stepped = torch.empty_like(latents)
        for frames in chunks:
            if before_step is not None:
                before_step(i, frames)
            n = frames.stop - frames.start
            if n not in cond_rows:
                cond_rows[n] = cond.repeat_interleave(n, dim=0)  # (B*n, L, D)
            cond_batch = cond_rows[n]
            x = _rows(latents, num_frames, frames)  # (B*n, C, h, w)
            if guidance_scale > 1.0 and skip_source_uncond:
                edits = x[n:]  # ((B-1)*n, C, h, w)
                emb = torch.cat([unconds[i].expand(edits.shape[0], -1, -1), cond_batch])  # ((2B-1)*n, L, D)
                out = noise_fn(torch.cat([edits, x]), t, emb)
                eps_c = out[edits.shape[0]:]  # (B*n, ...)
                eps_u = torch.cat([eps_c[:n], out[:edits.shape[0]]])  # the source's guided step is discarded
                eps = guided_noise(eps_u, eps_c, guidance_scale)
            elif guidance_scale > 1.0:
                emb = torch.cat([unconds[i].expand_as(cond_batch), cond_batch])  # (2*B*n, L, D)
                eps_u, eps_c = noise_fn(torch.cat([x, x]), t, emb).chunk(2)
                eps = guided_noise(eps_u, eps_c, guidance_scale)
            else:
                eps = noise_fn(x, t, cond_batch)
            x = sched.step(eps, t, x).prev_sample
            if trajectory is not None:
                x = direct_correction(x, trajectory[num_steps - i - 1][frames],
                                      None if offsets is None else _rows(offsets[i], num_frames, frames))
            if after_step is not None:
                x = after_step(x)
            _put_rows(stepped, num_frames, frames, x)
        latents = stepped
        if callback is not None:
            callback(i, num_steps, latents)
    return latents


def null_step_mask(num_steps: int, ratio: float) -> list[bool]:
    """Which sampling steps use the optimised null-text embedding: vid2vid-zero's rule.

    ``ratio`` r > 0: the steps ``i <= r * T`` (r = 0.5, T = 10: steps 0..5, six of them; r = 1: all); r < 0: the
    steps ``i >= (1 + r) * T`` (r = -0.5, the default, T = 10: steps 5..9); r = 0: none.
    """
    if ratio > 0:
        return [i <= ratio * num_steps for i in range(num_steps)]
    return [i >= (1.0 + ratio) * num_steps for i in range(num_steps)]
