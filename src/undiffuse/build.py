"""The one place where a configuration becomes objects: schedule, network, denoiser.

Everything a trained model needs besides its weights is the :class:`~undiffuse.config.RunConfig` and a
:class:`DataInfo` (the shape and kind of one example, classes, whether the data is 8-bit); both are
saved with every checkpoint, so :func:`build_denoiser` rebuilds the same architecture on load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from torch import nn

from undiffuse.config import DiffusionConfig, ModelConfig, RunConfig
from undiffuse.diffusion.consistency import ConsistencyFunction
from undiffuse.diffusion.precond import Precond, allows_zero_terminal_snr
from undiffuse.errors import ConfigError
from undiffuse.schedules.discrete import Schedule, ScheduleError, make_schedule

TEXT_DIM = 384  # all-MiniLM-L6-v2 token embeddings (undiffuse.text.TextEncoder.dim)
TEXT_ARCHS = ("transformer", "causal-transformer")  # text: the masked-diffusion denoiser and the AR baseline

__all__ = [
    "DataInfo",
    "build_schedule",
    "build_network",
    "build_denoiser",
    "architecture_signature",
    "resolve_arch",
]


@dataclass(frozen=True)
class DataInfo:
    """What a model must know about its data: ``kind`` "image" (shape (C, H, W), values in [-1, 1])
    or "vector" (shape (D,), data units); classes; ``discrete_8bit`` (the 256-level grid, so NLL is in
    discrete bits/dim)."""

    name: str
    kind: str
    shape: tuple[int, ...]
    num_classes: Optional[int] = None
    class_names: Optional[tuple[str, ...]] = None
    discrete_8bit: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dataset(cls, ds: Any) -> "DataInfo":
        """From an :class:`undiffuse.data.Dataset`."""
        names = tuple(ds.class_names) if getattr(ds, "class_names", None) else None
        return cls(ds.name, ds.kind, tuple(int(s) for s in ds.shape), ds.num_classes, names, bool(ds.discrete_8bit),
                   dict(getattr(ds, "extra", None) or {}))

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "DataInfo":
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        if d.get("class_names") is not None:
            d["class_names"] = tuple(d["class_names"])
        return cls(**d)

    @property
    def dims(self) -> int:
        """Number of dimensions of one example (for bits/dim)."""
        n = 1
        for s in self.shape:
            n *= s
        return n


def build_schedule(cfg: DiffusionConfig) -> Schedule:
    """:func:`undiffuse.schedules.make_schedule` from ``diffusion.schedule``, ``T``, ``schedule_kwargs``."""
    try:
        return make_schedule(
            cfg.schedule, cfg.T, **dict(cfg.schedule_kwargs), allow_zero_terminal_snr=allows_zero_terminal_snr(cfg.parameterization)
        )
    except (ScheduleError, TypeError, KeyError) as e:
        raise ConfigError(f"invalid noise schedule: {e} — fix diffusion.schedule, diffusion.T or diffusion.schedule_kwargs") from e


def resolve_arch(cfg: ModelConfig, info: DataInfo) -> str:
    """The default network of the data's kind (:data:`undiffuse.data.kinds.KINDS`: "unet" for images,
    "mlp" for vectors), or what ``model.arch`` says, if it fits the data."""
    from undiffuse.data.kinds import kind_of

    arch = cfg.arch if cfg.arch != "auto" else kind_of(info.kind).arch
    if (arch in TEXT_ARCHS) != (info.kind == "text"):
        raise ConfigError(f"model.arch = {arch} does not fit {info.kind} data — use model.arch=auto"
                          + (" (or causal-transformer for the autoregressive baseline)" if info.kind == "text" else ""))
    want = 3 if arch == "unet" else 1
    if len(info.shape) != want:
        raise ConfigError(f"model.arch = {arch} does not fit data of shape {info.shape} — use model.arch=auto")
    return arch


def build_network(cfg: ModelConfig, info: DataInfo, learned_variance: bool = False) -> nn.Module:
    """The raw network ``F(x_in, c_noise, **cond)``: a UNet for images, an MLP for vectors.

    Output channels double with ``learned_variance``; ``model.class_cond`` enables class labels,
    ``model.text_cond`` cross-attention to 384-d token embeddings, ``model.sr_from`` the ``x_cond`` input.
    """
    from undiffuse.nn import MLP, UNet

    arch = resolve_arch(cfg, info)
    num_classes = info.num_classes if cfg.class_cond else None
    if cfg.class_cond and not num_classes and info.kind != "table":  # a table is class-conditional on a categorical target
        raise ConfigError(f"model.class_cond needs labelled data, and {info.name} has none — set model.class_cond=false")
    if cfg.text_cond and not info.num_classes:
        raise ConfigError(f"model.text_cond captions labelled data, and {info.name} has none — set model.text_cond=false")
    if (cfg.text_cond or cfg.sr_from) and arch != "unet":
        raise ConfigError("model.text_cond / model.sr_from need the UNet (image data) — unset them for vector data")
    mult = 2 if learned_variance else 1
    if arch == "unet":
        c, h, _ = info.shape
        if cfg.sr_from is not None and not cfg.sr_from < h:
            raise ConfigError(f"model.sr_from = {cfg.sr_from} must be below the image size {h} — e.g. {h // 2}")
        return UNet.from_config(cfg, in_channels=c, out_channels=c * mult, image_size=h, num_classes=num_classes,
                                cond_dim=TEXT_DIM if cfg.text_cond else None, extra_in_channels=c if cfg.sr_from else 0)  # fmt: skip
    if arch == "seq":  # dilated 1-D convolutions over a series window (undiffuse.nn.seqnet)
        return _seqnet(cfg, info, num_classes, mult)
    if arch == "wavenet":  # DiffWave's dilated residual 1-D convolutions over a waveform (undiffuse.nn.wavenet)
        from undiffuse.nn.wavenet import WaveNet, WaveNetConfig

        if mult != 1:
            raise ConfigError("model.arch = wavenet has no learned variance — set diffusion.learned_variance=false")
        if cfg.mel_cond:  # a diffusion vocoder: the clip's log-mel spectrogram is the local condition
            from undiffuse.data.audio import VOCODER_MEL

            spec = VOCODER_MEL(info.extra["audio"]["rate"])
            return WaveNet(WaveNetConfig.from_model(cfg, n_mels=spec.n_mels, hop=spec.hop), num_classes)
        return WaveNet(WaveNetConfig.from_model(cfg), num_classes)
    if arch in TEXT_ARCHS:  # undiffuse.nn.transformer: bidirectional (masked diffusion) or causal (AR baseline)
        from undiffuse.nn.transformer import Transformer

        text = info.extra["text"]
        try:
            return Transformer.from_config(cfg, len(text["vocab"]), text["length"], causal=arch == "causal-transformer")
        except ValueError as e:
            raise ConfigError(f"model.{e}") from e
    (d,) = info.shape
    return MLP.from_config(cfg, dim=d, num_classes=num_classes, out_dim=d * mult)


def _seqnet(cfg: ModelConfig, info: DataInfo, num_classes: Optional[int], mult: int) -> nn.Module:
    from undiffuse.nn.seqnet import SeqNet

    series = info.extra.get("series")
    if series is None or mult != 1:
        raise ConfigError("model.arch = seq needs series: data and no learned variance — use model.arch=auto")
    return SeqNet(series["length"], len(series["channels"]), cfg.hidden, cfg.depth, cfg.emb_dim, num_classes, cfg.dropout,
                  observed=cfg.obs_cond)


def build_denoiser(cfg: RunConfig, info: DataInfo, schedule: Optional[Schedule] = None) -> Precond:
    """The network wrapped as a denoiser D(x; σ) for ``diffusion.parameterization`` (see
    :class:`undiffuse.diffusion.Precond`)."""
    d = cfg.diffusion
    if info.kind == "text":  # the "masked" process (or its autoregressive baseline): no σ-space, no Gaussian schedule
        return _text_model(cfg, info)
    schedule = schedule if schedule is not None else build_schedule(d)
    net = build_network(cfg.model, info, d.learned_variance)
    if info.kind == "table":  # the "mixed" process: Gaussian numbers + multinomial categories (TabDDPM)
        return _mixed(net, d, info, schedule)
    try:
        if cfg.model.obs_cond:  # CSDI: the network reads the observed values (undiffuse.diffusion.conditional)
            from undiffuse.diffusion.conditional import ObservedPrecond

            series = info.extra["series"]
            precond = ObservedPrecond(net, series["length"], len(series["channels"]), d.parameterization, schedule, d.sigma_data)
        else:
            precond = Precond(net, d.parameterization, schedule, d.learned_variance, d.sigma_data)
    except ValueError as e:
        raise ConfigError(f"{e} — change diffusion.parameterization or diffusion.schedule") from e
    if cfg.distill.method == "consistency":  # a consistency student: f_θ with f(x, σ_min) = x (Song et al. 2023)
        return ConsistencyFunction(precond, sigma_min=float(schedule.sigmas[0]))
    return precond


def _mixed(net: nn.Module, d: DiffusionConfig, info: DataInfo, schedule: Schedule) -> Precond:
    from undiffuse.data.tables import categories
    from undiffuse.diffusion.mixed import MixedPrecond

    if d.learned_variance:
        raise ConfigError("tables are sampled with the multinomial sampler, which has no learned variance — set diffusion.learned_variance=false")
    try:
        return MixedPrecond(net, categories(info.extra["table"]), d.parameterization, schedule, d.sigma_data)
    except ValueError as e:
        raise ConfigError(f"{e} — change diffusion.parameterization or diffusion.schedule") from e


def _text_model(cfg: RunConfig, info: DataInfo) -> nn.Module:
    """MDLM's x_θ (:class:`undiffuse.diffusion.masked.MaskedDenoiser`) or the causal baseline
    (:class:`undiffuse.diffusion.autoregressive.CausalLM`) around the transformer."""
    from undiffuse.diffusion.autoregressive import CausalLM
    from undiffuse.diffusion.masked import MASK_SCHEDULES, MaskedDenoiser, MaskingSchedule

    d = cfg.diffusion
    if d.schedule not in MASK_SCHEDULES or d.learned_variance:
        raise ConfigError(f"text uses the masked process: diffusion.schedule = {d.schedule} must be one of "
                          f"{', '.join(MASK_SCHEDULES)}, without a learned variance — fix diffusion.schedule")  # fmt: skip
    if cfg.train.sample_every > 0:  # the trainer's preview is an image grid of a Gaussian sampler
        raise ConfigError("text runs write no preview grids during training — set train.sample_every=0 and use "
                          "undiffuse sample RUN --out x.txt")  # fmt: skip
    net = build_network(cfg.model, info)
    vocab = len(info.extra["text"]["vocab"])
    schedule = MaskingSchedule(d.schedule, d.T)
    if resolve_arch(cfg.model, info) == "causal-transformer":
        return CausalLM(net, schedule, vocab)  # (diffusion.block_size does not apply: it is block size 1 already)
    window = info.extra["text"]["length"]
    if d.block_size and window % d.block_size:
        raise ConfigError(f"diffusion.block_size = {d.block_size} does not divide data.window = {window} — choose a "
                          "divisor (or 0 for one block, MDLM)")  # fmt: skip
    return MaskedDenoiser(net, schedule, vocab, d.block_size, d.mask_range)


def architecture_signature(cfg: RunConfig, info: DataInfo) -> str:
    """A short hash of everything that fixes the weights' layout (network config, data shape, classes,
    learned variance); checkpoints of another architecture are refused by comparing it."""
    arch = resolve_arch(cfg.model, info)
    relevant = {
        "arch": arch,
        "model": asdict(cfg.model),
        "shape": list(info.shape),
        "num_classes": info.num_classes if cfg.model.class_cond else None,
        "learned_variance": cfg.diffusion.learned_variance,
    }
    for k in ("text_cond", "sr_from", "mel_cond", "obs_cond"):  # fields added later: at their defaults, old signatures still hold
        if not relevant["model"].get(k):
            relevant["model"].pop(k, None)
    if arch == "mlp":  # UNet-only fields do not change an MLP
        relevant["model"] = {k: relevant["model"][k] for k in ("hidden", "depth", "emb_dim", "class_cond")}
    if arch in TEXT_ARCHS:  # the transformer's layout: its size and the vocabulary
        relevant["model"] = {k: relevant["model"][k] for k in ("hidden", "depth", "num_heads")}
        relevant["vocab"] = info.extra["text"]["vocab"]
    if info.kind == "table":  # the one-hot block sizes fix which outputs are logits
        from undiffuse.data.tables import categories

        relevant["categories"] = list(categories(info.extra["table"]))
    blob = json.dumps(relevant, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
