"""The command line end to end on tiny settings, and its handling of bad input (one line, exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from undiffuse.cli.main import main

TINY = ["--set", "train.batch_size=16", "--set", "train.ckpt_every=5", "--set", "train.sample_every=1000",
        "--set", "train.val_every=1000", "--no-progress"]


def run_cli(*argv: str) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert run_cli("train", "--data", "digits", "--preset", "digits-tiny", "--out", run, "--steps", "10", *TINY) == 0
    return run


def test_train_writes_checkpoint_log_and_plot(digits_run):
    assert (digits_run / "config.json").is_file()
    assert (digits_run / "loss.png").is_file()
    lines = (digits_run / "log.jsonl").read_text().splitlines()
    assert len(lines) >= 1 and "loss" in json.loads(lines[-1])
    assert any(p.name.startswith("step_") for p in (digits_run / "checkpoints").iterdir())


def test_sample_outputs(digits_run, tmp_path):
    assert run_cli("sample", digits_run, "--n", "6", "--steps", "4", "--out", tmp_path / "g.png", "--gif", tmp_path / "t.gif") == 0
    assert Image.open(tmp_path / "g.png").size[0] > 8
    assert Image.open(tmp_path / "t.gif").n_frames == 4
    assert run_cli("sample", digits_run, "--n", "5", "--steps", "3", "--out", tmp_path / "s.npy") == 0
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (5, 8, 8, 1) and arr.dtype == np.uint8
    assert run_cli("sample", digits_run, "--n", "3", "--steps", "3", "--out", str(tmp_path / "d") + "/") == 0
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["000000.png", "000001.png", "000002.png"]


def test_sample_i_independent_of_n_and_batch(digits_run, tmp_path):
    run_cli("sample", digits_run, "--n", "5", "--steps", "3", "--sampler", "ddpm", "--out", tmp_path / "a.npy")
    run_cli("sample", digits_run, "--n", "3", "--steps", "3", "--sampler", "ddpm", "--batch-size", "2", "--out", tmp_path / "b.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy")[:3], np.load(tmp_path / "b.npy"))


def test_nll_prints_json(digits_run, capsys):
    assert run_cli("nll", digits_run, "--n", "8", "--n-t", "4") == 0
    out = json.loads(capsys.readouterr().out)
    assert np.isfinite(out["bits_per_dim"]) and out["stderr"] > 0 and out["units"] == "continuous"


def test_resume_more_steps(digits_run, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(digits_run, run)
    assert run_cli("train", "--out", run, "--resume", "--steps", "12", "--no-progress") == 0
    assert (run / "checkpoints" / "step_0000012").is_dir()


def test_noise_and_schedule_plots(tmp_path):
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    assert run_cli("noise", tmp_path / "in.png", "--t", "0,10,1000", "--out", tmp_path / "n.png") == 0
    assert Image.open(tmp_path / "n.png").size[0] > 3 * 16
    assert run_cli("schedule", "--names", "linear,cosine", "--T", "100", "--out", tmp_path / "s.png") == 0
    assert (tmp_path / "s.png").is_file()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["sample", "{missing}", "--n", "2", "--out", "{tmp}/x.png"], "no_run"),
        (["train", "--data", "nosuchdata", "--out", "{tmp}/r"], "nosuchdata"),
        (["train", "--data", "digits", "--set", "train.nosuch=1", "--out", "{tmp}/r"], "nosuch"),
        (["train", "--data", "digits", "--set", "train.lr=abc", "--out", "{tmp}/r"], "train.lr"),
        (["train", "--data", "digits", "--set", "train.batch_size=0", "--out", "{tmp}/r"], "batch_size"),
        (["train", "--data", "folder:{tmp}", "--out", "{tmp}/r"], "no"),
        (["train", "--data", "digits", "--out", "{tmp}/r2", "--resume"], "resume"),
        (["noise", "{tmp}/nope.png"], "nope.png"),
        (["sample", "{run}", "--n", "2", "--sampler", "magic", "--out", "{tmp}/x.png"], "magic"),
        (["sample", "{run}", "--n", "2", "--out", "{tmp}/x.txt"], ".txt"),
    ],
)
def test_bad_input_one_line_exit_2(argv, needle, tmp_path, digits_run, capsys):
    fill = {"tmp": tmp_path, "missing": tmp_path / "no_run", "run": digits_run}
    argv = [a.format(**fill) for a in argv]
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("undiffuse: error:") and needle in err


def test_non_empty_run_dir_refused_and_untouched(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "keep.txt").write_text("mine")
    assert run_cli("train", "--data", "digits", "--preset", "digits-tiny", "--out", run, "--steps", "1", *TINY) == 2
    assert (run / "keep.txt").read_text() == "mine" and sorted(p.name for p in run.iterdir()) == ["keep.txt"]


def test_zero_steps_refused_by_argparse(tmp_path):
    with pytest.raises(SystemExit) as e:
        run_cli("train", "--data", "digits", "--out", tmp_path / "r", "--steps", "0")
    assert e.value.code == 2


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "undiffuse.cli.main", "sample", str(tmp_path / "nothing"), "--out", "x.png"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1
