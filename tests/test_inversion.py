"""DDIM inversion / null-text inversion, model-free (stub noise predictors)."""

from __future__ import annotations

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
    traj = ddim_inversion(x0, fn, scheduler, 20, torch.zeros(1, 77, 8), progress=False)
    assert len(traj) == 21
    assert not torch.allclose(traj[-1], x0, atol=0.5)  # inversion actually moved the latents
    rec = _sample(traj[-1], fn, scheduler, 20, None)
    torch.testing.assert_close(rec, x0, atol=1e-4, rtol=0)


def test_inversion_trajectory_is_retraced_step_by_step():
    torch.manual_seed(1)
    x0 = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    fn = _stub({})
    scheduler = sd_scheduler()
    traj = ddim_inversion(x0, fn, scheduler, 10, torch.zeros(1), progress=False)
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
    traj = ddim_inversion(x0, fn, scheduler, 8, cond, progress=False)
    uncond0 = torch.full((1, 3, 2), 0.3)
    # Plain guided sampling with the wrong unconditional embedding drifts away from x0 ...
    sched = sampling_scheduler(scheduler, 8, "cpu")
    x = traj[-1]
    for t in sched.timesteps:
        e_u, e_c = fn(x, t, uncond0), fn(x, t, cond)
        x = sched.step(e_u + 7.5 * (e_c - e_u), t, x).prev_sample
    err_plain = (x - x0).abs().max().item()
    # ... null-text inversion learns per-step embeddings that bring it back.
    nulls = null_text_inversion(traj, fn, scheduler, cond, uncond0, 7.5, num_inner_steps=200,
                                base_lr=0.05, progress=False)
    assert len(nulls) == 8 and all(n.shape == uncond0.shape for n in nulls)
    x = traj[-1]
    for i, t in enumerate(sched.timesteps):
        e_u, e_c = fn(x, t, nulls[i]), fn(x, t, cond)
        x = sched.step(e_u + 7.5 * (e_c - e_u), t, x).prev_sample
    err_null = (x - x0).abs().max().item()
    assert err_plain > 0.5
    assert err_null < err_plain / 10


def test_null_step_mask():
    assert null_step_mask(10, -0.5) == [False] * 5 + [True] * 5
    assert null_step_mask(10, 0.3) == [True] * 3 + [False] * 7
    assert null_step_mask(4, 0.0) == [False] * 4
    assert null_step_mask(4, -1.0) == [True] * 4


def test_null_text_only_optimises_the_steps_sampling_uses():
    torch.manual_seed(3)
    x0 = torch.randn(2, 4, 4, 4)
    scheduler = sd_scheduler()
    base, calls = {}, {"n": 0}

    def fn(latents, t, emb):
        calls["n"] += 1
        return base.setdefault(int(t), torch.randn_like(latents)) + emb.mean()

    cond = torch.zeros(1, 3, 2)
    traj = ddim_inversion(x0, fn, scheduler, 8, cond, progress=False)
    uncond0 = torch.full((1, 3, 2), 0.3)
    mask = null_step_mask(8, -0.5)
    calls["n"] = 0
    nulls = null_text_inversion(traj, fn, scheduler, cond, uncond0, 7.5, num_inner_steps=200, base_lr=0.05,
                                use_steps=mask, progress=False)
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
    null_text_inversion(traj, fn, scheduler, cond, uncond0, 7.5, num_inner_steps=1,
                        use_steps=[True, True] + [False] * 6, progress=False)
    assert calls["n"] == 2 * 3  # per used step: cond, uncond (inner), uncond (advance)
