"""A diffusers ``UNet2DModel`` (saved with ``save_pretrained``) as an undiffuse denoiser.

Conventions bridged here, and nowhere else:

| diffusers | undiffuse |
|---|---|
| timestep index ``t_d`` = 0..T−1, ``alphas_cumprod[t_d]`` | step t = t_d + 1 (1..T), ``schedule.alpha_bar[t − 1]`` |
| model input x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε | σ-space x = x_t/√ᾱ_t = x_0 + σ_t·ε, σ_t² = (1−ᾱ_t)/ᾱ_t |
| ``prediction_type`` epsilon / v_prediction / sample | ``parameterization`` eps / v / x0 |
| ``variance_type`` learned_range (ν ∈ [−1, 1]) | ``learned_variance=True`` (ν = (ν_raw + 1)/2) |

:class:`DiffusersPrecond` feeds the network ``t(σ) − 1`` (t(σ) interpolates log σ over the table, so
it is the exact integer index at every grid σ_t and continuous in between) instead of undiffuse's
``1000·t/T`` noise input, so the network sees exactly what diffusers' schedulers give it.

Only safetensors weights are read (``safetensors.torch.load_file``): a directory holding only a
pickled ``diffusion_pytorch_model.bin`` is refused, because unpickling runs code. The network is
built with ``UNet2DModel.from_config`` and nothing is downloaded (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from undiffuse.diffusion.precond import Precond, append_dims
from undiffuse.errors import CheckpointError, ConfigError, UserError, brief
from undiffuse.schedules.discrete import Schedule

__all__ = [
    "DenoiserAsEpsModel",
    "DiffusersPrecond",
    "DiffusersUNet",
    "MissingExtraError",
    "diffusers_betas",
    "load_diffusers_unet",
    "require_diffusers",
    "schedule_from_scheduler_config",
]

PathLike = Union[str, os.PathLike]
WEIGHTS = "diffusion_pytorch_model.safetensors"
PICKLED = "diffusion_pytorch_model.bin"
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
#: scheduler-config keys that define the training chain (everything else configures sampling).
SCHEDULE_KEYS = (
    "num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas",
    "prediction_type", "rescale_betas_zero_snr", "variance_type",
)  # fmt: skip
#: diffusers' DDPMScheduler defaults, used for keys that neither the config nor the overrides give.
DEFAULTS: dict[str, Any] = dict(
    num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
    trained_betas=None, prediction_type="epsilon", rescale_betas_zero_snr=False, variance_type="fixed_small",
)  # fmt: skip


class MissingExtraError(UserError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


def require_diffusers():
    """Import and return the ``diffusers`` module, or raise :class:`MissingExtraError`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub from here
    try:
        import diffusers
    except ImportError as err:
        raise MissingExtraError(
            "the diffusers adapter and benchmarks need diffusers — pip install 'undiffuse[bench]'"
        ) from err
    return diffusers


# --- the noise schedule -------------------------------------------------------------------------
def diffusers_betas(
    num_train_timesteps: int = 1000,
    beta_schedule: str = "linear",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    trained_betas=None,
    rescale_betas_zero_snr: bool = False,
) -> torch.Tensor:
    """β_1..β_T exactly as diffusers' DDPM/DDIM schedulers build them (float32 values, returned as
    float64 so the model sees the chain it was trained on; ᾱ is then accumulated in float64).

    ``squaredcos_cap_v2`` is the cosine schedule of Nichol & Dhariwal 2021 (Eq. 17, s = 0.008, β ≤ 0.999);
    ``rescale_betas_zero_snr`` is Lin et al. 2024, Alg. 1 (ᾱ_T = 0: needs v- or x0-prediction).
    """
    T = int(num_train_timesteps)
    if trained_betas is not None:
        betas = torch.tensor(list(trained_betas), dtype=torch.float32)
    elif beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        f = lambda tau: math.cos((tau + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor(
            [min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float32
        )
    else:
        raise ConfigError(
            f"unsupported beta_schedule {beta_schedule!r} — use one of {', '.join(BETA_SCHEDULES)}"
        )
    if rescale_betas_zero_snr:
        betas = _rescale_zero_terminal_snr(betas)
    return betas.to(torch.float64)


def _rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale √ᾱ_t so that √ᾱ_T = 0 and √ᾱ_1 is kept (Lin et al. 2024, Alg. 1), as diffusers does."""
    s = torch.cumprod(1.0 - betas, 0).sqrt()
    s0, sT = s[0].clone(), s[-1].clone()
    s = (s - sT) * (s0 / (s0 - sT))
    ab = s**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err} — pass a valid scheduler_config.json") from err


def _scheduler_config_dict(scheduler_config, model_dir: Optional[Path]) -> dict:
    """The scheduler config as a dict: given (dict / file / directory), or found beside the model
    (``<dir>/scheduler_config.json`` or a pipeline's ``<dir>/../scheduler/scheduler_config.json``)."""
    if isinstance(scheduler_config, dict):
        return dict(scheduler_config)
    if scheduler_config is not None:
        p = Path(scheduler_config)
        if p.is_dir():
            p = p / "scheduler_config.json"
        if not p.is_file():
            raise ConfigError(
                f"scheduler config {p} not found — pass the scheduler_config.json a scheduler saved"
            )
        return _read_json(p)
    if model_dir is not None:
        for cand in (
            model_dir / "scheduler_config.json",
            model_dir.parent / "scheduler" / "scheduler_config.json",
        ):
            if cand.is_file():
                return _read_json(cand)
    return {}


def schedule_from_scheduler_config(
    scheduler_config: Union[dict, PathLike, None] = None, **overrides
) -> tuple[Schedule, str, bool]:
    """(Schedule, parameterization, learned_variance) from a diffusers DDPM/DDIM scheduler config.

    ``scheduler_config`` is a dict, a ``scheduler_config.json`` or its directory, or None (diffusers'
    DDPMScheduler defaults: linear β from 1e-4 to 0.02 over T = 1000, ε-prediction). ``overrides``
    use diffusers' key names (``num_train_timesteps``, ``beta_schedule``, ``beta_start``, ``beta_end``,
    ``trained_betas``, ``prediction_type``, ``rescale_betas_zero_snr``, ``variance_type``) and win
    over the file.
    """
    cfg = _scheduler_config_dict(scheduler_config, None)
    return _schedule_from_dict(cfg, overrides)


def _schedule_from_dict(cfg: dict, overrides: dict) -> tuple[Schedule, str, bool]:
    unknown = sorted(set(overrides) - set(SCHEDULE_KEYS))
    if unknown:
        raise ConfigError(f"unknown schedule option(s) {', '.join(unknown)} — use {', '.join(SCHEDULE_KEYS)}")
    if cfg.get("_class_name") == "ScoreSdeVeScheduler" or "sigma_max" in cfg and "beta_start" not in cfg:
        raise ConfigError("only VP (DDPM/DDIM-style β) schedulers can be adapted, not a VE σ scheduler")
    c = {k: overrides.get(k, cfg.get(k, DEFAULTS[k])) for k in SCHEDULE_KEYS}
    if c["prediction_type"] not in PREDICTION_TYPES:
        raise ConfigError(
            f"unsupported prediction_type {c['prediction_type']!r} — use one of {', '.join(PREDICTION_TYPES)}"
        )
    if c["variance_type"] == "learned":
        raise ConfigError(
            "variance_type 'learned' (a raw log-variance) is not supported — use 'learned_range'"
        )
    betas = diffusers_betas(
        c["num_train_timesteps"], c["beta_schedule"], c["beta_start"], c["beta_end"],
        c["trained_betas"], bool(c["rescale_betas_zero_snr"]),
    )  # fmt: skip
    schedule = Schedule(betas, allow_zero_terminal_snr=bool(c["rescale_betas_zero_snr"]))
    return schedule, PREDICTION_TYPES[c["prediction_type"]], c["variance_type"] == "learned_range"


# --- the network --------------------------------------------------------------------------------
class DiffusersUNet(nn.Module):
    """A diffusers ``UNet2DModel`` as an undiffuse network ``net(x_t, t_d, class_labels=None)``.

    Here the noise input is diffusers' timestep index t_d ∈ [0, T−1] (a float tensor [B]): pair it
    with :class:`DiffusersPrecond`, which supplies t_d instead of 1000·t/T.
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor, *, class_labels: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        return self.unet(x, c_noise, class_labels=class_labels, return_dict=False)[0]


class DiffusersPrecond(Precond):
    """:class:`Precond` for a network trained with diffusers' timestep convention: the network's
    noise input is the index t_d = t(σ) − 1 (exact at the table's σ_t, interpolated in log σ between)."""

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        if self.schedule is None:
            raise ValueError("a diffusers-convention network needs the discrete schedule it was trained on")
        return self.schedule.sigma_to_t(sigma.to(torch.float64)) - 1


class DenoiserAsEpsModel:
    """The reverse adapter: an undiffuse denoiser as a diffusers-style ε model ``model(x_t, t_d)``, so
    that diffusers' schedulers (DDIM, DPMSolverMultistep, UniPC, …) drive an undiffuse network.

    x = x_t·√(1+σ²) with σ = σ_{t_d+1} of ``schedule``, D = denoiser(x, σ), ε̂ = (x − D)/σ; works for
    any parameterization (give the scheduler ``prediction_type="epsilon"`` and ``trained_betas`` =
    ``schedule.betas``). ``sigma`` (optional) evaluates at that σ instead of the table's σ at t_d: the
    scheduler's own σ where its steps fall between table steps (Karras σ, linspace spacing). ``nfe``
    counts calls."""

    def __init__(self, denoiser, schedule: Schedule) -> None:
        self.denoiser, self.schedule, self.nfe = denoiser, schedule, 0

    def __call__(self, x_t: torch.Tensor, t_d, sigma=None) -> torch.Tensor:
        self.nfe += 1
        if sigma is None:
            sigma = self.schedule.sigmas[torch.as_tensor(t_d, device="cpu").long().reshape(-1)]
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).to(x_t.device).expand(x_t.shape[0])  # [B]
        if torch.isinf(sigma).any():
            raise ValueError("σ = ∞ (zero terminal SNR) has no ε-form; use an undiffuse sampler")
        s = append_dims(sigma, x_t)
        x = x_t * torch.sqrt(1 + s**2)
        return (x - self.denoiser(x, sigma)) / s


def _inside(model_dir: Path, name: str, index: Path) -> Path:
    """``model_dir / name``, refused unless it stays inside ``model_dir`` (an index may not name ``../x``,
    an absolute path, or a link out of the folder)."""
    root = model_dir.resolve()
    path = (model_dir / name).resolve()
    if not path.is_relative_to(root) or path == root:
        raise CheckpointError(f"{index} names a shard outside the model folder ({brief(name)}) — use a model saved "
                              "with save_pretrained(), whose shards lie beside the index")  # fmt: skip
    return path


def _load_weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    single, index = model_dir / WEIGHTS, model_dir / (WEIGHTS + ".index.json")
    if single.is_file():
        return load_file(str(single), device="cpu")
    if index.is_file():  # sharded safetensors
        weight_map = _read_json(index).get("weight_map", {})
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no weight_map object — re-save the model with save_pretrained()")
        state: dict = {}
        for shard in sorted(set(map(str, weight_map.values()))):
            state.update(load_file(str(_inside(model_dir, shard, index)), device="cpu"))
        return state
    if (model_dir / PICKLED).is_file() or (model_dir / (PICKLED + ".index.json")).is_file():
        raise CheckpointError(
            f"{model_dir} holds only a pickled {PICKLED}, which undiffuse never unpickles — "
            "re-save it with save_pretrained(..., safe_serialization=True)"
        )
    raise CheckpointError(f"no {WEIGHTS} in {model_dir} — save the model with save_pretrained()")


def load_diffusers_unet(
    path: PathLike,
    scheduler_config: Union[dict, PathLike, None] = None,
    *,
    device: Union[str, torch.device] = "cpu",
    dtype: Optional[torch.dtype] = None,
    **schedule_overrides,
) -> tuple[DiffusersPrecond, Schedule]:
    """Load a diffusers ``UNet2DModel`` directory as ``(denoiser, schedule)``.

    Args:
        path: the directory ``UNet2DModel.save_pretrained`` wrote (``config.json`` +
            ``diffusion_pytorch_model.safetensors``, or sharded safetensors).
        scheduler_config: a DDPM/DDIM scheduler config (dict, json file or its directory); when None,
            ``<path>/scheduler_config.json`` or a pipeline's ``<path>/../scheduler/`` is used if present,
            else diffusers' DDPMScheduler defaults.
        device / dtype: where and in which dtype to put the network.
        schedule_overrides: diffusers scheduler keys (``beta_schedule="scaled_linear"``,
            ``prediction_type="v_prediction"``, …) that win over the config.
    Returns:
        A :class:`DiffusersPrecond` (in eval mode) and its float64 :class:`Schedule`; sample with any
        undiffuse sampler on e.g. ``make_sigmas(schedule, n, "trailing")``.
    """
    model_dir = Path(path)
    if not (model_dir / "config.json").is_file():
        raise CheckpointError(
            f"no config.json in {model_dir} — pass a directory written by save_pretrained()"
        )
    config = _read_json(model_dir / "config.json")
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise CheckpointError(f"{model_dir} holds a {config['_class_name']}; only UNet2DModel can be adapted")
    if config.get("time_embedding_type", "positional") == "fourier":
        raise CheckpointError(
            "a UNet2DModel with Fourier (σ) time embedding is a VE model — only VP models can be adapted"
        )
    state = _load_weights(model_dir)  # refuses pickles before anything else is built
    schedule, param, learned_var = _schedule_from_dict(
        _scheduler_config_dict(scheduler_config, model_dir), schedule_overrides
    )
    diffusers = require_diffusers()
    unet = diffusers.UNet2DModel.from_config(config)
    try:
        unet.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"the weights in {model_dir} do not fit its config.json: {str(err)[:300]}"
        ) from err
    if learned_var and unet.config.out_channels != 2 * unet.config.in_channels:
        raise ConfigError("variance_type 'learned_range' needs out_channels = 2·in_channels")
    unet = unet.to(device=device, dtype=dtype).eval()
    denoiser = DiffusersPrecond(DiffusersUNet(unet), param, schedule, learned_variance=learned_var)
    return denoiser, schedule
