"""Run configuration: presets, typed overrides, validation, JSON round trip, build."""

from __future__ import annotations

import json

import pytest

from undiffuse.build import DataInfo, architecture_signature, build_denoiser, build_schedule
from undiffuse.config import (
    PRESETS,
    apply_overrides,
    config_keys,
    diff_configs,
    from_dict,
    get_preset,
    resolve_config,
    to_dict,
)
from undiffuse.errors import ConfigError, UserError


def test_presets_build_and_round_trip():
    for name in PRESETS:
        cfg = get_preset(name)
        assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg
        build_schedule(cfg.diffusion)


def test_resolve_picks_toy_preset_for_toy_data():
    assert resolve_config("toy:moons").preset == "toy"
    assert resolve_config("toy:moons").data.name == "toy:moons"
    assert resolve_config("digits").preset == "fmnist"
    assert resolve_config(None).data.name == "fashion-mnist"


def test_overrides_are_parsed_by_field_type():
    cfg = apply_overrides(
        get_preset("fmnist"),
        ["train.lr=2e-4", "model.channel_mult=1,2,2,4", "diffusion.T=500", "model.scale_shift=true",
         "diffusion.clip=none", "diffusion.schedule_kwargs=s:0.01", "train.steps=1e3", "diffusion.weighting=none",
         "train.adam_betas=0.9,0.99"],
    )  # fmt: skip
    assert cfg.train.lr == 2e-4 and cfg.model.channel_mult == (1, 2, 2, 4) and cfg.diffusion.T == 500
    assert cfg.model.scale_shift is True and cfg.diffusion.clip is None and cfg.train.steps == 1000
    assert cfg.diffusion.schedule_kwargs == {"s": 0.01} and cfg.diffusion.weighting is None
    assert cfg.train.adam_betas == (0.9, 0.99)
    assert set(diff_configs(get_preset("fmnist"), cfg)) >= {"train.lr", "model.channel_mult"}
    json_cfg = apply_overrides(cfg, ['diffusion.schedule_kwargs={"s": 0.02}'])
    assert json_cfg.diffusion.schedule_kwargs == {"s": 0.02}


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.lrr=1", ["unknown config key", "train.lr"]),
        ("foo.bar=1", ["unknown config key"]),
        ("train.lr=fast", ["expects float"]),
        ("train.steps=1.5", ["expects int"]),
        ("model.scale_shift=maybe", ["expects bool"]),
        ("train.adam_betas=0.9", ["expects 2 values"]),
        ("train.lr", ["key=value"]),
    ],
)
def test_bad_keys_and_types_are_refused(override, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(get_preset("fmnist"), [override])
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg and "—" in msg
    for w in words:
        assert w in msg


@pytest.mark.parametrize(
    "override",
    ["train.steps=0", "train.batch_size=-1", "train.lr=0", "diffusion.T=0", "model.base_channels=0",
     "train.keep_last=0", "train.grad_accum=0", "data.limit=0", "train.log_every=-1", "model.depth=-2",
     "diffusion.parameterization=eps2", "train.precision=fp8", "train.lr_schedule=cosine",
     "train.grad_accum=3", "model.dropout=1.5", "diffusion.var_type=learned"],
)  # fmt: skip
def test_out_of_range_values_are_refused(override):
    with pytest.raises(ConfigError):
        apply_overrides(get_preset("fmnist"), [override])


def test_from_dict_refuses_unknown_keys_and_types():
    d = to_dict(get_preset("toy"))
    d["train"]["nope"] = 1
    with pytest.raises(ConfigError, match="train.nope"):
        from_dict(d)
    d = to_dict(get_preset("toy"))
    d["train"]["batch_size"] = "big"
    with pytest.raises(ConfigError, match="batch_size"):
        from_dict(d)
    assert len(config_keys()) > 40


def test_build_denoiser_and_signature():
    info = DataInfo("digits", "image", (1, 8, 8), 10)
    cfg = get_preset("digits-tiny")
    pre = build_denoiser(cfg, info)
    lv = apply_overrides(cfg, ["diffusion.learned_variance=true"])
    assert build_denoiser(lv, info).net.out_channels == 2 * pre.net.out_channels
    assert architecture_signature(cfg, info) != architecture_signature(lv, info)
    assert architecture_signature(cfg, info) == architecture_signature(apply_overrides(cfg, ["train.lr=1e-4"]), info)
    with pytest.raises(ConfigError):
        build_schedule(apply_overrides(cfg, ["diffusion.schedule=betas", "diffusion.schedule_kwargs=betas:2"]).diffusion)
    with pytest.raises(ConfigError, match="class_cond"):
        build_denoiser(apply_overrides(cfg, ["model.class_cond=true"]), DataInfo("toy:swissroll", "image", (1, 8, 8)))
