"""Typed configuration.

The YAML schema is vid2vid-zero's (``pretrained_model_path``, ``input_data``, ``validation_data``, ...;
every key of its example configs loads unchanged) plus two sections of ours: ``p2p:`` (prompt-to-prompt
options) and ``mmi:`` (Motion Map Injection). Unknown keys and wrong types are errors naming the key.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from attentionflow.errors import ConfigError, shown


@dataclass
class InputDataConfig:
    """Which frames of which video are edited (vid2vid-zero ``input_data``)."""

    video_path: str = ""
    """Video file (mp4/avi/mov/webm/mkv/gif) or folder of png/jpg frames."""
    prompt: str = ""
    """Source prompt describing the input video."""
    n_sample_frames: int = 8
    """Number of frames to edit."""
    width: int = 512
    """Frame width after resize + center crop (multiple of 8)."""
    height: int = 512
    """Frame height after resize + center crop (multiple of 8)."""
    sample_start_idx: int = 0
    """Index of the first frame taken from the video."""
    sample_frame_rate: int = 1
    """Take every n-th frame (stride)."""


@dataclass
class ValidationDataConfig:
    """Editing parameters (vid2vid-zero ``validation_data``)."""

    prompts: list[str] = field(default_factory=list)
    """Target prompts; each becomes one edit branch sharing the one inversion."""
    video_length: int = 8
    """Must equal ``input_data.n_sample_frames`` (kept for compatibility)."""
    width: int = 512
    """Must equal ``input_data.width`` (kept for compatibility)."""
    height: int = 512
    """Must equal ``input_data.height`` (kept for compatibility)."""
    num_inference_steps: int = 50
    """DDIM sampling steps."""
    guidance_scale: float = 7.5
    """Classifier-free guidance scale."""
    num_inv_steps: int = 50
    """DDIM inversion steps (must equal num_inference_steps so the trajectories line up)."""
    inversion: Literal["direct", "negative-prompt", "null-text", "ddim"] = "direct"
    """How the video is inverted. direct: the source branch follows the stored DDIM inversion trajectory (exact
    reconstruction up to the VAE, no optimisation); negative-prompt: the source prompt's embedding is the
    unconditional one (free, approximate); null-text: vid2vid-zero's optimised unconditional embeddings; ddim:
    plain."""
    direct_targets: bool = False
    """direct only: each edit branch adds its own prompt's offset on the trajectory at every step (PnP Inversion's
    "add target"; one more model pass per step before sampling)."""
    inversion_prompt: Literal["source", "empty"] = "source"
    """Prompt the DDIM inversion is conditioned on: the source prompt (MMI reference) or the empty prompt
    (vid2vid-zero)."""
    use_null_inv: Union[bool, None] = None
    """vid2vid-zero's switch, still read: true means inversion null-text, false means ddim (null: use inversion)."""
    null_inner_steps: int = 1
    """Adam iterations per step of null-text inversion."""
    null_base_lr: float = 1e-2
    """Null-text learning rate at step 0 (decays as lr * (1 - i / 100))."""
    null_uncond_ratio: float = -0.5
    """Which steps use the optimised embedding (vid2vid-zero's rule): r > 0 the steps i <= r*T, r < 0 the steps
    i >= (1 + r)*T, 0 none."""
    null_normal_infer: bool = True
    """Use plain per-frame attention during null-text optimisation."""


@dataclass
class P2PConfig:
    """Prompt-to-prompt attention control (section ``p2p:``)."""

    mode: Literal["auto", "replace", "refine"] = "auto"
    """Replace (same token count) or Refine (token alignment); auto picks from the tokenized prompts."""
    cross_replace_steps: Union[float, dict[str, float]] = 0.8
    """Fraction of steps with source cross-attention injected into edits (or {word: fraction, default_: f})."""
    self_replace_steps: float = 0.4
    """Fraction of steps with source self-attention injected (only maps with <= 32x32 queries)."""
    blend_words: Union[list[str], None] = None
    """Local blend: words whose attention restricts the change (one word per prompt, source first), or none."""
    blend_threshold: float = 0.3
    """Local blend mask threshold on the normalised attention."""
    reweight: Union[dict[str, float], None] = None
    """Equalizer: scale the attention of these target-prompt words by a factor."""
    edit_region: Literal["all", "moving", "static"] = "all"
    """Where the edit may change the video: all; moving = only the moving object(s) found in the motion maps (built
    with the mmi section's flow, direction and camera settings, also when MMI is off); static = all but them."""
    region_dilation: int = 1
    """Latent pixels by which the moving-object mask of edit_region grows (1 = 8 pixels with Stable Diffusion): room
    for a new shape."""


@dataclass
class MMIConfig:
    """Motion Map Injection (section ``mmi:``)."""

    enabled: bool = True
    """Inject motion maps into cross-attention (false = plain editor, for A/B runs)."""
    motion_words: Union[list[str], str, None] = None
    """Motion word(s) of the prompts (e.g. moving), 'auto' to pick by attention-motion similarity, or none."""
    strength: float = 0.09
    """Injection strength lambda."""
    similarity: str = "ncc"
    """Attention-vs-motion similarity: ncc, zncc, cc, ssd or mi."""
    flow: str = "dis"
    """Optical flow method: dis or farneback."""
    direction: Union[str, float, None] = None
    """Keep only motion toward a compass word (N, NE, ..., NW) or an angle in degrees (0 = east, 90 = north)."""
    direction_tolerance: float = 45.0
    """Half-width in degrees of the accepted direction cone."""
    direction_mode: Literal["cone", "project"] = "cone"
    """cone: keep vectors within the tolerance; project: positive component along the direction."""
    camera_motion: Literal["compensate", "homography", "keep"] = "homography"
    """homography: remove the camera's motion as a homography (where none fits within a pixel, an affine map by
    least median of squares); compensate: a homography or (a moving camera over a scene with depth) the epipolar
    geometry, GRIC picks per frame pair: for a tracking shot past nearby scenery, worse on other video
    (docs/benchmarks.md); keep: raw flow."""
    temporal_smoothing: float = 0.0
    """Temporal smoothing of the maps: Gaussian sigma in frames (0 = off)."""
    branches: Literal["all", "source", "edits"] = "all"
    """Which branches receive the injection."""
    places: list[str] = field(default_factory=lambda: ["down", "mid", "up"])
    """Which UNet parts' cross-attention layers receive the injection."""
    step_start: float = 0.0
    """First fraction of denoising steps with injection."""
    step_end: float = 1.0
    """Injection stops at this fraction of the steps."""
    auto_steps: int = 3
    """Steps used to rank the words when motion_words is 'auto'."""

    def motion_options(self) -> Any:
        """The :class:`attentionflow.flow.motion.MotionOptions` of this section (flow, direction, camera
        motion, smoothing): the pipeline builds the motion maps with it, and :meth:`EditConfig.validate`
        checks it with ``MotionOptions.validate``, the one check of those options."""
        from attentionflow.flow.motion import MotionOptions

        return MotionOptions(flow=self.flow, direction=self.direction, direction_tolerance=self.direction_tolerance,
                             direction_mode=self.direction_mode, camera_motion=self.camera_motion,
                             temporal_smoothing=self.temporal_smoothing)


@dataclass
class EditConfig:
    """One edit job (the whole YAML file)."""

    pretrained_model_path: str = "embedded"
    """Local diffusers folder, hub id (from the local cache), or 'embedded' (the shipped toy model)."""
    output_dir: str = "outputs/edit"
    """Where the results are written (refused if non-empty unless --overwrite)."""
    input_data: InputDataConfig = field(default_factory=InputDataConfig)
    """Input video and sampling."""
    validation_data: ValidationDataConfig = field(default_factory=ValidationDataConfig)
    """Editing parameters."""
    p2p: P2PConfig = field(default_factory=P2PConfig)
    """Prompt-to-prompt options."""
    mmi: MMIConfig = field(default_factory=MMIConfig)
    """Motion Map Injection options."""
    input_batch_size: int = 1
    """Accepted for vid2vid-zero compatibility (one video per job)."""
    seed: int = 33
    """Random seed (0 to 4294967295). Every method (DDIM with eta 0, VAE posterior mean, null-text's Adam)
    is deterministic, so it does not change the result today; it is recorded for reproducibility."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Compute dtype: no (fp32), fp16 (GPU only) or bf16."""
    gradient_checkpointing: bool = False
    """Accepted for compatibility; unused at inference."""
    enable_xformers_memory_efficient_attention: bool = False
    """Accepted for compatibility; PyTorch SDPA is always used."""
    use_sc_attn: bool = True
    """Sparse-causal cross-frame self-attention (frame 0 + previous frame)."""
    use_st_attn: bool = True
    """Dense spatial-temporal self-attention at the blocks chosen by st_attn_idx."""
    st_attn_idx: int = 0
    """Down block k, up block k+1 and the mid block get dense attention."""
    chunk_frames: Union[int, Literal["auto"]] = "auto"
    """Frames per model call (all branches of them together): a number bounds memory for long videos (sparse-causal
    attention stays exact; dense ST attention sees its chunk plus frame 0 and the frame before the chunk); auto:
    every frame at once when they fit in half the free memory, else the most that do."""
    device: str = "auto"
    """auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps."""
    fps: float = 8.0
    """Frame rate of the written videos."""
    attention_map_level: int = 1
    """Resolution level of the saved attention maps: 0 = latent size, 1 = half, ..."""

    def validate(self) -> "EditConfig":
        """Check values that need no files or models; raise ConfigError naming the key."""
        inp, val, mmi = self.input_data, self.validation_data, self.mmi
        _check_finite(self)
        _check_choices(self)
        for key, value in (("input_data.width", inp.width), ("input_data.height", inp.height)):
            if value <= 0 or value % 8:
                raise ConfigError(f"{key} must be a positive multiple of 8, got {value}")
            if value < MIN_FRAME_SIZE:
                raise ConfigError(f"{key} must be at least {MIN_FRAME_SIZE} (the smallest size optical flow and "
                                  f"the UNet accept), got {value}")
        _positive("input_data.n_sample_frames", inp.n_sample_frames)
        _positive("input_data.sample_frame_rate", inp.sample_frame_rate)
        if inp.sample_start_idx < 0:
            raise ConfigError(f"input_data.sample_start_idx must be >= 0, got {inp.sample_start_idx}")
        for key, a, b in (("video_length", val.video_length, inp.n_sample_frames),
                          ("width", val.width, inp.width), ("height", val.height, inp.height)):
            if a != b:
                raise ConfigError(f"validation_data.{key} ({a}) differs from input_data ({b}); they must be equal")
        _positive("validation_data.num_inference_steps", val.num_inference_steps)
        if val.num_inv_steps != val.num_inference_steps:
            raise ConfigError(f"validation_data.num_inv_steps ({val.num_inv_steps}) must equal num_inference_steps "
                              f"({val.num_inference_steps})")
        if val.guidance_scale < 1.0:
            raise ConfigError(f"validation_data.guidance_scale must be >= 1, got {val.guidance_scale}")
        if val.use_null_inv is not None and LEGACY_NULL_INV[val.use_null_inv] != val.inversion:
            raise ConfigError(f"validation_data.use_null_inv: {str(val.use_null_inv).lower()} (vid2vid-zero's switch, "
                              f"meaning inversion: {LEGACY_NULL_INV[val.use_null_inv]}) disagrees with "
                              f"validation_data.inversion: {val.inversion}; keep one of them")
        _positive("validation_data.null_inner_steps", val.null_inner_steps)
        if not -1.0 <= val.null_uncond_ratio <= 1.0:
            raise ConfigError(f"validation_data.null_uncond_ratio must be in [-1, 1], got {val.null_uncond_ratio}")
        if not inp.prompt.strip():
            raise ConfigError("input_data.prompt (the source prompt) is empty")
        if not val.prompts or any(not p.strip() for p in val.prompts):
            raise ConfigError("validation_data.prompts needs at least one non-empty target prompt")
        if len(val.prompts) > MAX_TARGETS:
            raise ConfigError(f"validation_data.prompts has {len(val.prompts)} target prompts; at most {MAX_TARGETS} "
                              f"fit one run (each is a batch row and a grid column): split them into several runs")
        if not 0 < val.null_base_lr <= 1:
            raise ConfigError(f"validation_data.null_base_lr must be in (0, 1], got {val.null_base_lr:g}")
        for word, factor in (self.p2p.reweight or {}).items():
            if not -MAX_REWEIGHT <= factor <= MAX_REWEIGHT:
                raise ConfigError(f"p2p.reweight factor of {shown(word)} must be from {-MAX_REWEIGHT:g} to "
                                  f"{MAX_REWEIGHT:g}, got {factor:g}")
        for key in ("cross_replace_steps", "self_replace_steps"):
            v = getattr(self.p2p, key)
            for frac in (v.values() if isinstance(v, dict) else [v]):
                if not 0.0 <= frac <= 1.0:
                    raise ConfigError(f"p2p.{key} must be in [0, 1], got {frac}")
        if self.p2p.blend_words is not None and len(self.p2p.blend_words) not in (1, 1 + len(val.prompts)):
            raise ConfigError(f"p2p.blend_words needs 1 word or one per prompt (source first: "
                              f"{1 + len(val.prompts)}), got {len(self.p2p.blend_words)}")
        if not 0.0 <= self.p2p.blend_threshold < 1.0:
            raise ConfigError(f"p2p.blend_threshold must be in [0, 1), got {self.p2p.blend_threshold}")
        if not 0 <= self.p2p.region_dilation <= 16:
            raise ConfigError(f"p2p.region_dilation must be an integer from 0 to 16 latent pixels, "
                              f"got {self.p2p.region_dilation}")
        if self.p2p.edit_region != "all":
            if inp.n_sample_frames < 2:
                raise ConfigError(f"p2p.edit_region {self.p2p.edit_region} needs at least 2 frames (motion comes from "
                                  f"optical flow between neighbours); use more frames or edit_region all")
            mmi.motion_options().validate(prefix="mmi.")
        if mmi.strength < 0:
            raise ConfigError(f"mmi.strength must be >= 0, got {mmi.strength}")
        if not 0.0 <= mmi.step_start < mmi.step_end <= 1.0:
            raise ConfigError(f"mmi.step_start/step_end must satisfy 0 <= start < end <= 1, got "
                              f"{mmi.step_start}, {mmi.step_end}")
        bad = [p for p in mmi.places if p not in ("down", "mid", "up")]
        if bad or not mmi.places:
            raise ConfigError(f"mmi.places must be a non-empty subset of down, mid, up; got {mmi.places}")
        _positive("mmi.auto_steps", mmi.auto_steps)
        from attentionflow.io.writers import check_fps  # the writers' own limit

        check_fps(self.fps)
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed}")
        if self.chunk_frames != "auto" and (
            isinstance(self.chunk_frames, bool) or not isinstance(self.chunk_frames, int) or self.chunk_frames < 1
        ):
            raise ConfigError(f"chunk_frames must be auto or a whole number of frames >= 1, got {self.chunk_frames!r}")
        if self.attention_map_level < 0:
            raise ConfigError(f"attention_map_level must be >= 0, got {self.attention_map_level}")
        if mmi.enabled:
            from attentionflow.mmi.methods import SIMILARITY_METHODS

            mmi.motion_options().validate(prefix="mmi.")
            if mmi.similarity not in SIMILARITY_METHODS:
                raise ConfigError(
                    f"unknown similarity '{mmi.similarity}'; choose from: {', '.join(SIMILARITY_METHODS)}"
                )
            if inp.n_sample_frames < 2:
                raise ConfigError("MMI needs at least 2 frames (optical flow between neighbours); "
                                  "use more frames or --no-mmi")
        return self

    @property
    def motion_words(self) -> list[str] | Literal["auto"]:
        """The MMI motion words as a list, or 'auto'."""
        words = self.mmi.motion_words
        if words is None:
            return []
        if isinstance(words, str):
            return "auto" if words == "auto" else [words]
        return list(words)


#: The inversion methods (``validation_data.inversion``; ``--inversion``), in the order the docs list them.
INVERSION_METHODS: tuple[str, ...] = typing.get_args(typing.get_type_hints(ValidationDataConfig)["inversion"])
#: ``mmi.camera_motion`` values, read from the field's type.
CAMERA_MOTIONS: tuple[str, ...] = typing.get_args(typing.get_type_hints(MMIConfig)["camera_motion"])
#: ``p2p.edit_region`` values, read from the field's type (the one place they are listed).
EDIT_REGIONS: tuple[str, ...] = typing.get_args(typing.get_type_hints(P2PConfig)["edit_region"])
#: What vid2vid-zero's ``use_null_inv`` means as an inversion method.
LEGACY_NULL_INV = {True: "null-text", False: "ddim"}

#: Smallest frame width/height: OpenCV's DIS flow needs 16 pixels (a model may need more; see jobs.check_job).
MIN_FRAME_SIZE = 16
#: Largest seed (the range NumPy and PyTorch generators both accept).
MAX_SEED = 2**32 - 1
#: Most target prompts in one run (each adds a batch row to every UNet call and a column to the grid).
MAX_TARGETS = 16
#: Largest |factor| of an attention reweight (prompt-to-prompt's examples use -2..5).
MAX_REWEIGHT = 100.0


def _check_finite(obj: Any, prefix: str = "") -> None:
    """Raise ConfigError naming the first NaN or infinite float anywhere in a (nested) config dataclass."""
    for f in dataclasses.fields(obj):
        _finite_value(getattr(obj, f.name), prefix + f.name)


def _check_choices(obj: Any, prefix: str = "") -> None:
    """Raise ConfigError naming the first field whose value is not one of its ``Literal`` choices (YAML input is
    checked on loading; this catches configs built in Python)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, tp = getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(value):
            _check_choices(value, prefix + f.name + ".")
        elif typing.get_origin(tp) is Literal and value not in typing.get_args(tp):
            raise ConfigError(f"{prefix}{f.name} {value!r} is invalid; choose from: "
                              f"{', '.join(map(str, typing.get_args(tp)))}")


def _finite_value(value: Any, key: str) -> None:
    if dataclasses.is_dataclass(value):
        _check_finite(value, key + ".")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value}")
    elif isinstance(value, dict):
        for k, v in value.items():
            _finite_value(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _finite_value(v, f"{key}[{i}]")


# --------------------------------------------------------------------------------------------------
# typed settings handed to the pipeline (their defaults are the config's: defined once, above)

_INVERSION_FIELDS = ("num_inference_steps", "guidance_scale", "inversion", "direct_targets", "inversion_prompt",
                     "null_inner_steps", "null_base_lr", "null_uncond_ratio", "null_normal_infer")
_NULL_TEXT_FIELDS = ("guidance_scale", "null_inner_steps", "null_base_lr", "null_uncond_ratio", "null_normal_infer")
_ATTENTION_FIELDS = ("use_sc_attn", "use_st_attn", "st_attn_idx", "chunk_frames")


@dataclass(frozen=True)
class InversionSettings:
    """How a video is inverted and sampled (the ``validation_data`` keys of the same names)."""

    num_inference_steps: int
    """DDIM steps of the inversion and of sampling."""
    guidance_scale: float
    """Classifier-free guidance scale of sampling (and of the null-text fit)."""
    inversion: str
    """direct, negative-prompt, null-text or ddim (:data:`INVERSION_METHODS`)."""
    direct_targets: bool
    """direct: add the trajectory correction to the edit branches too."""
    inversion_prompt: str
    """source or empty: the prompt the DDIM inversion is conditioned on."""
    null_inner_steps: int
    null_base_lr: float
    null_uncond_ratio: float
    null_normal_infer: bool

    @classmethod
    def from_config(cls, config: "EditConfig") -> "InversionSettings":
        """The settings a config asks for."""
        return cls(**{name: getattr(config.validation_data, name) for name in _INVERSION_FIELDS})

    @classmethod
    def default(cls, **changes: Any) -> "InversionSettings":
        """The config defaults, with ``changes`` (same names) applied."""
        return dataclasses.replace(cls.from_config(EditConfig()), **changes)

    @property
    def runs_null_text(self) -> bool:
        """Whether null-text optimisation runs (method null-text, and guidance > 1)."""
        return self.inversion == "null-text" and self.guidance_scale > 1.0

    def shaping(self) -> dict[str, Any]:
        """The settings that shape an inversion: the method, its prompt, the steps and whether null-text runs, plus
        the null-text settings only when it does (two inversions with equal ``shaping()`` are interchangeable;
        ``direct_targets`` acts at sampling time only)."""
        out: dict[str, Any] = {"num_inference_steps": self.num_inference_steps, "inversion": self.inversion,
                               "inversion_prompt": self.inversion_prompt, "null_text": self.runs_null_text}
        if self.runs_null_text:
            out.update({name: getattr(self, name) for name in _NULL_TEXT_FIELDS})
        return out


@dataclass(frozen=True)
class AttentionSettings:
    """Cross-frame self-attention and how many frames go through the model at once (the top-level config keys of the
    same names)."""

    use_sc_attn: bool
    """Sparse-causal attention: frame i attends to frame 0 and frame i-1."""
    use_st_attn: bool
    """Dense spatial-temporal attention at the blocks chosen by ``st_attn_idx``."""
    st_attn_idx: int
    """Down block k, up block k+1 and the mid block get dense attention."""
    chunk_frames: int | str
    """Frames per model call, or ``"auto"`` (:meth:`attentionflow.pipeline.AttentionFlowPipeline.chunk_size`)."""

    @classmethod
    def from_config(cls, config: "EditConfig") -> "AttentionSettings":
        """The settings a config asks for."""
        return cls(**{name: getattr(config, name) for name in _ATTENTION_FIELDS})

    @classmethod
    def default(cls, **changes: Any) -> "AttentionSettings":
        """The config defaults, with ``changes`` (same names) applied."""
        return dataclasses.replace(cls.from_config(EditConfig()), **changes)


def parse_chunk_frames(text: str | int) -> int | str:
    """``chunk_frames`` from a command line or a form field: a whole number, or the text itself (``auto``, or what
    :meth:`EditConfig.validate` then refuses, naming it)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    value = str(text).strip()
    try:
        return int(value)
    except ValueError:
        return value


def _positive(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{key} must be >= 1, got {value}")


# --------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checking

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"mapping of {_type_name(k)} to {_type_name(v)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp``; return it (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, key + ".")
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {shown(value)}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {shown(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {shown(value)}")
        (arg,) = typing.get_args(tp)
        return [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {shown(value)}")
        kt, vt = typing.get_args(tp)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"config key '{key}' must be a finite number, got {value}")
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads "1e-2" as a string; OmegaConf (vid2vid-zero) as a float
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {shown(value)}")


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key {shown(prefix + str(key))}; valid keys here: {', '.join(names)}")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in data.items()})


def config_from_dict(data: dict[str, Any]) -> EditConfig:
    """Build an :class:`EditConfig` from a (YAML) mapping; raise ConfigError on unknown keys/bad types."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config file must hold a mapping at the top level, got {type(data).__name__}")
    config = _from_dict(EditConfig, data)
    val = data.get("validation_data")
    if isinstance(val, dict) and "inversion" not in val and config.validation_data.use_null_inv is not None:
        config.validation_data.inversion = LEGACY_NULL_INV[config.validation_data.use_null_inv]  # a vid2vid-zero YAML
    return config


#: Largest config file read (a config is a few hundred bytes; a batch manifest of many jobs is larger).
MAX_CONFIG_BYTES = 1 * 2**20
#: Deepest nesting and most alias uses a config may have (a config nests 3 levels and uses no alias).
MAX_YAML_DEPTH, MAX_YAML_ALIASES = 50, 1000


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping key given twice (the plain loader keeps the last one), nesting
    deeper than :data:`MAX_YAML_DEPTH` and more than :data:`MAX_YAML_ALIASES` alias uses."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise ConfigError(f"uses more than {MAX_YAML_ALIASES} aliases (*name); write the values out")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(f"nests deeper than {MAX_YAML_DEPTH} levels (line {mark.line + 1}); a config "
                                  f"nests 3")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise ConfigError(f"the key at line {key_node.start_mark.line + 1} is a {type(key).__name__}; keys are "
                              f"plain names")
        if key in seen:
            raise ConfigError(f"key '{key}' is given twice (lines {seen[key]} and {key_node.start_mark.line + 1}); "
                              f"keep one")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_yaml(data: bytes | str, source: str | Path, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """Parse YAML text (bytes must be UTF-8) with duplicate keys refused; one-line ConfigError naming ``source``.

    Text over ``max_bytes``, deep nesting and many aliases are refused before they cost time or memory."""
    if len(data) > max_bytes:
        raise ConfigError(f"{source} is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:g} MiB")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                              f"save it as UTF-8") from None
    try:
        return yaml.load(data, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source} nests too deeply; a config nests 3 levels") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        if "\t" in str(getattr(exc, "problem", "")) or "'\\t'" in str(exc):
            raise ConfigError(f"{source} has a tab character{line}; YAML indentation must use spaces") from None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source} is not valid YAML{line}: {problem}") from None


def load_config(path: str | Path) -> EditConfig:
    """Load a YAML config file (not yet validated: CLI overrides come first); relative paths in it are relative
    to the file (:func:`resolve_relative_paths`)."""
    path = Path(path)
    if not os.fspath(path).strip() or os.fspath(path) == ".":
        raise ConfigError("--config is empty; give a YAML file")
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:  # a name over the OS limit, a loop of symlinks
        raise ConfigError(f"cannot read config file {shown(os.fspath(path))}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"config file {path} is a folder; give a YAML file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"config file {path} is not a regular file (a FIFO, device or socket); give a YAML file")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is {st.st_size / 2**20:.1f} MiB; the limit is "
                          f"{MAX_CONFIG_BYTES / 2**20:g} MiB")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    return resolve_relative_paths(config_from_dict(parse_yaml(raw, f"config file {path}") or {}), path.parent)


def resolve_relative_paths(config: EditConfig, base: Path, output_dir: bool = True) -> EditConfig:
    """Make the relative paths of a config file relative to the file's folder ``base``, whatever the current folder.

    ``output_dir`` (unless ``output_dir=False``) is always taken next to the file. ``input_data.video_path`` and a
    local ``pretrained_model_path`` are taken next to the file when they exist there; a path that exists only from
    the current folder is kept (vid2vid-zero's own configs are written for its repository root), and a video found
    nowhere is named next to the file in the error. ``embedded``, hub ids and absolute paths are left alone.
    """
    def near(value: str, fallback_to_cwd: bool) -> str:
        if not value or Path(value).expanduser().is_absolute() or value == "embedded":
            return value
        here = os.path.normpath(base / value)
        if Path(here).exists() or not fallback_to_cwd:
            return here
        return value if Path(value).exists() else here

    if output_dir:
        config.output_dir = near(config.output_dir, fallback_to_cwd=False)
    config.input_data.video_path = near(config.input_data.video_path, fallback_to_cwd=True)
    model = config.pretrained_model_path
    if model != "embedded" and not Path(model).expanduser().is_absolute() and (
            model.startswith((".", os.sep)) or (base / model).exists()):  # './', '../': a path, never a hub id
        config.pretrained_model_path = os.path.normpath(base / model)
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """The fully resolved configuration as plain data (for the output folder's config.yaml)."""
    return dataclasses.asdict(config)


def dump_config(config: EditConfig) -> str:
    """YAML text of the resolved configuration, its paths absolute, so that :func:`load_config` reads the same job
    back from wherever the file is (relative paths in a config file are relative to the file)."""
    data = config_to_dict(config)
    data["output_dir"] = os.path.abspath(config.output_dir)
    if config.input_data.video_path:
        data["input_data"]["video_path"] = os.path.abspath(config.input_data.video_path)
    if config.pretrained_model_path != "embedded" and Path(config.pretrained_model_path).exists():
        data["pretrained_model_path"] = os.path.abspath(config.pretrained_model_path)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def reference_table() -> str:
    """The README's configuration reference (markdown): every key, its type, default and doc, read from the
    dataclasses above (``tests/test_config.py`` checks that the README holds exactly this table)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    sections = {"input_data": InputDataConfig, "validation_data": ValidationDataConfig, "p2p": P2PConfig,
                "mmi": MMIConfig}
    for prefix, cls in [("", EditConfig), *((name + ".", c) for name, c in sections.items())]:
        hints, docs, default = typing.get_type_hints(cls), field_docs(cls), cls()
        for f in dataclasses.fields(cls):
            if not prefix and f.name in sections:
                continue
            doc = " ".join(docs.get(f.name, "").split())
            rows.append(f"| `{prefix}{f.name}` | {_type_name(hints[f.name])} | `{getattr(default, f.name)!r}` | "
                        f"{doc} |")
    return "\n".join(rows) + "\n"


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> doc (the string literal under each field), for :func:`reference_table` and the flags' help
    (read once per class: parsing the source takes milliseconds, and every command line builds the parser)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = str(nxt.value.value).strip()  # type: ignore[union-attr]
    return docs
