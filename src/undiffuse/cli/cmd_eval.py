"""``undiffuse eval``: quality, diversity, likelihood and sampling cost of a run or of a set of samples.

TARGET is a diffusion run directory, a GAN/VAE baseline run directory, a folder of PNG/JPEG samples or a
``.npy`` of samples (uint8 [N, H, W, C] images or float32 [N, D] points). Writes PREFIX.json and PREFIX.md.
Under ``torchrun`` the N samples of a run are split across ranks (indices rank::world) and gathered on
rank 0, which evaluates and writes the report.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from undiffuse.cli.common import add_device, add_threads, positive_int

#: the fewest samples for a stable Fréchet distance: at least this many, and twice the feature dimension
MIN_FD_SAMPLES = 1000


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a run or a set of samples (JSON + markdown report)",
        description="Evaluate TARGET — a diffusion run, a GAN/VAE baseline run, a folder of PNGs or a .npy of samples — "
        "against a dataset: classifier-feature Fréchet distance, class coverage and precision/recall for images "
        "(FID/KID with --fid), mode coverage and high-quality share for the 2-D toys; for runs also the NLL in "
        "bits/dim and the sampling cost. Writes PREFIX.json and PREFIX.md.",
    )  # fmt: skip
    p.add_argument("target", metavar="TARGET", help="run directory, folder of PNG/JPEG samples, or samples.npy")
    p.add_argument("--data", default=None, help="reference data spec (required for folders and .npy; default for "
                   "runs: the run's own data)")
    p.add_argument("--split", default="test", choices=("test", "train"), help="reference split (default: test)")
    p.add_argument("--n", type=positive_int, default=None, help="samples to draw from a run (default 2500, the "
                   "VEEGAN/PacGAN toy protocol; audio 200, text 32, series 500, tables the training split's size)")
    p.add_argument("--n-ref", type=positive_int, default=None, help="reference examples (default: the split, ≤ 10,000)")
    p.add_argument("--fid", action="store_true", help="also FID/KID with the Inception network (slow on CPU: ~5 img/s)")
    p.add_argument("--n-ref-fid", type=positive_int, default=None, help="reference images for FID (default: the split)")
    p.add_argument("--sampler", default=None, help="diffusion sampler (default: the run's own — ddim, or a distilled "
                   "student's few-step sampler)")
    p.add_argument("--steps", type=positive_int, default=None, help="diffusion sampler steps (default: the run's own, "
                   "50 for ddim)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed: sample i depends only on (seed, i)")
    p.add_argument("--nll-n", type=int, default=200, help="test examples for the NLL of a run (0: skip)")
    p.add_argument("--nll-nt", type=positive_int, default=50, help="strata over t of the diffusion VLB estimate")
    p.add_argument("--guidance", type=float, nargs="+", default=None, help="audio runs: classifier-free guidance "
                   "scales to sweep (default 1 2 4)")
    p.add_argument("--reference", default=None, metavar="AR_RUN", help="text runs: the autoregressive run whose "
                   "perplexity of the samples is reported (gen-PPL)")
    p.add_argument("--classifier", default=None, help="a saved SmallClassifier (default: the cached one of the data)")
    p.add_argument("--out", default=None, metavar="PREFIX", help="report path without extension (default: "
                   "RUN_DIR/eval, or beside the samples)")
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run)


def _eval_table(args: argparse.Namespace, run_dir: Path) -> int:  # fidelity, ML efficacy, privacy, detection
    from undiffuse.cli.tables import eval_table

    return eval_table(args, run_dir)


def _eval_series(args: argparse.Namespace, run_dir: Path) -> int:  # stylised facts beside GARCH(1,1)-t
    from undiffuse.cli.tables import eval_series

    return eval_series(args, run_dir)


def _eval_text(args: argparse.Namespace, run_dir: Path) -> int:  # bits/char, gen-PPL with entropy, infilling
    from undiffuse.cli.textlm import eval_text

    return eval_text(args, run_dir)


def _eval_audio(args: argparse.Namespace, run_dir: Path) -> int:  # digit accuracy and FD per guidance scale
    from undiffuse.cli.audio import eval_audio

    return eval_audio(args, run_dir)


#: The kinds of data (keys of undiffuse.data.kinds.KINDS) evaluated by their own protocol; images and 2-D
#: points (the rest) by ``evaluate_run`` below.
KIND_EVALS = {"table": _eval_table, "series": _eval_series, "text": _eval_text, "audio": _eval_audio,
              "mel": _eval_audio}


def _spec_kind(name: str) -> str:
    """The kind of a run's data spec ("" when the spec is unknown: the generic protocol then reports it)."""
    from undiffuse.data import DataError, spec_kind

    try:
        return spec_kind(name)
    except DataError:
        return ""


def _default_prefix(target: Path, is_run: bool) -> str:
    if is_run:
        return str(target / "eval")
    if target.suffix == ".npy":
        return str(target.with_suffix("")) + "_eval"
    return str(target).rstrip("/" + os.sep) + "_eval"


def load_samples(target: Path, data_spec: str):
    """Samples from a folder of images or a .npy, checked against the data (UserError otherwise)."""
    import numpy as np

    from undiffuse.errors import UserError
    from undiffuse.evaluation.report import load_reference, samples_to_model_units

    ref = load_reference(data_spec, "test")
    if target.is_dir():
        if ref.kind != "image":
            raise UserError(f"{target} is a folder of images but {data_spec} is 2-D points — pass a .npy of points")
        from undiffuse.data.images import load_folder

        return load_folder(target, int(ref.shape[-1]), channels=int(ref.shape[0]))
    try:
        arr = np.load(target, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {target} as .npy: {' '.join(str(e).split())} — pass a numpy array file") from e
    if ref.kind == "image":
        if arr.dtype != np.uint8 or arr.ndim not in (3, 4):
            raise UserError(f"{target}: images must be uint8 [N, H, W, C], got {arr.dtype} {list(arr.shape)} — "
                            "write samples with `undiffuse sample --out x.npy`")  # fmt: skip
    else:
        if arr.ndim != 2 or arr.shape[1] != ref.shape[0] or not np.issubdtype(arr.dtype, np.floating):
            raise UserError(f"{target}: points of {data_spec} must be float32 [N, {ref.shape[0]}], got {arr.dtype} "
                            f"{list(arr.shape)}")  # fmt: skip
    return samples_to_model_units(arr, ref.kind)


def run(args: argparse.Namespace) -> int:
    from undiffuse.errors import UserError

    target = Path(args.target)
    if not target.exists():
        raise UserError(f"{target} does not exist — pass a run directory, a folder of PNGs or a .npy")
    is_run = target.is_dir() and (target / "config.json").is_file()
    if not is_run and args.data is None:
        raise UserError(f"--data is required to evaluate {target} (e.g. --data fashion-mnist or --data toy:25gaussians)")
    if not is_run and not target.is_dir() and target.suffix != ".npy":
        raise UserError(f"{target} is neither a run directory, a folder of images nor a .npy file")
    if is_run:
        from undiffuse.cli.tables import run_data_name

        kind_eval = KIND_EVALS.get(_spec_kind(run_data_name(str(target))))  # config.json read once, no weights
        if kind_eval is not None:  # a kind of data with its own protocol
            return kind_eval(args, target)
        args.n = 2500 if args.n is None else args.n
        result = evaluate_run(target, args)
        if result is None:  # a non-zero rank under torchrun
            return 0
    else:
        from undiffuse.evaluation.report import evaluate_samples

        x = load_samples(target, args.data)
        warn_few_samples(len(x), "image" if x.ndim == 4 else "vector", args.fid)
        result = evaluate_samples(x, args.data, args.split, n_ref=args.n_ref, classifier_path=args.classifier,
                                  device=args.device or "cpu", fid=args.fid, n_ref_fid=args.n_ref_fid)  # fmt: skip
        result["target"] = str(target)
    from undiffuse.evaluation.report import write_report

    pj, pm = write_report(result, args.out or _default_prefix(target, is_run), title=f"Evaluation of {target}")
    print(summary_line(result))
    print(f"wrote {pj} and {pm}")
    return 0


def summary_line(r: dict) -> str:
    keys = ("modes_covered", "high_quality_share", "classifier_fd", "fid", "classes_covered", "precision", "recall",
            "bits_per_dim", "seconds_per_sample", "nfe")  # fmt: skip
    flat = {**r, **(r.get("nll") or {}), **(r.get("sampling") or {})}
    parts = []
    for k in keys:
        v = flat.get(k)
        if v is not None and not isinstance(v, (dict, list, str)):
            parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return "; ".join(parts)


def evaluate_run(run_dir: Path, args: argparse.Namespace):
    """Sample a run (split over ranks under torchrun), evaluate on rank 0; None on other ranks."""
    import torch

    from undiffuse.baselines import is_baseline_run
    from undiffuse.evaluation.report import evaluate_samples
    from undiffuse.evaluation.runs import sample_run
    from undiffuse.progress import sampling_progress
    from undiffuse.training import distributed as D

    ctx = D.setup(args.device)
    try:
        baseline = is_baseline_run(run_dir)
        if baseline:
            from undiffuse.baselines import load_baseline

            model = load_baseline(run_dir, ctx.device)
            data_spec = model[1].data
        else:
            import undiffuse.api as api

            model = api.load(run_dir, device=ctx.device)
            data_spec = model.data.name
            args.sampler, args.steps, _ = api.resolve_sampling(model, args.sampler, args.steps)
        if ctx.is_main:
            warn_few_samples(args.n, model[1].data_kind if baseline else model.data.kind, args.fid)
        indices = list(range(ctx.rank, args.n, ctx.world_size))
        steps = 1 if baseline else args.steps
        with sampling_progress(len(indices), steps, desc="sampling", show=ctx.is_main) as cb:
            x, info = sample_run(run_dir, indices, args.seed, sampler=args.sampler, steps=args.steps, model=model,
                                 callback=cb)  # fmt: skip
        if ctx.distributed:
            import torch.distributed as dist

            parts: list = [None] * ctx.world_size
            dist.all_gather_object(parts, (indices, x.numpy(), info["seconds"]))
            if not ctx.is_main:
                return None
            order = torch.tensor([i for p in parts for i in p[0]]).argsort()
            x = torch.cat([torch.from_numpy(p[1]) for p in parts])[order]
            info["seconds"] = max(p[2] for p in parts)
            info["seconds_per_sample"] = info["seconds"] * ctx.world_size / args.n  # per sample per process
            info["n"] = args.n
        info["world_size"] = ctx.world_size
        data = args.data or data_spec
        result = evaluate_samples(x, data, args.split, n_ref=args.n_ref, classifier_path=args.classifier,
                                  device=ctx.device, fid=args.fid, n_ref_fid=args.n_ref_fid)  # fmt: skip
        result.update(target=str(run_dir), model=info["kind"], sampling=info, nll=run_nll(run_dir, model, baseline, args))
        return result
    finally:
        D.teardown(ctx)


def warn_few_samples(n: int, kind: str, fid: bool) -> None:
    """Warn on stderr when ``n`` image samples are too few for a stable Fréchet distance: it is biased upward
    by about tr(Σ)/n, and its covariance estimate needs more samples than feature dimensions."""
    if kind != "image":
        return
    from undiffuse.evaluation.classifier import ClassifierConfig
    from undiffuse.evaluation.inception import FEATURE_DIM

    dims = {"classifier FD": ClassifierConfig().feature_dim, **({"FID": FEATURE_DIM} if fid else {})}
    need = {name: max(MIN_FD_SAMPLES, 2 * d) for name, d in dims.items()}
    short = [name for name, k in need.items() if n < k]
    if short:
        print(f"undiffuse: warning: {n} samples are too few for a stable {' and '.join(short)} (biased upward and "
              f"noisy) — use at least {max(need[s] for s in short)} samples (≥ {MIN_FD_SAMPLES} and ≥ 2× the "
              "feature dimension) to compare models", file=sys.stderr)  # fmt: skip


def run_nll(run_dir: Path, model, baseline: bool, args: argparse.Namespace):
    """Diffusion VLB (api.nll) or VAE ELBO in bits/dim on the test split; None for a GAN or --nll-n 0."""
    if args.nll_n <= 0:
        return None
    if baseline:
        if model[1].kind != "vae":
            return {"bits_per_dim": None, "note": "a GAN has no likelihood"}
        from undiffuse.baselines import baseline_nll

        return baseline_nll(run_dir, "test", n=args.nll_n, device=next(model[0].parameters()).device)
    import undiffuse.api as api
    from undiffuse.progress import advance_to, progress

    if model.config.distill.method:  # its D_θ learned the teacher's few-step jumps, not E[x_0 | x_t]
        return {"bits_per_dim": None, "note": f"a {model.config.distill.method}-distilled student: its VLB is no "
                "likelihood of its samples — evaluate the teacher's NLL"}  # fmt: skip
    x0 = api.eval_data(model, None, "test", args.nll_n)
    with progress(total=len(x0), desc="nll", unit="example") as bar:
        r = api.nll(model, x0, n_t=args.nll_nt, on_batch=advance_to(bar))
    return {k: v for k, v in r.items() if k != "kl_strata"}
