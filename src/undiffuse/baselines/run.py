"""A baseline's run directory through :mod:`undiffuse.runs`: its configuration, checkpoints and loading.

A GAN/VAE run has the layout of every run (lock, ``config.json`` with its kind, atomic checkpoints with
the last two kept, the checkpoint's own configuration ruling over an edited ``config.json``); its
checkpoint holds ``model.safetensors``, ``train_state.safetensors`` (optimiser moments and the RNG state
as tensors) and ``state.json`` (kind, config, step, seconds, the optimisers' hyper-parameters).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from undiffuse.baselines.gan import GAN, build_gan
from undiffuse.baselines.vae import VAE, build_vae
from undiffuse.errors import CheckpointError, brief
from undiffuse.runs import (
    Checkpoint,
    config_diff,
    load_checkpoint,
    load_optimizer_tensors,
    load_weights_into,
    optimizer_tensors,
    read_config_json,
    read_newest,
    refuse_config_edit,
    run_kind,
    save_checkpoint,
)

__all__ = ["KINDS", "network_kind", "is_baseline_run", "BaselineConfig", "save_baseline", "open_baseline",
           "resume_baseline", "load_baseline"]

PathLike = Union[str, os.PathLike]
KINDS = ("gan", "vae")
#: data kinds the baselines model as another kind's networks: a log-mel "mel" example is a [1, 32, 32] image in [-1, 1]
_AS_KIND = {"mel": "image"}


def network_kind(data_kind: str) -> str:
    """The data kind whose networks, optimiser and batch size a baseline uses for ``data_kind`` ("mel" → "image")."""
    return _AS_KIND.get(data_kind, data_kind)


def is_baseline_run(run_dir: PathLike) -> bool:
    """Whether ``run_dir`` holds a GAN or VAE baseline run (its kind, read by :func:`undiffuse.runs.run_kind`)."""
    return run_kind(run_dir) in KINDS


@dataclass(frozen=True)
class BaselineConfig:
    """Everything that defines a baseline run (saved as ``config.json``).

    Attributes:
        kind: "gan" or "vae".
        data: dataset spec for :func:`undiffuse.data.load_dataset` (e.g. "fashion-mnist", "toy:8gaussians").
        data_kind / data_shape: "image" with (C, H, W) or "vector" with (D,); "mel" (log-mel images, written as
            audio) with (1, H, W) uses the image networks (:func:`network_kind`).
        likelihood: the VAE decoder, "discrete" for 8-bit data and "continuous" otherwise.
        model: keyword arguments of :func:`build_gan` / :func:`build_vae` (width, z_dim, pack, ...).
        lr / betas / batch_size / seed: Adam and the minibatch stream.
        image_size: resize images to this size (None: native).
    """

    kind: str
    data: str
    data_kind: str
    data_shape: tuple[int, ...]
    likelihood: str = "discrete"
    model: dict = field(default_factory=dict)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = 128
    seed: int = 0
    image_size: Optional[int] = None

    def build(self) -> Union[GAN, VAE]:
        """The networks this config describes (freshly initialised)."""
        if self.kind == "gan":
            return build_gan(network_kind(self.data_kind), self.data_shape, **self.model)
        return build_vae(network_kind(self.data_kind), self.data_shape, self.likelihood, **self.model)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict, where: str = "config") -> "BaselineConfig":
        """From :meth:`to_json` output; CheckpointError (naming ``where``) if it is not one."""
        try:
            d = dict(d)
            d["data_shape"], d["betas"] = tuple(d["data_shape"]), tuple(d["betas"])
            cfg = cls(**d)
        except (TypeError, KeyError, ValueError) as e:
            raise CheckpointError(f"{where} holds no valid baseline configuration ({brief(str(e))}) — restore it") from e
        if cfg.kind not in KINDS:
            raise CheckpointError(f"{where} is a {brief(cfg.kind)} configuration, not a GAN/VAE baseline — restore it")
        return cfg


def save_baseline(out: Path, model: nn.Module, opts: dict, gen: torch.Generator, step: int, seconds: float,
          cfg: BaselineConfig) -> None:  # fmt: skip
    """One checkpoint of a baseline run (:func:`undiffuse.runs.save_checkpoint`): weights, optimiser moments + RNG state."""
    tensors, groups = optimizer_tensors(opts)
    tensors["rng"] = gen.get_state()
    state = {"kind": cfg.kind, "config": cfg.to_json(), "seconds": seconds, "param_groups": groups}
    save_checkpoint(out / "checkpoints", step, {"model": model.state_dict(), "train_state": tensors}, None, state,
                    keep_last=2, metadata={"step": str(step)})  # fmt: skip


def open_baseline(out: Path, files: tuple[str, ...]) -> tuple[BaselineConfig, Checkpoint]:
    """The latest checkpoint (``files`` read) and its configuration — which rules: a config.json that
    contradicts it is refused."""
    json_cfg = read_config_json(out)

    def read(path: Path):
        ckpt = load_checkpoint(path, weights=files, optimizer=False)
        cfg = BaselineConfig.from_json(ckpt.state["config"], f"checkpoint {path}")
        if json_cfg is not None:
            given = BaselineConfig.from_json(json_cfg.get("config", {}), str(out / "config.json"))
            refuse_config_edit(out, path, config_diff(given.to_json(), cfg.to_json()))
        return cfg, ckpt

    return read_newest(out, None, read)


def resume_baseline(out: Path, model: nn.Module, opts: dict, gen: torch.Generator, device) -> tuple[int, float]:
    _, ckpt = open_baseline(out, ("model", "train_state"))
    model.load_state_dict({k: v.to(device) for k, v in ckpt.weights["model"].items()})
    tensors = dict(ckpt.weights["train_state"])
    gen.set_state(tensors.pop("rng"))
    load_optimizer_tensors(opts, tensors, ckpt.state["param_groups"], device)
    return ckpt.step, float(ckpt.state["seconds"])


def load_baseline(
    out_dir: PathLike, device: Union[str, torch.device] = "cpu"
) -> tuple[Union[GAN, VAE], BaselineConfig]:
    """Rebuild a trained baseline from its latest checkpoint (eval mode); CheckpointError (one line) for
    a missing, corrupt or non-finite checkpoint or a config.json that contradicts it."""
    cfg, ckpt = open_baseline(Path(out_dir), ("model",))
    model = cfg.build()
    load_weights_into(model, ckpt.weights["model"], ckpt.path)
    return model.to(device).eval(), cfg
