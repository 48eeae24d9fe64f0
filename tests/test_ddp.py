"""DDP on CPU with gloo: N steps on 2 ranks equal N steps in one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from undiffuse.config import apply_overrides, get_preset
from undiffuse.training import train

pytestmark = pytest.mark.usefixtures("single_thread")

OVERRIDES = ["train.batch_size=16", "train.ckpt_every=3", "train.val_every=3", "train.sample_every=0",
             "data.limit=200", "train.log_every=1", "train.warmup_steps=2",
             "train.precision=fp32"]  # exactness needs fp32 (auto is bf16 on CPUs with native bf16)  # fmt: skip
STEPS = 6

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    import undiffuse.training.ema as E
    from undiffuse.config import apply_overrides, get_preset
    from undiffuse.training import train

    out, steps, overrides = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    sums, update = [], E.EMA.update

    def recording_update(self, model, beta):  # record the EMA on every rank after every step
        update(self, model, beta)
        sums.append([float(p.double().sum()) for p in self.module.parameters()])

    E.EMA.update = recording_update
    s = train(apply_overrides(get_preset("digits-tiny"), overrides), out + "/run", steps=steps, progress=False)
    rank = int(os.environ["RANK"])
    with open(f"{out}/ema_rank{rank}.json", "w") as f:
        json.dump({"sums": sums, "step": s.step, "world": int(os.environ["WORLD_SIZE"])}, f)
    """
)


def _torchrun(tmp_path: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path), str(STEPS), json.dumps(overrides)]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_two_ranks_equal_one_process(tmp_path):
    # 2 ranks × 2 accumulation micro-batches of 4 = the same global batch of 16 as one process
    proc = _torchrun(tmp_path, [*OVERRIDES, "train.grad_accum=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"ema_rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == 2 and r0["step"] == r1["step"] == STEPS
    assert r0["sums"] == r1["sums"]  # identical EMA on every rank, every step

    single = train(apply_overrides(get_preset("digits-tiny"), OVERRIDES), tmp_path / "single", steps=STEPS,
                   progress=False)  # fmt: skip
    assert single.step == STEPS
    for name in ("model", "ema"):
        a = load_file(tmp_path / "run" / "checkpoints" / f"step_{STEPS:07d}" / f"{name}.safetensors")
        b = load_file(single.run_dir / "checkpoints" / f"step_{STEPS:07d}" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=f"{name}:{k}")
    log_ddp = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    log_one = [json.loads(line) for line in (single.run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_ddp] == [r["step"] for r in log_one]  # rank 0 alone writes the log
    for a, b in zip(log_ddp, log_one):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    # only rank 0 wrote checkpoints; the DDP run resumes in a single process
    s = train(None, tmp_path / "run", steps=STEPS + 2, resume=True, progress=False)
    assert s.step == STEPS + 2
