"""A transformer over token sequences: bidirectional (the masked-diffusion denoiser x_θ(z_t)) or causal (the
autoregressive baseline), otherwise the same network, so the two have the same size.

``Transformer(tokens [B, L] int64, pos=None, mask=None) -> logits [B, L, V]``. Tokens are ids in 0..V, where V is the mask token
(the denoiser's input) or the start symbol (the causal model's first input); the output covers the V real
tokens only. Pre-LayerNorm blocks (Xiong et al. 2020) of multi-head self-attention through
``F.scaled_dot_product_attention`` (``is_causal`` for the baseline) and a GELU MLP of width 4·hidden; positions
enter as rotary embeddings of queries and keys (RoFormer, Su et al. 2021, as in MDLM's network), up to ``max_len``.
``pos`` [L] gives each input its position id (default 0..L−1) and ``mask`` [L, L] (bool, True = may attend) which
keys each query sees: block diffusion (BD3-LM, Arriola et al. 2025) feeds [z_t ; x] with positions [0..L−1, 0..L−1]
and its block mask (:func:`undiffuse.diffusion.masked.bd3_mask`) through the same network.
Measured: with learned absolute positions the bidirectional model stayed at the unigram loss for 250 steps on
the KJV (attention had to learn "look at my neighbour" from absolute positions, while the causal model reads its
previous character off its own input); rotary positions make relative offsets available from the first step.

No time input: for the absorbing process the number of masks tells the network how far along t is, and MDLM
(Sahoo et al. 2024, Sec. 3.2.3) found time conditioning unnecessary; without it x_θ depends on z_t alone, which
the sampler's cache relies on (a step that unmasks nothing changes nothing), and the bidirectional and causal
models have exactly the same parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TransformerConfig", "Transformer"]


@dataclass(frozen=True)
class TransformerConfig:
    """The transformer's own hyperparameters. ``undiffuse.config.ModelConfig`` already carries fields of these
    names (``hidden``, ``depth``, ``dropout`` from the MLP, ``num_heads`` from the UNet), so
    ``--set model.hidden=256`` sizes the transformer too; data sizes (vocabulary, length) come at build time."""

    hidden: int = 256
    depth: int = 4
    num_heads: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.hidden % (2 * self.num_heads):
            raise ValueError(f"hidden = {self.hidden} does not split into num_heads = {self.num_heads} heads of even "
                             "width (rotary embeddings rotate pairs) — change one")


def rotary(length: int, dim: int, base: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [length, dim/2] of the rotary angles ℓ·base^(−2i/dim) (Su et al. 2021, Eq. 15)."""
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    ang = torch.arange(length, dtype=torch.float64)[:, None] * inv[None]
    return ang.cos().float(), ang.sin().float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x_{2i}, x_{2i+1}) of x [..., L, dim] by the angles of each position."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor],
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # fmt: skip
        B, L, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, *rot), rotate(k, *rot)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=self.causal and mask is None)  # fmt: skip
        h = h + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, d)))
        return h + self.drop(self.mlp(self.ln2(h)))


class Transformer(nn.Module):
    """See the module docstring. ``vocab`` real tokens (ids 0..vocab−1) plus the mask/start id ``vocab``."""

    def __init__(self, vocab: int, max_len: int, hidden: int = 256, depth: int = 4, num_heads: int = 4,
                 dropout: float = 0.0, causal: bool = False) -> None:  # fmt: skip
        super().__init__()
        TransformerConfig(hidden, depth, num_heads, dropout)  # validates
        self.vocab, self.max_len, self.causal = vocab, max_len, causal
        self.tok = nn.Embedding(vocab + 1, hidden)
        nn.init.normal_(self.tok.weight, std=0.02)
        cos, sin = rotary(max_len, hidden // num_heads)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.blocks = nn.ModuleList(Block(hidden, num_heads, dropout, causal) for _ in range(depth))
        self.ln = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, vocab)

    @classmethod
    def from_config(cls, cfg: Any, vocab: int, max_len: int, causal: bool) -> "Transformer":
        """From any config with the :class:`TransformerConfig` fields (e.g. ``undiffuse.config.ModelConfig``)."""
        return cls(vocab, max_len, cfg.hidden, cfg.depth, cfg.num_heads, cfg.dropout, causal)

    def forward(self, tokens: torch.Tensor, pos: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # fmt: skip
        """Logits [B, L, V]; ``pos`` [L] position ids (default 0..L−1), ``mask`` [L, L] bool (True = attend)."""
        L = tokens.shape[1]
        top = L if pos is None else int(pos.max()) + 1
        if top > self.max_len:
            raise ValueError(f"position {top - 1} lies beyond the network's {self.max_len} positions")
        h = self.tok(tokens.long())
        rot = (self.cos[:L], self.sin[:L]) if pos is None else (self.cos[pos], self.sin[pos])
        if mask is not None:
            mask = mask.to(h.device)
        for block in self.blocks:
            h = block(h, rot, mask)
        return self.head(self.ln(h))
