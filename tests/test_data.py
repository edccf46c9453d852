import gzip
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from digitlab import data
from digitlab.data import (MNIST_SHA256, load_dataset, load_idx_dir, parse_idx, read_idx,
                           split_train_val, write_idx)
from digitlab.errors import DataError

from conftest import make_idx_dir


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
def test_idx_round_trip(tmp_path, dtype, name):
    arr = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype == np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / name, arr)
    back = read_idx(tmp_path / name)
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    assert (tmp_path / name).read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\x00\x00")


def _header(code, dims):
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize("payload, message", [
    (b"", "not an IDX file"),
    (b"\x01\x02\x08\x01" + b"\x00" * 8, "bad magic"),
    (b"\x00\x00\x07\x01" + b"\x00" * 8, "bad magic"),          # unknown type code
    (b"\x00\x00\x08\x00", "zero dimensions"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
    (_header(8, [10, 28, 28]) + b"\x00" * 100, "truncated"),
    (_header(8, [2]) + b"\x00" * 5, "trailing bytes"),
])
def test_malformed_idx_errors(payload, message):
    with pytest.raises(DataError, match=message):
        parse_idx(payload, "bad-file")


def test_corrupt_gzip_and_missing_file(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(_header(8, [4]) + b"\x01\x02\x03\x04")[:-6])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(p)
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "missing")


def test_bundled_mnist_matches_published_statistics(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == torch.uint8
    assert mnist.test_images.shape == (10000, 28, 28)
    assert torch.bincount(mnist.train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(mnist.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x = mnist.train_images.float() / 255
    assert abs(x.mean().item() - 0.1307) < 1e-4 and abs(x.std().item() - 0.3081) < 1e-4
    assert mnist.classes == [str(i) for i in range(10)]
    assert set(mnist.files) == set(MNIST_SHA256)


@pytest.fixture
def mnist_copy(tmp_path, monkeypatch):
    dst = tmp_path / "mnist"
    shutil.copytree(data.bundled_mnist_dir(), dst)
    monkeypatch.setattr(data, "bundled_mnist_dir", lambda: dst)
    return dst


def test_altered_mnist_file_is_refused(mnist_copy):
    p = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed, still a valid IDX file
    p.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        load_dataset("mnist")


def test_truncated_or_missing_mnist_file_is_named(mnist_copy):
    p = mnist_copy / "train-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_dataset("mnist")
    p.unlink()
    with pytest.raises(DataError, match="missing train-labels-idx1-ubyte"):
        load_dataset("mnist")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_dataset_counts_classes_from_labels(tmp_path, gz):
    d = make_idx_dir(tmp_path / "five", n_classes=5, gz=gz)
    ds = load_dataset(d)
    assert ds.num_classes == 5 and ds.classes == ["0", "1", "2", "3", "4"]
    assert len(ds.train_images) == 60 and len(ds.test_labels) == 20
    assert len(ds.checksum) == 64


def test_idx_folder_mismatched_counts_and_shapes(tmp_path):
    d = make_idx_dir(tmp_path / "d")
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(19, dtype=np.uint8))
    with pytest.raises(DataError, match="20 images but 19 labels"):
        load_idx_dir(d)
    d2 = make_idx_dir(tmp_path / "d2")
    write_idx(d2 / "train-images-idx3-ubyte.gz", np.zeros((60, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match="32x32"):
        load_idx_dir(d2)
    d3 = make_idx_dir(tmp_path / "d3")
    write_idx(d3 / "train-images-idx3-ubyte.gz", np.zeros((60, 784), dtype=np.uint8))
    with pytest.raises(DataError, match="expected 3 dimensions"):
        load_idx_dir(d3)


def test_unknown_dataset_and_not_downloaded(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no such dataset folder"):
        load_dataset(tmp_path / "nope")
    monkeypatch.setenv("DIGITLAB_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="digitlab download fashion-mnist"):
        load_dataset("fashion-mnist")


def test_validation_split_is_seeded_and_disjoint():
    x = torch.arange(100).view(100, 1, 1).expand(100, 28, 28).to(torch.uint8)
    y = torch.arange(100)
    a = split_train_val(x, y, 10, seed=3)
    b = split_train_val(x, y, 10, seed=3)
    c = split_train_val(x, y, 10, seed=4)
    assert torch.equal(a[3], b[3]) and not torch.equal(a[3], c[3])
    assert len(a[1]) == 90 and len(a[3]) == 10
    assert set(a[1].tolist()).isdisjoint(a[3].tolist())
    with pytest.raises(DataError):
        split_train_val(x, y, 100, seed=0)


def test_image_folder_dataset_uses_preprocessing(tmp_path, mnist):
    for split in ("train", "test"):
        for i in range(12):
            label = int(mnist.test_labels[i])
            folder = tmp_path / "imgs" / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            # dark ink on white paper, bigger than 28x28: preprocessing must bring it back
            img = Image.fromarray(255 - mnist.test_images[i].numpy()).resize((84, 84))
            img.save(folder / f"{i}.png")
    ds = load_dataset(tmp_path / "imgs")
    assert len(ds.train_images) == 12 and len(ds.test_images) == 12
    assert ds.train_images.dtype == torch.uint8 and ds.train_images.shape[1:] == (28, 28)
    # ink is bright on dark after preprocessing, as in MNIST
    assert ds.train_images.float().mean() < 80
    labels = sorted({int(mnist.test_labels[i]) for i in range(12)})
    assert ds.classes == [str(c) for c in labels]


def test_image_folder_with_broken_image_names_it(tmp_path):
    (tmp_path / "f" / "3").mkdir(parents=True)
    (tmp_path / "f" / "3" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        load_dataset(tmp_path / "f")
