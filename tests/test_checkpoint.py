"""Checkpoints: round trip, corrupt or foreign checkpoints refused, full disk leaves the last one intact."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors import safe_open

import undiffuse
import undiffuse.runs.checkpoint as ck
from undiffuse.errors import CheckpointError, TrainingError, UserError
from undiffuse.runs import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from undiffuse.training import train

pytestmark = pytest.mark.usefixtures("single_thread")


tiny = tiny_config


@pytest.fixture(scope="module")
def run(tiny_run) -> Path:
    return tiny_run


def test_round_trip(run, tmp_path):
    ckpt = load_checkpoint(latest_checkpoint(run))
    assert ckpt.step == 4 and ckpt.state["examples_seen"] == 64 and ckpt.optimizer["state"]
    assert isinstance(ckpt.state["rng"]["torch_cpu"], list)
    path = save_checkpoint(tmp_path / "checkpoints", 7, ckpt.weights, ckpt.optimizer, ckpt.state)
    again = load_checkpoint(path)
    assert again.step == 7
    for k, v in ckpt.model.items():
        assert torch.equal(v, again.model[k]) and torch.equal(ckpt.ema[k], again.ema[k])
    model = undiffuse.load(run, device="cpu")
    assert model.step == 4 and model.ema and model.data.shape == (1, 8, 8)
    for k, v in model.denoiser.net.state_dict().items():
        assert torch.equal(v, ckpt.ema[k])
    raw = undiffuse.load(run, checkpoint=2, ema=False, device="cpu")
    assert raw.step == 2 and not raw.ema
    with safe_open(str(latest_checkpoint(run) / "ema.safetensors"), "pt") as f:  # self-describing weights
        meta = f.metadata()
    assert json.loads(meta["config"])["preset"] == "digits-tiny" and meta["step"] == "4"


def test_keep_last_and_listing(run, tmp_path):
    ckpt = load_checkpoint(latest_checkpoint(run))
    for s in range(1, 6):
        save_checkpoint(tmp_path / "checkpoints", s, ckpt.weights, None, ckpt.state, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000004", "step_0000005"]


def _copy_run(run: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(run, dst)
    return dst


@pytest.mark.parametrize("damage", ["truncate_weights", "garbage_weights", "truncate_optimizer", "bad_json",
                                    "missing_state", "missing_ema"])  # fmt: skip
def test_corrupt_checkpoint_is_a_user_error(run, tmp_path, damage):
    d = _copy_run(run, tmp_path / "run")
    c = d / "checkpoints" / "step_0000004"
    if damage == "truncate_weights":
        data = (c / "ema.safetensors").read_bytes()
        (c / "ema.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "garbage_weights":
        (c / "ema.safetensors").write_bytes(b"\x00" * 100)
    elif damage == "truncate_optimizer":
        data = (c / "optimizer.pt").read_bytes()
        (c / "optimizer.pt").write_bytes(data[: len(data) // 3])
    elif damage == "bad_json":
        (c / "state.json").write_text('{"step": 4, "config"')
    elif damage == "missing_state":
        (c / "state.json").unlink()
    else:
        (c / "ema.safetensors").unlink()
    with pytest.raises(UserError) as e:
        if damage == "truncate_optimizer":
            train(None, d, steps=6, resume=True, progress=False)
        else:
            undiffuse.load(d, checkpoint=4, device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and "—" in msg
    assert "step_0000004" in msg and ("corrupt" in msg or "truncated" in msg)
    if damage == "missing_state":  # state.json is written last: without it a checkpoint is incomplete
        assert undiffuse.load(d, device="cpu").step == 2


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        undiffuse.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        undiffuse.load(tmp_path / "empty")


def test_optimizer_state_is_never_unpickled(run, tmp_path):
    d = _copy_run(run, tmp_path / "run")

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"state": {}, "param_groups": [], "x": Evil()}, d / "checkpoints" / "step_0000004" / "optimizer.pt")
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        load_checkpoint(d / "checkpoints" / "step_0000004")


def test_checkpoint_of_another_architecture_is_refused(run, tmp_path):
    other = tmp_path / "wide"
    train(tiny("model.base_channels=8"), other, steps=2, progress=False)
    foreign = latest_checkpoint(other)
    with pytest.raises(CheckpointError, match="different architecture"):
        undiffuse.load(run, checkpoint=foreign, device="cpu")
    # a checkpoint whose signature was forged still cannot be loaded into the wrong network
    d = _copy_run(run, tmp_path / "run")
    c = d / "checkpoints" / "step_0000004"
    (c / "ema.safetensors").write_bytes((foreign / "ema.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="another architecture"):
        undiffuse.load(d, device="cpu")


def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    real = ck._write_bytes

    def fill_disk(path, data):
        if path.name == "ema.safetensors" and "step_0000004" in str(path.parent):
            path.write_bytes(data[:10])  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ck, "_write_bytes", fill_disk)
    with pytest.raises(TrainingError) as e:
        train(tiny(), tmp_path / "run", steps=6, progress=False)
    msg = str(e.value)
    assert "disk is full" in msg and "intact" in msg and "\n" not in msg
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_0000002"]
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".")]
    load_checkpoint(latest_checkpoint(tmp_path / "run"))  # intact
    monkeypatch.setattr(ck, "_write_bytes", real)
    s = train(None, tmp_path / "run", steps=6, resume=True, progress=False)  # and resumable
    assert s.step == 6 and s.start_step == 2


def test_resume_past_a_cosine_decay_to_zero_is_refused():
    """Raising a run's total past the end of a cosine decay to min_lr = 0 would train at learning rate 0
    (lr_at): refused; a min_lr > 0, a constant rate, or the run's own total stay allowed."""
    from dataclasses import replace

    from undiffuse.runs import merge_resume_config
    from undiffuse.training.step import lr_at

    base = tiny_config()
    cos = replace(base, train=replace(base.train, steps=30, warmup_steps=5, lr_schedule="cosine", decay_steps=20))
    assert lr_at(25, cos.train) == 0.0  # the premise: past warmup + decay the rate is min_lr = 0
    with pytest.raises(TrainingError, match="by step 25"):
        merge_resume_config(cos, None, 31)
    assert merge_resume_config(cos, None, 30).train.steps == 30  # the run's own total (past the decay): allowed
    assert merge_resume_config(cos, None, 25).train.steps == 25
    floor = replace(cos, train=replace(cos.train, min_lr=1e-5))
    assert merge_resume_config(floor, None, 100).train.steps == 100
    const = replace(base, train=replace(base.train, steps=30))
    assert merge_resume_config(const, None, 100).train.steps == 100
