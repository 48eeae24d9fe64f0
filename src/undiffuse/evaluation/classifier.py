"""A small in-domain CNN classifier: its accuracy checks class fidelity, its features give a Fréchet distance.

On CPU the FID Inception network runs at a few images per second, too slow inside training loops, and its
ImageNet features describe 28×28 grey images poorly. The common substitute (e.g. the "FID with an
MNIST classifier" of many diffusion/GAN papers) is a classifier trained on the dataset itself: the
Fréchet distance between its penultimate-layer features of samples and of real images (Heusel et al.
2017, Eq. 6, with another feature map), and its predictions for class-conditional accuracy.

Checkpoints are one ``.safetensors`` file whose header metadata holds the JSON config (no pickle), written
atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, safe_open, save_file

from ..io import atomic_write
from ..progress import progress
from .frechet import frechet_distance_from_features

FORMAT = "undiffuse.SmallClassifier/1"


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of a SmallClassifier: input channels, class count, conv widths, feature size."""

    in_channels: int = 1
    num_classes: int = 10
    widths: tuple[int, int, int] = (16, 32, 64)
    feature_dim: int = 128
    pool: int = 3  # spatial size after adaptive average pooling

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClassifierConfig:
        d = json.loads(text)
        d["widths"] = tuple(d["widths"])
        return cls(**d)


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class SmallClassifier(nn.Module):
    """conv32 → pool → conv64 → pool → conv64 → adaptive-avg-pool 2×2 → fc128 (features) → fc classes.

    ~90k parameters for 1 channel and 10 classes; accepts any H×W ≥ 4 (a 2×2 max-pool is skipped when the
    map is smaller than 4 pixels). Inputs are images in [−1, 1], [N, C, H, W].
    """

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config or ClassifierConfig()
        w1, w2, w3 = self.config.widths
        self.conv1, self.conv2, self.conv3 = _conv(self.config.in_channels, w1), _conv(w1, w2), _conv(w2, w3)
        self.pool = nn.AdaptiveAvgPool2d(self.config.pool)
        self.fc = nn.Linear(w3 * self.config.pool**2, self.config.feature_dim)
        self.head = nn.Linear(self.config.feature_dim, self.config.num_classes)

    @staticmethod
    def _down(h: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(h, 2) if min(h.shape[-2:]) >= 4 else h

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features [N, feature_dim] (post-ReLU) of images x [N, C, H, W]."""
        h = self._down(self.conv1(x))
        h = self._down(self.conv2(h))
        h = self.pool(self.conv3(h)).flatten(1)  # [N, w3·pool²]
        return F.relu(self.fc(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [N, num_classes]."""
        return self.head(self.embed(x))

    @torch.no_grad()
    def _batched(self, fn, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            with progress(total=len(x), desc="classifier features", unit="img") as bar:
                out = []
                for i in range(0, len(x), batch_size):
                    out.append(fn(x[i : i + batch_size].to(device, torch.float32)).cpu())
                    bar.update(len(out[-1]))
        finally:
            self.train(was_training)
        return torch.cat(out)

    def features(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Penultimate features [N, feature_dim] float64 (CPU) of images in [−1, 1], eval mode, batched."""
        return self._batched(self.embed, x, batch_size).double()

    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Predicted class indices [N] (int64, CPU)."""
        return self._batched(self.forward, x, batch_size).argmax(dim=1)

    @property
    def extractor_id(self) -> str:
        """Content id for caches: config plus a hash of the weights (different trainings never collide)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return f"undiffuse-classifier:{self.config.to_json()}:{digest.hexdigest()[:16]}"

    def save(self, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
        """Write weights + JSON config (in the safetensors header) to ``path`` atomically."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"format": FORMAT, "config": self.config.to_json(), **(metadata or {})}
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> SmallClassifier:
        """Rebuild a classifier saved by ``save`` (eval mode)."""
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} checkpoint (format={meta.get('format')!r})")
        model = cls(ClassifierConfig.from_json(meta["config"]))
        model.load_state_dict(load_file(str(path), device="cpu"))
        return model.to(device).eval()


def accuracy(model: SmallClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of correct predictions of model on images x [N, C, H, W] with labels y [N]."""
    return float((model.predict(x) == y.cpu()).double().mean())


def train_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 5,
    batch: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    config: ClassifierConfig | None = None,
) -> SmallClassifier:
    """Train a SmallClassifier with AdamW and a one-cycle learning rate on images x in [−1, 1].

    Args:
        x: images [N, C, H, W] in [−1, 1].
        y: integer labels [N] in 0..num_classes−1.
        epochs, batch, lr, weight_decay: optimisation settings.
        seed: seeds the initialisation and the shuffling (deterministic on CPU).
        device: where to train.
        config: network shape (default: C from x, classes from max(y) + 1).
    Returns:
        The trained model in eval mode.
    """
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(
            f"x must be [N, C, H, W] with one label each, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    config = config or ClassifierConfig(in_channels=x.shape[1], num_classes=int(y.max()) + 1)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallClassifier(config)
    device = torch.device(device)
    model.to(device).train()
    steps_per_epoch = math.ceil(len(x) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    x, y = x.float(), y.long()
    with progress(total=epochs * steps_per_epoch, desc="training the classifier", unit="step") as bar:
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for i in range(steps_per_epoch):
                idx = order[i * batch : (i + 1) * batch]
                loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
    return model.eval()


def classifier_frechet(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of classifier features (Heusel et al. Eq. 6)."""
    return frechet_distance_from_features(features_a, features_b)
