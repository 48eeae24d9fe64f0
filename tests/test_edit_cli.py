"""``undiffuse edit`` on a tiny digits run: inpainting keeps the known region, SDEdit at strength 0
returns the input, DDIM inversion reports its error, and bad input is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from undiffuse.cli.main import main

TINY = ["--set", "train.batch_size=16", "--set", "train.ckpt_every=5", "--set", "train.sample_every=1000",
        "--set", "train.val_every=1000", "--no-progress"]


def run_cli(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("edit")
    run = root / "run"
    assert run_cli("train", "--data", "digits", "--preset", "digits-tiny", "--out", run, "--steps", "5", *TINY) == 0
    from undiffuse.data import load_dataset, to_uint8

    img = to_uint8(load_dataset("digits", "test").x[:1])[0, ..., 0].numpy()  # 8×8 uint8
    Image.fromarray(img).save(root / "in.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 255  # right half: generate
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(root / "badmask.png")
    yield run, root, img, mask
    torch.set_num_threads(n)


def test_inpainting_keeps_the_known_region(setup):
    run, root, img, mask = setup
    out = root / "inpainted.png"
    assert run_cli("edit", run, "--image", root / "in.png", "--mask", root / "mask.png", "--steps", "6",
                   "--out", out) == 0  # fmt: skip
    got = np.asarray(Image.open(out))
    assert got.shape == img.shape
    keep = mask == 0
    assert np.array_equal(got[keep], img[keep])
    # RePaint resampling too
    assert run_cli("edit", run, "--image", root / "in.png", "--mask", root / "mask.png", "--steps", "4",
                   "--resample", "2", "--out", out) == 0  # fmt: skip
    assert np.array_equal(np.asarray(Image.open(out))[keep], img[keep])


def test_sdedit_strength_zero_returns_the_input(setup):
    run, root, img, _ = setup
    out = root / "sdedit0.png"
    assert run_cli("edit", run, "--image", root / "in.png", "--strength", "0", "--steps", "5", "--out", out) == 0
    assert np.array_equal(np.asarray(Image.open(out)), img)
    assert run_cli("edit", run, "--image", root / "in.png", "--strength", "0.5", "--steps", "4",
                   "--out", root / "sdedit.png") == 0  # fmt: skip


def test_invert_reports_the_error(setup, capsys):
    run, root, _, _ = setup
    assert run_cli("edit", run, "--image", root / "in.png", "--invert", "--steps", "5", "--out", root / "inv.png") == 0
    assert "RMSE" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--mask", "{root}/badmask.png"], "mask"),
        (["--strength", "1.5"], "strength"),
        (["--mask", "{root}/mask.png", "--strength", "0.3"], "drop one"),
        (["--invert", "--mask", "{root}/mask.png"], "--invert"),
        (["--prompt", "a seven"], "text"),
        (["--guidance", "3"], "guid"),
        (["--resample", "3"], "--mask"),
    ],
)
def test_bad_input_is_one_line(setup, capsys, extra, words):
    run, root, _, _ = setup
    extra = [e.format(root=root) for e in extra]
    assert run_cli("edit", run, "--image", root / "in.png", *extra, "--out", root / "x.png") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("undiffuse: error:") and "\n" not in err and words in err


def test_missing_image_is_refused(setup, capsys):
    run, root, _, _ = setup
    assert run_cli("edit", run, "--image", root / "nope.png", "--out", root / "x.png") == 2
    assert "no such image" in capsys.readouterr().err


def test_super_resolution_run_samples_from_a_low_res_image(setup, tmp_path, capsys):
    _, root, img, _ = setup
    run = tmp_path / "sr"
    assert run_cli("train", "--data", "digits", "--preset", "digits-tiny", "--out", run, "--steps", "2",
                   "--set", "model.sr_from=4", *TINY) == 0  # fmt: skip
    Image.fromarray(img[::2, ::2].copy()).save(tmp_path / "low.png")  # 4×4
    assert run_cli("sample", run, "--lowres", tmp_path / "low.png", "--n", "2", "--steps", "3",
                   "--out", tmp_path / "sr.png") == 0  # fmt: skip
    assert run_cli("sample", run, "--n", "2", "--steps", "3", "--out", tmp_path / "sr.png") == 2
    assert "low-res" in capsys.readouterr().err
    # editing a super-resolution run conditions on the input itself
    assert run_cli("edit", run, "--image", root / "in.png", "--strength", "0.5", "--steps", "3",
                   "--out", tmp_path / "e.png") == 0  # fmt: skip
