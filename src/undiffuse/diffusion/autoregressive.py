"""The autoregressive baseline of the masked process: p(x) = Π_ℓ p_θ(x^ℓ | x^{<ℓ}), the left-to-right special case
of unmasking one token at a time (an any-order model with one fixed order).

The causal network reads [m, x^0, …, x^{L−2}] — the mask token m = V serves as the start symbol, so the
baseline has exactly the embedding table of the bidirectional denoiser — and its output at position ℓ is
p_θ(x^ℓ | x^{<ℓ}). The loss is the exact negative log-likelihood per token (nats); no bound is involved.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CausalLM", "shift_right", "sequence_nll"]


def shift_right(x: torch.Tensor, start_id: int) -> torch.Tensor:
    """[start, x^0, …, x^{L−2}]: the causal network's input for predicting x."""
    return torch.cat([torch.full_like(x[:, :1], start_id), x[:, :-1]], dim=1)


def sequence_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """−log softmax(logits)[x^ℓ] per position [B, L] (nats) from logits [B, L, V]: −log p_θ(x^ℓ | x^{<ℓ}) for the
    causal network, the per-position cross-entropy of the masked model
    (:func:`undiffuse.diffusion.masked.masked_cross_entropy`)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -logp.gather(-1, x.long().unsqueeze(-1)).squeeze(-1)


class CausalLM(nn.Module):
    """A causal network ``net(tokens [B, L]) → logits [B, L, V]`` as p_θ(x^ℓ | x^{<ℓ}); :meth:`example_loss` is the
    trainer's per-example loss (exact NLL in nats per token). ``schedule`` is carried only so that the trainer
    can draw its (unused) times like for every other model."""

    process = "autoregressive"

    def __init__(self, net: nn.Module, schedule, vocab: int) -> None:
        super().__init__()
        self.net, self.schedule, self.vocab = net, schedule, int(vocab)

    @property
    def start_id(self) -> int:
        return self.vocab

    def with_net(self, net: nn.Module) -> "CausalLM":
        return CausalLM(net, self.schedule, self.vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)

    def token_nll(self, x: torch.Tensor) -> torch.Tensor:
        """−log p_θ(x^ℓ | x^{<ℓ}) [B, L] (nats)."""
        return sequence_nll(self.net(shift_right(x.long(), self.start_id)), x)

    def example_loss(self, schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, **cond) -> torch.Tensor:
        """Exact NLL per token [B] (nats); t and noise are not used."""
        return self.token_nll(x0).mean(dim=1)
