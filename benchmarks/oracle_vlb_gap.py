"""Gap between the variational bound and the true NLL for the Gaussian oracle (issue 2's closing note).

Data x_0 ~ N(0.3, 0.5²) (one dimension), the exact denoiser E[x_0|x_t], linear schedule with DDPM's
range scaled by 1000/T, T = 100, 1000, 4000, and the reverse variances fixed-small (β̃_t), fixed-large
(β_t) and optimal (β̃_t + c1²·Var[x_0|x_t], the oracle's learned variance). The measured gap is the
Monte Carlo mean over x_0 ~ N(m, s²) and one draw of each x_t of L(x_0) + log q(x_0), with L the
library's bound over all T steps (losses.vlb.vlb_full, continuous decoder); beside it the closed
form E[L] − H(q(x_0)) of undiffuse.diffusion.analytic. Units: bits/dim, continuous.

    python benchmarks/oracle_vlb_gap.py [--scale 1.0] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import torch

from undiffuse.diffusion.analytic import gaussian_expected_vlb, gaussian_nll, gaussian_prior_gap
from undiffuse.diffusion.oracles import GaussianOracle
from undiffuse.losses import vlb_full
from undiffuse.schedules import make_schedule

M, S = 0.3, 0.5
STEPS = (100, 1000, 4000)
SAMPLES = {100: 600_000, 1000: 150_000, 4000: 40_000}  # x_0 draws per (T, variance)
VAR_TYPES = ("fixed_small", "fixed_large", "optimal")
LN2 = math.log(2.0)
OUT = Path(__file__).parent / "results" / "oracle_vlb_gap.md"


def measured_gap(T: int, var_type: str, n: int, seed: int) -> tuple[float, float]:
    """Mean and standard error of L(x_0) + log q(x_0) in bits/dim, over n draws of x_0."""
    sch = make_schedule("linear", T, scale_to_T=True)
    optimal = var_type == "optimal"
    oracle = GaussianOracle(M, S, schedule=sch if optimal else None, optimal_variance=optimal)
    g = torch.Generator().manual_seed(seed)
    batch = max(1, min(n, 10_000_000 // T))  # keeps the [B, T] table of terms near 80 MB
    gaps = []
    for start in range(0, n, batch):
        x0 = M + S * torch.randn(min(batch, n - start), 1, generator=g, dtype=torch.float64)
        res = vlb_full(oracle, sch, x0, var_type="learned" if optimal else var_type, decoder="continuous", generator=g)
        gaps.append((res.total + oracle.log_density(x0)) / LN2)  # nats → bits, one dimension
    gap = torch.cat(gaps)
    return gap.mean().item(), gap.std().item() / math.sqrt(n)


def closed_form_gap(T: int, var_type: str) -> float:
    sch = make_schedule("linear", T, scale_to_T=True)
    return (gaussian_expected_vlb(sch, M, S, var_type)["total"] - gaussian_nll(M, S)) / LN2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the number of x_0 draws")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for these sizes)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()
    rows = []
    for T in STEPS:
        prior = gaussian_prior_gap(make_schedule("linear", T, scale_to_T=True), M, S) / LN2
        for k, vt in enumerate(VAR_TYPES):
            n = max(100, int(SAMPLES[T] * args.scale))
            t0 = time.time()
            mean, se = measured_gap(T, vt, n, seed=1000 * T + k)
            exact = closed_form_gap(T, vt)
            rows.append((T, vt, mean, se, exact, (mean - exact) / se, n, time.time() - t0, prior))
            print(f"T={T:5d} {vt:12s} measured {mean:+.6f} ± {se:.6f}  closed form {exact:+.6f}  "
                  f"z={(mean - exact) / se:+.2f}  n={n}  {time.time() - t0:.1f}s", flush=True)
    text = render(rows, time.time() - t_start, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


def render(rows, seconds: float, threads: int) -> str:
    lines = [
        "# VLB − true NLL for the Gaussian oracle N(0.3, 0.5²)",
        "",
        "Produced by `python benchmarks/oracle_vlb_gap.py`. Data: one dimension, x_0 ~ N(0.3, 0.5²); denoiser: the",
        "exact E[x_0|x_t] (`GaussianOracle`); schedule: `make_schedule(\"linear\", T, scale_to_T=True)` (β from",
        "1e-4·1000/T to 0.02·1000/T). The bound is `vlb_full` over all T steps with the **continuous** (Gaussian)",
        "decoder; units are **bits/dim, continuous** (the true NLL, the entropy of N(0.3, 0.5²), is "
        f"{gaussian_nll(M, S) / LN2:.4f} bits/dim;",
        "the gaps are differences of continuous log-densities). Measured gap: mean over n draws of x_0 (one draw of each x_t",
        "per x_0) of L(x_0) + log₂ q(x_0), ± one standard error. Closed form: E[L] − H(q(x_0)) from",
        "`undiffuse.diffusion.analytic.gaussian_expected_vlb` and `gaussian_nll`. z = (measured − closed)/SE.",
        "",
        "| T | Σ_θ | measured gap (bits/dim) | ± SE | closed-form gap (bits/dim) | z | n (x_0 draws) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for T, vt, mean, se, exact, z, n, _, _ in rows:
        closed = f"{exact:.6f}" if abs(exact) >= 1e-3 else f"{exact:.2e}"
        lines.append(f"| {T} | {vt} | {mean:.6f} | {se:.6f} | {closed} | {z:+.2f} | {n:,} |")
    lines += [
        "",
        f"Largest |z| = {max(abs(r[5]) for r in rows):.2f}. A closed-form gap is resolved from zero (gap > 5 SE) for: "
        + (", ".join(f"{r[1]} at T = {r[0]}" for r in rows if r[4] > 5 * r[3]) or "none")
        + "; the others are below the Monte Carlo resolution at these n, and the measurement only bounds them.",
        "With the optimal variance every reverse step is the true q(x_{t−1}|x_t), so the gap is exactly",
        "KL(q(x_T) ‖ N(0, 1)):",
        "",
        "| T | KL(q(x_T) ‖ N(0, 1)) (bits/dim) |",
        "|---:|---:|",
    ]
    for T in sorted({r[0] for r in rows}):
        prior = next(r[8] for r in rows if r[0] == T)
        lines.append(f"| {T} | {prior:.3e} |")
    lines += [
        "",
        f"Device: CPU ({platform.processor() or platform.machine()}), {threads} torch thread(s); torch {torch.__version__}; "
        f"Python {platform.python_version()}; total {seconds:.0f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
