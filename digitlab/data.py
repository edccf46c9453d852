"""Datasets: IDX files -> uint8 tensors, checksums, the bundled MNIST, image-folder datasets, splits.

Everything here returns tensors that live in memory: images are ``uint8`` of shape ``(N, 28, 28)``
(0 = background, 255 = ink, as MNIST stores them) and labels are ``int64`` of shape ``(N,)``.
Converting to float and normalising happens on whole batches in the training loop.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .imageformats import IMAGE_SUFFIXES
from .io import atomic_write_bytes

# IDX type codes (LeCun's MNIST page): the third byte of the magic number.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {np.dtype(v).newbyteorder(">").str: k for k, v in _IDX_DTYPES.items()}

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of the *decompressed* MNIST files (the gzip bytes depend on the compressor).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


@dataclass(frozen=True)
class RemoteDataset:
    """A public MNIST-format dataset that ``digitlab download`` can fetch into the cache."""

    name: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # gzip file name -> MD5 of the published .gz bytes
    classes: tuple[str, ...]
    licence: str


REMOTE_DATASETS = {
    "mnist": RemoteDataset(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        tuple(str(i) for i in range(10)),
        "CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. J. C. Burges)",
    ),
    "fashion-mnist": RemoteDataset(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        "MIT (Zalando Research)",
    ),
}


@dataclass
class Dataset:
    """Train and test images and labels, in memory.

    ``test_images`` may be ``None`` for a single folder of labelled images used for training.
    """

    name: str
    train_images: torch.Tensor | None
    train_labels: torch.Tensor | None
    test_images: torch.Tensor | None
    test_labels: torch.Tensor | None
    classes: list[str]
    checksum: str  # SHA-256 over the files' decompressed contents, in a fixed order
    source: str = ""
    files: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------------------------------------
# IDX format


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    return raw


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (already decompressed) into an array, validating header and size."""
    if len(data) < 4:
        raise DataError(f"{name}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{name}: not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = _IDX_DTYPES[data[2]]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual < expected:
        raise DataError(f"{name}: truncated: dimensions {dims} need {expected} bytes of data, "
                        f"found {actual}")
    if actual > expected:
        raise DataError(f"{name}: {actual - expected} unexpected trailing bytes after "
                        f"{dims} values")
    arr = np.frombuffer(data, dtype=dtype, offset=header, count=int(np.prod(dims)))
    return arr.reshape(dims)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzip if ``compress`` or the name ends in .gz)."""
    path = Path(path)
    array = np.asarray(array)
    key = array.dtype.newbyteorder(">").str if array.dtype.itemsize > 1 else array.dtype.str
    code = _IDX_CODES.get(key)
    if code is None:
        raise DataError(f"IDX cannot store dtype {array.dtype}")
    out_dtype = _IDX_DTYPES[code]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=out_dtype).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    atomic_write_bytes(path, payload)
    return path


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def _load_idx_split(directory: Path, split: str, expected: dict[str, str] | None,
                    files: dict[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    img_stem, lbl_stem = SPLIT_FILES[split]
    arrays = []
    for stem in (img_stem, lbl_stem):
        path = _find_idx(directory, stem)
        if path is None:
            raise DataError(f"{directory}: missing {stem} (or {stem}.gz)")
        data = _read_bytes(path)
        digest = hashlib.sha256(data).hexdigest()
        if expected is not None and digest != expected[stem]:
            raise DataError(f"{path}: checksum mismatch (SHA-256 {digest[:16]}..., expected "
                            f"{expected[stem][:16]}...): the file is altered or truncated")
        files[stem] = digest
        arrays.append(parse_idx(data, str(path)))
    images, labels = arrays
    if images.ndim != 3:
        raise DataError(f"{directory / img_stem}: expected 3 dimensions (N, rows, cols), "
                        f"found {images.ndim}")
    if tuple(images.shape[1:]) != (28, 28):
        raise DataError(f"{directory / img_stem}: images are {images.shape[1]}x{images.shape[2]},"
                        f" digitlab models take 28x28")
    if labels.ndim != 1:
        raise DataError(f"{directory / lbl_stem}: expected 1 dimension, found {labels.ndim}")
    if len(images) != len(labels):
        raise DataError(f"{directory}: {split} has {len(images)} images but {len(labels)} labels")
    if images.dtype != np.uint8:
        raise DataError(f"{directory / img_stem}: images must be unsigned bytes")
    if labels.size and (labels.min() < 0):
        raise DataError(f"{directory / lbl_stem}: negative labels")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def bundled_mnist_dir() -> Path:
    return Path(str(resources.files("digitlab") / "datasets" / "mnist"))


def cache_dir() -> Path:
    return Path(os.environ.get("DIGITLAB_CACHE", Path.home() / ".cache" / "digitlab"))


def _combined_checksum(files: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}:{files[name]}\n".encode())
    return h.hexdigest()


def load_idx_dir(directory: str | os.PathLike, name: str | None = None,
                 expected_sha256: dict[str, str] | None = None,
                 classes: list[str] | None = None) -> Dataset:
    """Load a folder of MNIST-format IDX files (train-/t10k- images and labels, gzip or not)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory")
    files: dict[str, str] = {}
    xtr, ytr = _load_idx_split(directory, "train", expected_sha256, files)
    xte, yte = _load_idx_split(directory, "test", expected_sha256, files)
    n_classes = int(max(ytr.max().item() if len(ytr) else 0, yte.max().item() if len(yte) else 0)) + 1
    if classes is None or len(classes) != n_classes:
        classes = [str(i) for i in range(n_classes)]
    return Dataset(name or directory.name, xtr, ytr, xte, yte, list(classes),
                   _combined_checksum(files), str(directory), files)


def load_image_folder(directory: str | os.PathLike, classes: list[str] | None = None,
                      progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Read ``DIR/<label>/*.png|jpg...`` through the shared preprocessing function.

    Returns uint8 images (N, 28, 28), int64 labels and the class names (sorted folder names,
    numerically when they are all integers). Unreadable images raise ``DataError`` naming them.
    """
    from .preprocess import preprocess  # the one function prediction uses too
    from .errors import ImageError

    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory")
    found = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"{directory}: no label folders (expected DIR/<label>/*.png)")
    if classes is None:
        classes = sorted(found, key=lambda s: (0, int(s)) if s.isdigit() else (1, s))
    unknown = set(found) - set(classes)
    if unknown:
        raise DataError(f"{directory}: label folders {sorted(unknown)} are not among the "
                        f"classes {classes}")
    paths, labels = [], []
    for idx, cls in enumerate(classes):
        folder = directory / cls
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(idx)
    if not paths:
        raise DataError(f"{directory}: no images found in its label folders")
    images = np.empty((len(paths), 28, 28), dtype=np.uint8)
    it = paths
    if progress:
        from tqdm import tqdm
        it = tqdm(paths, desc=f"reading {directory.name}", unit="img", leave=False)
    for i, p in enumerate(it):
        try:
            images[i] = preprocess(p).image
        except ImageError as exc:
            raise DataError(str(exc)) from None
    return torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64), list(classes)


def _folder_checksum(directory: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            h.update(str(p.relative_to(directory)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def load_dataset(source: str | os.PathLike = "mnist", *, verify: bool = True,
                 progress: bool = False) -> Dataset:
    """Load a dataset by name or folder.

    * ``"mnist"`` (default): the MNIST copy bundled inside the package, checksum-verified.
    * a registered name (``fashion-mnist``): from the cache filled by ``digitlab download``.
    * a folder of IDX files (``train-images-idx3-ubyte[.gz]`` and friends).
    * a folder ``DIR/train/<label>/`` + ``DIR/test/<label>/`` of images, or ``DIR/<label>/``
      alone (then it is a single set: training uses it with no test set, evaluation tests on it).
    """
    src = str(source)
    if src == "mnist":
        return load_idx_dir(bundled_mnist_dir(), "mnist", MNIST_SHA256 if verify else None)
    if src in REMOTE_DATASETS and not Path(src).exists():
        target = cache_dir() / src
        if not target.is_dir():
            raise DataError(f"dataset {src!r} is not downloaded; run `digitlab download {src}` "
                            f"(needs internet) or pass a folder with --data-dir")
        return load_idx_dir(target, src, classes=list(REMOTE_DATASETS[src].classes))
    directory = Path(src).expanduser()
    if not directory.exists():
        known = ", ".join(["mnist", *[n for n in REMOTE_DATASETS if n != "mnist"]])
        raise DataError(f"{directory}: no such dataset folder (known names: {known})")
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory")
    if _find_idx(directory, SPLIT_FILES["train"][0]) or _find_idx(directory, SPLIT_FILES["test"][0]):
        return load_idx_dir(directory)
    if (directory / "train").is_dir():
        xtr, ytr, classes = load_image_folder(directory / "train", progress=progress)
        xte = yte = None
        if (directory / "test").is_dir():
            xte, yte, _ = load_image_folder(directory / "test", classes, progress=progress)
        return Dataset(directory.name, xtr, ytr, xte, yte, classes,
                       _folder_checksum(directory), str(directory))
    x, y, classes = load_image_folder(directory, progress=progress)
    # A single labelled folder serves as the test set for evaluation and the training set for
    # training; both references point at the same tensors (no copy).
    return Dataset(directory.name, x, y, x, y, classes, _folder_checksum(directory),
                   str(directory))


def split_train_val(images: torch.Tensor, labels: torch.Tensor, val_size: int, seed: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out ``val_size`` training images (seeded) for validation; returns xtr, ytr, xva, yva."""
    n = len(images)
    if val_size < 0:
        raise DataError("validation size must be >= 0")
    if val_size >= n:
        raise DataError(f"validation size {val_size} leaves no training images (only {n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    va, tr = perm[:val_size], perm[val_size:]
    return images[tr], labels[tr], images[va], labels[va]


def download(name: str, target: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Download a registered MNIST-format dataset into the cache (MD5-checked, atomic)."""
    if name not in REMOTE_DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(REMOTE_DATASETS)}")
    spec = REMOTE_DATASETS[name]
    target = Path(target) if target else cache_dir() / name
    target.mkdir(parents=True, exist_ok=True)
    for fname, md5 in spec.md5.items():
        dest = target / fname
        if dest.is_file() and hashlib.md5(dest.read_bytes()).hexdigest() == md5:
            continue
        errors = []
        for mirror in spec.mirrors:
            try:
                with urllib.request.urlopen(mirror + fname, timeout=30) as resp:
                    payload = resp.read()
            except OSError as exc:
                errors.append(f"{mirror}: {exc}")
                continue
            if hashlib.md5(payload).hexdigest() != md5:
                errors.append(f"{mirror}: MD5 mismatch")
                continue
            atomic_write_bytes(dest, payload)
            break
        else:
            raise DataError(f"could not download {fname} for {name}: " + "; ".join(errors))
    return target

