"""GAN and VAE baselines on undiffuse's data pipeline (issue 5): the models diffusion is compared with.

- :mod:`~undiffuse.baselines.gan`: DCGAN for images (any size ≥ 8; also the mel route's log-mel images, as
  SpecGAN), MLP GAN / PacGAN for 2-D data, non-saturating loss.
- :mod:`~undiffuse.baselines.vae`: convolutional / MLP VAE with the diffusion VLB's decoders
  (discretized Gaussian for 8-bit data), ELBO and IWAE bounds in nats and bits/dim.
- :mod:`~undiffuse.baselines.train`: ``train_baseline`` (steps and/or wall-clock budget, resumable),
  ``sample_baseline`` (sample i depends only on (seed, i)), ``baseline_nll``; ``fit_vectors`` fits one to
  rows in memory (the table and series baselines of an evaluation).
- :mod:`~undiffuse.baselines.run`: ``BaselineConfig``, the run directory through :mod:`undiffuse.runs`
  (safetensors checkpoints), ``load_baseline``.
"""

from undiffuse.baselines.gan import GAN, ConvDecoder, ConvEncoder, build_gan
from undiffuse.baselines.run import KINDS, BaselineConfig, is_baseline_run, load_baseline
from undiffuse.baselines.train import (
    baseline_nll,
    count_params,
    fit_vectors,
    sample_baseline,
    sample_indices,
    train_baseline,
    width_for_params,
)
from undiffuse.baselines.vae import VAE, build_vae

__all__ = [
    "GAN",
    "KINDS",
    "is_baseline_run",
    "VAE",
    "BaselineConfig",
    "ConvDecoder",
    "ConvEncoder",
    "baseline_nll",
    "build_gan",
    "build_vae",
    "count_params",
    "fit_vectors",
    "load_baseline",
    "sample_baseline",
    "sample_indices",
    "train_baseline",
    "width_for_params",
]
