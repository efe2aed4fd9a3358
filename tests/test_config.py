"""Config: vid2vid-zero YAML loads unchanged, unknown keys / wrong types are named, validation."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from attentionflow.config import EditConfig, InversionSettings, config_from_dict, dump_config, field_docs, load_config
from attentionflow.errors import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))

VID2VID_ZERO = """
pretrained_model_path: checkpoints/stable-diffusion-v1-4
output_dir: outputs/car-moving
input_data:
  video_path: data/car-moving.mp4
  prompt: a car is moving on the road
  n_sample_frames: 8
  width: 512
  height: 512
  sample_start_idx: 0
  sample_frame_rate: 1
validation_data:
  prompts:
    - a car is moving on the snow
    - a jeep car is moving on the desert
  video_length: 8
  width: 512
  height: 512
  num_inference_steps: 50
  guidance_scale: 7.5
  num_inv_steps: 50
  use_null_inv: True
  null_inner_steps: 1
  null_base_lr: 1e-2
  null_uncond_ratio: -0.5
  null_normal_infer: True
input_batch_size: 1
seed: 33
mixed_precision: "fp16"
gradient_checkpointing: True
enable_xformers_memory_efficient_attention: True
use_sc_attn: True
use_st_attn: True
st_attn_idx: 0
"""


def test_vid2vid_zero_config_loads_unchanged(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(VID2VID_ZERO)
    cfg = load_config(path)
    assert cfg.input_data.prompt == "a car is moving on the road"
    assert cfg.validation_data.prompts[1] == "a jeep car is moving on the desert"
    assert cfg.validation_data.null_base_lr == pytest.approx(0.01)  # "1e-2" is a string to YAML 1.1
    assert cfg.mixed_precision == "fp16" and cfg.seed == 33 and cfg.use_st_attn is True
    assert cfg.validation_data.inversion == "null-text"  # use_null_inv: True means what it meant
    cfg.validate()


@pytest.mark.parametrize("body, method", [
    ("  use_null_inv: true\n", "null-text"),
    ("  use_null_inv: false\n", "ddim"),
    ("", "direct"),  # neither key: the default
    ("  inversion: negative-prompt\n", "negative-prompt"),
    ("  inversion: null-text\n  use_null_inv: true\n", "null-text"),  # both, agreeing
])
def test_inversion_method_from_yaml_and_vid2vid_zero_switch(tmp_path, body, method):
    path = tmp_path / "c.yaml"
    path.write_text("input_data:\n  prompt: a car\nvalidation_data:\n  prompts: [a red car]\n" + body)
    cfg = load_config(path).validate()
    assert cfg.validation_data.inversion == method
    assert InversionSettings.from_config(cfg).inversion == method


@pytest.mark.parametrize("body, needle", [
    ("  inversion: pnp\n", "one of 'direct', 'negative-prompt', 'null-text', 'ddim'"),
    ("  inversion: direct\n  use_null_inv: false\n", "use_null_inv: false"),
    ("  inversion_prompt: none\n", "'source', 'empty'"),
])
def test_bad_inversion_settings_are_one_line_errors(tmp_path, body, needle):
    path = tmp_path / "c.yaml"
    path.write_text("input_data:\n  prompt: a car\nvalidation_data:\n  prompts: [a red car]\n" + body)
    with pytest.raises(ConfigError) as err:
        load_config(path).validate()
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load_and_validate(path):
    cfg = load_config(path)
    cfg.validate()
    words = cfg.motion_words
    assert words and all(w in cfg.input_data.prompt for w in words)
    # every example expects its video under the repository's data/ and the weights under checkpoints/ (relative to
    # the config file), by the file names vid2vid-zero ships (black-swan.mp4, not blackswan.mp4)
    root = Path(__file__).resolve().parents[1]
    video = Path(cfg.input_data.video_path)
    if path.stem != "demo":
        assert video.parent == root / "data" and Path(cfg.pretrained_model_path).parent == root / "checkpoints"
        assert video.name != "blackswan.mp4"


def test_there_are_14_examples_and_a_demo():
    names = {p.stem for p in CONFIGS}
    assert "demo" in names and "car-moving" in names
    assert len(names - {"demo"}) == 14


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="'input_data.vidoe_path'"):
        config_from_dict({"input_data": {"vidoe_path": "x"}})
    with pytest.raises(ConfigError, match="'foo'"):
        config_from_dict({"foo": 1})
    with pytest.raises(ConfigError, match="'mmi.strenght'"):
        config_from_dict({"mmi": {"strenght": 0.1}})


@pytest.mark.parametrize("data, key", [
    ({"seed": "33"}, "seed"),
    ({"input_data": {"width": 512.5}}, "input_data.width"),
    ({"validation_data": {"prompts": "a car"}}, "validation_data.prompts"),
    ({"use_sc_attn": "yes"}, "use_sc_attn"),
    ({"mixed_precision": "fp8"}, "mixed_precision"),
    ({"mmi": {"strength": "strong"}}, "mmi.strength"),
    ({"input_data": 3}, "input_data"),
])
def test_wrong_type_is_named(data, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        config_from_dict(data)


def test_ints_accepted_for_floats_and_union_types():
    cfg = config_from_dict({"validation_data": {"guidance_scale": 7}, "mmi": {"direction": 90, "motion_words": "auto"},
                            "p2p": {"cross_replace_steps": {"default_": 0.8, "snow": 0.4}}})
    assert cfg.validation_data.guidance_scale == 7.0 and isinstance(cfg.validation_data.guidance_scale, float)
    assert cfg.mmi.direction == 90.0 and cfg.motion_words == "auto"
    assert cfg.p2p.cross_replace_steps == {"default_": 0.8, "snow": 0.4}


def _valid(**over) -> EditConfig:
    cfg = EditConfig()
    cfg.input_data.prompt = "a car is moving on the road"
    cfg.validation_data.prompts = ["a car is moving on the snow"]
    for k, v in over.items():
        obj = cfg
        *path, last = k.split("__")
        for p in path:
            obj = getattr(obj, p)
        setattr(obj, last, v)
    return cfg


@pytest.mark.parametrize("over, text", [
    ({"input_data__width": 500}, "multiple of 8"),
    ({"input_data__n_sample_frames": 0}, "n_sample_frames"),
    ({"validation_data__num_inv_steps": 20}, "num_inv_steps"),
    ({"validation_data__video_length": 4}, "video_length"),
    ({"mmi__strength": -0.1}, "strength"),
    ({"mmi__similarity": "cosine"}, "cosine"),
    ({"mmi__flow": "raft"}, "raft"),
    ({"mmi__direction": "up"}, "up"),
    ({"mmi__direction": 400.0}, "400"),
    ({"validation_data__prompts": []}, "target prompt"),
    ({"mmi__places": ["left"]}, "places"),
])
def test_validation_errors_are_one_line(over, text):
    cfg = _valid(**over)
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert text in str(info.value) and "\n" not in str(info.value)


def test_single_frame_with_mmi_is_refused_but_allowed_without():
    cfg = _valid(input_data__n_sample_frames=1, validation_data__video_length=1)
    with pytest.raises(ConfigError, match="at least 2 frames"):
        cfg.validate()
    cfg.mmi.enabled = False
    cfg.validate()


def test_dump_roundtrip(tmp_path):
    cfg = _valid()
    cfg.mmi.motion_words = ["moving"]
    cfg.input_data.video_path = "clip.mp4"  # relative to the current folder: the dump makes it absolute
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert again.input_data.video_path == str(Path("clip.mp4").resolve())
    assert again.output_dir == str(Path(cfg.output_dir).resolve())
    cfg.input_data.video_path, cfg.output_dir = again.input_data.video_path, again.output_dir
    assert again == cfg


def test_every_field_has_a_doc():
    from attentionflow import config as c

    for cls in (c.EditConfig, c.InputDataConfig, c.ValidationDataConfig, c.P2PConfig, c.MMIConfig):
        docs = field_docs(cls)
        import dataclasses

        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{cls.__name__} fields without a doc line: {missing}"


def test_docs_configuration_reference_is_the_generated_table():
    """Defaults are defined once (the dataclasses); docs/reference.md's table is generated from them."""
    from pathlib import Path

    from attentionflow.config import reference_table

    reference = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text(encoding="utf-8")
    table = reference_table()
    assert table in reference
    assert "| `validation_data.num_inference_steps` | int | `50` |" in table  # a default read from the class


def test_docs_command_line_reference_is_the_generated_table():
    """Each edit flag is defined once (attentionflow/options.py); docs/reference.md's flag table is generated."""
    from pathlib import Path

    from attentionflow.options import cli_reference_table

    reference = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text(encoding="utf-8")
    table = cli_reference_table()
    assert table in reference
    assert "| `--steps` | `validation_data.num_inference_steps`, `validation_data.num_inv_steps` | DDIM" in table


def test_relative_paths_in_a_config_are_relative_to_the_file(tmp_path, monkeypatch):
    from attentionflow.config import resolve_relative_paths

    folder, elsewhere = tmp_path / "project" / "configs", tmp_path / "elsewhere"
    (folder / "clips" / "frames").mkdir(parents=True)
    (folder / "models" / "sd").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "legacy.mp4").write_bytes(b"")
    path = folder / "c.yaml"
    path.write_text("output_dir: ../outputs/run\ninput_data:\n  video_path: clips/frames\n  prompt: a\n"
                    "pretrained_model_path: models/sd\n")
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path)
    assert Path(cfg.input_data.video_path) == folder / "clips" / "frames"
    assert Path(cfg.output_dir) == tmp_path / "project" / "outputs" / "run"
    assert Path(cfg.pretrained_model_path) == folder / "models" / "sd"
    # vid2vid-zero's configs are written for its repository root: a video found only from the current folder is
    # kept; hub ids and 'embedded' are never paths
    cfg = EditConfig()
    cfg.input_data.video_path, cfg.pretrained_model_path = "legacy.mp4", "CompVis/stable-diffusion-v1-4"
    resolve_relative_paths(cfg, folder)
    assert cfg.input_data.video_path == "legacy.mp4" and cfg.pretrained_model_path == "CompVis/stable-diffusion-v1-4"
    cfg.pretrained_model_path = "../checkpoints/stable-diffusion-v1-4"  # './' and '../' always name a path
    resolve_relative_paths(cfg, folder)
    assert Path(cfg.pretrained_model_path) == tmp_path / "project" / "checkpoints" / "stable-diffusion-v1-4"
    cfg.input_data.video_path = "missing.mp4"  # found nowhere: named next to the config in the error
    resolve_relative_paths(cfg, folder)
    assert Path(cfg.input_data.video_path) == folder / "missing.mp4"
    assert load_config(path).pretrained_model_path != "embedded"
    path.write_text("input_data:\n  prompt: a\n")
    assert load_config(path).pretrained_model_path == "embedded"


@pytest.mark.parametrize("name", ["flow", "direction", "direction_tolerance", "direction_mode", "camera_motion",
                                  "temporal_smoothing"])
def test_the_edit_configs_motion_defaults_are_the_motion_commands(name):
    """``attentionflow motion`` builds :class:`MotionOptions` directly and an edit from its ``mmi:`` section: with
    nothing set, both make the same motion maps, and the config offers the choices the motion options accept."""
    from attentionflow.config import MMIConfig
    from attentionflow.flow.motion import CAMERA_MOTION_MODES, DIRECTION_MODES, MotionOptions

    assert getattr(MMIConfig().motion_options(), name) == getattr(MotionOptions(), name)
    choices = {"camera_motion": CAMERA_MOTION_MODES, "direction_mode": DIRECTION_MODES}
    if name in choices:
        hint = typing.get_type_hints(MMIConfig)[name]
        assert sorted(typing.get_args(hint)) == sorted(choices[name])
