"""The study's bookkeeping: finished units are skipped on rerun, failed ones retried; aggregation; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from undiffuse import study
from undiffuse.cli.main import main


def _fake_runner(calls: list, fail: set = frozenset()):
    def runner(unit, run_dir, settings):
        calls.append(unit.name)
        if unit.name in fail:
            raise RuntimeError("boom")
        good = unit.model != "gan"
        return {"modes_covered": 25 if good else 3 + unit.seed, "n_modes": 25,
                "high_quality_share": 0.97 if good else 0.01, "precision": 0.9, "recall": 0.8 + 0.01 * unit.seed,
                "bits_per_dim": None if unit.model == "gan" else 1.5, "nfe": 1000 if unit.model == "diffusion" else 1,
                "seconds_per_sample": 1e-3, "train_steps": 10, "collapsed": not good}  # fmt: skip

    return runner


def test_finished_units_are_skipped_and_failed_ones_retried(tmp_path):
    units = study.toy_units(2)[:6]  # 25gaussians × 2 seeds × 3 models
    calls: list = []
    bad = units[4].name
    with pytest.raises(RuntimeError):
        study.run_study(tmp_path, units, runner=_fake_runner(calls, {bad}), log=lambda s: None)
    assert calls == [u.name for u in units[:5]]
    assert not (tmp_path / f"{bad}.json").exists() and (tmp_path / f"{units[3].name}.json").is_file()
    calls.clear()
    res = study.run_study(tmp_path, units, runner=_fake_runner(calls), log=lambda s: None)
    assert calls == [bad, units[5].name]  # only the failed and the not-yet-run units
    assert [r["name"] for r in res] == [u.name for u in units]
    calls.clear()
    study.run_study(tmp_path, units, runner=_fake_runner(calls), log=lambda s: None)
    assert calls == []
    assert (tmp_path / ".gitignore").read_text().count("runs/") == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = {r["model"]: r for r in summary["rows"]}
    assert rows["gan"]["modes_covered"]["mean"] == 3.5 and rows["gan"]["modes_covered"]["min"] == 3
    assert rows["gan"]["collapsed"] == [u.name for u in units if u.model == "gan"]
    assert rows["diffusion"]["collapsed"] == [] and rows["diffusion"]["modes_covered"]["std"] == 0
    assert "bits_per_dim" not in rows["gan"]
    md = (tmp_path / "summary.md").read_text()
    assert "| toy:25gaussians | diffusion | 2 | 25 ± 0 [25–25]" in md and "97.0 %" in md


def test_study_cli_resumes_and_plots(tmp_path, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(study, "run_unit", _fake_runner(calls))
    argv = ["study", "--only", "toys", "--seeds", "1", "--out", str(tmp_path / "o"), "--plots", str(tmp_path / "img")]
    assert main(argv) == 0
    assert len(calls) == 6
    assert main(argv) == 0
    assert len(calls) == 6  # nothing rerun
    assert (tmp_path / "img" / "study_toy_metrics.png").is_file()
    assert "summary.md" in capsys.readouterr().out


def test_a_real_tiny_toy_unit(tmp_path):
    """run_unit end to end with a 1.5-CPU-second budget: trains, samples, evaluates, reports cost."""
    n = torch.get_num_threads()
    try:
        s = study.StudySettings(toy_seconds=1.5, toy_samples=200, nll_n_toy=20)
        res = study.run_study(tmp_path, [study.Unit("toy:8gaussians", "vae", 0)], s, log=lambda m: None)[0]
    finally:
        torch.set_num_threads(n)
    assert res["n_modes"] == 8 and 0 <= res["high_quality_share"] <= 1
    assert res["train"]["cpu_seconds"] >= 1.5 and res["train_steps"] > 0
    assert res["nfe"] == 1 and res["seconds_per_sample"] > 0 and np.isfinite(res["bits_per_dim"])
    assert isinstance(res["collapsed"], bool)
    assert (tmp_path / "runs" / res["name"] / "samples.npy").is_file()


def test_fid_computed_elsewhere_is_merged_into_the_unit(tmp_path):
    """A ``<unit>.fid.json`` (e.g. written on a GPU machine by benchmarks/gpu/fid.py) is merged into the unit's
    JSON by run_fid without recomputing, and the summary then carries the FID."""
    unit = study.Unit(study.FMNIST, "vae", 0)
    (tmp_path / f"{unit.name}.json").write_text(json.dumps({"unit": {"dataset": unit.dataset, "model": "vae", "seed": 0},
                                                            "name": unit.name, "classifier_fd": 3.0}))  # fmt: skip
    fid = {"fid": 12.5, "kid": 0.01, "fid_protocol": {"n_samples": 2000}, "device": "NVIDIA H100 80GB HBM3"}
    (tmp_path / f"{unit.name}.fid.json").write_text(json.dumps(fid))
    study.run_fid(tmp_path, [unit.name], n=2000)  # no samples.npy: nothing to compute, only the merge
    d = json.loads((tmp_path / f"{unit.name}.json").read_text())
    assert d["fid"] == 12.5 and d["kid"] == 0.01 and d["fid_device"] == fid["device"] and d["classifier_fd"] == 3.0
    summary = study.aggregate(study.load_results(tmp_path))
    assert "12.5" in study.summary_markdown(summary)
