"""Benchmark results: rows, the device and version record, the markdown table and the JSON file.

A result is ``{"device", "versions", "date", "settings", "results": [row, ...], ...}`` with each row
``{name, unit, undiffuse, diffusers, speedup, note}``. For throughputs ``speedup`` = undiffuse ÷
diffusers (higher is better); for costs (memory, errors) it is diffusers ÷ undiffuse, so that > 1
always means undiffuse is ahead (the note says which).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
from pathlib import Path
from typing import Optional, Union

import torch

from undiffuse.io import write_text

__all__ = ["device_name", "format_table", "row", "versions", "write_results"]


def row(
    name: str,
    unit: str,
    undiffuse: Optional[float],
    diffusers: Optional[float],
    note: str = "",
    higher_is_better: bool = True,
) -> dict:
    """One result row; ``speedup`` is oriented so that > 1 means undiffuse is ahead."""
    speedup = None
    if undiffuse is not None and diffusers is not None and undiffuse > 0 and diffusers > 0:
        speedup = undiffuse / diffusers if higher_is_better else diffusers / undiffuse
    return {"name": name, "unit": unit, "undiffuse": undiffuse, "diffusers": diffusers, "speedup": speedup,
            "note": note}  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: Union[str, torch.device]) -> str:
    """ "cpu: AMD EPYC (2 cores)" or the CUDA device's name."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "cpu":
        return f"cpu: {_cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return dev.type


def _slug(device: Union[str, torch.device]) -> str:
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev.type
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(dev).lower()).strip("-")


def versions() -> dict:
    """torch, diffusers (None when absent), undiffuse (its installed distribution's) and python versions."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        uv: Optional[str] = version("undiffuse")
    except PackageNotFoundError:  # run from a source tree that is not installed
        uv = None
    try:
        import diffusers

        dv: Optional[str] = diffusers.__version__
    except ImportError:
        dv = None
    return {"torch": torch.__version__, "diffusers": dv, "undiffuse": uv,
            "python": platform.python_version()}  # fmt: skip


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def format_table(result: dict) -> str:
    """The rows as a markdown table, headed by the device and versions."""
    v = result.get("versions", {})
    head = [
        f"**undiffuse bench** — {result.get('device', '?')} — {result.get('date', '')}",
        "",
        f"torch {v.get('torch')}, diffusers {v.get('diffusers')}, undiffuse {v.get('undiffuse')}, "
        f"python {v.get('python')}",
        "",
        "| name | unit | undiffuse | diffusers | speedup | note |",
        "|---|---|---|---|---|---|",
    ]
    lines = [
        f"| {r['name']} | {r['unit']} | {_fmt(r['undiffuse'])} | {_fmt(r['diffusers'])} | "
        f"{_fmt(r['speedup'])}{'×' if r['speedup'] is not None else ''} | {r.get('note', '')} |"
        for r in result["results"]
    ]
    tail = ["", f"{result['summary']}"] if result.get("summary") else []
    return "\n".join(head + lines + tail) + "\n"


def write_results(
    result: dict, out_dir: Union[str, os.PathLike], device: Union[str, torch.device]
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<YYYY-MM-DD>-<device>.json`` and the markdown table beside it (``.md``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    date = result.get("date") or _dt.date.today().isoformat()
    stem = out / f"{date}-{_slug(device)}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    text = json.dumps(result, indent=2, default=str) + "\n"
    write_text(json_path, text)
    write_text(md_path, format_table(result))
    return json_path, md_path
