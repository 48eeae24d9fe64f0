"""``undiffuse sample``: draw samples from a trained run."""

from __future__ import annotations

import argparse

from undiffuse.cli.common import add_device, add_threads, positive_int
from undiffuse.schedules.grids import GRIDS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sample", help="draw samples from a trained run",
        description="Sample from RUN_DIR's latest checkpoint (EMA weights by default). Sample i depends only on the "
        "seed and i. --out: a .png grid (scatter plot for 2-D data), a .npy in data units, or a directory/ of PNGs.",
    )  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory")
    p.add_argument("--n", type=positive_int, default=64, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="seed: sample i depends only on (seed, i)")
    p.add_argument("--sampler", default=None,
                   help="ddpm, ddim, euler, euler_ancestral, heun, dpmpp_2m, dpmpp_3m, unipc, consistency; for few steps "
                   "(5–20) use unipc or dpmpp_2m (each on its measured default grid: benchmarks/README.md); default: "
                   "the run's own (ddim; a distilled student's few-step sampler)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampler steps (a subset of the T training steps; default: the run's own, 50 for ddim)")
    p.add_argument("--spacing", default=None, choices=GRIDS, metavar="GRID",
                   help=f"σ grid: {', '.join(GRIDS)} (default: the sampler's own, chosen by measurement)")
    p.add_argument("--eta", type=float, default=None,
                   help="η in [0, 1] for ddim (default 0: deterministic) and euler_ancestral (default 1)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="samples per batch (does not change the samples)")
    p.add_argument("--checkpoint", default=None, help="a step number or checkpoint directory (default: the latest)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--class", dest="class_label", type=int, default=None, help="class label (class-conditional runs)")
    p.add_argument("--prompt", default=None, help="text prompt (text-conditional runs)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale w (0: unconditional, 1: conditional)")
    p.add_argument("--threshold", type=float, default=None,
                   help="Imagen dynamic thresholding of x̂_0 at this percentile (e.g. 0.995) instead of clipping; for high --guidance")
    p.add_argument("--lowres", default=None, help="low-resolution input image (super-resolution runs, model.sr_from)")
    p.add_argument("--length", type=positive_int, default=None, help="text runs: characters per sample (default: the training length)")
    p.add_argument("--prefix", default=None, help="text runs: continue this text (kept as given)")
    p.add_argument("--order", default="ancestral", choices=("ancestral", "confidence"),
                   help="text runs (masked diffusion): unmask random positions (MDLM) or the most confident first")
    p.add_argument("--top-p", type=float, default=None,
                   help="text runs: draw each character from the nucleus of probability p (e.g. 0.9; default 1: all)")
    p.add_argument("--gif", default=None, help="also write an animated GIF of the denoising trajectory (x̂_0 of the first 16 samples)")
    p.add_argument("--out", required=True, help="output: grid.png, samples.npy or a directory ending in /; rows.csv for tables; "
                   "x.txt or x.jsonl for text")
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import undiffuse.api as api
    from undiffuse.data.kinds import check_output
    from undiffuse.errors import UserError
    from undiffuse.progress import sampling_progress

    if args.eta is not None and not 0 <= args.eta <= 1:
        raise UserError(f"--eta {args.eta} must lie in [0, 1]")
    from undiffuse.baselines import is_baseline_run

    if is_baseline_run(args.run_dir):
        return run_baseline(args)
    if args.sampler is not None and args.sampler not in api.sampler_names():
        raise UserError(f"unknown sampler {args.sampler!r} — choose one of {', '.join(api.sampler_names())}")
    model = api.load(args.run_dir, args.checkpoint, ema=not args.raw, device=args.device)
    check_output(args.out, model.data.kind)
    if model.data.kind == "table":  # rows through the multinomial sampler, written as CSV
        from undiffuse.cli.tables import sample_table

        return sample_table(args, model)
    if model.data.kind == "text":  # the masked-diffusion model or its autoregressive baseline (undiffuse.language)
        from undiffuse.cli.textlm import sample_text

        return sample_text(args, model)
    if args.length is not None or args.prefix is not None or args.order != "ancestral" or args.top_p is not None:
        raise UserError("--length/--prefix/--order/--top-p apply to text runs — drop them")
    from undiffuse.sampling import resolve_sampling

    args.sampler, args.steps, args.spacing = resolve_sampling(model, args.sampler, args.steps, args.spacing)
    frames: list = []
    callback = _trajectory(frames) if args.gif else None
    info: dict = {}
    kw = api.conditioning(model, args.n, args.class_label, args.prompt, args.guidance, args.lowres)
    if args.threshold is not None:
        kw["threshold"] = args.threshold
    if not kw and (args.class_label is not None or args.prompt is not None):
        raise UserError("this run is unconditional — drop --class/--prompt")
    with sampling_progress(args.n, args.steps, then=callback) as cb:
        x = api.sample(model, args.n, args.seed, sampler=args.sampler, steps=args.steps, eta=args.eta,
                       batch_size=args.batch_size, callback=cb, spacing=args.spacing, info=info, **kw)
    api.save_samples(x, args.out, model.data)
    if args.gif:
        _write_gif(frames, args.gif)
    print(f"wrote {args.n} samples to {args.out}: sampler {args.sampler}, {args.steps} steps, "
          f"{info.get('nfe')} network evaluations per sample")
    return 0


def _trajectory(frames: list):
    def cb(d: dict) -> None:
        if d.get("offset", 0) == 0:
            frames.append(d["denoised"][:16].detach().float().cpu().clamp(-1, 1))
    return cb


def _write_gif(frames: list, path: str) -> None:
    from undiffuse.data import make_grid
    from undiffuse.io import atomic_path

    imgs = [make_grid(f, nrow=4) for f in frames if f.ndim == 4]
    if not imgs:
        return
    with atomic_path(path) as tmp:
        imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:], duration=60, loop=0)


def run_baseline(args: argparse.Namespace) -> int:
    """A GAN/VAE baseline run: :func:`undiffuse.baselines.sample_baseline`, written by ``api.save_samples``."""
    import undiffuse.api as api
    from undiffuse.baselines import load_baseline, sample_baseline
    from undiffuse.build import DataInfo
    from undiffuse.data import load_dataset
    from undiffuse.data.kinds import check_output
    from undiffuse.errors import UserError

    diffusion_only = {"--gif": args.gif, "--class": args.class_label, "--prompt": args.prompt,
                      "--checkpoint": args.checkpoint, "--raw": args.raw or None, "--guidance": args.guidance,
                      "--threshold": args.threshold, "--lowres": args.lowres, "--eta": args.eta}  # fmt: skip
    given = [flag for flag, value in diffusion_only.items() if value is not None]
    if given:
        raise UserError(f"{'/'.join(given)} apply to diffusion runs, not to a GAN/VAE baseline — drop them")
    _, cfg = load_baseline(args.run_dir)
    check_output(args.out, cfg.data_kind)
    ds = load_dataset(cfg.data, "train", cfg.image_size)
    x = sample_baseline(args.run_dir, args.n, args.seed, batch_size=args.batch_size, device=args.device or "cpu")
    reference = ds.x[:2000] if ds.kind == "vector" else None
    api.save_samples(x, args.out, DataInfo.from_dataset(ds), reference=reference)
    print(f"wrote {args.n} samples to {args.out}: {cfg.kind} baseline, 1 network evaluation per sample")
    return 0
