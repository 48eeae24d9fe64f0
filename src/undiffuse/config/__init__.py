"""Typed run configuration: frozen dataclasses, named presets and ``key=value`` overrides.

A run is described by one :class:`RunConfig` made of four sections::

    RunConfig(data=DataConfig, model=ModelConfig, diffusion=DiffusionConfig, train=TrainConfig)

Start from a preset and override fields by dotted keys; every value is parsed and checked against
the field's declared type, and every section validates its own ranges::

    cfg = get_preset("fmnist")
    cfg = apply_overrides(cfg, ["train.lr=2e-4", "model.channel_mult=1,2,2", "diffusion.T=500"])
    json.dumps(to_dict(cfg)); from_dict(d) == cfg

Errors are :class:`~undiffuse.errors.ConfigError` with a one-line "problem — fix" message.

| preset | data | network | for |
|---|---|---|---|
| ``fmnist`` | fashion-mnist | UNet "fmnist-small" (1.6 M) | the default: ~10 CPU minutes on 2 cores |
| ``digits-tiny`` | digits (8×8) | UNet "tiny" (0.1 M) | tests, seconds |
| ``toy`` | toy:* (2-D) | MLP 256×4 | picked automatically for ``toy:`` data |
| ``table`` | table:* | MLP 256×4, Gaussian + multinomial (TabDDPM) | picked automatically for ``table:`` data |
| ``ddpm-cifar10`` | (give --data) | UNet "ddpm-cifar10" (35.7 M) | Ho et al. (2020) on a GPU |
"""

from undiffuse.config.overrides import (
    apply_overrides,
    config_keys,
    diff_configs,
    from_dict,
    set_value,
    to_dict,
)
from undiffuse.config.presets import PRESETS, get_preset, resolve_config
from undiffuse.config.sections import (
    SECTIONS,
    DataConfig,
    DiffusionConfig,
    DistillConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)

__all__ = ["DataConfig", "ModelConfig", "DiffusionConfig", "TrainConfig", "SampleConfig", "DistillConfig", "RunConfig", "PRESETS", "get_preset", "resolve_config", "apply_overrides", "config_keys", "to_dict", "from_dict", "diff_configs", "set_value", "SECTIONS"]
