"""DDIM inversion / null-text inversion, model-free (stub noise predictors)."""

from __future__ import annotations

import pytest
import torch

from attentionflow.inversion import ddim_inversion, null_step_mask, null_text_inversion, sampling_scheduler
from attentionflow.models.factory import sd_scheduler


def _stub(eps_by_t: dict[int, torch.Tensor]):
    """A predictor that ignores its input latents: eps depends only on the timestep."""

    def fn(latents, t, embeddings):
        return eps_by_t.setdefault(int(t), torch.randn_like(latents))

    return fn


def _sample(x, fn, scheduler, steps, emb):
    sched = sampling_scheduler(scheduler, steps, x.device)
    for t in sched.timesteps:
        x = sched.step(fn(x, t, emb), t, x).prev_sample
    return x


def test_inversion_round_trip_is_exact_with_stub_predictor():
    torch.manual_seed(0)
    x0 = torch.randn(3, 4, 8, 6, dtype=torch.float64)
    fn = _stub({})
    scheduler = sd_scheduler()
    traj = ddim_inversion(x0, fn, scheduler, 20, torch.zeros(1, 77, 8), LoopHooks(progress=False))
    assert len(traj) == 21
    assert not torch.allclose(traj[-1], x0, atol=0.5)  # inversion actually moved the latents
    rec = _sample(traj[-1], fn, scheduler, 20, None)
    torch.testing.assert_close(rec, x0, atol=1e-4, rtol=0)


def test_inversion_trajectory_is_retraced_step_by_step():
    torch.manual_seed(1)
    x0 = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    fn = _stub({})
    scheduler = sd_scheduler()
    traj = ddim_inversion(x0, fn, scheduler, 10, torch.zeros(1), LoopHooks(progress=False))
    sched = sampling_scheduler(scheduler, 10, "cpu")
    x = traj[-1]
    for i, t in enumerate(sched.timesteps):
        x = sched.step(fn(x, t, None), t, x).prev_sample
        torch.testing.assert_close(x, traj[10 - i - 1], atol=1e-6, rtol=0)


def test_null_text_inversion_recovers_trajectory_when_model_depends_on_embedding():
    """A predictor whose unconditional output is wrong by an offset the embedding can cancel."""
    torch.manual_seed(2)
    x0 = torch.randn(2, 4, 4, 4)
    scheduler = sd_scheduler()
    base = {}

    def fn(latents, t, emb):
        eps = base.setdefault(int(t), torch.randn_like(latents))
        return eps + emb.mean()  # the embedding shifts the prediction

    cond = torch.zeros(1, 3, 2)
    traj = ddim_inversion(x0, fn, scheduler, 8, cond, LoopHooks(progress=False))
    uncond0 = torch.full((1, 3, 2), 0.3)
    # Plain guided sampling with the wrong unconditional embedding drifts away from x0 ...
    sched = sampling_scheduler(scheduler, 8, "cpu")
    x = traj[-1]
    for t in sched.timesteps:
        e_u, e_c = fn(x, t, uncond0), fn(x, t, cond)
        x = sched.step(e_u + 7.5 * (e_c - e_u), t, x).prev_sample
    err_plain = (x - x0).abs().max().item()
    # ... null-text inversion learns per-step embeddings that bring it back.
    nulls = null_text_inversion(traj, fn, scheduler, cond, uncond0, 7.5,
                                NullTextOptions(inner_steps=200, base_lr=0.05), LoopHooks(progress=False))
    assert len(nulls) == 8 and all(n.shape == uncond0.shape for n in nulls)
    x = traj[-1]
    for i, t in enumerate(sched.timesteps):
        e_u, e_c = fn(x, t, nulls[i]), fn(x, t, cond)
        x = sched.step(e_u + 7.5 * (e_c - e_u), t, x).prev_sample
    err_null = (x - x0).abs().max().item()
    assert err_plain > 0.5
    assert err_null < err_plain / 10


@pytest.mark.parametrize("num_steps, ratio, used", [
    # vid2vid-zero's loop: r > 0 skips the steps with i > T*r; r <= 0 skips the steps with i < T*(1+r)
    (10, 0.5, [0, 1, 2, 3, 4, 5]),  # six steps (a rounded r*T would give five)
    (10, -0.5, [5, 6, 7, 8, 9]),  # the default: the last half
    (10, 0.3, [0, 1, 2, 3]),
    (25, -0.5, list(range(13, 25))),  # 12.5 -> from step 13 on
    (4, 0.0, []),
    (4, -1.0, [0, 1, 2, 3]),
    (4, 1.0, [0, 1, 2, 3]),  # vid2vid-zero's own default
])
def test_null_step_mask_is_vid2vid_zeros_rule(num_steps, ratio, used):
    assert [i for i, m in enumerate(null_step_mask(num_steps, ratio)) if m] == used


def test_null_text_only_optimises_the_steps_sampling_uses():
    torch.manual_seed(3)
    x0 = torch.randn(2, 4, 4, 4)
    scheduler = sd_scheduler()
    base, calls = {}, {"n": 0}

    def fn(latents, t, emb):
        calls["n"] += 1
        return base.setdefault(int(t), torch.randn_like(latents)) + emb.mean()

    cond = torch.zeros(1, 3, 2)
    traj = ddim_inversion(x0, fn, scheduler, 8, cond, LoopHooks(progress=False))
    uncond0 = torch.full((1, 3, 2), 0.3)
    mask = null_step_mask(8, -0.5)
    calls["n"] = 0
    nulls = null_text_inversion(traj, fn, scheduler, cond, uncond0, 7.5,
                                NullTextOptions(inner_steps=200, base_lr=0.05, use_steps=mask),
                                LoopHooks(progress=False))
    assert all(torch.equal(n, uncond0) for n, m in zip(nulls, mask) if not m)
    assert all(not torch.equal(n, uncond0) for n, m in zip(nulls, mask) if m)
    sched = sampling_scheduler(scheduler, 8, "cpu")

    def sample(embs):
        x = traj[-1]
        for i, t in enumerate(sched.timesteps):
            e_u, e_c = fn(x, t, embs[i]), fn(x, t, cond)
            x = sched.step(e_u + 7.5 * (e_c - e_u), t, x).prev_sample
        return (x - x0).abs().max().item()

    assert sample(nulls) < sample([uncond0] * 8) / 10  # the last half corrects the drift of the first
    # A schedule that uses nothing after step 2 stops optimising (and calling the model) early.
    calls["n"] = 0
    null_text_inversion(traj, fn, scheduler, cond, uncond0, 7.5,
                        NullTextOptions(inner_steps=1, use_steps=[True, True] + [False] * 6),
                        LoopHooks(progress=False))
    assert calls["n"] == 2 * 3  # per used step: cond, uncond (inner), uncond (advance)


# ------------------------------------------------------------------------------------------------------------------
# The four inversion methods through the one sampling loop (guided_sampling), model-free

from attentionflow.config import INVERSION_METHODS  # noqa: E402
from attentionflow.inversion import (  # noqa: E402
    DirectTrajectory,
    LoopHooks,
    NullTextOptions,
    direct_correction,
    guided_sampling,
    target_offsets,
    unconditional_schedule,
)


def _predictor(kind: str):
    """Stub predictors. 'blind': eps depends on the timestep only; 'prompt': also on the prompt embedding (so guidance
    changes the step); 'full': also on the latents (DDIM inversion is then not exactly invertible either)."""
    base: dict[int, torch.Tensor] = {}

    def fn(latents, t, emb):
        eps = base.setdefault(int(t), torch.randn(latents.shape[1:], dtype=latents.dtype)).expand_as(latents)
        if kind in ("prompt", "full"):
            eps = eps + emb.mean(dim=(1, 2)).view(-1, 1, 1, 1).to(latents.dtype).expand_as(latents)
        if kind == "full":
            eps = eps + 0.3 * torch.tanh(latents)
        return eps

    return fn


def _round_trip(method: str, kind: str, guidance: float, prompts: int = 1, direct_targets: bool = False,
                null_fit: bool = False, edit_values: tuple[float, ...] | None = None):
    """Invert 3 frames under the source embedding, sample ``prompts`` branches back; return (x0, trajectory, out).
    ``edit_values``: the edit branches' embeddings are these constants (default: the source's own)."""
    torch.manual_seed(3)
    steps = 10
    x0 = torch.randn(3, 4, 4, 4, dtype=torch.float64)
    source = torch.full((1, 2, 3), 0.2, dtype=torch.float64)
    empty = torch.zeros(1, 2, 3, dtype=torch.float64)
    fn = _predictor(kind)
    scheduler = sd_scheduler()
    traj = ddim_inversion(x0, fn, scheduler, steps, source, LoopHooks(progress=False))
    nulls = None
    if method == "null-text" and null_fit:
        nulls = null_text_inversion(traj, fn, scheduler, source, empty, guidance, loop=LoopHooks(progress=False))
    unconds = unconditional_schedule(method, steps, empty, source, nulls, null_ratio=1.0)
    cond = source.expand(prompts, -1, -1)
    if edit_values is not None:
        cond = torch.cat([source, *(torch.full_like(source, v) for v in edit_values)])
    offsets = target_offsets(traj, fn, scheduler, steps, cond[1:], unconds, guidance) if direct_targets else None
    direct = DirectTrajectory(traj, offsets) if method == "direct" else None
    out = guided_sampling(traj[-1], fn, scheduler, steps, cond, unconds, guidance, direct, LoopHooks(progress=False))
    return x0, traj, out


@pytest.mark.parametrize("method, kind, guidance", [
    ("ddim", "blind", 7.5),  # guidance cannot matter when the prompt does not
    ("ddim", "prompt", 1.0),  # no guidance: sampling uses the inversion's own condition
    ("null-text", "blind", 7.5),
    ("negative-prompt", "prompt", 7.5),  # the source branch's guided noise is its conditional noise
    ("direct", "prompt", 7.5),
    ("direct", "full", 7.5),  # the case direct inversion exists for: nothing else is exact here
])
def test_method_reconstructs_exactly_where_the_maths_says(method, kind, guidance):
    x0, _, out = _round_trip(method, kind, guidance)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["ddim", "negative-prompt", "null-text"])
def test_only_direct_is_exact_with_a_latent_dependent_predictor_under_guidance(method):
    x0, _, out = _round_trip(method, "full", 7.5, null_fit=True)
    assert (out - x0).abs().max() > 1e-3  # so the direct case above is not exact by accident


def test_direct_source_branch_follows_the_trajectory_and_targets_get_the_gap():
    x0, traj, plain = _round_trip("direct", "full", 7.5, prompts=2)
    _, _, added = _round_trip("direct", "full", 7.5, prompts=2, direct_targets=True)
    f = x0.shape[0]
    torch.testing.assert_close(plain[:f], x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(added[:f], x0, atol=1e-12, rtol=0)
    # an edit branch with the source's own prompt drifts like uncorrected sampling, unless it gets the gap too
    assert (plain[f:] - x0).abs().max() > 1e-3
    torch.testing.assert_close(added[f:], x0, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["prompt", "full"])
def test_direct_targets_give_each_edit_branch_its_own_prompts_offset(kind):
    # PnP Inversion's add-target: without attention control, an edit branch that adds its own prompt's offsets
    # follows the trajectory exactly, whatever its prompt; the source's gap (the old rule) does not do that
    x0, _, added = _round_trip("direct", kind, 7.5, direct_targets=True, edit_values=(0.5, -0.3))
    torch.testing.assert_close(added, x0.repeat(3, 1, 1, 1), atol=1e-10, rtol=0)


def test_target_offsets_by_hand():
    # one step of T = 10 from x_T, by DDIM's formula: x_prev = sqrt(a') (x - sqrt(1 - a) eps) / sqrt(a)
    # + sqrt(1 - a') eps, with eps = base_t + mean(embedding) and guidance g: eps_u + g (eps_c - eps_u)
    torch.manual_seed(5)
    scheduler = sd_scheduler()
    steps, g = 10, 7.5
    traj = [torch.randn(2, 4, 2, 2, dtype=torch.float64) for _ in range(steps + 1)]
    base = torch.randn(4, 2, 2, dtype=torch.float64)
    fn = lambda x, t, emb: base.expand_as(x) + emb.mean(dim=(1, 2)).view(-1, 1, 1, 1).to(x.dtype)  # noqa: E731
    empty = torch.zeros(1, 2, 3, dtype=torch.float64)
    cond = torch.stack([torch.full((2, 3), 0.5), torch.full((2, 3), -0.3)]).double()  # two edit prompts
    offsets = target_offsets(traj, fn, scheduler, steps, cond, [empty] * steps, g)
    assert offsets.shape == (steps, 2 * 2, 4, 2, 2)
    t = 1000 // steps * (steps - 1) + scheduler.config.steps_offset
    a = scheduler.alphas_cumprod[t].double()
    a_prev = scheduler.alphas_cumprod[t - 1000 // steps].double()
    x = traj[steps]
    for e, value in enumerate((0.5, -0.3)):
        eps = base + g * value  # eps_u = base, eps_c = base + value
        prev = a_prev.sqrt() * (x - (1 - a).sqrt() * eps) / a.sqrt() + (1 - a_prev).sqrt() * eps
        # (the scheduler keeps its alphas in float32: agreement to ~1e-7)
        torch.testing.assert_close(offsets[0, 2 * e: 2 * e + 2], traj[steps - 1] - prev, atol=1e-6, rtol=0)


def test_direct_correction_sets_the_source_rows_and_adds_the_offsets():
    latents = torch.arange(3 * 2 * 1 * 1 * 1, dtype=torch.float32).view(6, 1, 1, 1)  # B=3 branches x F=2 frames
    target = torch.tensor([10.0, 20.0]).view(2, 1, 1, 1)
    out = direct_correction(latents, target)
    assert torch.equal(out[:2], target) and torch.equal(out[2:], latents[2:])
    offsets = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1, 1)  # edit 1's two frames, then edit 2's
    out = direct_correction(latents, target, offsets)
    assert torch.equal(out[:2], target) and torch.equal(out[2:], latents[2:] + offsets)
    assert torch.equal(latents.view(-1), torch.arange(6, dtype=torch.float32))  # input untouched


@pytest.mark.parametrize("method", INVERSION_METHODS)
def test_unconditional_schedule_per_method(method):
    empty, source = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    nulls = [torch.full((1, 2, 3), float(i)) for i in range(4)]
    got = unconditional_schedule(method, 4, empty, source, nulls if method == "null-text" else None, null_ratio=-0.5)
    want = {"direct": [empty] * 4, "ddim": [empty] * 4, "negative-prompt": [source] * 4,
            "null-text": [empty, empty, nulls[2], nulls[3]]}[method]
    assert all(torch.equal(g, w) for g, w in zip(got, want)) and len(got) == 4


def test_skipping_the_source_uncond_pass_changes_nothing_but_the_batch():
    """Direct inversion discards the source's guided step, so leaving its unconditional pass out of the batch gives
    the same latents with (2B - 1) * F rows per model call instead of 2B * F."""
    torch.manual_seed(4)
    steps, frames, branches = 6, 3, 3
    x0 = torch.randn(frames, 4, 4, 4, dtype=torch.float64)
    source = torch.full((1, 2, 3), 0.2, dtype=torch.float64)
    cond = torch.cat([source, torch.full((1, 2, 3), -0.4, dtype=torch.float64),
                      torch.full((1, 2, 3), 0.7, dtype=torch.float64)])  # (B, L, D)
    empty = torch.zeros(1, 2, 3, dtype=torch.float64)
    fn = _predictor("full")
    rows: list[int] = []

    def counted(latents, t, emb):
        rows.append(latents.shape[0])
        return fn(latents, t, emb)

    scheduler = sd_scheduler()
    traj = ddim_inversion(x0, fn, scheduler, steps, source, LoopHooks(progress=False))
    unconds = unconditional_schedule("direct", steps, empty, source)
    quiet = LoopHooks(progress=False)
    full = guided_sampling(traj[-1], counted, scheduler, steps, cond, unconds, 7.5, DirectTrajectory(traj), quiet)
    assert rows == [2 * branches * frames] * steps
    rows.clear()
    lean = guided_sampling(traj[-1], counted, scheduler, steps, cond, unconds, 7.5,
                           DirectTrajectory(traj, skip_source_uncond=True), quiet)
    assert rows == [(2 * branches - 1) * frames] * steps
    torch.testing.assert_close(lean, full, atol=1e-12, rtol=0)
