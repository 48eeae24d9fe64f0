"""The side-by-side benchmark: the tiny mode writes the required JSON, the quality protocol agrees
with diffusers where the algorithms coincide, and without diffusers undiffuse is measured alone."""

from __future__ import annotations

import json

import pytest
import torch

from undiffuse import bench
from undiffuse.bench import quality, report, throughput
from undiffuse.speed import TrainOptions

REQUIRED_ROWS = {"train_speedup_tiny", "train_speedup_tiny_best", "sample_speedup", "sample_speedup_best"}


def test_tiny_bench_writes_json_with_required_keys(tmp_path):
    pytest.importorskip("diffusers")
    res = bench.run_bench(quick=True, device="cpu", out_dir=tmp_path, tiny=True, memory=False, echo=False)
    files = sorted(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".json", ".md"] and files[0].name.endswith("-cpu.json")
    data = json.loads(files[0].read_text())
    assert {"device", "versions", "results"} <= set(data)
    assert data["device"].startswith("cpu: ") and {"torch", "diffusers", "undiffuse", "python"} <= set(
        data["versions"]
    )
    names = {r["name"] for r in data["results"]}
    assert REQUIRED_ROWS <= names
    for r in data["results"]:
        assert set(r) == {"name", "unit", "undiffuse", "diffusers", "speedup", "note"}
        if r["name"].startswith(("train_speedup", "sample_speedup")):
            assert r["unit"] == "img/s" and r["undiffuse"] > 0 and r["diffusers"] > 0
            assert r["speedup"] == pytest.approx(r["undiffuse"] / r["diffusers"])
    sample_row = next(r for r in data["results"] if r["name"] == "sample_speedup")
    assert "'undiffuse': 2" in sample_row["note"] and "'diffusers': 2" in sample_row["note"]  # counted NFE
    assert any(n.startswith("quality_gmm25_oracle_err@") for n in names)
    assert "| train_speedup_tiny |" in files[1].read_text() and res["results"] == data["results"]


def test_without_diffusers_undiffuse_is_measured_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "_has_diffusers", lambda: False)
    res = bench.run_bench(quick=True, device="cpu", out_dir=None, tiny=True, memory=False, oracle=False,
                          echo=False)  # fmt: skip
    assert all(r["diffusers"] is None and r["speedup"] is None for r in res["results"])
    assert all(r["undiffuse"] > 0 for r in res["results"])
    assert "undiffuse measured alone" in res["summary"]


def test_peak_memory_of_a_fresh_process():
    setup = throughput.Setup("undiffuse", "tiny", 2, "cpu", TrainOptions())
    mb = throughput.peak_memory_mb(setup, steps=1)
    assert mb is not None and 50 < mb < 4000


def test_diffusers_twin_has_the_same_parameter_count():
    pytest.importorskip("diffusers")
    from undiffuse.nn import UNET_PRESETS, UNet

    for preset in ("tiny", "fmnist-small"):
        twin = throughput.diffusers_twin(UNET_PRESETS[preset])
        count = lambda m: sum(p.numel() for p in m.parameters())
        assert count(twin) == count(UNet(**UNET_PRESETS[preset]))


def test_quality_protocol_matches_diffusers_where_algorithms_coincide():
    """On the exact 25-Gaussian denoiser, undiffuse's DDIM / DPM-Solver++(2M) / UniPC on the trailing
    grid reproduce diffusers' DDIM / DPMSolverMultistep / UniPC schedulers (trailing spacing, driven
    through DenoiserAsEpsModel) — the comparison is apples to apples — and NFE are as budgeted."""
    pytest.importorskip("diffusers")
    rows, q = quality.oracle_quality("cpu", n=64, tiny=True)
    err = q["errors"]
    pairs = {
        "ddim": "DDIMScheduler",
        "dpmpp_2m": "DPMSolverMultistepScheduler",
        "unipc": "UniPCMultistepScheduler",
    }
    for ours, theirs in pairs.items():
        for nfe in (5, 10):
            assert err[f"undiffuse:{ours}@trailing"][nfe] == pytest.approx(
                err[f"diffusers:{theirs}"][nfe], rel=1e-3
            )
    for key, per in q["nfe"].items():  # counted; Heun spends at most the budget (2N − 1 ≤ NFE)
        assert per == {5: 5, 10: 10} if "heun" not in key else (per[5] <= 5 and per[10] <= 10)
    assert q["reference"]["error_vs_half_steps"] < 1e-2
    names = [r["name"] for r in rows]
    assert "quality_gmm25_oracle_err@10" in names and "quality_gmm25_oracle_modes@10" in names
    r10 = next(r for r in rows if r["name"] == "quality_gmm25_oracle_err@10")
    assert r10["speedup"] == pytest.approx(r10["diffusers"] / r10["undiffuse"])


def test_report_orientation_and_table():
    up = report.row("x", "img/s", 4.0, 2.0)
    down = report.row("m", "MB", 100.0, 150.0, higher_is_better=False)
    assert up["speedup"] == 2.0 and down["speedup"] == 1.5
    text = report.format_table({"device": "cpu: test", "versions": {}, "results": [up, down]})
    assert "| x | img/s | 4 | 2 | 2× |" in text
    assert report.row("y", "img/s", 1.0, None)["speedup"] is None


def test_interleaved_alternates_and_counts():
    calls = []
    times = throughput.interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 1, "cpu"
    )
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"] and all(len(v) == 3 for v in times.values())
    net = throughput.CountingNet(torch.nn.Identity())
    net(torch.zeros(1))
    assert net.nfe == 1


def test_add_quality_extends_a_result_file(tmp_path):
    from undiffuse.data.toys import toy_modes
    from undiffuse.diffusion.oracles import GaussianMixtureOracle
    from undiffuse.schedules import make_schedule

    path = tmp_path / "r.json"
    base = {
        "device": report.device_name("cpu"),
        "versions": report.versions(),
        "results": [report.row("x", "img/s", 1.0, 1.0)],
    }
    path.write_text(json.dumps(base))
    means, std = toy_modes("25gaussians")
    run = (GaussianMixtureOracle(means, std), make_schedule("linear", 1000), (2,), (means, std))
    kw = dict(nfes=(5,), grids=("trailing",), reference_steps=50, samplers=("ddim",))
    res = bench.add_quality(path, {"toy": run}, "cpu", n=16, echo=False, **kw)
    names = [r["name"] for r in json.loads(path.read_text())["results"]]
    assert names[0] == "x" and "quality_toy_err@5" in names and "quality_toy_modes@5" in names
    assert (tmp_path / "r.md").is_file() and "toy" in res["quality"]


def test_image_distances_beside_the_errors(tmp_path):
    """On a trained image run, the sampler table gains classifier-FD rows: the best undiffuse sampler and
    the best diffusers scheduler at the NFE budget (counted, within budget) and 1000-step DDPM, whose
    distance is reported on its own row and as the ratio in the note."""
    pytest.importorskip("diffusers")
    from undiffuse.config import apply_overrides, get_preset
    from undiffuse.training import train

    cfg = apply_overrides(get_preset("digits-tiny"), ["train.batch_size=16", "train.ckpt_every=0", "train.val_every=0",
                                                      "train.sample_every=0", "data.limit=256", "diffusion.T=100"])  # fmt: skip
    train(cfg, tmp_path / "run", steps=30, progress=False)
    kw = dict(nfes=(5,), grids=("trailing",), reference_steps=40, samplers=("ddim", "dpmpp_2m"), fd_samples=48)
    rows, q = quality.quality_rows(tmp_path / "run", "digits", "cpu", n=8, **kw)
    d = q["distances"]
    assert d["ddpm"]["nfe"] == 100 and d["n"] == 48 and list(d["per_nfe"]) == [5]
    per = d["per_nfe"][5]
    assert per["undiffuse"]["nfe"] <= 5 and per["diffusers"]["nfe"] == 5
    by_name = {r["name"]: r for r in rows}
    ref = by_name["quality_digits_fd_ddpm1000"]["undiffuse"]
    r5 = by_name["quality_digits_fd@5"]
    assert ref == d["ddpm"]["fd"] > 0 and r5["undiffuse"] == per["undiffuse"]["fd"] > 0
    assert r5["speedup"] == pytest.approx(r5["diffusers"] / r5["undiffuse"])
    assert f"undiffuse {per['undiffuse']['fd'] / ref:.2f}× DDPM-1000's" in r5["note"]
