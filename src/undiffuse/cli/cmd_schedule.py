"""``undiffuse schedule``: plot ᾱ_t and log-SNR_t of chosen noise schedules."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("schedule", help="plot ᾱ_t and log-SNR of noise schedules",
                       description="Plot ᾱ_t and log SNR_t = log(ᾱ_t/(1−ᾱ_t)) against t/T for the named schedules.")
    p.add_argument("--names", default="linear,cosine,sigmoid,exponential",
                   help="comma-separated schedule names (linear, exponential, constant, cosine, sigmoid)")
    p.add_argument("--T", type=int, default=1000, help="number of steps T")
    p.add_argument("--out", default="schedules.png", help="output PNG")
    p.set_defaults(func=run)


def plot_schedules(names: list[str], T: int, out: str) -> None:
    """Write a two-panel plot (ᾱ_t, log-SNR_t) of the named schedules to ``out`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from undiffuse.io import atomic_path
    from undiffuse.schedules import make_schedule

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    tau = torch.arange(1, T + 1) / T
    for name in names:
        s = make_schedule(name, T)
        a.plot(tau, s.alpha_bar, label=name)
        b.plot(tau, s.logsnr.clamp(-20, 20), label=name)
    a.set(xlabel="t / T", ylabel="ᾱ_t", title=f"ᾱ_t (T = {T})")
    b.set(xlabel="t / T", ylabel="log SNR_t", title="log-SNR (clamped to ±20)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.names.split(",") if n.strip()]
    plot_schedules(names, args.T, args.out)
    print(f"wrote {args.out}")
    return 0
