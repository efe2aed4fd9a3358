"""The offline demo: a rendered toy clip edited by the embedded toy model (``attentionflow demo``).

``configs/demo.yaml`` describes the same job on a shipped copy of the clip; the web app's "Toy example"
uses the same clip and prompts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from attentionflow.config import EditConfig, InputDataConfig, MMIConfig, ValidationDataConfig
from attentionflow.errors import AttentionFlowError, InputError
from attentionflow.io.outputs import atomic_output_dir, check_output_dir, own_manifest
from attentionflow.jobs import JobResult, run_edit_job

DEMO_SOURCE = "a red circle is moving on the road"
DEMO_TARGETS = ("a blue circle is moving on the road", "a red circle is moving on the snow")
DEMO_FRAMES, DEMO_SIZE, DEMO_STEPS = 8, 64, 25


def demo_clip() -> np.ndarray:
    """The demo's input: (8, 64, 64, 3) uint8 frames of the source caption (toy world, seed 0)."""
    from attentionflow.toyworld.world import make_video

    return make_video(DEMO_SOURCE, frames=DEMO_FRAMES, size=DEMO_SIZE, seed=0).frames


def demo_config(out: str, steps: int | None = None) -> EditConfig:
    """The demo's configuration (configs/demo.yaml's settings); ``video_path`` is filled by :func:`run_demo`."""
    steps = DEMO_STEPS if steps is None else steps
    return EditConfig(
        pretrained_model_path="embedded",
        output_dir=out,
        input_data=InputDataConfig(video_path="", prompt=DEMO_SOURCE, n_sample_frames=DEMO_FRAMES, width=DEMO_SIZE,
                                   height=DEMO_SIZE),
        validation_data=ValidationDataConfig(prompts=list(DEMO_TARGETS), video_length=DEMO_FRAMES, width=DEMO_SIZE,
                                             height=DEMO_SIZE, num_inference_steps=steps, num_inv_steps=steps),
        mmi=MMIConfig(motion_words=["moving"]),
        seed=33,
        device="cpu",
    )


def _written_by_demo(out: Path) -> bool:
    """An earlier demo output (this tool's own manifest says ``demo``; anything else in it still stops the run)."""
    manifest = own_manifest(out)
    return manifest is not None and manifest.get("command") == "demo"


def run_demo(out: str | Path, steps: int | None = None, *, overwrite: bool = False,
             progress: bool = True) -> JobResult:
    """Write the demo clip to ``OUT_input`` (reused if it is already there) and edit it into ``out``.

    An earlier demo output in ``out`` is replaced without ``overwrite``; a folder ``OUT_input`` that holds
    anything but the demo clip is never touched (InputError).
    """
    from attentionflow.io.video import read_frames
    from attentionflow.io.writers import write_frames

    out = Path(out)
    clip_dir = out.parent / f"{out.name}_input"
    frames = demo_clip()
    if clip_dir.exists():  # a clip of an earlier demo is reused as it is; anything else there is left alone
        try:
            same = np.array_equal(read_frames(clip_dir), frames)
        except AttentionFlowError:
            same = False
        if not same:
            raise InputError(f"the demo writes its input clip to {clip_dir}, which holds something else; "
                             f"choose another --out")
    cfg = demo_config(str(out), steps)
    cfg.input_data.video_path = str(clip_dir)
    overwrite = overwrite or _written_by_demo(out)
    cfg.validate()  # bad steps or an output folder that may not be replaced: refused before the clip is written
    check_output_dir(out, overwrite, protect=[clip_dir])
    created = not clip_dir.exists()
    if created:  # built beside and moved into place: a killed run never leaves half a clip
        with atomic_output_dir(clip_dir) as tmp:
            write_frames(frames, tmp)
    try:
        return run_edit_job(cfg, overwrite=overwrite, progress=progress, command="demo")
    except BaseException:
        if created:  # a failed demo leaves nothing behind, its input clip included
            shutil.rmtree(clip_dir, ignore_errors=True)
        raise
