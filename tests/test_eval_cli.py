"""``undiffuse eval`` on known cases, its bad inputs, and GAN/VAE baselines through train/sample/eval."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from undiffuse.cli.main import main


def run_cli(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(autouse=True)
def _one_thread_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNDIFFUSE_CACHE", str(tmp_path / "cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_eval_exact_mixture_samples_cover_every_mode(tmp_path):
    """2,500 points drawn from the 25-Gaussian mixture itself: 25/25 modes, ≥ 95 % within 3σ (99.9 % expected
    of a 2-D Gaussian within 3σ is 98.9 %)."""
    from undiffuse.data import sample_toy

    x, _ = sample_toy("25gaussians", 2500, torch.Generator().manual_seed(7))
    np.save(tmp_path / "toy.npy", x.numpy().astype(np.float32))
    assert run_cli("eval", tmp_path / "toy.npy", "--data", "toy:25gaussians", "--out", tmp_path / "rep") == 0
    r = json.loads((tmp_path / "rep.json").read_text())
    assert r["modes_covered"] == 25 and r["high_quality_share"] >= 0.95
    assert r["protocol"]["n_samples"] == 2500 and r["protocol"]["reference"]["split"] == "test"
    assert 0.9 <= r["precision"] <= 1 and 0.9 <= r["recall"] <= 1
    assert (tmp_path / "rep.md").read_text().startswith("# Evaluation")


def test_eval_png_folder_of_digits(tmp_path, capsys):
    """Real digits written as PNGs vs the digits test split: finite FD, precision/recall in [0, 1]."""
    from undiffuse.api import save_samples
    from undiffuse.build import DataInfo
    from undiffuse.data import load_dataset

    ds = load_dataset("digits", "train")
    save_samples(ds.x[:200], str(tmp_path / "pngs") + "/", DataInfo.from_dataset(ds))
    assert run_cli("eval", tmp_path / "pngs", "--data", "digits") == 0
    r = json.loads((tmp_path / "pngs_eval.json").read_text())
    assert math.isfinite(r["classifier_fd"]) and r["classifier_fd"] >= 0
    assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
    assert r["classes_covered"] >= 8 and sum(r["class_histogram"]) == 200
    assert r["classifier"]["test_accuracy"] > 0.5
    assert (tmp_path / "cache" / "classifiers").is_dir()  # trained once, cached
    captured = capsys.readouterr()
    assert "classifier_fd" in captured.out
    # said while it happens: the classifier is trained and where it is cached; 200 samples are too few for an FD
    assert "training a classifier on digits" in captured.err and str(tmp_path / "cache") in captured.err
    assert "200 samples are too few" in captured.err and "at least 1000" in captured.err
    assert run_cli("eval", tmp_path / "pngs", "--data", "digits", "--quiet") == 0  # cached: nothing to say
    assert "training" not in capsys.readouterr().err


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("undiffuse: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_eval_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    assert run_cli("eval", tmp_path / "missing.npy", "--data", "toy:25gaussians") == 2
    assert "does not exist" in _one_line_error(capsys)
    np.save(tmp_path / "pts3.npy", np.zeros((10, 3), np.float32))
    assert run_cli("eval", tmp_path / "pts3.npy", "--data", "toy:25gaussians") == 2
    assert "float32 [N, 2]" in _one_line_error(capsys)
    np.save(tmp_path / "imgf.npy", np.zeros((10, 8, 8, 1), np.float32))
    assert run_cli("eval", tmp_path / "imgf.npy", "--data", "digits") == 2
    assert "uint8" in _one_line_error(capsys)
    assert run_cli("eval", tmp_path / "pts3.npy") == 2
    assert "--data is required" in _one_line_error(capsys)
    assert run_cli("eval", tmp_path / "pts3.npy", "--data", "nosuchdata") == 2
    assert "nosuchdata" in _one_line_error(capsys)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    assert run_cli("eval", tmp_path / "bad.npy", "--data", "toy:8gaussians") == 2
    _one_line_error(capsys)


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_baseline_train_sample_eval_through_the_cli(tmp_path, kind, capsys):
    run = tmp_path / "run"
    assert run_cli("train", "--data", "toy:8gaussians", "--baseline", kind, "--out", run, "--steps", "5", "--seed", "1") == 0
    assert json.loads((run / "config.json").read_text())["config"]["seed"] == 1
    assert run_cli("sample", run, "--n", "40", "--out", tmp_path / "x.npy") == 0
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (40, 2) and x.dtype == np.float32
    assert run_cli("sample", run, "--n", "40", "--out", tmp_path / "x.png") == 0
    assert (tmp_path / "x.png").stat().st_size > 0
    assert run_cli("eval", run, "--n", "40", "--nll-n", "20") == 0
    r = json.loads((run / "eval.json").read_text())
    assert r["model"] == kind and r["sampling"]["nfe"] == 1 and r["protocol"]["n_samples"] == 40
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), x)
    if kind == "vae":
        assert math.isfinite(r["nll"]["bits_per_dim"])
    else:
        assert r["nll"]["bits_per_dim"] is None
    capsys.readouterr()
    assert run_cli("train", "--data", "toy:8gaussians", "--baseline", kind, "--out", run, "--steps", "5") == 2
    assert "not empty" in _one_line_error(capsys)
    assert run_cli("train", "--data", "toy:8gaussians", "--baseline", kind, "--out", tmp_path / "r2") == 2
    assert "budget" in _one_line_error(capsys)


def test_sample_run_at_strided_indices_equals_one_process(tmp_path):
    """Rank r of W draws indices r::W; gathered, they equal the one-process samples (diffusion and GAN)."""
    import undiffuse.api as api
    from undiffuse.baselines import train_baseline
    from undiffuse.config import resolve_config
    from undiffuse.evaluation.runs import sample_run
    from undiffuse.training import train

    cfg = resolve_config("toy:8gaussians", None, ["train.steps=3", "train.sample_every=0", "train.val_every=0",
                                                  "train.batch_size=32", "model.hidden=32", "model.depth=2"])  # fmt: skip
    train(cfg, tmp_path / "d", progress=False, device="cpu")
    train_baseline("gan", "toy:8gaussians", tmp_path / "g", steps=2, model={"width": 16})
    for run in (tmp_path / "d", tmp_path / "g"):
        full, info = sample_run(run, range(7), seed=3, sampler="ddpm", steps=5)
        parts = [sample_run(run, range(r, 7, 2), seed=3, sampler="ddpm", steps=5)[0] for r in range(2)]
        order = torch.tensor([*range(0, 7, 2), *range(1, 7, 2)]).argsort()
        torch.testing.assert_close(torch.cat(parts)[order], full)
        assert info["nfe"] >= 1 and info["seconds_per_sample"] > 0
    m = api.load(tmp_path / "d", device="cpu")
    torch.testing.assert_close(sample_run(tmp_path / "d", range(7), 3, sampler="ddpm", steps=5)[0],
                               api.sample(m, 7, 3, sampler="ddpm", steps=5))  # fmt: skip


def _rank_main(rank: int, world: int, port: int, argv: list) -> None:
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    assert main(argv) == 0


def test_eval_under_two_gloo_ranks_equals_one_process(tmp_path):
    """torchrun-style: 2 ranks draw indices r::2, rank 0 gathers — the report equals the one-process one."""
    import socket

    import torch.multiprocessing as mp

    from undiffuse.baselines import train_baseline

    train_baseline("gan", "toy:8gaussians", tmp_path / "g", steps=3, model={"width": 16})
    common = ["eval", str(tmp_path / "g"), "--n", "50", "--nll-n", "0", "--device", "cpu"]
    assert run_cli(*common, "--out", tmp_path / "one") == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(2, port, [*common, "--out", str(tmp_path / "two")]), nprocs=2,
                       start_method="spawn")  # fmt: skip
    one, two = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert two["sampling"]["world_size"] == 2 and two["protocol"]["n_samples"] == 50
    for k in ("modes_covered", "high_quality_share", "precision", "recall", "per_mode_counts"):
        assert one[k] == two[k], k
