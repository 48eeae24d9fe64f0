"""Guidance and x̂_0-post-processing as denoiser combinators: each wraps a denoiser and is one, so every
sampler accepts it unchanged.

- :class:`ClassifierFreeGuidance` — D_w = D_u + w·(D_c − D_u) from one batched call over conditional and
  null-conditioned rows (Ho & Salimans 2022, Eq. 6).
- :class:`ClassifierGuidance` — D' = D + s·σ²·∇_x log p_φ(y | x; σ) with a noise-aware classifier
  (Dhariwal & Nichol 2021, Sec. 4 and Alg. 2, written in σ-space).
- :class:`Thresholded` / :class:`Clipped` — Imagen's dynamic thresholding (Saharia et al. 2022, Sec. 2.3)
  and static clipping of x̂_0 to the data range (Ho et al. 2020), for any sampler.
- :class:`ClassConditionalMixtureOracle` — the exact class-conditional denoiser and the exact noise-aware
  classifier of a Gaussian mixture whose modes carry labels: a test oracle for all of the above.

Since ε̂ = (x − x̂_0)/σ is affine in x̂_0 at fixed x, guiding x̂_0 is the same as guiding ε̂ or v̂.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch

from undiffuse.diffusion.oracles import GaussianMixtureOracle
from undiffuse.diffusion.precond import DenoiserOutput, DenoiserWrapper, append_dims, denoise
from undiffuse.diffusion.reverse import clip_denoised, dynamic_threshold

__all__ = [
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "Thresholded",
    "Clipped",
    "ClassConditionalMixtureOracle",
    "null_condition",
]


def null_condition(cond: dict, num_classes: Optional[int] = None) -> dict:
    """The "no condition" kwargs that match ``cond`` row for row, for the UNet/MLP conventions:

    - ``class_labels`` → the null label ``num_classes`` (needs ``num_classes``);
    - ``context`` → zeros and ``context_mask`` → all False (the UNet's cross-attention then adds nothing);
    - anything else (e.g. ``x_cond`` for super-resolution) is kept: it is part of the input, not of the
      prompt being guided.
    """
    null: dict = {}
    if "class_labels" in cond:
        if num_classes is None:
            raise ValueError("null_condition needs num_classes to build the null label for class_labels")
        null["class_labels"] = torch.full_like(cond["class_labels"], num_classes)
    if "context" in cond:
        ctx = cond["context"]
        null["context"] = torch.zeros_like(ctx)
        null["context_mask"] = torch.zeros(ctx.shape[:2], dtype=torch.bool, device=ctx.device)
    return null


def _expand_null(value: Any, like: Any, batch: int) -> Any:
    """Broadcast one null value to the batch: a scalar fills ``like``; a tensor without the batch dim
    (or with batch 1) is expanded; a full [B, ...] tensor is used as is."""
    if value is None or not isinstance(like, torch.Tensor):
        return value
    if not isinstance(value, torch.Tensor) or value.ndim == 0:
        return torch.full_like(like, value.item() if isinstance(value, torch.Tensor) else value)
    value = value.to(like.device)
    if value.shape == like.shape:
        return value
    if value.shape == like.shape[1:]:
        return value.expand(like.shape)
    if value.shape[0] == 1:
        return value.expand(batch, *value.shape[1:])
    raise ValueError(f"null condition of shape {tuple(value.shape)} does not fit a batch of {tuple(like.shape)}")


def _merge(c: dict, u: dict) -> Optional[dict]:
    """Row-concatenate two kwargs dicts; ``None`` when they cannot share one call (a key in only one
    of them, other than a missing ``context_mask``, which means "attend to every token")."""
    c, u = dict(c), dict(u)
    for a, b in ((c, u), (u, c)):
        if "context_mask" in b and "context_mask" not in a and "context" in a:
            ctx = a["context"]
            a["context_mask"] = torch.ones(ctx.shape[:2], dtype=torch.bool, device=ctx.device)
    if c.keys() != u.keys():
        return None
    out = {}
    for k in c:
        tensors = isinstance(c[k], torch.Tensor) + isinstance(u[k], torch.Tensor)
        if tensors == 2:
            out[k] = torch.cat([c[k], u[k].to(c[k].device)])
        elif tensors == 1:
            return None
        elif c[k] is u[k] or c[k] == u[k]:
            out[k] = c[k]
        else:
            return None
    return out


class ClassifierFreeGuidance(DenoiserWrapper):
    """Classifier-free guidance (Ho & Salimans 2022) as a denoiser:
    D_w(x; σ, c) = (1 − w)·D(x; σ, ∅) + w·D(x; σ, c), i.e. D_u + w·(D_c − D_u).

    Implements Eq. 6 of Ho & Salimans 2022, whose guidance weight is our w − 1 (their ε̃ =
    (1 + w')·ε_c − w'·ε_u). w = 0 is the unconditional model, w = 1 the conditional one — both returned
    from a single branch, so they equal it exactly (and cost one row set) — and w > 1 extrapolates
    (Imagen, GLIDE). ``w`` may be a float or a per-sample tensor [B]; the (1 − w)·D_u + w·D_c form is
    exact at 0 and 1 in floating point either way.

    The two branches run as ONE call over 2B rows: conditional rows first, then the null rows, which
    take ``cond`` with the keys of ``null_cond`` replaced. ``null_cond`` values may be scalars (e.g.
    ``{"class_labels": num_classes}``, the null label), tensors without the batch dimension, or full
    [B, ...] tensors; :func:`null_condition` builds the usual ones. A ``None`` value drops the key from
    the null branch (then, if the keys differ, the branches run as two calls).

    A learned variance (``var_frac``) is taken from the conditional branch, as GLIDE does (at w = 0
    from the unconditional one): the guided x̂_0 has no variance of its own to learn.
    """

    def __init__(self, denoiser: Callable, w: Union[float, torch.Tensor], null_cond: dict) -> None:
        self.denoiser, self.w, self.null_cond = denoiser, w, dict(null_cond)

    def null_branch(self, cond: dict, batch: int) -> dict:
        """``cond`` with the null condition in place of the guided keys."""
        u = dict(cond)
        for k, v in self.null_cond.items():
            if v is None:
                u.pop(k, None)
            elif k in cond:
                u[k] = _expand_null(v, cond[k], batch)
            elif isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == batch:
                u[k] = v
            elif k == "context_mask" and "context" in cond:
                ctx = cond["context"]
                u[k] = _expand_null(v, torch.ones(ctx.shape[:2], dtype=torch.bool, device=ctx.device), batch)
            else:
                raise ValueError(f"null condition {k!r} is not in the call's cond and has no batch dimension")
        return u

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> DenoiserOutput:
        w = self.w
        scalar = not isinstance(w, torch.Tensor) or w.ndim == 0
        if scalar and float(w) == 1.0:
            return denoise(self.denoiser, x, sigma, **cond)
        B = x.shape[0]
        u = self.null_branch(cond, B)
        if scalar and float(w) == 0.0:
            return denoise(self.denoiser, x, sigma, **u)
        both = _merge(cond, u)
        if both is not None:
            out = denoise(self.denoiser, torch.cat([x, x]), torch.cat([sigma, sigma]), **both)
            d_c, d_u = out.denoised[:B], out.denoised[B:]
            var_frac = None if out.var_frac is None else out.var_frac[:B]
        else:
            out_c = denoise(self.denoiser, x, sigma, **cond)
            d_c, var_frac = out_c.denoised, out_c.var_frac
            d_u = denoise(self.denoiser, x, sigma, **u).denoised
        wb = append_dims(w, d_c)
        return DenoiserOutput((1 - wb) * d_u + wb * d_c, var_frac)


class ClassifierGuidance(DenoiserWrapper):
    """Classifier guidance with a noise-aware classifier p_φ(y | x; σ) (Dhariwal & Nichol 2021):
    D'(x; σ, y) = D(x; σ) + s·σ²·∇_x log p_φ(y | x; σ).

    Derivation in σ-space. For x = x_0 + σ·n, Tweedie's formula gives D(x; σ) = x + σ²·∇_x log p(x; σ)
    (Karras et al. 2022, Eq. 3). Conditioning on y adds ∇_x log p(y | x; σ) to the score (Bayes), so the
    exact class-conditional denoiser is D(x; σ | y) = D(x; σ) + σ²·∇_x log p(y | x; σ); the scale s
    sharpens p(y|x) to p(y|x)^s (Dhariwal & Nichol 2021, Sec. 4.3). In their VP notation
    ε̂' = ε̂ − √(1 − ᾱ_t)·s·∇_{x_t} log p_φ(y | x_t) (Sec. 4.2, Alg. 2): with x_t = √ᾱ·x,
    ∇_{x_t} = ∇_x/√ᾱ and ε̂ = (x − D)/σ, this is the same update, because σ·√ᾱ = √(1 − ᾱ).

    ``classifier(x, sigma) -> logits [B, K]`` takes the σ-space state (wrap a classifier trained on VP
    states to receive x/√(1 + σ²)). The label comes from ``cond[label_key]``; unless
    ``denoiser_gets_labels``, the label is removed from the kwargs passed to the (unconditional)
    denoiser. At σ = ∞ the guidance term is dropped (the state holds only noise). ``var_frac`` passes
    through.
    """

    def __init__(
        self,
        denoiser: Callable,
        classifier: Callable,
        scale: float = 1.0,
        label_key: str = "class_labels",
        denoiser_gets_labels: bool = False,
    ) -> None:
        self.denoiser, self.classifier, self.scale = denoiser, classifier, scale
        self.label_key, self.denoiser_gets_labels = label_key, denoiser_gets_labels

    def grad_log_prob(self, x: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """∇_x log p_φ(y | x; σ), evaluated with autograd even inside a sampler's no_grad."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = torch.log_softmax(self.classifier(xg, sigma), dim=-1)
            picked = logp.gather(1, y.long().reshape(-1, 1).to(logp.device)).sum()
            (grad,) = torch.autograd.grad(picked, xg)
        return grad

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> DenoiserOutput:
        if self.label_key not in cond:
            raise ValueError(f"classifier guidance needs the target label as cond[{self.label_key!r}]")
        y = cond[self.label_key]
        dcond = cond if self.denoiser_gets_labels else {k: v for k, v in cond.items() if k != self.label_key}
        out = denoise(self.denoiser, x, sigma, **dcond)
        finite = torch.isfinite(sigma)
        if self.scale == 0 or not bool(finite.any()):
            return out
        s2 = torch.where(finite, sigma.double() ** 2, torch.zeros_like(sigma, dtype=torch.float64))
        grad = self.grad_log_prob(x, sigma, y)
        grad = torch.where(append_dims(finite, x).bool(), grad, torch.zeros_like(grad))  # no NaN from σ = ∞ rows
        return DenoiserOutput(out.denoised + self.scale * append_dims(s2, x) * grad, out.var_frac)


class Thresholded(DenoiserWrapper):
    """x̂_0 → Imagen's dynamic thresholding at ``percentile`` (Saharia et al. 2022, Sec. 2.3): per sample
    s = max(1, quantile_p |x̂_0|), clip to [−s, s], divide by s. Wrap a guided denoiser with it for high
    guidance weights; uses :func:`undiffuse.diffusion.reverse.dynamic_threshold`."""

    def __init__(self, denoiser: Callable, percentile: float = 0.995) -> None:
        if not 0 < percentile <= 1:
            raise ValueError(f"percentile must lie in (0, 1], got {percentile}")
        self.denoiser, self.percentile = denoiser, percentile

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> DenoiserOutput:
        out = denoise(self.denoiser, x, sigma, **cond)
        return DenoiserOutput(dynamic_threshold(out.denoised, self.percentile), out.var_frac)


class Clipped(DenoiserWrapper):
    """x̂_0 → clip(x̂_0, lo, hi): static thresholding to the data range (Ho et al. 2020; Saharia et al.
    2022, Sec. 2.3); uses :func:`undiffuse.diffusion.reverse.clip_denoised`."""

    def __init__(self, denoiser: Callable, lo: float = -1.0, hi: float = 1.0) -> None:
        if not lo < hi:
            raise ValueError(f"need lo < hi, got [{lo}, {hi}]")
        self.denoiser, self.lo, self.hi = denoiser, lo, hi

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> DenoiserOutput:
        out = denoise(self.denoiser, x, sigma, **cond)
        return DenoiserOutput(clip_denoised(out.denoised, self.lo, self.hi), out.var_frac)


class ClassConditionalMixtureOracle:
    """A Gaussian mixture Σ_k w_k N(μ_k, s²·I) whose mode k carries the class ``labels[k]``: the exact
    denoiser D*(x; σ | y) (the mixture restricted to class y's modes, renormalised) for
    ``class_labels=y``, the full mixture's D*(x; σ) for the null label ``num_classes`` or no label, and
    the exact noise-aware classifier log p(y | x; σ) = log Σ_{k: label k = y} r_k(x; σ) with
    responsibilities r_k ∝ w_k·N(x; μ_k, (s² + σ²)·I). The conditional model that label dropout trains
    toward (Ho & Salimans 2022), known in closed form.
    """

    def __init__(self, means: torch.Tensor, s: float, labels, weights: Optional[torch.Tensor] = None) -> None:
        self.full = GaussianMixtureOracle(means, s, weights)
        self.labels = torch.as_tensor(labels, dtype=torch.long)  # [K]
        if self.labels.shape != (self.full.means.shape[0],):
            raise ValueError("labels must give one class per mode")
        self.num_classes = int(self.labels.max()) + 1

    def restricted(self, y: int) -> GaussianMixtureOracle:
        """The mixture of class y's modes (weights renormalised by the softmax)."""
        mask = self.labels == y
        if not bool(mask.any()):
            raise ValueError(f"class {y} has no modes")
        return GaussianMixtureOracle(self.full.means, self.full.s, torch.where(mask, self.full.weights, 0.0))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: Optional[torch.Tensor] = None,
                 **cond) -> torch.Tensor:
        if class_labels is None:
            return self.full(x, sigma)
        out = torch.empty_like(x)
        for y in class_labels.unique().tolist():
            rows = class_labels == y
            oracle = self.full if y == self.num_classes else self.restricted(y)
            out[rows] = oracle(x[rows], sigma[rows])
        return out

    def classifier(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Exact log p(y | x; σ) [B, num_classes], differentiable in x."""
        mu = self.full.means.to(x.device)  # [K, D]
        xd = x.double().reshape(x.shape[0], -1)  # [B, D]
        var = self.full.s**2 + sigma.double().reshape(-1, 1) ** 2  # [B, 1]
        d2 = ((xd[:, None, :] - mu[None]) ** 2).sum(-1)  # [B, K]
        log_r = torch.log_softmax(self.full.weights.to(x.device).log()[None] - 0.5 * d2 / var, dim=1)
        onehot = self.labels.to(x.device)[None, :] == torch.arange(self.num_classes, device=x.device)[:, None]
        masked = torch.where(onehot[None], log_r[:, None, :], torch.full_like(log_r[:, None, :], -torch.inf))
        return torch.logsumexp(masked, dim=-1).to(x.dtype)  # [B, C]
