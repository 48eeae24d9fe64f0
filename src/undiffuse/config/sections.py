"""The sections of a run configuration as typed, frozen, self-validating dataclasses (see :mod:`undiffuse.config`)."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Optional

from undiffuse.diffusion.masked import MASK_SCHEDULES
from undiffuse.diffusion.precond import PARAMETERIZATIONS  # one vocabulary: the math modules' names
from undiffuse.diffusion.reverse import VAR_TYPES
from undiffuse.errors import ConfigError, brief
from undiffuse.losses.denoising import WEIGHTINGS
from undiffuse.nn.mlp import MLPConfig
from undiffuse.nn.unet import UNetConfig
from undiffuse.samplers.registry import SPECS as SAMPLER_SPECS
from undiffuse.schedules.discrete import SCHEDULES
from undiffuse.schedules.grids import GRIDS

__all__ = ["DataConfig", "ModelConfig", "DiffusionConfig", "TrainConfig", "SampleConfig", "DistillConfig", "RunConfig", "SECTIONS", "section_type"]


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
    window: for ``series:`` data only — the steps of a window (None: 64, or a quarter of the test part); for
        ``text:`` data the characters of a sequence (None: 256).
    sample_rate: for ``audio:``/``mel:`` data only — the clips' sample rate in Hz (None: 16000).
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
    sample_rate: Optional[int] = None

    def __post_init__(self) -> None:
        _positive(self, "image_size", "limit", "patch_size", "patches_per_image", "sample_rate")
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
    mel_cond: a diffusion vocoder (DiffWave's local conditioner, Kong et al. 2021 §3.2): the WaveNet also gets the
        log-mel spectrogram of the clip (:func:`undiffuse.data.audio.VOCODER_MEL`); sampled with ``--lowres CLIP.wav``.
    obs_cond: CSDI's conditional training (Tashiro et al. 2021) of the sequence network: it also reads the observed
        values of a window and their mask, trained with random masks
        (:class:`undiffuse.diffusion.conditional.ObservedPrecond`); forecasts condition through the input.
    """

    arch: str = "auto"
    class_cond: bool = False
    text_cond: bool = False
    sr_from: Optional[int] = None
    mel_cond: bool = False
    obs_cond: bool = False

    def __post_init__(self) -> None:
        for network in (UNetConfig, MLPConfig):
            try:
                network.__post_init__(self)
            except ValueError as e:
                raise ConfigError(f"model.{e}") from e
        _choice(self, "arch", ("auto", "unet", "mlp", "seq", "transformer", "causal-transformer", "wavenet"))
        _positive(self, "sr_from")
        if self.mel_cond and self.arch != "wavenet":
            raise ConfigError("model.mel_cond (a diffusion vocoder) needs model.arch=wavenet — set it, or unset mel_cond")
        if self.obs_cond and self.arch != "seq":
            raise ConfigError("model.obs_cond (CSDI conditioning) needs model.arch=seq — use it, or add --set model.obs_cond=false")
        if self.class_cond and self.text_cond:
            raise ConfigError("model.class_cond and model.text_cond are exclusive — captions already carry the class; set one")




@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion process, parameterization and loss.

    schedule, T, schedule_kwargs: :func:`undiffuse.schedules.make_schedule` arguments; for text (the masked
        process) schedule is the masking schedule α_t (linear | cosine | loglinear, :mod:`undiffuse.diffusion.masked`)
        and T the number of discrete training times.
    parameterization: what the network predicts (eps | x0 | v | edm).
    learned_variance: learn Σ_θ (Nichol & Dhariwal 2021): doubles the output channels, trains with
        the hybrid loss L_simple + lambda_vlb·L_vlb.
    weighting: loss weighting over noise levels (None: the parameterization's own; eps | x0 | v |
        min_snr with ``min_snr_gamma`` | edm).
    var_type: reverse variance for sampling and the VLB (None: learned if learned, else fixed_small).
    clip: clip x̂_0 to this range when sampling (None: no clipping; images use (-1, 1)).
    sigma_data: σ_d of EDM preconditioning.
    block_size: text only — block diffusion (BD3-LM, :mod:`undiffuse.diffusion.masked`): blocks of this many
        tokens, each a masked diffusion given the clean blocks before it (0 or the window: one block, MDLM; 1:
        autoregressive); it must divide data.window.
    mask_range: text only — train on times t ∈ [low, high] only (BD3-LM's clipped masking rates, less gradient
        variance for small blocks; None: all of [0, 1]). Reported bounds always integrate all of [0, 1].
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
    block_size: int = 0
    mask_range: Optional[tuple[float, float]] = None

    def __post_init__(self) -> None:
        _positive(self, "block_size", allow_zero=True)
        if self.mask_range is not None and not 0.0 <= self.mask_range[0] < self.mask_range[1] <= 1.0:
            raise ConfigError(f"diffusion.mask_range = {self.mask_range} must be (low, high) with 0 ≤ low < high ≤ 1 — "
                              "e.g. 0.45,0.95 or none")  # fmt: skip
        _choice(self, "schedule", SCHEDULES + tuple(s for s in MASK_SCHEDULES if s not in SCHEDULES))
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
    teacher_solver: progressive only — "" for Salimans & Ho's targets (two DDIM steps of the round's teacher), or
    a sampler of the registry (e.g. ``unipc``) for accurate-teacher targets: every round learns the first
    teacher's own ODE solution, ``teacher_steps`` steps of that sampler over the whole grid, precomputed once for
    ``pool`` starting noises (:class:`undiffuse.training.distill.TeacherPool`).
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
    teacher_solver: str = ""
    teacher_steps: int = 16
    pool: int = 2048

    def __post_init__(self) -> None:
        _choice(self, "method", ("", "progressive", "consistency"))
        _positive(self, "teacher_steps", "pool")
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


#: The sections of :class:`RunConfig`, in order (``preset`` is its name, not a section).
SECTIONS = tuple(f.name for f in fields(RunConfig) if f.name != "preset")


def section_type(name: str) -> type:
    """The dataclass of section ``name`` (e.g. ``"train"`` → :class:`TrainConfig`)."""
    return typing.get_type_hints(RunConfig)[name]
