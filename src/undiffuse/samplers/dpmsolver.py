"""DPM-Solver++ multistep samplers (Lu et al. 2022, "DPM-Solver++", Alg. 2) in σ-space.

The probability-flow ODE dx/dσ = (x − D(x; σ))/σ has, with λ = −log σ (half the log-SNR) and
h = λ_t − λ_s, the exact solution (variation of constants; Lu et al. 2022, Eq. 9 with α = 1):

    x_t = (σ_t/σ_s)·x_s + σ_t·∫_{λ_s}^{λ_t} e^λ·D(λ) dλ
        = (σ_t/σ_s)·x_s + Σ_k h^{k+1}·φ_{k+1}(−h)·D^{(k)}(λ_s),

with φ_1(z) = (e^z − 1)/z, φ_{k+1}(z) = (φ_k(z) − 1/k!)/z. Keeping k = 0 gives the first-order step
x_t = D + (σ_t/σ_s)(x_s − D), which is DDIM (η = 0); the multistep solvers estimate the λ-derivatives
of D from the previous steps' x̂_0 (kept in local variables, not in a scheduler object).

- ``sample_dpmpp_2m``: DPM-Solver++(2M), exactly Alg. 2 of the paper:
  D_d = (1 + 1/(2r))·D_i − 1/(2r)·D_{i−1}, r = h_{i−1}/h_i; x_t = (σ_t/σ_s)·x_s − expm1(−h)·D_d.
- ``sample_dpmpp_3m``: the third-order multistep with the exact Taylor weights h·φ_2(−h) on the first
  and 2h·φ_3(−h) on the second divided difference (see :func:`_third_order_terms`).

Both start with a first-order step (and 3M's second step is 2M), and the last step to σ = 0 is
x = x̂_0 (h = ∞). NFE = number of steps. σ_0 = ∞ (zero terminal SNR) is allowed: that step is the
first-order DDIM step x_1 = D + σ_1·n, and its x̂_0 is not used as history (its λ is −∞).

Lower-order final steps (``lower_order_final=True``, the default): step i of n uses at most order
n − i — the last step first order, the one before at most second (:func:`final_order_cap`). Grids that
end at a small σ_1 take their largest λ-steps last (σ = 0.38 → 0.01 on DDPM's 10-step uniform grid,
h = 3.6), where a multistep method's extrapolated derivatives are amplified by the ratios h/h_prev; the
authors' reference code (LuChengTHU/dpm-solver, ``lower_order_final``) and diffusers'
``DPMSolverMultistepScheduler`` lower the final orders for this reason, but only on grids of < 15
steps. Here the rule holds on every grid, as diffusers' ``UniPCMultistepScheduler`` does: on the
25-Gaussian oracle (linear schedule, T = 1000) 3M's 20-step error on the uniform grid is 1.56 with
the < 15 rule and 0.079 without the limit, and near σ = 0 x̂_0 barely changes with λ, so the two
lower-order steps cost nothing measurable at many steps (benchmarks/README.md, "Sampler defaults").
(diffusers' and k-diffusion's 3M weight the second divided difference by hφ_3(−h) instead of the
Taylor weight 2hφ_3(−h) used here, which makes theirs second order in practice; tests/test_samplers.py
measures both.)
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from undiffuse.samplers.common import Generators, denoiser_output, emit

__all__ = ["final_order_cap", "first_order_step", "sample_dpmpp_2m", "sample_dpmpp_3m"]


def first_order_step(
    x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float
) -> torch.Tensor:
    """x_t = x̂_0 + (σ_t/σ_s)·(x_s − x̂_0): DDIM(η = 0) = DPM-Solver++(1) (Lu et al. 2022, Eq. 10).

    At σ_s = ∞ the state holds the unit noise n, and the step is x̂_0 + σ_t·n.
    """
    if math.isinf(sigma):
        return denoised + sigma_next * x
    return denoised + (sigma_next / sigma) * (x - denoised)


def final_order_cap(i: int, n: int, order: int) -> int:
    """The highest order step i (0-based) of n may use with lower-order final steps: min(order, n − i),
    i.e. the last step first order and the one before at most second (diffusers' UniPC rule)."""
    return min(order, n - i)


def _third_order_terms(d0, d1, d2, h0: float, h1: float, h: float) -> torch.Tensor:
    """h²φ_2·D' + h³φ_3·D'' from three x̂_0 at λ_s, λ_s − h0, λ_s − h0 − h1 (newest first).

    In units of h, r0 = h0/h, r1 = h1/h; the Newton divided differences give
    D1 = f[0,−r0] + r0·f[0,−r0,−r0−r1] ≈ h·D' and D2 = f[0,−r0,−r0−r1] ≈ h²·D''/2, and
    ∫_0^h e^{−(h−τ)}(τ/h)^k dτ gives the weights hφ_2(−h) on D1 and 2hφ_3(−h) = 1 − 2φ_2(−h) on D2.
    """
    r0, r1 = h0 / h, h1 / h
    d1_0 = (d0 - d1) / r0
    d1_1 = (d1 - d2) / r1
    D2 = (d1_0 - d1_1) / (r0 + r1)
    D1 = d1_0 + r0 * D2
    phi2 = (h + math.expm1(-h)) / h**2  # φ_2(−h)
    return (h * phi2) * D1 + (1 - 2 * phi2) * D2


def _dpmpp_multistep(denoiser, x, sigmas, order, lower_order_final, callback, cond) -> torch.Tensor:
    sig = [float(s) for s in sigmas]
    n = len(sig) - 1
    history: list[tuple[float, torch.Tensor]] = []  # (λ, x̂_0) of earlier steps, newest last
    for i in range(n):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoiser_output(denoiser, x, sigma, cond).denoised
        if sigma_next == 0:
            x = denoised
        else:
            x_next = first_order_step(x, denoised, sigma, sigma_next)
            if not math.isinf(sigma):
                lam, h = -math.log(sigma), math.log(sigma / sigma_next)
                cap = final_order_cap(i, n, order) if lower_order_final else order
                k = min(cap - 1, len(history))
                if k == 1:
                    r = (lam - history[-1][0]) / h
                    x_next = x_next - math.expm1(-h) * (denoised - history[-1][1]) / (2 * r)
                elif k == 2:
                    (lam1, d1), (lam2, d2) = history[-1], history[-2]
                    x_next = x_next + _third_order_terms(denoised, d1, d2, lam - lam1, lam1 - lam2, h)
                history = (history + [(lam, denoised)])[-(order - 1) :] if order > 1 else []
            x = x_next
        emit(callback, i, x, sigmas[i], sigmas[i + 1], denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: Generators = None,
    callback: Optional[Callable] = None,
    cond: Optional[dict] = None,
    lower_order_final: bool = True,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): second-order multistep in data prediction on λ = −log σ.

    Deterministic (``generator`` is accepted for the common interface and unused). NFE = steps.
    ``lower_order_final``: the last step is first order (see the module docstring; on a grid ending at
    σ = 0 that step is x̂_0 either way).
    """
    return _dpmpp_multistep(denoiser, x, sigmas, 2, lower_order_final, callback, cond or {})


@torch.no_grad()
def sample_dpmpp_3m(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: Generators = None,
    callback: Optional[Callable] = None,
    cond: Optional[dict] = None,
    lower_order_final: bool = True,
) -> torch.Tensor:
    """DPM-Solver++(3M): third-order multistep in data prediction (Lu et al. 2022, Sec. 4 and App. B).

    Steps 1 and 2 are first and second order (2M); from step 3 on the update is
    x_t = x̂_0 + (σ_t/σ_s)(x_s − x̂_0) + hφ_2(−h)·D1 + 2hφ_3(−h)·D2. Deterministic; NFE = steps.
    ``lower_order_final``: the last two steps are first and second order.
    """
    return _dpmpp_multistep(denoiser, x, sigmas, 3, lower_order_final, callback, cond or {})
