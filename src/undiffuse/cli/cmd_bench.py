"""``undiffuse bench``: undiffuse against diffusers on the same network and device, in one run.

Prints a markdown table and writes ``OUT/<date>-<device>.json`` (+ ``.md``; OUT is ``./bench-results`` unless
``--out`` says otherwise — the committed results are refreshed with ``--out benchmarks/results``): training and sampling
throughput (out of the box and best paths of both libraries), peak memory, and the error per network
evaluation of every sampler (on the 25-Gaussian oracle, and on trained runs given with ``--run``).
See ``benchmarks/README.md`` for the protocol.
"""

from __future__ import annotations

import argparse

from undiffuse.cli.common import add_device, add_threads, positive_int

#: where results go unless --out is given: the current directory, never the repository's tracked results
DEFAULT_OUT = "bench-results"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="benchmark undiffuse against diffusers (throughput, memory, quality per NFE)",
        description="Measure undiffuse and diffusers side by side on one device: training and DDIM sampling "
        "throughput of the same UNet configuration (DDPM's CIFAR-10 network and a small one), peak memory, and "
        "each sampler's error at 5/10/20/50 network evaluations. diffusers is optional (pip install "
        "'undiffuse[bench]'); without it undiffuse is measured alone.",
    )  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a few minutes on CPU: small batches, 2 of the 50 "
                   "sampling steps timed, no torch.compile")  # fmt: skip
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the JSON and markdown (default ./{DEFAULT_OUT}; "
                   "the repository's committed results: --out benchmarks/results)")  # fmt: skip
    p.add_argument("--run", action="append", default=[], metavar="LABEL=RUN_DIR",
                   help="a trained run for the quality rows, e.g. fmnist=runs/fmnist (repeatable)")
    p.add_argument("--fd-samples", type=int, default=None, metavar="N", help="samples per image distance of a --run "
                   "(classifier FD of the best samplers at 10/20 NFE and of 1000-step DDPM; default 100 with --quick, "
                   "else 500; 0 skips)")  # fmt: skip
    p.add_argument("--repeats", type=positive_int, default=None, help="timed repeats (default 5, the protocol)")
    add_threads(p, auto=False)
    p.add_argument("--no-compile", action="store_true", help="best paths without torch.compile")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory rows")
    p.add_argument("--no-oracle", action="store_true", help="skip the quality rows on the 25-Gaussian oracle")
    add_device(p)
    p.set_defaults(func=run)


def parse_runs(items: list[str]) -> dict[str, str]:
    """``["fmnist=runs/fmnist", ...]`` → ``{"fmnist": "runs/fmnist"}`` (UserError on a bad item)."""
    from pathlib import Path

    from undiffuse.errors import UserError

    runs = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise UserError(f"--run {item!r}: expected LABEL=RUN_DIR, e.g. --run fmnist=runs/fmnist")
        if not (Path(path) / "config.json").is_file():
            raise UserError(f"--run {item!r}: {path} is not a run directory (no config.json) — train one first")
        runs[label] = path
    return runs


def run(args: argparse.Namespace) -> int:
    from undiffuse.bench import run_bench

    # --threads is set for the whole process by cli.common.common_settings
    run_bench(quick=args.quick, device=args.device, out_dir=args.out, run_dirs=parse_runs(args.run) or None,
              fd_samples=args.fd_samples, repeats=args.repeats, memory=not args.no_memory, oracle=not args.no_oracle,
              compile_best=not args.no_compile)  # fmt: skip
    return 0
