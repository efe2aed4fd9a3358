"""The options of ``attentionflow edit``, defined once: each flag, the config keys it sets and how it is parsed.

From :data:`EDIT_OPTIONS` come the ``edit`` parser (:func:`add_options`), the overrides of a loaded config
(:func:`apply_options`), the flag names in error messages (:func:`flag_keys`), the options that may be given empty
and the command-line reference of ``docs/reference.md`` (:func:`cli_reference_table`). The help text of a flag that
sets a config key is that key's field docstring, with its default; defaults live in the config dataclasses only.
Torch-free: building the parser must stay fast.
"""

from __future__ import annotations

import argparse
import functools
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

from attentionflow.config import (
    EditConfig,
    InputDataConfig,
    MMIConfig,
    P2PConfig,
    ValidationDataConfig,
    field_docs,
    parse_chunk_frames,
)
from attentionflow.errors import ConfigError

Kind = Literal["value", "flag", "list", "positional"]
SECTIONS: dict[str, type] = {"input_data": InputDataConfig, "validation_data": ValidationDataConfig,
                             "p2p": P2PConfig, "mmi": MMIConfig}


def parse_size(text: str) -> tuple[int, int]:
    """``512`` or ``WIDTHxHEIGHT`` -> (width, height)."""
    try:
        if "x" in text.lower():
            w, h = text.lower().split("x")
            return int(w), int(h)
        return int(text), int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or WIDTHxHEIGHT (e.g. 512 or 768x432), got '{text}'")


def reweight_pair(text: str) -> tuple[str, float]:
    """``WORD=FACTOR`` -> (word, factor): the one reweight parser of the CLI and the app (the config's validator
    checks the factor's range); a ConfigError for anything else."""
    word, sep, factor = text.strip().rpartition("=")
    try:
        value = float(factor)
    except ValueError:
        sep = ""
    if not sep or not word.strip():
        raise ConfigError(f"reweight {text.strip()!r} is invalid; use WORD=FACTOR, e.g. snow=2.0")
    return word.strip(), value


def parse_reweight(text: str) -> tuple[str, float]:
    """``--reweight WORD=FACTOR`` (argparse type: its message becomes the usage error)."""
    try:
        return reweight_pair(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_direction(text: str) -> str | float:
    """An angle in degrees, or a compass word (checked by the config's validator)."""
    try:
        return float(text)
    except ValueError:
        return text.strip()


def motion_words(values: list[str]) -> list[str] | str | None:
    """``--motion-word`` values -> the config's motion words (``auto`` alone: pick automatically; ``none`` alone or
    no word: none)."""
    if values == ["auto"]:
        return "auto"
    return None if values in ([], ["none"]) else list(values)


@dataclass(frozen=True)
class Option:
    """One flag of ``attentionflow edit``.

    ``keys``: the config keys it sets (dotted; none for a command switch such as ``--overwrite``); ``values`` maps the
    parsed value to one value per key (default: the value itself for every key). ``help`` may be left empty when the
    flag sets a key: the key's field docstring is used, with its default.
    """

    flag: str
    keys: tuple[str, ...] = ()
    group: str = "input and output"
    kind: Kind = "value"
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    help: str = ""
    values: Callable[[Any], Sequence[Any]] | None = None
    empty_ok: bool = False

    @property
    def dest(self) -> str:
        """The argparse attribute name."""
        return self.flag.lstrip("-").replace("-", "_")

    def values_for(self, value: Any) -> Sequence[Any]:
        """One config value per key for the parsed ``value``."""
        return self.values(value) if self.values is not None else [value] * len(self.keys)


def _key_class(key: str) -> tuple[type, str]:
    section, _, name = key.rpartition(".")
    return (SECTIONS[section] if section else EditConfig), name


def default_of(key: str) -> Any:
    """The default of a dotted config key, read from its dataclass."""
    cls, name = _key_class(key)
    return getattr(cls(), name)


def doc_of(key: str) -> str:
    """The field docstring of a dotted config key, on one line."""
    cls, name = _key_class(key)
    return " ".join(field_docs(cls).get(name, "").split())


@functools.cache
def choices_of(key: str) -> tuple[str, ...] | None:
    """The values a dotted config key may take, read from its field's ``Literal`` type (None: any)."""
    cls, name = _key_class(key)
    args = typing.get_args(typing.get_type_hints(cls)[name])
    return tuple(args) if args and all(isinstance(a, str) for a in args) else None


def help_of(option: Option) -> str:
    """The option's help: its own text, or its first key's docstring and default."""
    if option.help or not option.keys:
        return option.help
    default = default_of(option.keys[0])
    shown = "" if isinstance(default, bool) else f" (default {default:g})" if isinstance(default, float) else \
        f" (default {default})" if default not in (None, "", []) else ""
    return doc_of(option.keys[0]).replace("%", "%%") + shown


_MOTION = "motion maps"
_P2P = "prompt-to-prompt"
_MMI = "motion map injection"
_DIFF = "diffusion"
_SAMPLING = "input video"

#: The flags of ``attentionflow edit``, in the order ``--help`` lists them.
EDIT_OPTIONS: tuple[Option, ...] = (
    Option("video", ("input_data.video_path",), kind="positional", metavar="VIDEO"),
    Option("--config", help="YAML config (vid2vid-zero format + p2p/mmi sections); flags override it"),
    Option("--source", ("input_data.prompt",)),
    Option("--target", ("validation_data.prompts",), kind="list", values=lambda v: [list(v)],
           help="target prompt (repeat for several edits)"),
    Option("--model", ("pretrained_model_path",)),
    Option("--out", ("output_dir",)),
    Option("--overwrite", kind="flag", help="replace a non-empty output folder"),
    Option("--frames", ("input_data.n_sample_frames", "validation_data.video_length"), _SAMPLING, parse=int),
    Option("--start", ("input_data.sample_start_idx",), _SAMPLING, parse=int),
    Option("--stride", ("input_data.sample_frame_rate",), _SAMPLING, parse=int),
    Option("--size", ("input_data.width", "input_data.height", "validation_data.width", "validation_data.height"),
           _SAMPLING, parse=parse_size, metavar="N|WxH", values=lambda s: (s[0], s[1], s[0], s[1]),
           help=f"frame size after resize + center crop: N or WIDTHxHEIGHT (default "
                f"{InputDataConfig.width}x{InputDataConfig.height})"),
    Option("--steps", ("validation_data.num_inference_steps", "validation_data.num_inv_steps"), _DIFF, parse=int),
    Option("--guidance", ("validation_data.guidance_scale",), _DIFF, parse=float),
    Option("--seed", ("seed",), _DIFF, parse=int),
    Option("--inversion", ("validation_data.inversion", "validation_data.use_null_inv"), _DIFF,
           values=lambda v: (v, None)),  # the flag wins over a YAML's use_null_inv
    Option("--direct-targets", ("validation_data.direct_targets",), _DIFF, kind="flag"),
    Option("--inversion-prompt", ("validation_data.inversion_prompt",), _DIFF, empty_ok=True),
    Option("--no-null-text", ("validation_data.inversion", "validation_data.use_null_inv"), _DIFF, kind="flag",
           values=lambda v: ("ddim", None), help="same as --inversion ddim (kept for old scripts)"),
    Option("--null-inner-steps", ("validation_data.null_inner_steps",), _DIFF, parse=int),
    Option("--device", ("device",), _DIFF),
    Option("--mixed-precision", ("mixed_precision",), _DIFF),
    Option("--no-sc-attn", ("use_sc_attn",), _DIFF, kind="flag", values=lambda v: (False,),
           help="disable sparse-causal cross-frame attention"),
    Option("--no-st-attn", ("use_st_attn",), _DIFF, kind="flag", values=lambda v: (False,),
           help="disable dense spatial-temporal attention"),
    Option("--chunk-frames", ("chunk_frames",), _DIFF, parse=parse_chunk_frames, metavar="N|auto"),
    Option("--fps", ("fps",), _DIFF, parse=float),
    Option("--mode", ("p2p.mode",), _P2P),
    Option("--cross-replace", ("p2p.cross_replace_steps",), _P2P, parse=float),
    Option("--self-replace", ("p2p.self_replace_steps",), _P2P, parse=float),
    Option("--blend-word", ("p2p.blend_words",), _P2P, kind="list", values=lambda v: [list(v)],
           help="local blend word (once, or once per prompt: source first)"),
    Option("--reweight", ("p2p.reweight",), _P2P, kind="list", parse=parse_reweight, metavar="WORD=FACTOR",
           values=lambda v: [dict(v)], help="WORD=FACTOR attention reweighting (repeatable)"),
    Option("--edit-region", ("p2p.edit_region",), _P2P),
    Option("--region-dilation", ("p2p.region_dilation",), _P2P, parse=int),
    Option("--motion-word", ("mmi.motion_words",), _MMI, kind="list", values=lambda v: [motion_words(v)],
           help="motion word of the prompts (repeatable), 'auto' or 'none'"),
    Option("--mmi-strength", ("mmi.strength",), _MMI, parse=float),
    Option("--similarity", ("mmi.similarity",), _MMI),
    Option("--mmi-branches", ("mmi.branches",), _MMI),
    Option("--no-mmi", ("mmi.enabled",), _MMI, kind="flag", values=lambda v: (False,),
           help="plain editor without MMI (for A/B comparisons)"),
    Option("--flow", ("mmi.flow",), _MOTION),
    Option("--direction", ("mmi.direction",), _MOTION, parse=parse_direction),
    Option("--direction-tolerance", ("mmi.direction_tolerance",), _MOTION, parse=float),
    Option("--direction-mode", ("mmi.direction_mode",), _MOTION),
    Option("--camera-motion", ("mmi.camera_motion",), _MOTION),
    Option("--smoothing", ("mmi.temporal_smoothing",), _MOTION, parse=float),
)

#: The sampling and motion flags that ``motion`` and ``bench motion`` share with ``edit``.
SAMPLING_OPTIONS = tuple(o for o in EDIT_OPTIONS if o.group == _SAMPLING)
MOTION_OPTIONS = tuple(o for o in EDIT_OPTIONS if o.group == _MOTION)


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option] = EDIT_OPTIONS) -> None:
    """Add ``options`` to ``parser``, in argument groups named by :attr:`Option.group`. A flag the user does not
    give is None (False for switches): the config's value stands."""
    groups: dict[str, Any] = {}
    for option in options:
        target = parser if option.group == "input and output" else \
            groups.setdefault(option.group, parser.add_argument_group(option.group))
        kwargs: dict[str, Any] = {"help": help_of(option)}
        if option.kind == "flag":
            target.add_argument(option.flag, action="store_true", **kwargs)
            continue
        if option.kind == "positional":
            target.add_argument(option.dest, nargs="?", metavar=option.metavar, **kwargs)
            continue
        choices = option.choices or (choices_of(option.keys[0]) if option.keys else None)
        if option.kind == "list":
            kwargs["action"] = "append"
        if option.parse is not None:
            kwargs["type"] = option.parse
        if choices:
            kwargs["choices"] = choices
        if option.metavar:
            kwargs["metavar"] = option.metavar
        target.add_argument(option.flag, **kwargs)


def given(option: Option, args: argparse.Namespace) -> bool:
    """Whether the user gave ``option`` (a switch: set; a value: not None; a list: not empty)."""
    value = getattr(args, option.dest, None)
    return bool(value) if option.kind in ("flag", "list") else value is not None


def option(flag: str) -> Option:
    """The option of :data:`EDIT_OPTIONS` with this flag."""
    return next(o for o in EDIT_OPTIONS if o.flag == flag)


def get_key(config: Any, key: str) -> Any:
    """The value of the dotted ``key`` of a config."""
    value = config
    for name in key.split("."):
        value = getattr(value, name)
    return value


def set_key(config: Any, key: str, value: Any) -> None:
    """Set the dotted ``key`` of a config (or of a section object, when ``key`` has no section part left)."""
    sections, _, name = key.rpartition(".")
    setattr(get_key(config, sections) if sections else config, name, value)


def apply_option(config: Any, option: Option, value: Any, strip: str = "") -> None:
    """Write ``option``'s parsed ``value`` into ``config``: one value per config key (:meth:`Option.values_for`;
    ``strip``: a section prefix to drop from the keys)."""
    for key, key_value in zip(option.keys, option.values_for(value)):
        set_key(config, key.removeprefix(strip), key_value)


def apply_options(config: Any, args: argparse.Namespace, options: Sequence[Option] = EDIT_OPTIONS,
                  strip: str = "") -> None:
    """Write every option the user gave into ``config`` (:func:`apply_option`; ``strip``: a section prefix to drop,
    e.g. ``"mmi."`` to set the motion flags on a :class:`~attentionflow.flow.motion.MotionOptions`)."""
    for option in options:
        if given(option, args):
            apply_option(config, option, getattr(args, option.dest), strip)


def check_conflicts(args: argparse.Namespace) -> None:
    """Options that contradict each other: one line naming both."""
    inversion = getattr(args, "inversion", None)
    if getattr(args, "no_null_text", False) and inversion not in (None, "ddim"):
        raise ConfigError(f"--no-null-text means --inversion ddim, but --inversion {inversion} was given; keep one")


def check_empty_values(args: argparse.Namespace, options: Sequence[Option] = EDIT_OPTIONS) -> None:
    """An empty string given for an option is an error, never silently the default (``--out ''``), except for the
    options marked ``empty_ok``."""
    empty_ok = {o.dest for o in options if o.empty_ok}
    for name, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        if name not in empty_ok and any(isinstance(v, str) and not v.strip() for v in values):
            flag = name.upper() if name in ("video", "jobs") else "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} is empty; give a value or leave it out")


def flag_keys(options: Sequence[Option] = EDIT_OPTIONS) -> list[tuple[str, str, str]]:
    """``(config key, argparse dest, flag)`` of every option that sets keys: an error naming such a key names the
    flag too when the user gave it."""
    return [(key, o.dest, o.flag) for o in options if o.kind != "positional" for key in o.keys
            if "--" + key != o.flag]  # (fps, seed: the key is already the flag's name)


def cli_reference_table(options: Sequence[Option] = EDIT_OPTIONS) -> str:
    """``docs/reference.md``'s table of the ``edit`` flags: flag, the config keys it sets, what it does."""
    rows = ["| flag | config key | meaning |", "|---|---|---|"]
    for o in options:
        name = o.metavar if o.kind == "positional" else o.flag + (f" {o.metavar}" if o.metavar else "")
        keys = ", ".join(f"`{k}`" for k in o.keys) or "-"
        meaning = help_of(o).replace("%%", "%").replace("|", "\\|")
        rows.append(f"| `{name}` | {keys} | {meaning} |")
    return "\n".join(rows) + "\n"


__all__ = ["EDIT_OPTIONS", "MOTION_OPTIONS", "SAMPLING_OPTIONS", "Option", "add_options", "apply_option",
           "apply_options", "check_conflicts", "check_empty_values", "choices_of", "cli_reference_table", "flag_keys",
           "get_key", "given", "option", "parse_direction", "parse_reweight", "parse_size", "reweight_pair",
           "set_key"]
