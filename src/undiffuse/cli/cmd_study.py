"""``undiffuse study``: diffusion vs GAN vs VAE (and diffusers' recipe) on the toys and Fashion-MNIST, resumable."""

from __future__ import annotations

import argparse

from undiffuse.cli.common import positive_int


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{v} must be > 0")
    return v


def add_parser(sub) -> None:
    p = sub.add_parser(
        "study", help="the diffusion vs GAN vs VAE study (resumable)",
        description="Train and evaluate diffusion, GAN and VAE models with the same CPU budget on toy:25gaussians and "
        "toy:8gaussians (and, on Fashion-MNIST, also diffusers' own UNet2DModel + DDPMScheduler recipe), over several "
        "seeds. Each (dataset, model, seed) writes OUT/<unit>.json when done and is skipped on the next call; "
        "OUT/summary.md holds the tables. Budgets are CPU seconds of one torch thread.",
    )  # fmt: skip
    p.add_argument("--only", choices=("toys", "fmnist"), default=None, help="run only the toys or only Fashion-MNIST")
    p.add_argument("--data", default=None, help="only the units of this dataset (e.g. toy:8gaussians), to run "
                   "datasets in parallel processes on the same OUT")
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds per (dataset, model) (default 3)")
    p.add_argument("--minutes", type=_positive_float, default=10.0,
                   help="Fashion-MNIST training budget per model, CPU minutes (default 10, the default run's)")
    p.add_argument("--toy-seconds", type=_positive_float, default=240.0,
                   help="toy training budget per model, CPU seconds (default 240)")
    p.add_argument("--fmnist-samples", type=positive_int, default=2000, help="Fashion-MNIST samples per model for the "
                   "classifier metrics and FID (default 2000)")
    p.add_argument("--nll-n", type=positive_int, default=500, help="test examples for the NLL of each model (default 500)")
    p.add_argument("--fid", type=int, default=0, metavar="N", help="also Inception FID on N samples (≥ 2000 for the "
                   "protocol) of seed 0 of each Fashion-MNIST model (0: skip; ~5 img/s on CPU)")
    p.add_argument("--fid-ref", type=positive_int, default=None, help="test images for the FID reference statistics "
                   "(default: all 10,000)")
    p.add_argument("--fid-device", default="cpu", help="device for the Inception network (default cpu)")
    p.add_argument("--out", default="benchmarks/results/study", help="output folder (default benchmarks/results/study)")
    p.add_argument("--plots", default="docs/images", help="folder for the study_*.png plots")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from undiffuse import study

    settings = study.StudySettings(toy_seconds=args.toy_seconds, fmnist_seconds=60 * args.minutes,
                                   fmnist_samples=args.fmnist_samples, nll_n_toy=args.nll_n,
                                   nll_n_fmnist=args.nll_n)  # fmt: skip
    units = []
    if args.only in (None, "toys"):
        units += study.toy_units(args.seeds)
    if args.only in (None, "fmnist"):
        units += study.fmnist_units(args.seeds)
    if args.data is not None:
        units = [u for u in units if u.dataset == args.data]
    study.run_study(args.out, units, settings, runner=study.run_unit)
    if args.fid and args.only in (None, "fmnist"):
        names = [study.Unit(study.FMNIST, m, 0).name for m in study.FMNIST_MODELS]
        study.run_fid(args.out, names, args.fid, args.fid_ref, device=args.fid_device)
        study.run_study(args.out, [], settings)  # refresh the summary with the FIDs
    study.measure_cost(args.out)  # CPU seconds per sample, one thread, for units that lack it
    study.run_study(args.out, [], settings)  # the summary with the costs
    for path in study.plot_study(args.out, args.plots):
        print(f"wrote {path}")
    print(f"results in {args.out}/summary.md")
    return 0
