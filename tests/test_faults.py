"""The faults of issue 10 §5 that concern run directories, files and inputs — one test each, on real
runs, real files and real processes: non-finite weights, a second writer, an edited config.json, OS errors
at the command line, bad values up front, stale temporary files, load racing with pruning, file modes,
echoed and read sizes, diffusers shard paths, and the fixed-large convention at t = 1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, tiny_config
from safetensors.torch import load_file, save_file

import undiffuse
import undiffuse.runs.diffusion as runs_diffusion
import undiffuse.training.step as step_mod
from undiffuse.cli.main import main
from undiffuse.errors import CheckpointError, TrainingError, UserError
from undiffuse.io import is_temp_name, write_json, write_text
from undiffuse.runs import latest_checkpoint, list_checkpoints
from undiffuse.training import train

pytestmark = pytest.mark.usefixtures("single_thread")
CLI_TINY = ["--data", "digits", "--preset", "digits-tiny", "--no-progress", *[a for s in TINY_RUN for a in ("--set", s)]]
tiny = tiny_config


@pytest.fixture
def run(tiny_run) -> Path:
    return tiny_run


@pytest.fixture
def copy(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def cli(capsys, *argv: str) -> tuple[int, str]:
    """Run the command line; (exit status, stderr) — and every error must be a single line."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    if rc != 0:
        assert err.count("\n") == 0 and err.startswith("undiffuse: error:") and "Traceback" not in err, err
    return rc, err


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temp_name(p.name) or p.name.startswith((".tmp-", ".old-"))]


def python(code: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


# --- 2. non-finite values and weights --------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["train.lr=inf", "train.lr=nan", "diffusion.sigma_data=nan", "train.adam_betas=nan,0.9"])
def test_non_finite_config_values_are_refused(tmp_path, capsys, bad):
    rc, err = cli(capsys, "train", *CLI_TINY, "--set", bad, "--out", tmp_path / "r")
    assert rc == 2 and bad.split("=")[0] in err and "finite" in err
    assert not (tmp_path / "r").exists()


def test_non_finite_weights_are_never_saved_and_the_last_good_checkpoint_stays(tmp_path, monkeypatch):
    real, calls = step_mod.StepEngine.step_optimizer, {"n": 0}

    def blow_up(self, *a, **kw):  # what lr=inf did: a finite loss, then an update to ±inf weights
        out = real(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 4:
            with torch.no_grad():
                next(self.precond.net.parameters()).fill_(float("inf"))
        return out

    monkeypatch.setattr(step_mod.StepEngine, "step_optimizer", blow_up)
    with pytest.raises(TrainingError) as e:
        train(tiny(), tmp_path / "r", steps=6, progress=False)
    msg = str(e.value)
    assert "non-finite" in msg and "step 4" in msg and "step_0000002" in msg and "\n" not in msg
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step_0000002"]
    assert undiffuse.load(tmp_path / "r", device="cpu").step == 2  # the last good one, finite


def test_non_finite_weights_are_refused_when_loading(copy, tmp_path, capsys):
    f = latest_checkpoint(copy) / "ema.safetensors"
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(f).items()}, f)
    out = tmp_path / "grid.png"
    rc, err = cli(capsys, "sample", copy, "--n", "4", "--steps", "2", "--out", out)
    assert rc == 2 and "non-finite" in err and "step_0000004" in err and not out.exists()
    with pytest.raises(CheckpointError, match="non-finite"):
        train(None, copy, steps=6, resume=True, progress=False)
    assert undiffuse.load(copy, checkpoint=2, device="cpu").step == 2  # the advice works


# --- 3. one writer per run directory ---------------------------------------------------------------------


def test_a_second_writer_is_refused_at_once_and_a_dead_holders_lock_does_not_block(copy, capsys):
    holder = python(f"""
        import time
        from undiffuse.runs import lock_run
        lock = lock_run({str(copy)!r}, new=False)
        print("locked", flush=True)
        time.sleep(120)
    """)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        rc, err = cli(capsys, "train", "--resume", "--out", copy, "--steps", "6", "--no-progress")
        assert rc == 2 and f"process {holder.pid} on {socket.gethostname()}" in err and "in use" in err
        assert time.perf_counter() - t0 < 30  # refused at once, not after loading and building
        rc, err = cli(capsys, "train", *CLI_TINY, "--out", copy)  # a new run there: the writer is named too
        assert rc == 2 and f"process {holder.pid}" in err
        with pytest.raises(TrainingError, match=f"process {holder.pid}"):
            train(None, copy, steps=6, resume=True, progress=False)
    finally:
        holder.send_signal(signal.SIGKILL)  # the holder dies without releasing anything
        holder.wait()
    s = train(None, copy, steps=6, resume=True, progress=False)  # the stale lock file does not block
    assert (s.start_step, s.step) == (4, 6)


# --- 4. the checkpoint's configuration rules -------------------------------------------------------------


@pytest.mark.parametrize("edit", [("diffusion", "T", 500), ("diffusion", "parameterization", "v")])
def test_an_edited_config_json_is_refused_for_sample_and_resume(copy, tmp_path, capsys, edit):
    section, key, value = edit
    cfg_file = copy / "config.json"
    original = cfg_file.read_text()
    d = json.loads(original)
    d[section][key] = value
    cfg_file.write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match=f"{section}.{key}") as e:
        undiffuse.load(copy, device="cpu")
    assert "contradicts" in str(e.value) and "step_0000004" in str(e.value)
    rc, err = cli(capsys, "sample", copy, "--n", "2", "--steps", "2", "--out", tmp_path / "g.png")
    assert rc == 2 and f"{section}.{key}" in err
    with pytest.raises(UserError, match=f"{section}.{key}"):
        train(None, copy, steps=6, resume=True, progress=False)
    d = json.loads(original)
    d["train"]["steps"] = 99  # the one setting a resumed run changes: never a contradiction
    cfg_file.write_text(json.dumps(d))
    assert undiffuse.load(copy, device="cpu").config.diffusion.T == 1000
    cfg_file.unlink()  # without config.json the checkpoint's own configuration is used
    assert undiffuse.load(copy, device="cpu").step == 4


# --- 5. OS errors and broken files at the command line ---------------------------------------------------


@contextlib.contextmanager
def full_tmpfs(root: Path, size: str = "24m"):
    """A small tmpfs at ``root`` (root only), and a function that fills it to the last byte."""
    root.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)],
                                           capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("mounting a tmpfs needs root")

    def fill() -> Path:
        filler = root / "filler"
        with open(filler, "ab") as f:
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        with contextlib.suppress(OSError):
            with open(filler, "ab") as f:
                for _ in range(65536):
                    f.write(b"\0")
                    f.flush()
        return filler

    try:
        yield fill
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_full_disk_outside_the_checkpoint_save_is_one_line(run, tmp_path, capsys):
    with full_tmpfs(tmp_path / "disk") as fill:
        mine = Path(shutil.copytree(run, tmp_path / "disk" / "run"))
        filler = fill()
        rc, err = cli(capsys, "sample", run, "--n", "4", "--steps", "2", "--out", tmp_path / "disk" / "grid.png")
        assert rc == 2 and "disk full" in err and "free space" in err
        rc, err = cli(capsys, "train", "--resume", "--out", mine, "--steps", "6", "--no-progress")
        assert rc == 2 and "disk full" in err and "--resume" in err  # config.json could not be written
        assert temp_files(tmp_path / "disk") == [] and latest_checkpoint(mine).name == "step_0000004"
        filler.unlink()  # free space and --resume, as the message says
        rc, err = cli(capsys, "train", "--resume", "--out", mine, "--steps", "6", "--no-progress")
        assert rc == 0, err
        assert latest_checkpoint(mine).name == "step_0000006"


def test_broken_files_and_paths_are_one_line(copy, tmp_path, capsys):
    (tmp_path / "file").write_text("a regular file")
    rc, err = cli(capsys, "train", *CLI_TINY, "--out", tmp_path / "file" / "run")
    assert rc == 2 and "is a file" in err
    rc, err = cli(capsys, "sample", copy, "--n", "2", "--steps", "2", "--out", tmp_path / "file" / "grid.png")
    assert rc == 2 and str(tmp_path / "file") in err
    state = latest_checkpoint(copy) / "state.json"
    d = json.loads(state.read_text())
    state.write_text(json.dumps({**d, "step": "four"}))
    rc, err = cli(capsys, "sample", copy, "--n", "2", "--steps", "2", "--out", tmp_path / "g.png")
    assert rc == 2 and "step" in err and "integer" in err
    state.write_text(json.dumps(d))
    text = (copy / "config.json").read_text()
    (copy / "config.json").write_text(text[: len(text) // 2])  # truncated
    rc, err = cli(capsys, "sample", copy, "--n", "2", "--steps", "2", "--out", tmp_path / "g.png")
    assert rc == 2 and "config.json" in err and "truncated" in err
    rc, err = cli(capsys, "train", "--resume", "--out", copy, "--steps", "6", "--no-progress")
    assert rc == 2 and "config.json" in err


# --- 6. bad values up front; a failed start leaves nothing -----------------------------------------------


@pytest.mark.parametrize("bad,named", [("data.image_size=1", "data.image_size"), ("train.batch_size=1e11", "batch_size"),
                                       ("train.lr=nan", "train.lr")])  # fmt: skip
def test_bad_values_are_refused_up_front_and_leave_no_run_directory(tmp_path, capsys, bad, named):
    out = tmp_path / "r"
    rc, err = cli(capsys, "train", *CLI_TINY, "--set", bad, "--out", out)
    assert rc == 2 and named in err and "train.lr" not in err.split("—")[1]  # never the wrong advice
    assert not out.exists()
    assert cli(capsys, "train", *CLI_TINY, "--steps", "2", "--out", out)[0] == 0  # the same --out works


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new", tmp_path / "empty"):
        with pytest.raises(UserError, match="became (NaN|inf)"):
            train(tiny("train.lr=1e30", "train.warmup_steps=0", "train.grad_clip=0", "train.ckpt_every=50"), out,
                  steps=30, progress=False)  # fmt: skip
        assert not out.exists() or [p.name for p in out.iterdir()] in ([], [".lock"])
        train(tiny(), out, steps=2, progress=False)  # usable again


# --- 7. stale temporary files ------------------------------------------------------------------------------


def test_stale_temp_files_of_a_killed_writer_are_removed_on_start(tmp_path):
    out = tmp_path / "r"
    victim = python(f"""
        import os, signal
        import undiffuse.plots as plots
        from undiffuse.config import apply_overrides, get_preset
        from undiffuse.training import train
        real = plots.atomic_path

        def killed_mid_plot(path):  # kill -9 while the loss plot is half written
            tmp = real(path).__enter__()
            open(tmp, "wb").write(b"half a png")
            os.kill(os.getpid(), signal.SIGKILL)

        plots.atomic_path = killed_mid_plot
        train(apply_overrides(get_preset("digits-tiny"), {TINY_RUN!r}), {str(out)!r}, steps=4, progress=False)
    """)
    victim.wait(timeout=300)
    assert victim.returncode == -signal.SIGKILL, victim.stderr.read()
    (out / "samples").mkdir()
    (out / "samples" / ".step_0000002.png.a1b2c3d4.tmp").write_bytes(b"x")  # a killed grid write
    (out / ".loss.q9z8y7x6.png").write_bytes(b"x")  # older versions' plot temp name
    (out / "checkpoints" / ".tmp-step_0000004-12345").mkdir()  # a killed checkpoint save
    stale = temp_files(out)
    assert len(stale) == 4 and any(p.name.startswith(".loss.png.") for p in stale)
    s = train(None, out, steps=4, resume=True, progress=False)
    assert s.step == 4 and temp_files(out) == [] and (out / "loss.png").stat().st_size > 1000


# --- 8. load racing with checkpoint pruning ----------------------------------------------------------------


def test_load_racing_with_pruning_reads_the_next_newest(copy, monkeypatch):
    real, raced = runs_diffusion.read_weights, {"done": False}
    ckpts = copy / "checkpoints"

    def racing(path, name):
        if not raced["done"]:  # between reading state.json and the weights, a save of step 6 prunes step 4
            raced["done"] = True
            shutil.copytree(ckpts / "step_0000004", ckpts / "step_0000006")
            state = json.loads((ckpts / "step_0000006" / "state.json").read_text())
            (ckpts / "step_0000006" / "state.json").write_text(json.dumps({**state, "step": 6}))
            shutil.rmtree(ckpts / "step_0000004")
        return real(path, name)

    monkeypatch.setattr(runs_diffusion, "read_weights", racing)
    model = undiffuse.load(copy, device="cpu")
    assert raced["done"] and model.step == 6 and model.checkpoint.name == "step_0000006"


# --- 9. file modes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_a_plain_write_would(tmp_path, umask):
    from undiffuse.data.images import save_image_grid

    old = os.umask(umask)
    try:
        files = [write_json(tmp_path / "a.json", {"x": 1}), write_text(tmp_path / "b.md", "b"),
                 save_image_grid(torch.zeros(4, 1, 8, 8), tmp_path / "g.png")]  # fmt: skip
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    for f in [*files, tmp_path / "plain"]:
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f


def test_a_sample_stream_writes_whole_or_not_at_all(tmp_path):
    """A streamed .npy appears only when every batch is written; an aborted one (an error, Ctrl-C) leaves the
    previous file byte for byte and no temporary file."""
    import numpy as np

    from undiffuse.build import DataInfo
    from undiffuse.data.kinds import SampleStream

    info, out = DataInfo(name="toy:8gaussians", kind="vector", shape=(2,)), tmp_path / "x.npy"
    with SampleStream(out, info, 4) as stream:
        stream(0, torch.ones(2, 2))
        stream(2, torch.full((2, 2), 2.0))
    assert np.load(out).tolist() == [[1, 1], [1, 1], [2, 2], [2, 2]]
    before = out.read_bytes()
    with pytest.raises(KeyboardInterrupt), SampleStream(out, info, 4) as stream:
        stream(0, torch.zeros(2, 2))
        raise KeyboardInterrupt
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


# --- 11. what is echoed and what is read ---------------------------------------------------------------------


def test_wrong_values_are_echoed_short_and_config_json_is_read_capped(copy, tmp_path, capsys):
    huge = "9" * 5 + "x" * 200_000
    rc, err = cli(capsys, "train", *CLI_TINY, "--set", f"train.lr={huge}", "--out", tmp_path / "r")
    assert rc == 2 and "train.lr" in err and len(err) < 400
    d = json.loads((copy / "config.json").read_text())
    d["diffusion"]["schedule"] = "y" * 500_000  # wrong value, under the cap
    (copy / "config.json").write_text(json.dumps(d))
    with pytest.raises(UserError) as e:
        undiffuse.load(copy, device="cpu")
    assert "diffusion.schedule" in str(e.value) and len(str(e.value)) < 400
    d["diffusion"]["schedule"] = "linear"
    d["padding"] = "z" * (2 << 20)  # 2 MB: not read at all
    (copy / "config.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match="1 MB") as e:
        undiffuse.load(copy, device="cpu")
    assert len(str(e.value)) < 400


# --- 12. diffusers shards stay inside the model folder --------------------------------------------------------


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "link.safetensors"])
def test_a_diffusers_index_cannot_name_shards_outside_the_model_folder(tmp_path, shard):
    from undiffuse.adapters.diffusers import load_diffusers_unet

    model = tmp_path / "unet"
    model.mkdir()
    save_file({"w": torch.zeros(2)}, tmp_path / "outside.safetensors")
    (model / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")
    (model / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    index = {"weight_map": {"w": shard}}
    (model / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="outside the model folder"):
        load_diffusers_unet(model)


# --- 13. the variance at t = 1 -------------------------------------------------------------------------------


def test_reverse_variance_at_t1_follows_the_documented_conventions(linear1000):
    from undiffuse.diffusion.reverse import model_log_variance

    t = torch.tensor([1, 2])
    like = torch.zeros(2, 1, dtype=torch.float64)
    small = model_log_variance(linear1000, t, like, "fixed_small", None).flatten()
    large = model_log_variance(linear1000, t, like, "fixed_large", None).flatten()
    beta_tilde_2 = linear1000.posterior_variance[1]
    torch.testing.assert_close(small, beta_tilde_2.log().expand(2))  # β̃_1 = 0 clipped to β̃_2; β̃_2 at t = 2
    torch.testing.assert_close(large, linear1000.betas[:2].log())  # β_1 at t = 1 (reference code: β̃_2)
    assert 0.5 < float(beta_tilde_2 / linear1000.betas[0]) < 0.6  # how far the two conventions differ
