"""The MMI overhead benchmark's estimators and instrumentation (benchmarks/bench_mmi_overhead.py)."""

from __future__ import annotations

import time

import pytest

from attentionflow.config import InversionSettings, MMIConfig
from attentionflow.mmi.inject import MotionInjector
from attentionflow.pipeline import AttentionFlowPipeline
from benchmarks.bench_mmi_overhead import accounted_extra, fastest_sum, median_sum, run_edit, timed_edits


@pytest.mark.parametrize("estimator, runs, expected", [
    (fastest_sum, [[1.0, 5.0], [2.0, 3.0]], 4.0),  # each step's fastest round (1 + 3), not the fastest round (5)
    (fastest_sum, [[2.0, 2.0]], 4.0),
    (median_sum, [[1.0, 5.0], [2.0, 3.0], [9.0, 4.0]], 6.0),  # medians 2 and 4
], ids=["fastest-per-step", "fastest-one-round", "median-per-step"])
def test_step_estimators(estimator, runs, expected):
    assert estimator(runs) == pytest.approx(expected)


def test_accounted_extra_is_per_call_fastest_difference():
    variant = [{"a": 1.0, "b": 2.0}, {"a": 0.9, "b": 2.5}]
    base = [{"a": 0.5, "b": 2.0}, {"a": 0.6, "b": 1.9}]
    assert accounted_extra(variant, base) == pytest.approx((0.9 - 0.5) + (2.0 - 1.9))
    assert accounted_extra(base, base) == 0.0


def test_accounted_extra_refuses_different_calls():
    with pytest.raises(ValueError, match="different cross-attention calls"):
        accounted_extra([{"a": 1.0}], [{"a": 1.0, "b": 1.0}])


INJECTOR_COST = 0.02


def test_instrumentation_sees_the_injectors_time_in_the_cross_attention_calls(tiny, square_video, monkeypatch):
    """A deliberately slow injector (20 ms per call on a fake clock that nothing else moves): the injector's own time
    holds every one of those 20 ms, the accounted extra (cross-attention calls with MMI minus without) exactly those of
    the timed steps, and every step from the second on is timed. No real time is measured: the figures are exact."""
    pipe = AttentionFlowPipeline.from_components(tiny, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    frames = square_video[0][:3]
    settings = InversionSettings.default(num_inference_steps=3, inversion="ddim")
    src, tgt = "a square is moving on the road", ["a square is moving on the snow"]
    plans = {"off": pipe.plan(src, tgt, settings, mmi=MMIConfig(enabled=False)),
             "on": pipe.plan(src, tgt, settings, mmi=MMIConfig(motion_words=["moving"]))}
    inversion = pipe.invert(frames, src, settings, plans["on"].attention, seed=plans["on"].seed)
    slept = {"n": 0}
    clock = {"now": 0.0}
    call = MotionInjector.__call__

    def slow(self, probs, site, state):
        if state.step >= 1:
            slept["n"] += 1
        clock["now"] += INJECTOR_COST
        return call(self, probs, site, state)

    monkeypatch.setattr(MotionInjector, "__call__", slow)
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])
    with timed_edits("cpu") as log:
        off = run_edit(pipe, frames, plans["off"], inversion, log)
        on = run_edit(pipe, frames, plans["on"], inversion, log)
    assert MotionInjector.__call__ is slow  # restored on exit
    assert len(off.steps) == len(on.steps) == 2  # steps 2..3
    assert set(on.cross) == set(off.cross) and {key[0] for key in on.cross} == {1, 2}
    assert slept["n"] > 0 and on.injector >= INJECTOR_COST * slept["n"] and off.injector == 0.0
    assert accounted_extra([on.cross], [off.cross]) == pytest.approx(INJECTOR_COST * slept["n"])
