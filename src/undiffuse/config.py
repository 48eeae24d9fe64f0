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

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable, Optional, Union

from undiffuse.diffusion.precond import PARAMETERIZATIONS  # one vocabulary: the math modules' names
from undiffuse.diffusion.reverse import VAR_TYPES
from undiffuse.errors import ConfigError, brief
from undiffuse.losses.denoising import WEIGHTINGS
from undiffuse.nn.mlp import MLPConfig
from undiffuse.nn.unet import UNetConfig
from undiffuse.samplers.registry import SPECS as SAMPLER_SPECS
from undiffuse.schedules.discrete import SCHEDULES
from undiffuse.schedules.grids import GRIDS

__all__ = [
    "DataConfig",
    "ModelConfig",
    "DiffusionConfig",
    "TrainConfig",
    "SampleConfig",
    "DistillConfig",
    "RunConfig",
    "PRESETS",
    "get_preset",
    "resolve_config",
    "apply_overrides",
    "config_keys",
    "to_dict",
    "from_dict",
    "diff_configs",
]


def _positive(obj: Any, *names: str, allow_zero: bool = False) -> None:
    for n in names:
        v = getattr(obj, n)
        if v is not None and not math.isfinite(v):
            raise ConfigError(f"{_section(obj)}.{n} = {v} is not a finite number — set a finite value")
        if v is not None and (v < 0 or (v == 0 and not allow_zero)):
            bound = "≥ 0" if allow_zero else "> 0"
            raise ConfigError(f"{_section(obj)}.{n} = {v} must be {bound} — set a {'non-negative' if allow_zero else 'positive'} value")


def _choice(obj: Any, name: str, choices: Iterable[str]) -> None:
    v = getattr(obj, name)
    if v not in tuple(choices):
        raise ConfigError(f"{_section(obj)}.{name} = {brief(v)} is not valid — choose one of {', '.join(map(str, choices))}")


def _section(obj: Any) -> str:
    return type(obj).__name__.replace("Config", "").lower()


@dataclass(frozen=True)
class DataConfig:
    """What to train on.

    name: dataset spec for :func:`undiffuse.data.load_dataset` (``fashion-mnist``, ``digits``,
        ``folder:PATH``, ``toy:25gaussians``, …).
    image_size: resize/centre-crop size for image folders (None: the data's own size).
    limit: use only the first ``limit`` training examples (None: all).
    val_split: the held-out split for the validation loss (a fixed slice of the training data is used
        where the dataset has no such split).
    patch_size, patches_per_image: for ``patches:PATH`` and ``medical`` data only — the side of the
        square patches cut at full resolution (None: image_size, else 32) and how many per image and split
        (None: 256).
    target, categorical: for ``table:`` data only — the target column (a categorical one makes the model
        class-conditional on it; None: the built-in table's own, none for a CSV) and columns to treat as
        categorical although they hold numbers (:mod:`undiffuse.data.tablefiles`).
    window: for ``series:`` data only — the steps of a window (None: 64, or a quarter of the test part).
    """

    name: str = "fashion-mnist"
    image_size: Optional[int] = None
    limit: Optional[int] = None
    val_split: str = "test"
    patch_size: Optional[int] = None
    patches_per_image: Optional[int] = None
    target: Optional[str] = None
    categorical: tuple[str, ...] = ()
    window: Optional[int] = None

    def __post_init__(self) -> None:
        _positive(self, "image_size", "limit", "patch_size", "patches_per_image")
        if self.image_size is not None and self.image_size < 2:
            raise ConfigError(f"data.image_size = {self.image_size} is not an image — use at least 2 (e.g. 32)")


@dataclass(frozen=True)
class ModelConfig(UNetConfig, MLPConfig):
    """The network. ``arch="auto"`` picks the network of the data's kind (the UNet for images, the MLP
    for vectors: :data:`undiffuse.data.kinds.KINDS`).

    Each network owns its hyperparameters — :class:`~undiffuse.nn.UNetConfig` (base_channels,
    channel_mult, num_res_blocks, attn_resolutions, dropout, num_groups, num_heads, scale_shift) and
    :class:`~undiffuse.nn.MLPConfig` (hidden, depth, emb_dim, dropout) — and this class inherits their
    fields, so ``--set model.base_channels=64`` works and a new network option is one field there.
    class_cond: condition on class labels (with classifier-free label dropout ``train.cond_drop``).
    text_cond: condition on captions of the labelled data through the frozen sentence encoder
        (cross-attention, ``cond_dim`` 384; caption dropout ``train.cond_drop``); needs ``undiffuse[text]``.
    sr_from: super-resolution (SR3): the upsampled sr_from × sr_from version of the image joins the
        input channels (e.g. 14 for 28×28 Fashion-MNIST); None for none.
    """

    arch: str = "auto"
    class_cond: bool = False
    text_cond: bool = False
    sr_from: Optional[int] = None

    def __post_init__(self) -> None:
        for network in (UNetConfig, MLPConfig):
            try:
                network.__post_init__(self)
            except ValueError as e:
                raise ConfigError(f"model.{e}") from e
        _choice(self, "arch", ("auto", "unet", "mlp", "seq"))
        _positive(self, "sr_from")
        if self.class_cond and self.text_cond:
            raise ConfigError("model.class_cond and model.text_cond are exclusive — captions already carry the class; set one")




@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion process, parameterization and loss.

    schedule, T, schedule_kwargs: :func:`undiffuse.schedules.make_schedule` arguments.
    parameterization: what the network predicts (eps | x0 | v | edm).
    learned_variance: learn Σ_θ (Nichol & Dhariwal 2021): doubles the output channels, trains with
        the hybrid loss L_simple + lambda_vlb·L_vlb.
    weighting: loss weighting over noise levels (None: the parameterization's own; eps | x0 | v |
        min_snr with ``min_snr_gamma`` | edm).
    var_type: reverse variance for sampling and the VLB (None: learned if learned, else fixed_small).
    clip: clip x̂_0 to this range when sampling (None: no clipping; images use (-1, 1)).
    sigma_data: σ_d of EDM preconditioning.
    """

    schedule: str = "linear"
    T: int = 1000
    schedule_kwargs: dict[str, float] = field(default_factory=dict)
    parameterization: str = "eps"
    learned_variance: bool = False
    weighting: Optional[str] = None
    min_snr_gamma: float = 5.0
    lambda_vlb: float = 0.001
    var_type: Optional[str] = None
    clip: Optional[tuple[float, float]] = (-1.0, 1.0)
    sigma_data: float = 0.5

    def __post_init__(self) -> None:
        _choice(self, "schedule", SCHEDULES)
        _choice(self, "parameterization", PARAMETERIZATIONS)
        if self.weighting is not None:
            _choice(self, "weighting", WEIGHTINGS)
        if self.var_type is not None:
            _choice(self, "var_type", VAR_TYPES)
        _positive(self, "T", "min_snr_gamma", "sigma_data")
        _positive(self, "lambda_vlb", allow_zero=True)
        if self.learned_variance and self.weighting not in (None, self.parameterization):
            raise ConfigError("learned_variance trains with the hybrid loss and the parameterization's own weighting — unset diffusion.weighting")
        if self.var_type == "learned" and not self.learned_variance:
            raise ConfigError("diffusion.var_type = learned needs diffusion.learned_variance=true — or choose fixed_small/fixed_large")
        if self.clip is not None and not self.clip[0] < self.clip[1]:
            raise ConfigError(f"diffusion.clip = {self.clip} must be (low, high) with low < high — e.g. -1,1 or none")

    @property
    def sample_var_type(self) -> str:
        """The reverse variance actually used."""
        return self.var_type or ("learned" if self.learned_variance else "fixed_small")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, EMA, precision, logging and checkpoints.

    steps: default total number of optimizer steps (``train(steps=...)`` overrides it).
    batch_size: global batch per optimizer step (all ranks and accumulation steps together).
    lr, warmup_steps: AdamW learning rate, reached linearly over ``warmup_steps``; then constant
        (``lr_schedule="constant"``, DDPM) or cosine-decayed to ``min_lr`` over ``decay_steps``.
    ema_halflife_kimg: EMA half-life in thousands of training examples (batch-size invariant:
        β = 0.5^(batch / (1000·halflife)), Karras et al. 2022); ``ema_warmup`` caps the half-life at
        ``ema_warmup`` × examples seen so far (0 disables).
    precision: fp32 | bf16 | fp16 | auto (bf16 autocast where the device has native bf16 — CUDA
        Ampere+, CPUs with AVX512-BF16/AMX —, fp16 + GradScaler on older CUDA, fp32 elsewhere).
    cond_drop: probability of dropping the class label or caption (classifier-free guidance), if
        class_cond or text_cond.
    *_every: intervals in optimizer steps (0 disables); keep_last: checkpoints kept.
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 100
    lr_schedule: str = "constant"
    decay_steps: int = 0
    min_lr: float = 0.0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    ema_halflife_kimg: float = 10.0
    ema_warmup: float = 0.1
    precision: str = "auto"
    fused: bool = True
    grad_accum: int = 1
    seed: int = 0
    cond_drop: float = 0.1
    log_every: int = 10
    sample_every: int = 250
    sample_n: int = 64
    sample_steps: int = 50
    ckpt_every: int = 250
    keep_last: int = 3
    val_every: int = 250
    val_batches: int = 4

    def __post_init__(self) -> None:
        _positive(self, "steps", "batch_size", "lr", "grad_accum", "keep_last", "sample_n", "sample_steps")
        _positive(self, "warmup_steps", "decay_steps", "min_lr", "weight_decay", "grad_clip", "ema_halflife_kimg",
                  "ema_warmup", "log_every", "sample_every", "ckpt_every", "val_every", "val_batches", "seed",
                  allow_zero=True)  # fmt: skip
        _choice(self, "precision", ("auto", "fp32", "bf16", "fp16"))
        _choice(self, "lr_schedule", ("constant", "cosine"))
        if self.lr_schedule == "cosine" and self.decay_steps <= 0:
            raise ConfigError("train.lr_schedule = cosine needs its own horizon — set train.decay_steps > 0")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"train.batch_size = {self.batch_size} is not divisible by train.grad_accum = {self.grad_accum} — change one")
        if not 0 <= self.cond_drop < 1:
            raise ConfigError(f"train.cond_drop = {self.cond_drop} must lie in [0, 1)")
        if not all(0 <= b < 1 for b in self.adam_betas):
            raise ConfigError(f"train.adam_betas = {self.adam_betas} must lie in [0, 1) — e.g. 0.9,0.999")


@dataclass(frozen=True)
class SampleConfig:
    """How ``undiffuse sample``/``eval`` and :func:`undiffuse.sampling.sample` sample this run by default.

    sampler: a name of :data:`undiffuse.samplers.registry.SPECS`; steps: sampler steps; grid: the σ grid
    (None: the sampler's own default grid). A distilled student records its few-step sampler here.
    """

    sampler: str = "ddim"
    steps: int = 50
    grid: Optional[str] = None

    def __post_init__(self) -> None:
        _choice(self, "sampler", tuple(SAMPLER_SPECS))
        _positive(self, "steps")
        if self.grid is not None:
            _choice(self, "grid", GRIDS)


@dataclass(frozen=True)
class DistillConfig:
    """Whether this run is a distilled student (:mod:`undiffuse.training.distill`), and how it was made.

    method: "" (an ordinary run), ``progressive`` (Salimans & Ho 2022) or ``consistency`` (Song et al. 2023).
    teacher, teacher_step: the teacher run directory and the checkpoint step distilled.
    target_steps: the student's sampling steps; start_steps: the teacher's DDIM steps of the first
    progressive round (halved each round down to target_steps); round_steps: optimizer steps per round
    (fixed when the student is made, so a resumed run keeps its rounds); grid: the progressive σ grid.
    cd_steps: the consistency discretization N (teacher ODE steps between σ_min and σ_max, Karras grid);
    huber_c: the pseudo-Huber constant c per √dim (iCT: 0.00054·√d); p_mean, p_std: iCT's log-normal
    density of the noise level σ of a training pair.
    """

    method: str = ""
    teacher: str = ""
    teacher_step: int = 0
    target_steps: int = 4
    start_steps: int = 64
    round_steps: int = 0
    grid: str = "trailing"
    cd_steps: int = 40
    huber_c: float = 0.00054
    p_mean: float = -1.1
    p_std: float = 2.0

    def __post_init__(self) -> None:
        _choice(self, "method", ("", "progressive", "consistency"))
        _choice(self, "grid", ("trailing", "leading", "uniform"))
        _positive(self, "target_steps", "start_steps", "p_std")
        _positive(self, "teacher_step", "round_steps", "huber_c", allow_zero=True)
        if self.cd_steps < 2:
            raise ConfigError(f"distill.cd_steps = {self.cd_steps} must be at least 2 — e.g. 40")
        if self.method == "progressive" and self.start_steps < self.target_steps:
            raise ConfigError(f"distill.start_steps = {self.start_steps} is below distill.target_steps = "
                              f"{self.target_steps} — start from more teacher steps")  # fmt: skip


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run; saved as ``config.json`` in the run directory."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    preset: str = "fmnist"

    def __post_init__(self) -> None:
        size, levels = self.data.image_size, len(self.model.channel_mult)
        if size is not None and self.model.arch != "mlp" and size < 2 ** (levels - 1):
            raise ConfigError(
                f"data.image_size = {size} is too small for a UNet that halves it {levels - 1} times "
                f"(model.channel_mult has {levels} levels) — use at least {2 ** (levels - 1)}, or fewer levels"
            )


# --- presets ----------------------------------------------------------------------------------------


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
        model=ModelConfig(arch="mlp", hidden=256, depth=4, emb_dim=128, dropout=0.3, class_cond=True),
        # TabDDPM (Kotelnikov et al. 2023): ε-prediction, cosine schedule, T = 1000; x̂_0 clipped to the range of
        # the quantile-normal scores (undiffuse.data.tables), which tames the first steps of a respaced grid
        diffusion=DiffusionConfig(schedule="cosine", T=1000, parameterization="eps", clip=(-5.2, 5.2)),
        # measured (docs/tables.md): with more steps, or less dropout, it starts to copy training rows (privacy)
        train=TrainConfig(steps=500, batch_size=256, lr=1e-3, warmup_steps=100, ema_halflife_kimg=50.0,
                          precision="fp32", cond_drop=0.1, log_every=50, sample_every=0, ckpt_every=1000,
                          val_every=500, val_batches=2),
        preset="table",
    )  # fmt: skip


def _series() -> RunConfig:
    return RunConfig(
        data=DataConfig("series:sp500"),
        model=ModelConfig(arch="mlp", hidden=512, depth=4, emb_dim=128, dropout=0.1),
        # standardised returns have tails past ±10: x̂_0 is clipped only far out, to tame a respaced grid's first steps
        diffusion=DiffusionConfig(schedule="cosine", T=1000, parameterization="eps", clip=(-25.0, 25.0)),
        train=TrainConfig(steps=3000, batch_size=256, lr=1e-3, warmup_steps=100, ema_halflife_kimg=50.0,
                          precision="fp32", log_every=50, sample_every=0, ckpt_every=1000, val_every=500, val_batches=2),
        preset="series",
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
           "series": _series}


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


# --- overrides and (de)serialisation ------------------------------------------------------------------

_SECTIONS = ("data", "model", "diffusion", "train", "sample", "distill")


def config_keys() -> list[str]:
    """Every valid dotted key, e.g. ``train.lr``."""
    return [f"{s}.{f.name}" for s in _SECTIONS for f in fields(_section_type(s))]


def _section_type(name: str) -> type:
    return {"data": DataConfig, "model": ModelConfig, "diffusion": DiffusionConfig, "train": TrainConfig,
            "sample": SampleConfig, "distill": DistillConfig}[name]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def apply_overrides(cfg: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Apply ``"section.field=value"`` strings; values are parsed by the field's type.

    Lists are comma-separated (``model.channel_mult=1,2,2``), mappings are ``k:v,k:v`` or JSON,
    ``none`` clears an optional field, booleans are true/false/1/0/yes/no.
    """
    changes: dict[str, dict[str, Any]] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value — write e.g. train.lr=2e-4")
        key, text = item.split("=", 1)
        section, name, typ = _field(key.strip())
        changes.setdefault(section, {})[name] = _parse(text.strip(), typ, key.strip())
    # each section is rebuilt (and validated) once, so the order of related overrides does not matter
    return replace(cfg, **{s: replace(getattr(cfg, s), **kw) for s, kw in changes.items()})


def _field(key: str) -> tuple[str, str, Any]:
    """(section, field name, declared type) of a dotted key; ConfigError naming the valid keys."""
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in _SECTIONS:
        raise ConfigError(
            f"unknown config key {brief(key)} — keys are section.field with section one of {', '.join(_SECTIONS)}"
        )
    if parts[1] not in {f.name for f in fields(_section_type(parts[0]))}:
        valid = [k for k in config_keys() if k.startswith(parts[0] + ".")]
        raise ConfigError(f"unknown config key {brief(key)} — valid {parts[0]} keys: {', '.join(valid)}")
    return parts[0], parts[1], _hints(_section_type(parts[0]))[parts[1]]


def set_value(cfg: RunConfig, key: str, value: Any, parse: bool = False) -> RunConfig:
    """A copy of ``cfg`` with the dotted ``key`` set (``value`` parsed from text if ``parse``)."""
    section, name, typ = _field(key)
    new = _parse(value, typ, key) if parse else _coerce(value, typ, key)
    return replace(cfg, **{section: replace(getattr(cfg, section), **{name: new})})


_NONE = ("none", "null", "")
_BOOLS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _union_args(typ: Any) -> tuple:
    origin = typing.get_origin(typ)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(typ, types.UnionType)):
        return typing.get_args(typ)
    return ()


def _type_name(typ: Any) -> str:
    return getattr(typ, "__name__", None) or str(typ).replace("typing.", "")


def _parse(text: str, typ: Any, key: str) -> Any:
    """Parse override text into a value of type ``typ``."""
    args = _union_args(typ)
    if args:  # Optional[X]
        if text.lower() in _NONE:
            return None
        return _parse(text, next(a for a in args if a is not type(None)), key)
    origin = typing.get_origin(typ)
    if origin is tuple:
        items = [s for s in text.strip("()[] ").split(",") if s.strip()]
        return _coerce([_parse_scalar(s.strip(), _tuple_item(typ, i), key) for i, s in enumerate(items)], typ, key)
    if origin is dict:
        if text.lstrip().startswith("{"):
            try:
                return _coerce(json.loads(text), typ, key)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{key}: {brief(text)} is not valid JSON ({e.msg}) — write k:v,k:v or a JSON object") from None
        pairs = [p.split(":", 1) for p in text.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError(f"{key}: {brief(text)} is not a mapping — write k:v,k:v (e.g. beta_start:1e-4,beta_end:0.02)")
        vtyp = typing.get_args(typ)[1]
        return {k.strip(): _parse_scalar(v.strip(), vtyp, key) for k, v in pairs}
    return _parse_scalar(text, typ, key)


def _tuple_item(typ: Any, i: int) -> Any:
    args = typing.get_args(typ)
    return args[0] if len(args) == 2 and args[1] is Ellipsis else args[min(i, len(args) - 1)]


def _finite(value: float, key: str) -> float:
    if not math.isfinite(value):
        raise ConfigError(f"{key} = {value} is not a finite number — give a finite value")
    return value


def _parse_scalar(text: str, typ: Any, key: str) -> Any:
    bad = ConfigError(f"{key} expects {_type_name(typ)}, got {brief(text)} — give a value of that type")
    if typ is bool:
        if text.lower() not in _BOOLS:
            raise bad
        return _BOOLS[text.lower()]
    if typ is int:
        try:
            f = float(text)
        except ValueError:
            raise bad from None
        if not f.is_integer():
            raise bad
        return int(f)
    if typ is float:
        try:
            value = float(text)
        except ValueError:
            raise bad from None
        return _finite(value, key)
    return text


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check (and gently convert: list → tuple, int → float) an already-typed value, e.g. from JSON."""
    args = _union_args(typ)
    if args:
        if value is None:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), key)
    bad = ConfigError(f"{key} expects {_type_name(typ)}, got {brief(value)} — give a value of that type")
    origin = typing.get_origin(typ)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        args_t = typing.get_args(typ)
        if not (len(args_t) == 2 and args_t[1] is Ellipsis) and len(value) != len(args_t):
            raise ConfigError(f"{key} expects {len(args_t)} values, got {len(value)} — e.g. {','.join('1' * len(args_t))}")
        return tuple(_coerce(v, _tuple_item(typ, i), key) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        vtyp = typing.get_args(typ)[1]
        return {str(k): _coerce(v, vtyp, key) for k, v in value.items()}
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _finite(float(value), key)
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if typ in (int, str, bool) and type(value) is not typ:
        raise bad
    return value


def to_dict(cfg: RunConfig) -> dict:
    """A JSON-ready nested dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(d: dict) -> RunConfig:
    """Rebuild a :class:`RunConfig` from :func:`to_dict` output; unknown keys and wrong types are refused.

    Missing keys take the dataclass defaults (so configs saved by older versions still load).
    """
    if not isinstance(d, dict):
        raise ConfigError("a run configuration must be a JSON object — check config.json")
    unknown = set(d) - set(_SECTIONS) - {"preset"}
    if unknown:
        raise ConfigError(f"unknown config section(s) {brief(sorted(map(str, unknown)))} — valid: {', '.join(_SECTIONS)}, preset")
    kw: dict[str, Any] = {}
    for s in _SECTIONS:
        sub = d.get(s, {})
        if not isinstance(sub, dict):
            raise ConfigError(f"config section {s!r} must be an object")
        hints = _hints(_section_type(s))
        for k in sub:
            if k not in hints:
                raise ConfigError(f"unknown config key {brief(f'{s}.{k}')} — valid keys: {', '.join(config_keys())}")
        kw[s] = _section_type(s)(**{k: _coerce(v, hints[k], f"{s}.{k}") for k, v in sub.items()})
    return RunConfig(**kw, preset=str(d.get("preset", "custom")))


def diff_configs(a: RunConfig, b: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ: {key: (a_value, b_value)}."""
    out = {}
    for s in _SECTIONS:
        for f in fields(_section_type(s)):
            va, vb = getattr(getattr(a, s), f.name), getattr(getattr(b, s), f.name)
            if va != vb:
                out[f"{s}.{f.name}"] = (va, vb)
    return out
