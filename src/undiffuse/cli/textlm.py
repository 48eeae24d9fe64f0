"""The text branches of ``undiffuse sample``, ``edit``, ``nll`` and ``eval`` (runs trained on ``text:`` data): the
masked-diffusion model and its autoregressive baseline through :mod:`undiffuse.language`, written by the text kind's
``.txt`` / ``.jsonl`` writers."""

from __future__ import annotations

import argparse
import json
import time

from undiffuse.errors import UserError

__all__ = ["sample_text", "edit_text", "nll_text", "eval_text"]


def _refuse(args: argparse.Namespace, flags: tuple[str, ...]) -> None:
    for flag in flags:
        if getattr(args, flag, None) not in (None, False):
            raise UserError(f"--{flag.replace('_', '-')} does not apply to text runs — drop it")


def sample_text(args: argparse.Namespace, model) -> int:
    """``undiffuse sample RUN --n 4 --seed 0 --length 256 [--prefix P] [--steps K] [--order confidence] [--top-p 0.9]
    --out x.txt``."""
    from undiffuse.data.kinds import save_samples
    from undiffuse.language import is_autoregressive
    from undiffuse.language import sample_text as sample

    _refuse(args, ("sampler", "spacing", "eta", "class_label", "prompt", "guidance", "threshold", "lowres", "gif"))
    if is_autoregressive(model) and (args.steps is not None or args.order != "ancestral"):
        raise UserError("the autoregressive baseline samples left to right, one character a step — drop --steps/--order")
    info: dict = {}
    t0 = time.perf_counter()
    x = sample(model, args.n, args.seed, args.length, args.steps, args.prefix, args.order,
               batch_size=min(args.batch_size, 64), info=info, top_p=1.0 if args.top_p is None else args.top_p)  # fmt: skip
    seconds = time.perf_counter() - t0
    save_samples(x, args.out, model.data)
    how = "left to right" if is_autoregressive(model) else f"{args.order}, {info['steps']} steps"
    how += "" if args.top_p is None else f", nucleus p = {args.top_p}"
    print(f"wrote {args.n} samples of {x.shape[1]} characters to {args.out}: {how}, {info['nfe']:.1f} network "
          f"evaluations per sample, {x.numel() / max(seconds, 1e-9):.0f} characters/s")  # fmt: skip
    return 0


def edit_text(args: argparse.Namespace) -> int:
    """``undiffuse edit RUN --text "In the beginning ____ created" --out x.txt``: fill each ``_``."""
    import undiffuse.api as api
    from undiffuse.data.kinds import check_output, save_samples
    from undiffuse.language import infill, is_autoregressive

    _refuse(args, ("image", "table", "mask", "strength", "prompt", "guidance", "class_label"))
    model = api.load(args.run_dir, args.checkpoint, ema=not args.raw, device=args.device)
    if model.data.kind != "text":
        raise UserError(f"--text needs a run trained on text:, and {args.run_dir} models {model.data.kind} data")
    check_output(args.out, "text")
    if is_autoregressive(model) and args.steps is not None:
        raise UserError("the autoregressive baseline fills left to right, one character a step — drop --steps")
    info: dict = {}
    x = infill(model, args.text, 1, args.seed, args.steps, info=info)
    save_samples(x, args.out, model.data)
    print(f"wrote {args.out}: filled {args.text.count('_')} characters "
          f"({'left to right' if is_autoregressive(model) else 'masked diffusion'}, {info['nfe']:.0f} network evaluations)")
    return 0


def nll_text(args: argparse.Namespace, model) -> int:
    """``undiffuse nll RUN``: bits/char on the test windows (the diffusion bound ± SE, or the baseline's exact NLL)."""
    from undiffuse.io import write_text
    from undiffuse.language import is_autoregressive, text_eval_data, text_nll

    if args.exact:
        raise UserError("--exact does not apply to text runs — use --discrete T for the T-step bound")
    if args.discrete is not None and is_autoregressive(model):
        raise UserError("the autoregressive baseline's likelihood is exact, not a bound — drop --discrete")
    x = text_eval_data(model, args.data, args.split, args.n)
    result = text_nll(model, x, n_t=args.n_t, seed=args.seed, T=args.discrete, batch_size=min(args.batch_size, 64))
    text = json.dumps(result, indent=2)
    if args.json == "-":
        print(text)
        return 0
    strata = "" if result["n_t"] is None else f", {result['n_t']} strata of t"
    print(f"{result['model']}: {result['bits_per_char']:.4f} ± {result['stderr']:.4f} bits/char ({result['estimator']}"
          f"{strata}; {result['n']} windows of {result['length']} characters of {args.split})")  # fmt: skip
    if args.json:
        write_text(args.json, text + "\n")
        print(f"wrote {args.json}")
    return 0


def eval_text(args: argparse.Namespace, target) -> int:
    """``undiffuse eval RUN`` for a text run: :func:`undiffuse.evaluation.text_report.evaluate_text_run`."""
    from undiffuse.evaluation.text_report import evaluate_text_run, markdown
    from undiffuse.io import write_json, write_text

    n = 32 if args.n is None else args.n  # 256-character samples are slow on a CPU
    n_t = 16 if args.nll_nt == 50 else args.nll_nt  # the image default of --nll-nt; an explicit value is kept
    if args.nll_n <= 0:
        raise UserError("a text run's report scores held-out windows (bits/char, real-text statistics, infilling) — "
                        "give --nll-n ≥ 1")  # fmt: skip
    result = evaluate_text_run(target, n=n, steps=args.steps, seed=args.seed, reference=args.reference,
                               device=args.device or "cpu", nll_n=args.nll_n, n_t=n_t)  # fmt: skip
    prefix = args.out or str(target / "eval")
    pj, pm = write_json(prefix + ".json", result), write_text(prefix + ".md", markdown(result))
    print(f"{result['model']}: {result['bits_per_char']['bits_per_char']:.4f} bits/char; samples: entropy "
          f"{result['samples']['entropy']:.3f} bits/char (real {result['real']['entropy']:.3f})")
    print(f"wrote {pj} and {pm}")
    return 0
