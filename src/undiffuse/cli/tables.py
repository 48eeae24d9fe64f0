"""The table branches of ``undiffuse sample``, ``edit`` and ``eval`` (runs trained on ``table:`` data):
rows through :mod:`undiffuse.tables`, written as CSV by the table kind's writer; and ``eval`` of ``series:``
runs (stylised facts beside GARCH-t)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from undiffuse.errors import UserError

__all__ = ["run_data_name", "sample_table", "edit_table", "eval_table", "eval_series"]


def _sampler(args: argparse.Namespace) -> int:
    """The steps of the multinomial sampler (refusing another sampler or options it does not take)."""
    if getattr(args, "sampler", None) not in (None, "ddim", "multinomial"):
        raise UserError(f"tables are sampled with the multinomial sampler (TabDDPM), not {args.sampler} — drop --sampler")
    for flag in ("eta", "guidance", "threshold", "prompt", "lowres", "gif", "spacing"):
        if getattr(args, flag, None) not in (None, False):
            raise UserError(f"--{flag} does not apply to table runs — drop it")
    return _steps(args)


def _steps(args: argparse.Namespace) -> int:
    """--steps, or the tables' default when none is given."""
    from undiffuse.tables import TABLE_STEPS

    return args.steps if args.steps is not None else TABLE_STEPS


def sample_table(args: argparse.Namespace, model) -> int:
    """``undiffuse sample RUN --n N --seed S --out rows.csv`` for a table run."""
    from undiffuse.data.kinds import save_samples
    from undiffuse.tables import sample_rows

    steps = _sampler(args)
    x = sample_rows(model, args.n, args.seed, steps, args.class_label, batch_size=max(args.batch_size, 1))
    save_samples(x, args.out, model.data)
    print(f"wrote {args.n} rows to {args.out}: multinomial sampler (TabDDPM), {steps} steps")
    return 0


def edit_table(args: argparse.Namespace) -> int:
    """``undiffuse edit RUN --table holes.csv --out filled.csv``: impute the empty cells."""
    import undiffuse.api as api
    from undiffuse.data.tablefiles import csv_text, read_csv
    from undiffuse.io import write_text
    from undiffuse.tables import impute_rows

    if not args.out.lower().endswith(".csv"):
        raise UserError(f"--out {args.out} must be a .csv file (the filled table)")
    for flag in ("image", "mask", "strength", "prompt", "guidance"):
        if getattr(args, flag, None) is not None:
            raise UserError(f"--{flag} is for images; --table imputes the empty cells of a table — drop it")
    model = api.load(args.run_dir, args.checkpoint, ema=not args.raw, device=args.device)
    if model.data.kind != "table":
        raise UserError(f"--table needs a run trained on table: data, and {args.run_dir} models {model.data.name}")
    header, rows = read_csv(args.table)
    filled = impute_rows(model, header, rows, args.seed, _sampler(args))
    write_text(args.out, csv_text(header, filled))
    holes = sum(1 for r in rows for c in r if not c.strip())
    print(f"wrote {args.out}: {len(rows)} rows, their missing cells imputed ({holes} empty cells)")
    return 0


def eval_table(args: argparse.Namespace, run_dir: Path) -> int:
    """``undiffuse eval RUN`` for a table run: RUN/eval.json and RUN/eval.md (or --out PREFIX)."""
    from undiffuse.evaluation.table_report import evaluate_table_run, table_markdown

    steps = _steps(args)
    n = args.n  # None (not given): the training split's size
    report = evaluate_table_run(run_dir, args.seed, steps, n, args.device)
    return _write_report(report, table_markdown(report), run_dir, args.out)


def _write_report(report: dict, body: str, run_dir: Path, out: str | None) -> int:
    """PREFIX.json and PREFIX.md (PREFIX: --out, else RUN_DIR/eval), the markdown also printed."""
    from undiffuse.io import write_json, write_text

    prefix = out or str(run_dir / "eval")
    write_json(prefix + ".json", report)
    md = f"# Evaluation of {run_dir} ({report['data']}, step {report['step']})\n\n" + body
    write_text(prefix + ".md", md)
    print(md)
    print(f"wrote {prefix}.json and {prefix}.md")
    return 0


def run_data_name(run_dir: str) -> str:
    """The data spec of RUN_DIR (from its config.json, without loading weights; "" if unreadable): a diffusion
    run's ``data.name``, or a GAN/VAE baseline's ``config.data``."""
    try:
        cfg = json.loads((Path(run_dir) / "config.json").read_text()[: 1 << 20])
    except (OSError, ValueError):
        return ""
    if not isinstance(cfg, dict):
        return ""
    data = cfg.get("data", (cfg.get("config") or {}).get("data", "") if isinstance(cfg.get("config"), dict) else "")
    return str(data.get("name", "") if isinstance(data, dict) else data)


def eval_series(args: argparse.Namespace, run_dir: Path) -> int:
    """``undiffuse eval RUN`` for a series run: stylised facts and discriminative scores beside GARCH-t."""
    from undiffuse.evaluation.series_report import evaluate_series_run, series_markdown

    n = 500 if args.n is None else args.n
    report = evaluate_series_run(run_dir, n, args.seed, args.sampler or "ddpm", args.steps or 100, args.device)
    return _write_report(report, series_markdown(report), run_dir, args.out)
