"""``undiffuse train``: train a diffusion model (also under ``torchrun`` for DDP)."""

from __future__ import annotations

import argparse
from pathlib import Path

from undiffuse.cli.common import add_device, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a diffusion model",
        description="Train a diffusion model and write checkpoints (safetensors + JSON), a loss log, a loss plot "
        "and sample grids to RUN_DIR. Under torchrun the same command trains with DDP.",
    )  # fmt: skip
    p.add_argument("--data", default=None, help="fashion-mnist (default), fashion-mnist:DIR, digits, folder:PATH, "
                   "toy:25gaussians, toy:8gaussians, toy:moons, toy:swissroll")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="output directory (new or empty unless --resume)")
    p.add_argument("--steps", type=positive_int, default=None, help="total number of optimizer steps (default: the preset's)")
    p.add_argument("--preset", default=None, help="fmnist, digits-tiny, toy, ddpm-cifar10 (default: toy for toy:* data, else fmnist)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=2e-4 --set model.channel_mult=1,2,2 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in RUN_DIR")
    p.add_argument("--cond", choices=("none", "class", "text"), default=None,
                   help="conditioning: class labels or text captions (default: none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--baseline", choices=("gan", "vae"), default=None,
                   help="train a GAN or VAE baseline instead of a diffusion model (same data pipeline)")
    p.add_argument("--seconds", type=float, default=None,
                   help="wall-clock budget of a --baseline run in seconds (with or instead of --steps)")
    p.add_argument("--seed", type=int, default=None, help="seed (--baseline; diffusion: use --set train.seed=S)")
    add_device(p)
    p.set_defaults(func=run)


def resolve(args: argparse.Namespace):
    """The RunConfig the flags give; on --resume the saved config with the flags applied (the trainer
    resolves the resume once, refusing flags that contradict the run: ``runs.resume_point``)."""
    from undiffuse.config import resolve_config
    from undiffuse.runs import given_config

    overrides = list(args.overrides)
    if args.cond == "class":
        overrides.append("model.class_cond=true")
    elif args.cond == "text":
        overrides.append("model.text_cond=true")
    if not args.resume:
        return resolve_config(args.data, args.preset, overrides)
    return given_config(args.out, overrides, data=args.data, preset=args.preset)


def run(args: argparse.Namespace) -> int:
    if args.baseline is not None:
        return run_baseline(args)
    from undiffuse.errors import UserError
    from undiffuse.training import train

    if args.seconds is not None:
        raise UserError("--seconds applies to --baseline runs — use --steps for diffusion")
    if args.seed is not None:
        args.overrides = [*args.overrides, f"train.seed={args.seed}"]
    cfg = resolve(args)
    s = train(cfg, args.out, steps=args.steps, resume=args.resume, device=args.device, progress=not (args.no_progress or args.quiet))
    if s.interrupted:
        print(f"interrupted at step {s.step}; checkpoint saved: {s.checkpoint} — continue with --resume")
        return 130
    print(f"trained {s.start_step} → {s.step} steps in {s.seconds:.0f} s ({s.img_per_s:.1f} img/s); "
          f"last-step loss {s.loss if s.loss is None else round(s.loss, 5)} (log.jsonl: means over "
          f"{cfg.train.log_every} steps), val loss {s.val_loss if s.val_loss is None else round(s.val_loss, 5)}; "
          f"checkpoint {s.checkpoint}")
    return 0


def run_baseline(args: argparse.Namespace) -> int:
    """``--baseline gan|vae``: :func:`undiffuse.baselines.train_baseline` on the same data."""
    from undiffuse.baselines import train_baseline
    from undiffuse.errors import UserError
    from undiffuse.runs import latest_checkpoint

    if args.preset is not None or args.overrides or args.cond not in (None, "none"):
        raise UserError("--preset/--set/--cond configure diffusion runs — drop them with --baseline")
    if args.seconds is not None and args.seconds <= 0:
        raise UserError(f"--seconds {args.seconds} must be > 0")
    if args.steps is None and args.seconds is None:
        raise UserError("--baseline needs a budget — pass --steps N and/or --seconds S")
    out = Path(args.out)
    if args.resume and latest_checkpoint(out) is None:
        raise UserError(f"--resume: {out} holds no baseline checkpoint — train without --resume first")
    data = args.data or "fashion-mnist"
    try:  # a new run refuses a non-empty --out, and a run in use by another process is refused at once
        s = train_baseline(args.baseline, data, out, seconds=args.seconds, steps=args.steps,
                           seed=0 if args.seed is None else args.seed, device=args.device or "cpu",
                           resume=args.resume)  # fmt: skip
    except UserError:
        raise
    except ValueError as e:
        raise UserError(f"{e} — check --baseline/--data") from e
    last = s.get("last") or {}
    losses = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k not in ("step", "seconds"))
    print(f"trained {args.baseline} baseline: {s['steps']} steps in {s['seconds']:.0f} s; {losses}; params {s['params']}; "
          f"run {out}")
    return 0
