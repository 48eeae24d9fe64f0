"""UniPC: unified predictor-corrector (Zhao et al. 2023, "UniPC"), B(h) = expm1(h) ("bh2"), data prediction.

Notation as in :mod:`undiffuse.samplers.dpmsolver`: λ = −log σ, h = λ_t − λ_s, and the exact step
x_t = (σ_t/σ_s)·x_s + hφ_1(−h)·D_s + Σ_{k≥1} h^{k+1}φ_{k+1}(−h)·D^{(k)}(λ_s).

With earlier x̂_0 at λ_{s_m} = λ_s + r_m·h and divided differences D1_m = (D_{s_m} − D_s)/r_m, the
unified update (Zhao et al. 2023, Eqs. 7–8 and Alg. 1, with hh = −h for data prediction) is

    x_t = x_s^{(1)} − B(h)·Σ_m ρ_m·D1_m,   x_s^{(1)} = x̂_0 + (σ_t/σ_s)(x_s − x̂_0) (DDIM),

with ρ solving R·ρ = b, R_{km} = r_m^{k−1}, b_k = k!·(φ_k-series)/B(h) = −k!·h·φ_{k+1}(−h)/B(h), which
matches the Taylor terms up to D^{(p)}. UniP-p (predictor) uses the p − 1 previous x̂_0; UniC-p
(corrector) adds the x̂_0 evaluated at the predicted x_t (r = 1) and raises the order by one. The
corrector reuses that evaluation as the next step's x̂_0, so NFE = steps. With B(h) = expm1(−h) the
one-term solutions are ρ = ½ (the paper's simplified UniP-2 and UniC-1).

The last step to σ = 0 is x = x̂_0 (h = ∞), and no corrector runs after it. A first step from σ = ∞
is the DDIM step x̂_0 + σ_1·n and starts no history (its λ is −∞); the corrector is skipped for it.

Lower-order final steps (``lower_order_final=True``, the default; as diffusers'
``UniPCMultistepScheduler(lower_order_final=True)``): step i of n predicts with order
min(order, n − i) — the last step first order, the one before at most second — and its corrector
uses the same points (:func:`~undiffuse.samplers.dpmsolver.final_order_cap`). Without it UniPC-3
extrapolates a second divided difference over the last, largest λ-step of a grid ending at a small σ_1.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from undiffuse.samplers.common import Generators, denoiser_output, emit
from undiffuse.samplers.dpmsolver import final_order_cap, first_order_step

__all__ = ["sample_unipc", "unipc_rhos"]


def unipc_rhos(rks: list[float], h: float, n: int) -> list[float]:
    """ρ_1..ρ_n solving Σ_m ρ_m·r_m^{k−1} = b_k (k = 1..n) for B(h) = expm1(−h) (Zhao et al. 2023, Eq. 8).

    ``rks`` are the ratios r_m = (λ_{s_m} − λ_s)/h of the points used (the first n). ρ = [½] when
    n = 1 (the paper's bh2 choice; b_1 = φ_2(−h)/φ_1(−h) → ½ as h → 0, so the order is unchanged).
    """
    if n == 1:
        return [0.5]
    hh = -h
    B_h = math.expm1(hh)
    h_phi_k = math.expm1(hh) / hh - 1  # φ_1(−h) − 1 = −h·φ_2(−h)
    factorial, b = 1, []
    for k in range(1, n + 1):
        b.append(h_phi_k * factorial / B_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial  # −h·φ_{k+2}(−h)
    R = torch.tensor([[r ** (k - 1) for r in rks[:n]] for k in range(1, n + 1)], dtype=torch.float64)
    return torch.linalg.solve(R, torch.tensor(b, dtype=torch.float64)).tolist()


def _unified_update(x, history, sigma, sigma_next, model_t=None) -> torch.Tensor:
    """One UniP step from (x at σ_s, ``history`` = [(λ, x̂_0)], newest = at σ_s) to σ_t, or the
    UniC correction of that step when ``model_t`` = x̂_0 at the predicted x_t is given."""
    lam_s, d_s = history[-1]
    h = math.log(sigma / sigma_next)
    rks, D1s = [], []
    for lam_m, d_m in reversed(history[:-1]):
        r = (lam_m - lam_s) / h
        rks.append(r)
        D1s.append((d_m - d_s) / r)
    if model_t is not None:
        rks.append(1.0)
        D1s.append(model_t - d_s)
    x_t = first_order_step(x, d_s, sigma, sigma_next)
    if not D1s:
        return x_t
    rhos = unipc_rhos(rks, h, len(D1s))
    B_h = math.expm1(-h)
    return x_t - B_h * sum(rho * d1 for rho, d1 in zip(rhos, D1s))


@torch.no_grad()
def sample_unipc(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    order: int = 2,
    corrector: bool = True,
    lower_order_final: bool = True,
    generator: Generators = None,
    callback: Optional[Callable] = None,
    cond: Optional[dict] = None,
) -> torch.Tensor:
    """UniPC-``order`` (Zhao et al. 2023, Alg. 2 with B(h) = expm1(h), data prediction): UniP-p
    predictor (p = min(order, steps so far)) and UniC-p corrector (order p + 1), NFE = steps.

    Deterministic (``generator`` accepted for the common interface). ``corrector=False`` gives the
    plain UniP multistep solver (UniP-2 ≈ DPM-Solver++(2M) with a different second-order weight).
    ``lower_order_final``: step i of n predicts with order ≤ n − i (see the module docstring).
    """
    cond = cond or {}
    sig = [float(s) for s in sigmas]
    n = len(sig) - 1
    history: list[tuple[float, torch.Tensor]] = []  # (λ, x̂_0) of the last `order` steps, newest last
    used, x_last, sigma_last = None, None, None  # the last prediction's points, its start state and σ
    for i in range(n):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoiser_output(denoiser, x, sigma, cond).denoised
        if corrector and used is not None and sigma_next != 0:
            # UniC: redo the last step with x̂_0 at the predicted x (the corrected x is not re-evaluated)
            x = _unified_update(x_last, used, sigma_last, sigma, model_t=denoised)
        if math.isinf(sigma):
            x_next, used = first_order_step(x, denoised, sigma, sigma_next), None
        else:
            history = (history + [(-math.log(sigma), denoised)])[-order:]
            p = final_order_cap(i, n, order) if lower_order_final else order
            used, x_last, sigma_last = history[-p:], x, sigma
            x_next = denoised if sigma_next == 0 else _unified_update(x, used, sigma, sigma_next)
        x = x_next
        emit(callback, i, x, sigmas[i], sigmas[i + 1], denoised)
    return x
