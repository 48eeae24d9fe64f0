"""Named presets and the configuration a ``train --data D --preset P --set k=v …`` command means (see
:mod:`undiffuse.config`)."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Iterable, Optional

from undiffuse.config.overrides import apply_overrides
from undiffuse.config.sections import (
    DataConfig,
    DiffusionConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)
from undiffuse.errors import ConfigError

__all__ = ["PRESETS", "get_preset", "resolve_config"]


def _unet(name: str, **changes: Any) -> ModelConfig:
    """A ModelConfig from the nn package's UNET_PRESETS (data-derived sizes are filled at build time)."""
    from undiffuse.nn import UNET_PRESETS

    keys = {f.name for f in fields(ModelConfig)}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in UNET_PRESETS[name].items() if k in keys}
    return ModelConfig(arch="unet", **{**kw, **changes})


def _fmnist() -> RunConfig:
    return RunConfig(
        data=DataConfig("fashion-mnist"),
        model=_unet("fmnist-small"),
        diffusion=DiffusionConfig(schedule="cosine", parameterization="v", weighting="min_snr"),
        # ~10 minutes on 2 CPU cores (UNet "fmnist-small" ≈ 130 img/s fwd+bwd): 1000 steps × 64 = 64k
        # images; EMA half-life 10k images (capped at 10 % of the images seen, so early weights fade)
        train=TrainConfig(steps=1000, batch_size=64, lr=5e-4, warmup_steps=100, ema_halflife_kimg=10.0,
                          ema_warmup=0.1, sample_every=500, ckpt_every=250, val_every=250, val_batches=4),
        preset="fmnist",
    )


def _digits_tiny() -> RunConfig:
    return RunConfig(
        data=DataConfig("digits"),
        model=_unet("tiny"),
        diffusion=DiffusionConfig(schedule="linear", T=1000),
        train=TrainConfig(steps=50, batch_size=32, lr=1e-3, warmup_steps=5, ema_halflife_kimg=0.5, log_every=5,
                          sample_every=0, ckpt_every=10, val_every=0, val_batches=1, sample_n=16, sample_steps=10),
        preset="digits-tiny",
    )  # fmt: skip


def _toy() -> RunConfig:
    return RunConfig(
        data=DataConfig("toy:25gaussians"),
        model=ModelConfig(arch="mlp", hidden=256, depth=4, emb_dim=128, dropout=0.0),
        diffusion=DiffusionConfig(schedule="linear", T=1000, parameterization="eps", clip=None),
        # measured: 6000 steps cover all 25 modes with 89 % (DDIM) / 96 % (DDPM) of samples within 3σ
        train=TrainConfig(steps=6000, batch_size=512, lr=1e-3, warmup_steps=100, ema_halflife_kimg=50.0,
                          log_every=50, sample_every=2000, sample_n=2000, ckpt_every=2000, val_every=500,
                          val_batches=2),
        preset="toy",
    )  # fmt: skip


def _table() -> RunConfig:
    return RunConfig(
        data=DataConfig("table:breast-cancer"),
        model=ModelConfig(arch="mlp", hidden=128, depth=4, emb_dim=128, dropout=0.3, class_cond=True),
        # TabDDPM (Kotelnikov et al. 2023): ε-prediction, cosine schedule, T = 1000; x̂_0 clipped to the range of
        # the quantile-normal scores (undiffuse.data.tables), which tames the first steps of a respaced grid
        diffusion=DiffusionConfig(schedule="cosine", T=1000, parameterization="eps", clip=(-5.2, 5.2)),
        # measured (docs/tables.md): with more steps, or less dropout, it starts to copy training rows (privacy);
        # the narrower MLP trained 750 steps keeps the ML efficacy and stays as far from the training rows as fresh rows
        train=TrainConfig(steps=750, batch_size=256, lr=1e-3, warmup_steps=100, ema_halflife_kimg=50.0,
                          precision="fp32", cond_drop=0.1, log_every=50, sample_every=0, ckpt_every=1000,
                          val_every=500, val_batches=2),
        preset="table",
    )  # fmt: skip


def _series() -> RunConfig:
    return RunConfig(
        data=DataConfig("series:sp500"),
        # the sequence network with CSDI's conditional training (docs/tables.md): one model for whole windows
        # and forecasts; 1000 steps, as past ~1000 it starts to memorise the training windows' continuations
        model=ModelConfig(arch="seq", hidden=48, depth=6, emb_dim=128, dropout=0.1, obs_cond=True),
        # standardised returns have tails past ±10: x̂_0 is clipped only far out, to tame a respaced grid's first steps
        diffusion=DiffusionConfig(schedule="cosine", T=1000, parameterization="eps", clip=(-25.0, 25.0)),
        train=TrainConfig(steps=1000, batch_size=128, lr=1e-3, warmup_steps=100, ema_halflife_kimg=50.0,
                          precision="fp32", log_every=50, sample_every=0, ckpt_every=1000, val_every=500, val_batches=2),
        preset="series",
    )  # fmt: skip


def _text() -> RunConfig:
    return RunConfig(
        data=DataConfig("text:kjv", window=256, val_split="val"),  # no "val" split: the tail of the training windows
        # a 1.6 M-parameter transformer (2 blocks of width 256, 4 heads); model.arch=causal-transformer is the
        # autoregressive baseline of the same size, trained by the same command on the same data and budget. At this
        # CPU budget 2 blocks × 1,350 steps beat 4 blocks × 600 for both models (docs/text.md, "Recipe probes")
        model=ModelConfig(arch="transformer", hidden=256, depth=2, num_heads=4, dropout=0.0),
        # MDLM (Sahoo et al. 2024): the masked process, α_t = 1 − t; T discrete training times
        diffusion=DiffusionConfig(schedule="linear", T=1000, clip=None),
        # measured (docs/text.md): 1,350 steps of 32 × 256 characters took 797 CPU-seconds (masked) and 753 (causal) on
        # one thread in bf16 (load ≈ 2 on 2 cores) — ≈ 13 minutes of one core, so ≤ 15 minutes on 2 cores on one thread
        train=TrainConfig(steps=1350, batch_size=32, lr=1e-3, warmup_steps=225, lr_schedule="cosine", decay_steps=1125,
                          min_lr=1e-4, weight_decay=0.0, ema_halflife_kimg=2.0, ema_warmup=0.1, log_every=25,
                          sample_every=0, ckpt_every=450, keep_last=4, val_every=200, val_batches=4),
        preset="text",
    )  # fmt: skip


def _audio(gpu: bool = False) -> RunConfig:
    """The waveform route: DiffWave (Kong et al. 2021) on 1-s clips. DiffWave's T = 50, β linear 1e-4 → 0.05,
    ε-prediction, sampled by DDPM over all 50 steps. CPU: 8 kHz, C = 32, N = 10 (measured 90 ms per clip
    forward + backward on one thread); GPU: 16 kHz, DiffWave's C = 64, N = 30 (docs/audio.md)."""
    return RunConfig(
        data=DataConfig("audio:spoken-digits", sample_rate=16000 if gpu else 8000),
        model=ModelConfig(arch="wavenet", hidden=64 if gpu else 32, depth=30 if gpu else 10, emb_dim=128, dropout=0.0),
        diffusion=DiffusionConfig(schedule="linear", T=50, schedule_kwargs={"beta_start": 1e-4, "beta_end": 0.05},
                                  parameterization="eps"),
        train=TrainConfig(steps=200_000 if gpu else 1200, batch_size=16, lr=2e-4 if gpu else 1e-3,
                          warmup_steps=100, ema_halflife_kimg=100.0 if gpu else 2.0, precision="fp32", log_every=20,
                          sample_every=0, sample_n=16, ckpt_every=5000 if gpu else 400, val_every=0, val_batches=1),
        sample=SampleConfig(sampler="ddpm", steps=50),
        preset="audio-gpu" if gpu else "audio",
    )  # fmt: skip


def _audio_mel() -> RunConfig:
    """The mel route: the Fashion-MNIST UNet on 32×32 log-mel images (16 kHz, 32 bands, hop 31.25 ms), vocoded by
    Griffin-Lim. Sized to ≤ 15 minutes on 2 CPU cores (docs/audio.md)."""
    return RunConfig(
        data=DataConfig("mel:spoken-digits"),
        model=_unet("fmnist-small"),
        diffusion=DiffusionConfig(schedule="cosine", parameterization="v", weighting="min_snr"),
        train=TrainConfig(steps=1400, batch_size=64, lr=5e-4, warmup_steps=100, ema_halflife_kimg=10.0,
                          ema_warmup=0.1, sample_every=0, sample_n=16, ckpt_every=350, val_every=350, val_batches=2),
        preset="audio-mel",
    )  # fmt: skip


def _ddpm_cifar10() -> RunConfig:
    return RunConfig(
        data=DataConfig(""),
        model=_unet("ddpm-cifar10"),
        diffusion=DiffusionConfig(schedule="linear", T=1000, parameterization="eps"),
        # DDPM: Adam 2e-4, warm-up 5000, batch 128, clip 1, EMA 0.9999 per step = half-life ≈ 887 kimg
        train=TrainConfig(steps=800_000, batch_size=128, lr=2e-4, warmup_steps=5000, ema_halflife_kimg=887.0,
                          ema_warmup=0.05, sample_every=10_000, ckpt_every=10_000, val_every=10_000),
        preset="ddpm-cifar10",
    )  # fmt: skip


PRESETS = {"fmnist": _fmnist, "digits-tiny": _digits_tiny, "toy": _toy, "ddpm-cifar10": _ddpm_cifar10, "table": _table,
           "series": _series, "text": _text, "audio": _audio, "audio-gpu": lambda: _audio(gpu=True),
           "audio-mel": _audio_mel}


def get_preset(name: str) -> RunConfig:
    """The named preset (see the module table)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} — choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


def resolve_config(data: Optional[str] = None, preset: Optional[str] = None, overrides: Iterable[str] = ()) -> RunConfig:
    """The configuration a ``train --data D --preset P --set k=v …`` command means.

    Without a preset, the default preset of the data's kind (:data:`undiffuse.data.kinds.KINDS`: toy data →
    ``toy``, images → ``fmnist``); ``data`` sets ``data.name``; then the overrides apply in order.
    """
    if preset is None:  # the default preset of the data's kind (undiffuse.data.kinds)
        from undiffuse.data import spec_kind
        from undiffuse.data.kinds import kind_of

        preset = kind_of(spec_kind(data)).preset if data is not None else "fmnist"
    cfg = get_preset(preset)
    if data is not None:
        cfg = replace(cfg, data=replace(cfg.data, name=data))
    return apply_overrides(cfg, overrides)


