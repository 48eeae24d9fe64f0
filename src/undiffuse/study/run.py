"""The study's orchestration: run the units that are not finished yet, then write the summary."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional, Sequence

from undiffuse.io import write_json, write_text
from undiffuse.study.common import StudySettings, Unit, load_results
from undiffuse.study.summary import aggregate, summary_markdown
from undiffuse.study.units import run_unit

__all__ = ["run_study"]


def run_study(
    out_dir: str | os.PathLike, units: Sequence[Unit], settings: Optional[StudySettings] = None,
    runner: Optional[Callable[[Unit, Path, StudySettings], dict]] = None, log: Callable[[str], None] = print,
) -> list[dict]:  # fmt: skip
    """Run every unit whose ``OUT/<unit>.json`` does not exist yet (in order), then write the summary.

    ``runner(unit, run_dir, settings) -> dict`` does the work (default :func:`run_unit`); a runner that
    raises leaves no JSON, so the unit is retried on the next call. Returns the results of all units
    (finished before or now), in order.
    """
    settings = settings or StudySettings()
    runner = runner or run_unit
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _ensure_gitignore(out)
    results = []
    for unit in units:
        path = out / f"{unit.name}.json"
        if path.is_file():
            log(f"[study] {unit.name}: done already ({path.name}), skipped")
            results.append(json.loads(path.read_text()))
            continue
        log(f"[study] {unit.name}: running")
        t0 = time.perf_counter()
        res = runner(unit, out / "runs" / unit.name, settings)
        res = {"unit": asdict(unit), "name": unit.name, **res, "unit_wall_seconds": time.perf_counter() - t0}
        write_json(path, res)
        log(f"[study] {unit.name}: {_brief(res)}")
        results.append(res)
    summary = aggregate(load_results(out))
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", summary_markdown(summary))
    return results


def _ensure_gitignore(out: Path) -> None:
    gi = out / ".gitignore"
    if not gi.exists():
        gi.write_text(
            "# trained runs and samples stay local; the per-unit JSON and the summaries are committed\nruns/\n*.npy\n"
        )


def _brief(r: dict) -> str:
    keys = ("modes_covered", "high_quality_share", "classifier_fd", "precision", "recall", "bits_per_dim",
            "seconds_per_sample", "train_steps", "collapsed")  # fmt: skip
    return ", ".join(
        f"{k}={r[k]:.4g}" if isinstance(r.get(k), float) else f"{k}={r.get(k)}" for k in keys if k in r
    )
