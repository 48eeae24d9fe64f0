"""The command line end to end on tiny settings, and its handling of bad input (one line, exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from undiffuse.cli.main import COMMANDS, build_parser, main

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


def test_nll_headline_and_json(digits_run, tmp_path, capsys):
    """One headline (bound ± SE and its parts); the per-stratum details only in --json PATH or with --json -."""
    assert run_cli("nll", digits_run, "--n", "8", "--n-t", "4", "--json", tmp_path / "nll.json") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "bits/dim" in lines[0] and "±" in lines[0]
    assert all(part in lines[0] for part in ("prior", "decoder", "KL")) and "nll.json" in lines[1]
    saved = json.loads((tmp_path / "nll.json").read_text())
    assert np.isfinite(saved["bits_per_dim"]) and saved["stderr"] > 0 and saved["units"] == "continuous"
    assert len(saved["kl_strata"]) == 4
    assert run_cli("nll", digits_run, "--n", "8", "--n-t", "4", "--json", "-") == 0
    assert json.loads(capsys.readouterr().out) == saved  # the same result, nothing but the JSON


def test_resume_more_steps(digits_run, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(digits_run, run)
    assert run_cli("train", "--out", run, "--resume", "--steps", "12", "--no-progress") == 0
    assert (run / "checkpoints" / "step_0000012").is_dir()


def test_noise_and_schedule_plots(tmp_path):
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    assert run_cli("noise", tmp_path / "in.png", "--t", "0,10,1000", "--out", tmp_path / "n.png") == 0
    assert Image.open(tmp_path / "n.png").size[1] >= 128 and Image.open(tmp_path / "n.png").size[0] >= 3 * 128
    strip = np.asarray(Image.open(tmp_path / "n.png"))
    assert (strip[2:130:8, 2:130:8] == strip[9:137:8, 9:137:8]).all()  # nearest neighbour: 8×8 blocks of a pixel
    assert run_cli("noise", tmp_path / "in.png", "--t", "0,10", "--min-px", "0", "--out", tmp_path / "n1.png") == 0
    assert Image.open(tmp_path / "n1.png").size[1] < 32
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
        (["sample", "{run}", "--n", "2", "--spacing", "nope", "--out", "{tmp}/x.png"], "trailing"),
        (["train", "--data", "digits", "--out", "{tmp}/r", "--steps", "0"], "--steps"),
        (["sample", "{run}", "--n", "-1", "--out", "{tmp}/x.png"], "--n"),
        (["sample", "{run}", "--bogus", "--out", "{tmp}/x.png"], "--bogus"),
    ],
)
def test_bad_input_one_line_exit_2(argv, needle, tmp_path, digits_run, capsys):
    """Bad input — the commands' own checks and argparse's alike — is one line and exit status 2."""
    fill = {"tmp": tmp_path, "missing": tmp_path / "no_run", "run": digits_run}
    argv = [a.format(**fill) for a in argv]
    try:
        code = run_cli(*argv)
    except SystemExit as e:  # argparse
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("undiffuse: error:") and needle in err


def test_non_empty_run_dir_refused_and_untouched(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "keep.txt").write_text("mine")
    assert run_cli("train", "--data", "digits", "--preset", "digits-tiny", "--out", run, "--steps", "1", *TINY) == 2
    assert (run / "keep.txt").read_text() == "mine" and sorted(p.name for p in run.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_quiet(command, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(command, "--help")
    assert e.value.code == 0 and "--quiet" in capsys.readouterr().out


def test_sampling_commands_use_one_thread_per_idle_core():
    """The measured default (benchmarks/threads.py): never more torch threads than idle cores, at least one."""
    from undiffuse.cli.common import idle_cores

    parser = build_parser()
    for argv in (["sample", "RUN", "--out", "x.png"], ["nll", "RUN"], ["eval", "RUN"]):
        assert parser.parse_args(argv).threads == "auto"
    assert parser.parse_args(["sample", "RUN", "--out", "x.png", "--threads", "2"]).threads == 2
    assert parser.parse_args(["bench"]).threads is None  # torch's own default
    assert idle_cores(cores=2, load=0.1) == 2 and idle_cores(cores=2, load=1.0) == 1 and idle_cores(cores=2, load=5) == 1
    assert idle_cores(cores=16, load=3.4) == 13 and idle_cores(cores=1, load=0.0) == 1


def test_threads_and_quiet_last_only_while_the_command_runs(digits_run, tmp_path):
    import torch

    import undiffuse.progress

    before = torch.get_num_threads()
    assert run_cli("sample", digits_run, "--n", "2", "--steps", "2", "--threads", before + 1, "--quiet",
                   "--out", tmp_path / "x.png") == 0  # fmt: skip
    assert torch.get_num_threads() == before and not undiffuse.progress._quiet


def test_bench_writes_outside_the_tracked_results_by_default():
    assert build_parser().parse_args(["bench", "--quick"]).out == "bench-results"


@pytest.mark.parametrize("out", ["x.npz", "outdir", "file.png/x.png"])
def test_out_refused_before_any_sampling(out, digits_run, tmp_path, monkeypatch, capsys):
    """An --out that cannot be written is refused with one line before a single sample is drawn."""
    import undiffuse.api

    (tmp_path / "file.png").write_bytes(b"not a directory")
    calls = []
    monkeypatch.setattr(undiffuse.api, "sample", lambda *a, **k: calls.append(1))
    assert run_cli("sample", digits_run, "--n", "2", "--out", tmp_path / out) == 2
    err = capsys.readouterr().err.strip()
    assert calls == [] and len(err.splitlines()) == 1 and err.startswith("undiffuse: error:")


def _on_a_terminal(argv: list, timeout: float = 300) -> tuple[int, str, str]:
    """Run the CLI in a subprocess whose stderr is a pseudo-terminal: (exit status, stdout, what the terminal got)."""
    import os
    import pty

    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "undiffuse.cli.main", *map(str, argv)], stdout=subprocess.PIPE,
                         stderr=slave, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out = p.communicate(timeout=timeout)[0].decode()
    os.close(master)
    return p.returncode, out, b"".join(chunks).decode(errors="replace")


def test_sample_progress_on_a_terminal_only(digits_run, tmp_path):
    """A bar with samples/s on a terminal; nothing with --quiet; nothing when stderr is not a terminal."""
    argv = ["sample", digits_run, "--n", "6", "--steps", "4", "--batch-size", "4"]
    code, out, tty = _on_a_terminal([*argv, "--out", tmp_path / "a.png"])
    assert code == 0 and "sample/s" in tty and "/6 " in tty and "wrote 6 samples" in out
    code, _, tty = _on_a_terminal([*argv, "--quiet", "--out", tmp_path / "b.png"])
    assert code == 0 and tty.strip() == ""
    p = subprocess.run([sys.executable, "-m", "undiffuse.cli.main", *map(str, argv), "--out", tmp_path / "c.png"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0 and p.stderr == ""


def test_eval_of_a_run_says_what_it_does_on_a_terminal(digits_run, tmp_path, monkeypatch):
    """Sampling progress in samples/s, the classifier trained (and where it is cached), the FD sample-size warning."""
    monkeypatch.setenv("UNDIFFUSE_CACHE", str(tmp_path / "cache"))
    code, out, tty = _on_a_terminal(["eval", digits_run, "--n", "8", "--steps", "3", "--nll-n", "4", "--nll-nt", "2",
                                     "--out", tmp_path / "rep"])  # fmt: skip
    assert code == 0 and "sample/s" in tty and "training a classifier on digits" in tty
    assert "8 samples are too few" in tty and "classifier_fd" in out


def test_nll_progress_on_a_terminal(digits_run):
    code, out, tty = _on_a_terminal(["nll", digits_run, "--n", "8", "--n-t", "2", "--batch-size", "4"])
    assert code == 0 and "example/s" in tty and "bits/dim" in out


def test_trainer_says_what_it_does_after_the_last_step(tmp_path):
    code, out, tty = _on_a_terminal(["train", "--data", "digits", "--preset", "digits-tiny", "--out", tmp_path / "r",
                                     "--steps", "3", "--set", "train.batch_size=8", "--set", "train.sample_every=3"])
    assert code == 0
    assert "sampling preview grid…" in tty and "saving checkpoint…" in tty and "plotting loss…" in tty
    assert "last-step loss" in out and "means over" in out


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "undiffuse.cli.main", "sample", str(tmp_path / "nothing"), "--out", "x.png"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1
