"""``undiffuse nll``: the variational bound in bits/dim on held-out data."""

from __future__ import annotations

import argparse
import json

from undiffuse.cli.common import add_device, add_threads, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "nll", help="negative log-likelihood bound (VLB) in bits/dim",
        description="Estimate the VLB L = L_T + Σ L_{t-1} + L_0 on the test split of the run's data (unbiased stratified "
        "Monte Carlo over t with its standard error; --exact sums all T terms). Prints one line (bits/dim ± standard error "
        "and its parts); --json PATH writes the details (per-stratum terms), --json - prints them instead.",
    )  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory")
    p.add_argument("--data", default=None, help="data spec (default: the run's own data, test split)")
    p.add_argument("--split", default="test", help="split of the data (default: test)")
    p.add_argument("--n", type=positive_int, default=1000, help="number of examples")
    p.add_argument("--n-t", type=positive_int, default=50, help="strata over t (network evaluations per example ≈ n_t + 1)")
    p.add_argument("--exact", action="store_true", help="sum all T terms (T network evaluations per example)")
    p.add_argument("--discrete", type=positive_int, default=None, metavar="T",
                   help="text runs (masked diffusion): the discrete-time bound of T steps instead of the continuous-time ELBO")
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte-Carlo draws")
    p.add_argument("--batch-size", type=positive_int, default=256, help="examples per batch")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--json", "--out", dest="json", default=None, metavar="PATH",
                   help="write the full result (with the per-stratum terms) as JSON to PATH; '-' prints it instead of the headline")
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import undiffuse.api as api
    from undiffuse.io import write_text
    from undiffuse.progress import advance_to, progress

    model = api.load(args.run_dir, ema=not args.raw, device=args.device)
    if model.data.kind == "text":  # bits/char: the masked model's bound ± SE, or the baseline's exact NLL
        from undiffuse.cli.textlm import nll_text

        return nll_text(args, model)
    if args.discrete is not None:
        from undiffuse.errors import UserError

        raise UserError("--discrete T is the masked text model's discrete-time bound — use --exact for the T-term VLB")
    x0 = api.eval_data(model, args.data, args.split, args.n)
    with progress(total=len(x0), desc="nll", unit="example") as bar:
        result = api.nll(model, x0, n_t=args.n_t, exact=args.exact, seed=args.seed, batch_size=args.batch_size,
                         on_batch=advance_to(bar))  # fmt: skip
    text = json.dumps(result, indent=2)
    if args.json == "-":
        print(text)
        return 0
    print(headline(result))
    if args.json:
        write_text(args.json, text + "\n")
        print(f"wrote the details (per-stratum terms) to {args.json}")
    return 0


def headline(r: dict) -> str:
    """One line: the bound ± its standard error, the estimator, and the parts (prior + decoder + KL terms)."""
    how = "exact sum over t" if r["estimator"] == "exact" else f"{r['n_t']} strata over t"
    return (f"NLL bound {r['bits_per_dim']:.4f} ± {r['stderr']:.4f} bits/dim ({r['units']}; {r['n']} examples, {how}) "
            f"= prior {r['prior_bpd']:.4f} + decoder {r['decoder_bpd']:.4f} + KL terms {r['kl_terms_bpd']:.4f}")
