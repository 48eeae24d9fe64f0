"""A residual MLP denoiser for low-dimensional data (2-D toys, tabular rows).

``MLP(x_in, c_noise, class_labels=None) -> Tensor`` with x_in [B, dim]. The noise level enters as in
the DDPM U-Net (Ho et al. 2020): a sinusoidal embedding of ``c_noise`` through a two-layer MLP, added
(after a per-block projection) inside every residual block. Class labels add an embedding to it;
index ``num_classes`` is the classifier-free-guidance null label (Ho & Salimans 2022).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from undiffuse.nn.embeddings import TimestepEmbedding, zero_

__all__ = ["MLPConfig", "MLP"]


@dataclass(frozen=True)
class MLPConfig:
    """The MLP's own hyperparameters (see :class:`MLP`); data sizes come at build time
    (:meth:`MLP.from_config`). ``undiffuse.config.ModelConfig`` inherits these fields."""

    hidden: int = 256
    depth: int = 4
    emb_dim: int = 128
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hidden", "depth", "emb_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} = {getattr(self, name)} must be > 0 — set a positive value")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout = {self.dropout} must lie in [0, 1) — e.g. 0.1")


class _Block(nn.Module):
    """h + Linear(drop(SiLU(Linear(SiLU(LN(h) + W·emb)))))."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.emb = nn.Linear(hidden, hidden)
        self.linear1 = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = zero_(nn.Linear(hidden, hidden))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        r = F.silu(self.norm(h) + self.emb(emb))
        r = self.linear2(self.dropout(F.silu(self.linear1(r))))
        return h + r


class MLP(nn.Module):
    """Residual MLP ``net(x_in [B, dim], c_noise [B], class_labels=None) -> [B, dim]``.

    Args:
        dim: data dimension (2 for the toys).
        hidden: width of the residual stream.
        depth: number of residual blocks.
        emb_dim: width of the sinusoidal noise embedding.
        num_classes: enables ``class_labels`` (LongTensor [B]; index ``num_classes`` = null label,
            used when no label is passed).
        dropout: dropout inside the blocks.
        out_dim: output width (default ``dim``; 2·dim for a learned variance).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 4,
        emb_dim: int = 128,
        num_classes: Optional[int] = None,
        dropout: float = 0.0,
        out_dim: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.dim, self.num_classes = dim, num_classes
        self.time_embed = TimestepEmbedding(emb_dim, hidden)
        self.label_embed = nn.Embedding(num_classes + 1, hidden) if num_classes is not None else None
        self.linear_in = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden)
        self.linear_out = nn.Linear(hidden, dim if out_dim is None else out_dim)

    @classmethod
    def from_config(cls, cfg: Any, **data_sizes: Any) -> "MLP":
        """An MLP with the :class:`MLPConfig` fields of ``cfg`` and the data-derived ``data_sizes``
        (dim, num_classes, out_dim)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(MLPConfig)}, **data_sizes)

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor, *, class_labels: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """x [B, dim], c_noise [B] → [B, out_dim]."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLP expects x of shape [B, {self.dim}], got {tuple(x.shape)}")
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(x.shape[0])
        emb = self.time_embed(c_noise)  # [B, hidden]
        if self.label_embed is not None:
            if class_labels is None:
                class_labels = torch.full_like(c_noise, self.num_classes, dtype=torch.long)
            emb = emb + self.label_embed(class_labels)
        elif class_labels is not None:
            raise ValueError("class_labels given but the MLP was built with num_classes=None")
        emb = F.silu(emb).to(x.dtype)
        h = self.linear_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.linear_out(F.silu(self.norm_out(h)))
