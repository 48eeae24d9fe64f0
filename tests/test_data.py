"""Datasets: shapes, ranges, error messages, the uint8 view, and the toy mixtures."""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from undiffuse.data import (
    DataError,
    from_uint8,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_folder,
    make_grid,
    sample_toy,
    save_image_grid,
    to_uint8,
    toy_modes,
)
from undiffuse.data.images import FASHION_MNIST_DIR


def write_idx(directory: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write a (tiny) Fashion-MNIST split in the original gzipped IDX format."""
    prefix = "train" if split == "train" else "t10k"
    n, h, w = images.shape
    with gzip.open(directory / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes())
    with gzip.open(directory / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


def test_digits_shapes_range_and_split():
    x, y = load_digits("train")
    xt, yt = load_digits("test")
    assert x.shape == (1500, 1, 8, 8) and xt.shape == (297, 1, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() == -1 and x.max() == 1
    levels = torch.unique(torch.cat([x, xt]))
    assert len(levels) == 17 and torch.allclose((levels + 1) * 8, ((levels + 1) * 8).round())
    assert set(y.tolist()) == set(range(10))
    ds = load_dataset("digits", "test")
    assert ds.kind == "image" and ds.num_classes == 10 and not ds.discrete_8bit
    torch.testing.assert_close(ds.x, xt)
    assert load_dataset("digits", image_size=16).x.shape == (1500, 1, 16, 16)


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_package():
    ds = load_dataset("fashion-mnist", "test")
    assert ds.x.shape == (10000, 1, 28, 28) and ds.y.shape == (10000,)
    assert ds.x.dtype == torch.float32 and ds.discrete_8bit and ds.num_classes == 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert ds.x.min() == -1 and ds.x.max() == 1
    assert torch.bincount(ds.y).tolist() == [1000] * 10
    assert torch.equal(from_uint8(to_uint8(ds.x)), ds.x)  # exactly on the 8-bit grid
    up = load_dataset("fashion-mnist", "test", image_size=32).x
    assert up.shape == (10000, 1, 32, 32) and torch.equal(from_uint8(to_uint8(up)), up)


def test_fashion_mnist_from_directory(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (5, 28, 28)), np.arange(5)
    write_idx(tmp_path, "test", images, labels)
    x, y = load_fashion_mnist("test", root=tmp_path)
    assert x.shape == (5, 1, 28, 28) and y.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(to_uint8(x)[..., 0], torch.from_numpy(images.astype(np.uint8)))
    assert load_dataset(f"fashion-mnist:{tmp_path}", "test").x.shape == (5, 1, 28, 28)
    with pytest.raises(DataError, match="missing"):
        load_fashion_mnist("train", root=tmp_path)


def test_fashion_mnist_missing_directory(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as e:
        load_dataset(f"fashion-mnist:{tmp_path / 'nowhere'}")
    assert "fashion-mnist:DIR" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("damage", ["truncate_gzip", "truncate_data", "bad_magic", "not_gzip"])
def test_fashion_mnist_corrupt_file_raises(tmp_path, damage):
    write_idx(tmp_path, "test", np.zeros((4, 28, 28)), np.zeros(4))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    if damage == "truncate_gzip":
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "truncate_data":
        path.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "bad_magic":
        path.write_bytes(gzip.compress(struct.pack(">I", 1234) + raw[4:]))
    else:
        path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError, match="t10k-images"):
        load_fashion_mnist("test", root=tmp_path)


def make_folder(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    grey = np.zeros((4, 12), np.uint8)  # h=4, w=12: the centre 4 columns are bright
    grey[:, 4:8] = 200
    Image.fromarray(grey, mode="L").save(root / "a_grey.png")
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb, mode="RGB").save(root / "sub" / "b_rgb.PNG")
    Image.fromarray(rgb, mode="RGB").save(root / "sub" / "c_rgb.jpg", quality=95)
    (root / "notes.txt").write_text("ignored")


def test_folder_loader_grey_rgb_resize_crop(tmp_path):
    make_folder(tmp_path)
    x = load_folder(tmp_path, 4, channels=3)
    assert x.shape == (3, 3, 4, 4) and x.dtype == torch.float32
    u = to_uint8(x)
    assert (u[0] == 200).all()  # shorter side already 4 → centre crop keeps the bright columns
    assert (u[1, ..., 0] == 255).all() and (u[1, ..., 1:] == 0).all()  # pure red, resized 10 → 4
    assert (u[2, ..., 0] >= 250).all()  # the JPEG, nearly red
    xg = load_folder(tmp_path, 4, channels=1)
    assert xg.shape == (3, 1, 4, 4) and torch.equal(from_uint8(to_uint8(xg)), xg)
    ds = load_dataset(f"folder:{tmp_path}", image_size=4)
    assert ds.x.shape == (3, 3, 4, 4) and ds.y is None and ds.discrete_8bit  # mixed → RGB
    (tmp_path / "sub" / "b_rgb.PNG").unlink()
    (tmp_path / "sub" / "c_rgb.jpg").unlink()
    assert load_dataset(f"folder:{tmp_path}", image_size=4).x.shape == (1, 1, 4, 4)  # all grey


def test_folder_train_test_subfolders(tmp_path):
    for split, n in [("train", 3), ("test", 2)]:
        (tmp_path / split).mkdir()
        for i in range(n):
            Image.new("L", (6, 6), 10 * i).save(tmp_path / split / f"{i}.png")
    assert len(load_dataset(f"folder:{tmp_path}", "train", image_size=6)) == 3
    assert len(load_dataset(f"folder:{tmp_path}", "test", image_size=6)) == 2


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no"):
        load_folder(tmp_path, 8)
    with pytest.raises(DataError, match="no"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "missing", 8)
    Image.new("L", (6, 6)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="broken.png"):
        load_folder(tmp_path, 8)
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(f"folder:{tmp_path}", image_size=8)
    (tmp_path / "broken.png").unlink()
    assert load_dataset(f"folder:{tmp_path}").x.shape == (1, 1, 6, 6)  # the data's own size


def test_unknown_spec_lists_valid_ones():
    with pytest.raises(DataError, match="fashion-mnist.*digits.*folder:PATH.*toy:moons"):
        load_dataset("cifar10")
    with pytest.raises(DataError):
        load_dataset("toy:spiral")
    with pytest.raises(DataError):
        load_dataset("digits", split="val")


@pytest.mark.parametrize("name, k, std", [("25gaussians", 25, 0.05), ("8gaussians", 8, 0.02)])
def test_toy_mixture_points_near_their_modes(name, k, std):
    means, s = toy_modes(name)
    assert means.shape == (k, 2) and s == std
    x, y = sample_toy(name, 20000, torch.Generator().manual_seed(0))
    assert x.shape == (20000, 2) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert (x - means[y]).norm(dim=1).max() < 5 * s
    assert len(torch.unique(y)) == k
    if name == "25gaussians":
        assert set(means.flatten().tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    else:
        torch.testing.assert_close(means.norm(dim=1), torch.full((8,), 2.0))


def test_toy_datasets_fixed_and_unit_scale():
    a, b = load_dataset("toy:moons"), load_dataset("toy:moons")
    assert torch.equal(a.x, b.x) and a.kind == "vector" and a.num_classes == 2 and len(a) == 100_000
    assert not torch.equal(load_dataset("toy:moons", "test").x[:100], a.x[:100])
    for name in ("moons", "swissroll"):
        x, _ = sample_toy(name, 50000, torch.Generator().manual_seed(1))
        assert 0.8 < x.var(0).mean().sqrt() < 1.2 and x.mean(0).abs().max() < 0.5
        with pytest.raises(DataError):
            toy_modes(name)
    ds = load_dataset("toy:swissroll", "test")
    assert ds.y is None and ds.num_classes is None and ds.shape == (2,)
    assert load_dataset("toy:25gaussians").num_classes == 25


def test_uint8_round_trip_and_grid(tmp_path):
    u = torch.randint(0, 256, (10, 8, 8, 3), dtype=torch.uint8)
    x = from_uint8(u)
    assert x.shape == (10, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(to_uint8(x), u)
    assert torch.equal(to_uint8(torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 5)).flatten(),
                       torch.tensor([0, 0, 128, 255, 255], dtype=torch.uint8))  # fmt: skip
    grid = make_grid(x, nrow=4)
    assert grid.mode == "RGB" and grid.size == (4 * 10 + 2, 3 * 10 + 2)
    tile = np.asarray(grid)[12:20, 2:10]  # second row, first column = image 4
    assert np.array_equal(tile, u[4].numpy())
    assert make_grid(x[:, :1], nrow=8).mode == "L"
    path = save_image_grid(x, tmp_path / "out" / "grid.png", nrow=4)
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(grid))
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]  # no temp file left
