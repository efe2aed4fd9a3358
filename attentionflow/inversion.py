"""DDIM inversion and null-text inversion.

Both work on a ``noise_fn(latents, t, embeddings) -> eps`` callable instead of a UNet, so they are
exact and testable with a stub predictor; the pipeline passes a closure around the UNet.
"""

from __future__ import annotations

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


def sampling_scheduler(scheduler: DDIMScheduler, num_steps: int, device: torch.device | str) -> DDIMScheduler:
    """A fresh DDIM scheduler with the given config and ``num_steps`` timesteps (descending)."""
    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(num_steps, device=device)
    return sched


@torch.no_grad()
def ddim_inversion(latents: torch.Tensor, noise_fn: NoiseFn, scheduler: DDIMScheduler, num_steps: int,
                   embeddings: torch.Tensor, *, progress: bool = True,
                   callback: StepCallback | None = None) -> list[torch.Tensor]:
    """Invert clean latents ``x_0`` to ``x_T`` along the timesteps the sampler uses.

    ``latents``: (N, C, h, w). Returns the trajectory ``[x_0, x_t1, ..., x_T]`` (``num_steps + 1``
    tensors, ascending noise), computed with diffusers' :class:`DDIMInverseScheduler` built from the
    sampler's own configuration, so that DDIM sampling from ``x_T`` retraces it.
    """
    inverse = DDIMInverseScheduler.from_config(scheduler.config)
    inverse.set_timesteps(num_steps, device=latents.device)
    trajectory = [latents]
    x = latents
    for i, t in enumerate(tqdm(inverse.timesteps, desc="DDIM inversion", disable=not progress, leave=False)):
        eps = noise_fn(x, t, embeddings)
        x = inverse.step(eps, t, x).prev_sample
        trajectory.append(x)
        if callback is not None:
            callback(i, num_steps, x)
    return trajectory


def guided_noise(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``eps_u + s * (eps_c - eps_u)`` (any matching shapes)."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def null_text_inversion(trajectory: list[torch.Tensor], noise_fn: NoiseFn, scheduler: DDIMScheduler,
                        cond_embeddings: torch.Tensor, uncond_embeddings: torch.Tensor, guidance_scale: float,
                        *, num_inner_steps: int = 1, base_lr: float = 1e-2, epsilon: float = 1e-5,
                        use_steps: Sequence[bool] | None = None, progress: bool = True,
                        callback: StepCallback | None = None) -> list[torch.Tensor]:
    """Optimise one unconditional embedding per sampling step (vid2vid-zero's null-text inversion).

    ``trajectory``: output of :func:`ddim_inversion` (``T + 1`` tensors (N, C, h, w)).
    ``cond_embeddings``/``uncond_embeddings``: (1, L, D), broadcast over the N frames by ``noise_fn``.
    For sampling step i (timestep ``t_i``, noisiest first) Adam with lr ``base_lr * (1 - i / 100)``
    runs ``num_inner_steps`` iterations so that the guided DDIM step from the current latent lands on
    ``trajectory[T - i - 1]``; it stops early once the loss < ``epsilon + i * 2e-5``. Returns ``T``
    embeddings (1, L, D), in sampling order.

    ``use_steps`` (see :func:`null_step_mask`): the steps whose optimised embedding sampling will
    use. Other steps are not optimised: they return ``uncond_embeddings`` and the latent advances with
    it, exactly as sampling will, so the optimised steps aim from the trajectory sampling really
    takes; steps after the last used one are skipped. ``None``: every step.
    """
    num_steps = len(trajectory) - 1
    sched = sampling_scheduler(scheduler, num_steps, trajectory[0].device)
    use = list(use_steps) if use_steps is not None else [True] * num_steps
    last = max((i for i, u in enumerate(use) if u), default=-1)
    latent = trajectory[-1]
    plain = uncond_embeddings.detach()
    uncond = plain.clone()
    result: list[torch.Tensor] = []
    for i, t in enumerate(tqdm(sched.timesteps, desc="null-text inversion", disable=not progress, leave=False)):
        if i > last:
            result.append(plain)
            if callback is not None:
                callback(i, num_steps, latent)
            continue
        if not use[i]:
            result.append(plain)
            with torch.no_grad():
                eps_cond = noise_fn(latent, t, cond_embeddings)
                eps_uncond = noise_fn(latent, t, plain)
                latent = sched.step(guided_noise(eps_uncond, eps_cond, guidance_scale), t, latent).prev_sample
            if callback is not None:
                callback(i, num_steps, latent)
            continue
        target = trajectory[num_steps - i - 1]
        uncond = uncond.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([uncond], lr=base_lr * (1.0 - i / 100.0))
        with torch.no_grad():
            eps_cond = noise_fn(latent, t, cond_embeddings)
        for _ in range(num_inner_steps):
            with torch.enable_grad():
                eps_uncond = noise_fn(latent, t, uncond)
                eps = guided_noise(eps_uncond, eps_cond, guidance_scale)
                prev = sched.step(eps, t, latent).prev_sample
                loss = F.mse_loss(prev, target)
                optimizer.zero_grad()
                loss.backward()
            optimizer.step()
            if loss.item() < epsilon + i * 2e-5:
                break
        uncond = uncond.detach()
        result.append(uncond)
        with torch.no_grad():
            eps_uncond = noise_fn(latent, t, uncond)
            eps = guided_noise(eps_uncond, eps_cond, guidance_scale)
            latent = sched.step(eps, t, latent).prev_sample
        if callback is not None:
            callback(i, num_steps, latent)
    return result


def null_step_mask(num_steps: int, ratio: float) -> list[bool]:
    """Which sampling steps use the optimised null-text embedding.

    ``ratio`` r > 0: the first ``r * T`` steps; r < 0: the last ``|r| * T`` steps (r = -0.5, the
    vid2vid-zero default: the last half); r = 0: none.
    """
    count = int(round(abs(ratio) * num_steps))
    if ratio >= 0:
        return [i < count for i in range(num_steps)]
    return [i >= num_steps - count for i in range(num_steps)]
