"""Images as people have them: 16-bit grey PNG/TIFF at full range, more than three channels (multi-page
TIFF, .npy stacks), DICOM, and patch datasets cut from a few large images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from undiffuse.data import DataError, load_dataset
from undiffuse.data.images import from_levels, load_folder, make_grid, to_uint8
from undiffuse.data.patches import TEST_FRACTION

LEVELS16 = np.array([0, 1, 255, 256, 257, 1000, 32768, 40000, 65534, 65535], np.uint16)


def levels16(x: torch.Tensor) -> np.ndarray:
    """The 16-bit levels u of x = u/32767.5 − 1, as [N, H, W, C]."""
    return np.rint((x.permute(0, 2, 3, 1).numpy().astype(np.float64) + 1) * 32767.5).astype(np.int64)


def ramp16(h: int = 8, w: int = 8) -> np.ndarray:
    """A uint16 image that holds every value of LEVELS16 (and more above 255)."""
    u = (np.arange(h * w, dtype=np.int64) * 997 % 65536).astype(np.uint16).reshape(h, w)
    u.flat[: len(LEVELS16)] = LEVELS16
    return u


@pytest.mark.parametrize("name, mode", [("a.png", "I;16"), ("a.tif", "I;16"), ("a.tiff", "I;16B"), ("a.tif", "F")])
def test_16bit_grey_loads_at_full_range(tmp_path, name, mode):
    u = ramp16()
    img = Image.fromarray(u.astype(np.float32)) if mode == "F" else Image.fromarray(u)
    if mode == "I;16B":
        img = Image.fromarray(u.astype(">u2"))
    img.save(tmp_path / name)
    assert Image.open(tmp_path / name).mode == mode
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.x.shape == (1, 1, 8, 8) and not ds.discrete_8bit  # 16-bit data: not on the 8-bit grid
    assert np.array_equal(levels16(ds.x)[0, ..., 0], u)  # every level back, none clipped to 255
    assert ds.x.min() == -1 and ds.x.max() == 1
    x256, x257 = ds.x[0, 0].flatten()[3:5]
    assert x256 < x257  # values above 255 stay distinguishable


def test_16bit_float_tiff_with_fractions_is_refused(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match="non-integer") as e:
        load_dataset(f"folder:{tmp_path}")
    assert "\n" not in str(e.value)


def test_8bit_and_16bit_files_mix_as_16bit_with_the_same_values(tmp_path):
    u8 = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(u8).save(tmp_path / "a8.png")
    Image.fromarray(ramp16(8, 8)).save(tmp_path / "b16.png")
    ds = load_dataset(f"folder:{tmp_path}")
    assert not ds.discrete_8bit
    assert torch.equal(ds.x[0], from_levels(u8[None], 8)[0])  # promotion u·257 keeps x = u/127.5 − 1
    assert np.array_equal(levels16(ds.x[1:])[0, ..., 0], ramp16(8, 8))


def test_16bit_resize_keeps_the_range(tmp_path):
    u = np.zeros((16, 16), np.uint16)
    u[:, 8:] = 60000  # a step edge far above 255
    Image.fromarray(u).save(tmp_path / "edge.png")
    x = load_folder(tmp_path, 8)
    lv = levels16(x)[0, ..., 0]
    assert lv[:, :3].max() == 0 and lv[:, 5:].min() == 60000  # flat regions keep their exact level


def test_four_channel_tiff_and_npy_stacks(tmp_path):
    pages = [np.full((6, 6), 1000 * (k + 1), np.uint16) for k in range(4)]
    imgs = [Image.fromarray(p) for p in pages]
    imgs[0].save(tmp_path / "a.tif", save_all=True, append_images=imgs[1:])
    np.save(tmp_path / "b.npy", np.stack(pages)[:, ::-1].copy())  # [C, H, W], channels first
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.x.shape == (2, 4, 6, 6) and not ds.discrete_8bit
    lv = levels16(ds.x)
    for k in range(4):
        assert (lv[..., k] == 1000 * (k + 1)).all()
    assert load_dataset(f"folder:{tmp_path}", image_size=3).x.shape == (2, 4, 3, 3)


def test_8bit_npy_stack_stays_on_the_8bit_grid(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (5, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "s.npy", a)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.discrete_8bit and torch.equal(to_uint8(ds.x)[0], torch.from_numpy(a).permute(1, 2, 0))


def test_inconsistent_channels_are_one_line_errors(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 5, 5), np.uint8))
    np.save(tmp_path / "b.npy", np.zeros((2, 5, 5), np.uint8))
    with pytest.raises(DataError, match="inconsistent channels.*b.npy.*a.npy") as e:
        load_dataset(f"folder:{tmp_path}")
    assert "\n" not in str(e.value)
    (tmp_path / "b.npy").unlink()
    Image.new("RGB", (5, 5)).save(tmp_path / "c.png")  # RGB beside a 4-channel stack
    with pytest.raises(DataError, match="inconsistent channels"):
        load_dataset(f"folder:{tmp_path}")


@pytest.mark.parametrize("bad, match", [(np.zeros((2, 3, 4, 4), np.uint8), "shape"),
                                        (np.full((4, 4), 70000, np.int32), "outside 0..65535"),
                                        (np.array([[object()]]), "cannot read")])  # fmt: skip
def test_bad_npy_files_are_refused(tmp_path, bad, match):
    np.save(tmp_path / "x.npy", bad, allow_pickle=True)
    with pytest.raises(DataError, match=match):
        load_dataset(f"folder:{tmp_path}")


def test_grid_shows_the_first_three_channels_or_the_first(tmp_path):
    x = torch.rand(2, 4, 5, 5) * 2 - 1
    grid = np.asarray(make_grid(x, nrow=2, padding=0))
    assert grid.shape == (5, 10, 3) and np.array_equal(grid[:, :5], to_uint8(x[:1, :3])[0].numpy())
    grey = np.asarray(make_grid(x[:, :2], nrow=2, padding=0))
    assert grey.shape == (5, 10) and np.array_equal(grey[:, 5:], to_uint8(x[1:, :1])[0, ..., 0].numpy())


# ------------------------------------------------------------------------------------------- DICOM


def write_dicom(path, stored: np.ndarray, slope: float, intercept: float, photometric: str = "MONOCHROME2") -> None:
    """A minimal 16-bit unsigned grey DICOM file (secondary capture), written with pydicom itself."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored.astype("<u2").tobytes()
    if int(pydicom.__version__.split(".")[0]) < 3:
        ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(str(path), **({"enforce_file_format": True} if int(pydicom.__version__.split(".")[0]) >= 3 else {}))


def test_dicom_16bit_with_modality_rescale(tmp_path):
    stored = ramp16(6, 6)
    write_dicom(tmp_path / "ct.dcm", stored, slope=2.0, intercept=-1024.0)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.x.shape == (1, 1, 6, 6) and not ds.discrete_8bit
    # the rescale is increasing and the window is its full stored range: stored level s ↦ s exactly
    assert np.array_equal(levels16(ds.x)[0, ..., 0], stored)
    write_dicom(tmp_path / "ct.dcm", stored, slope=2.0, intercept=-1024.0, photometric="MONOCHROME1")
    assert np.array_equal(levels16(load_dataset(f"folder:{tmp_path}").x)[0, ..., 0], 65535 - stored.astype(np.int64))


def test_dicom_needs_pydicom_or_says_so(tmp_path, monkeypatch):
    import sys

    (tmp_path / "x.dcm").write_bytes(b"\0" * 200)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if not installed
    with pytest.raises(DataError, match=r"pip install 'undiffuse\[dicom\]'"):
        load_dataset(f"folder:{tmp_path}")


# ----------------------------------------------------------------------------------------- patches


def position_image(path, h: int = 40, w: int = 120) -> np.ndarray:
    """A 16-bit image whose level is the pixel's position r·w + c, so any patch says where it came from."""
    u = np.arange(h * w, dtype=np.uint16).reshape(h, w)
    Image.fromarray(u).save(path)
    return u


def test_patches_are_crops_of_the_image_and_splits_do_not_overlap(tmp_path):
    w = 120
    position_image(tmp_path / "big.png", w=w)
    opts = dict(patch_size=8, patches_per_image=50)
    train, test = (load_dataset(f"patches:{tmp_path / 'big.png'}", s, **opts) for s in ("train", "test"))
    assert train.x.shape == test.x.shape == (50, 1, 8, 8) and not train.discrete_8bit
    strip = max(int(np.ceil(TEST_FRACTION * w)), 8)
    lo, hi = (w - strip) // 2, (w - strip) // 2 + strip  # the centred test strip of columns
    for split, ds in (("train", train), ("test", test)):
        lv = levels16(ds.x)[..., 0]  # [N, 8, 8]
        offsets = np.arange(8)[:, None] * w + np.arange(8)[None, :]
        assert np.array_equal(lv, lv[:, :1, :1] + offsets)  # each patch is a contiguous 8×8 crop
        in_strip = (lv % w >= lo) & (lv % w < hi)
        assert in_strip.all() if split == "test" else not in_strip.any()  # no test pixel is ever trained on
    left = levels16(train.x)[:, 0, 0, 0] % w < lo
    assert 0 < left.sum() < len(left)  # training patches come from both sides of the strip


def test_patches_are_deterministic_and_prefix_stable(tmp_path):
    for name in ("a.png", "b.png"):
        position_image(tmp_path / name)
    a = load_dataset(f"patches:{tmp_path}", patch_size=8, patches_per_image=6).x
    b = load_dataset(f"patches:{tmp_path}", patch_size=8, patches_per_image=6).x
    c = load_dataset(f"patches:{tmp_path}", patch_size=8, patches_per_image=3).x
    assert torch.equal(a, b) and a.shape == (12, 1, 8, 8)
    assert torch.equal(c[:3], a[:3]) and torch.equal(c[3:], a[6:9])  # more patches keep the first ones
    assert len({tuple(p.flatten()[:1].tolist()) for p in a[:6]}) > 1  # not one position repeated
    by_size = load_dataset(f"patches:{tmp_path}", image_size=8, patches_per_image=3)  # what `eval` asks for
    assert torch.equal(by_size.x, c)


def test_patch_errors(tmp_path):
    position_image(tmp_path / "small.png", h=20, w=20)
    with pytest.raises(DataError, match="patch_size"):  # 16 + a 16-px test strip do not fit in 20 px
        load_dataset(f"patches:{tmp_path}", patch_size=16)
    with pytest.raises(DataError, match="never resized"):
        load_dataset(f"patches:{tmp_path}", image_size=4, patch_size=8)
    with pytest.raises(DataError, match="patch_size.*unset"):
        load_dataset(f"folder:{tmp_path}", patch_size=8)
    with pytest.raises(DataError, match="retina, ihc, microaneurysms"):
        load_dataset("medical:brain")


def test_medical_demo_patches():
    pytest.importorskip("skimage")
    ds = load_dataset("medical", "test", patch_size=16, patches_per_image=2)
    assert ds.x.shape == (6, 3, 16, 16) and ds.discrete_8bit  # microaneurysms (grey) joins as RGB
    grey = load_dataset("medical:microaneurysms", patch_size=16, patches_per_image=2)
    assert grey.x.shape == (2, 1, 16, 16) and grey.x.std() > 0


# ---------------------------------------------------------------------------------------- CLI


def test_cli_trains_on_16bit_images(tmp_path):
    import undiffuse
    from undiffuse.cli.main import main

    data = tmp_path / "d16"
    data.mkdir()
    for i in range(4):
        Image.fromarray(np.roll(ramp16(8, 8), i)).save(data / f"{i}.png")
    run = tmp_path / "run"
    argv = ["train", "--data", f"folder:{data}", "--preset", "digits-tiny", "--out", run, "--steps", "2",
            "--set", "data.image_size=8", "--set", "train.batch_size=4", "--set", "train.sample_every=1000",
            "--set", "train.val_every=1000", "--no-progress"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    model = undiffuse.load(run)
    assert model.data.shape == (1, 8, 8) and not model.data.discrete_8bit
    # its samples are written at 16 bits: .npy levels and per-sample grey PNGs (mode I;16), same values
    assert main(["sample", str(run), "--n", "3", "--steps", "2", "--out", str(tmp_path / "s.npy"), "--quiet"]) == 0
    assert main(["sample", str(run), "--n", "3", "--steps", "2", "--out", f"{tmp_path}/each/", "--quiet"]) == 0
    arr = np.load(tmp_path / "s.npy")
    assert arr.dtype == np.uint16 and arr.shape == (3, 8, 8, 1)
    png = Image.open(tmp_path / "each" / "000001.png")
    assert png.mode in ("I;16", "I") and np.array_equal(np.asarray(png).astype(np.uint16), arr[1, ..., 0])
    from undiffuse.data.images import from_levels
    from undiffuse.evaluation.report import samples_to_model_units

    torch.testing.assert_close(samples_to_model_units(arr, "image"), from_levels(arr, 16))  # eval reads them back


def test_cli_trains_on_4_channel_patches_and_writes_them(tmp_path):
    import undiffuse
    from undiffuse.cli.main import main
    from undiffuse.evaluation.nll import eval_data

    stack = np.stack([np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * (k + 1) for k in range(4)])
    np.save(tmp_path / "stack.npy", stack)  # one 4-channel 16-bit "microscope" image
    run = tmp_path / "run"
    argv = ["train", "--data", f"patches:{tmp_path / 'stack.npy'}", "--preset", "digits-tiny", "--out", run,
            "--steps", "2", "--set", "data.patch_size=8", "--set", "data.patches_per_image=8",
            "--set", "train.batch_size=4", "--set", "train.sample_every=1000", "--set", "train.val_every=1000",
            "--no-progress"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    model = undiffuse.load(run)
    assert model.data.shape == (4, 8, 8) and not model.data.discrete_8bit
    assert eval_data(model).shape == (8, 4, 8, 8)  # the run's patch options reach the held-out data
    assert main(["sample", str(run), "--n", "2", "--steps", "2", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (2, 8, 8, 4)  # .npy keeps every channel
    assert main(["sample", str(run), "--n", "2", "--steps", "2", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").mode == "RGB"  # the grid shows the first three
    assert main(["sample", str(run), "--n", "2", "--steps", "2", "--out", str(tmp_path / "d") + "/"]) == 0
    assert {Image.open(f).mode for f in (tmp_path / "d").iterdir()} == {"RGB"}  # not RGBA from 4 channels


def test_single_16bit_inputs_of_edit_noise_and_lowres_keep_their_range(tmp_path):
    """edit's input image, noise's image and a super-resolution low-res input go through read_image:
    levels 256 and 257 (equal after an 8-bit conversion) stay apart, and the file's own size is reported."""
    from undiffuse.cli.cmd_edit import load_input
    from undiffuse.data.images import read_image

    u = np.full((8, 12), 256, np.uint16)
    u[:, 6:] = 257
    Image.fromarray(u).save(tmp_path / "g16.png")
    x, own = read_image(tmp_path / "g16.png")
    assert own == (12, 8) and x.shape == (1, 1, 8, 12)
    assert torch.allclose(x[0, 0, 0, :2], torch.tensor([256 / 32767.5 - 1] * 2))
    assert x[0, 0, 0, 7] - x[0, 0, 0, 0] == pytest.approx(1 / 32767.5, rel=1e-3)
    x_edit, size = load_input(str(tmp_path / "g16.png"), (1, 8, 8))  # resized + cropped to the model's 8×8
    assert size == (12, 8) and x_edit.shape == (1, 1, 8, 8) and len(torch.unique(x_edit)) > 1
