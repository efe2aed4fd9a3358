"""Half precision end to end (issue 31): the whole edit in bfloat16 on the CPU, the stand-in for the fp16 path a GPU
runs. Every controller (prompt-to-prompt replace/refine/reweight, local blend, MMI with every similarity, the edit
region, frame chunks, null-text) runs under a guard that fails on any operation mixing floating dtypes (a GPU
rejects a bf16 x fp32 matmul) and records every bf16 -> fp32 conversion: only the known, small ones are allowed (no
controller upcasts a whole activation)."""

from __future__ import annotations

import traceback

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from attentionflow.config import AttentionSettings, InversionSettings, MMIConfig, P2PConfig
from attentionflow.pipeline import AttentionFlowPipeline

SOURCE = "a red circle is moving on the road"
#: bf16 -> fp32 conversions the edit may make, each of a small tensor: (file, why)
ALLOWED_UPCASTS = {
    "mmi/inject.py": "the scored token span's head sum, for the similarity (B, F, K', Q)",
    "mmi/similarity.py": "the same span for mutual information's histograms",
    "attention/store.py": "the attention figure's and local blend's head-summed maps",
    "pipeline.py": "the decoded images, once, to make uint8 frames",
}
_CONVERSIONS = {"to", "type_as", "float", "double", "half", "bfloat16", "copy_", "type"}


class DtypeGuard(TorchFunctionMode):
    """Records operations whose floating tensor arguments (not 0-dim) have more than one dtype, and bf16 -> fp32
    conversions with the package file that made them."""

    def __init__(self) -> None:
        super().__init__()
        self.mixed: list[str] = []
        self.upcasts: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        tensors: list[torch.Tensor] = []

        def collect(x):
            if isinstance(x, torch.Tensor):
                tensors.append(x)
            elif isinstance(x, (list, tuple)):
                for y in x:
                    collect(y)

        collect(args)
        collect(list(kwargs.values()))
        if name not in _CONVERSIONS:
            dtypes = {t.dtype for t in tensors if t.is_floating_point() and t.dim() > 0}
            if len(dtypes) > 1:
                self.mixed.append(f"{name}: {sorted(map(str, dtypes))} at {self._site()}")
        out = func(*args, **kwargs)
        if (name in _CONVERSIONS and tensors and tensors[0].dtype == torch.bfloat16 and isinstance(out, torch.Tensor)
                and out.dtype == torch.float32):
            self.upcasts.add(self._site())
        return out

    @staticmethod
    def _site() -> str:
        frames = [f for f in traceback.extract_stack() if "/attentionflow/" in f.filename]
        return frames[-1].filename.split("/attentionflow/")[-1] if frames else "outside the package"


def test_the_guard_sees_a_mixed_operation():
    with DtypeGuard() as guard:
        _ = torch.ones(2, dtype=torch.bfloat16) + torch.ones(2)
    assert len(guard.mixed) == 1


@pytest.fixture(scope="module")
def bf16_pipe():
    pipe = AttentionFlowPipeline.from_pretrained("embedded", device="cpu", mixed_precision="bf16")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def clip():
    from attentionflow.commands.demo import demo_clip

    return demo_clip()  # (8, 64, 64, 3) uint8: the demo's red circle moving on the road


CASES = {
    "replace-blend-reweight-ncc": ("direct", "a red circle is moving on the snow", "auto",
                                   dict(p2p=P2PConfig(mode="replace", blend_words=["road", "snow"],
                                                      reweight={"snow": 2.0}),
                                        mmi=MMIConfig(motion_words=["moving"]))),
    "refine-region-chunks-mi": ("direct", "a big red circle is moving on the road", 3,
                                dict(p2p=P2PConfig(mode="refine", edit_region="moving"),
                                     mmi=MMIConfig(motion_words=["moving"], similarity="mi"))),
    "null-text-ssd": ("null-text", "a blue circle is moving on the road", "auto",
                      dict(mmi=MMIConfig(motion_words=["moving"], similarity="ssd"))),
    "auto-word-cc": ("direct", "a blue circle is moving on the road", "auto",
                     dict(mmi=MMIConfig(motion_words="auto", similarity="cc"))),
    "direct-targets-zncc": ("direct", "a blue circle is moving on the road", 4,
                            dict(mmi=MMIConfig(motion_words=["moving"], similarity="zncc"))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bf16_edit_mixes_no_dtypes_and_upcasts_no_activation(bf16_pipe, clip, case):
    method, target, chunk, kw = CASES[case]
    settings = InversionSettings.default(num_inference_steps=5, inversion=method,
                                         direct_targets=case.startswith("direct-targets"))
    plan = bf16_pipe.plan(SOURCE, [target], settings, AttentionSettings.default(chunk_frames=chunk), **kw)
    with DtypeGuard() as guard:
        out = bf16_pipe.edit(clip, plan)
    assert not guard.mixed, guard.mixed[:5]
    assert guard.upcasts <= set(ALLOWED_UPCASTS), guard.upcasts - set(ALLOWED_UPCASTS)
    edit = out.edits[0].astype(float)
    assert np.isfinite(edit).all() and np.abs(edit - out.reconstruction.astype(float)).mean() > 0.5
