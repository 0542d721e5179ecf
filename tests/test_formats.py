"""Loaders of the papers' datasets in their official on-disk formats (tiny files written here)."""

import csv
import math
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from patronus_diffusion.config import DataConfig
from patronus_diffusion.presets import get_preset
from patronus_diffusion.data import DataError, dataset_names, iterate_batches, load_dataset
from patronus_diffusion.data.sources.celeba import read_celeba_annotations
from patronus_diffusion.data.sources.chexpert import CHEXPERT_FINDINGS
from patronus_diffusion.data.sources.cifar10 import RestrictedUnpickler, restricted_load

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cfg(name, root, **kw):
    kw = {"image_size": 16, "channels": 3, **kw}
    return DataConfig(dataset=name, root=str(root), **kw)


def test_all_formats_are_registered():
    assert {"cifar10", "stl10", "celeba", "tiny-imagenet", "chexpert", "ffhq"} <= set(dataset_names())


# ----------------------------------------------------------------------------- CIFAR-10
def _cifar_images(n, seed):
    """(N, 3072) planar images: record k is pure red, green or blue by k % 3; labels k % 10."""
    rng = np.random.default_rng(seed)
    flat = np.zeros((n, 3, 1024), np.uint8)
    for k in range(n):
        flat[k, k % 3] = 255
    return flat.reshape(n, 3072), ((np.arange(n) + rng.integers(0, 1)) % 10).astype(np.uint8)


@pytest.fixture
def cifar_bin(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    for name, n in [(f"data_batch_{i}.bin", 3) for i in range(1, 6)] + [("test_batch.bin", 4)]:
        data, labels = _cifar_images(n, 0)
        np.concatenate([labels[:, None], data], axis=1).tofile(d / name)
    (d / "batches.meta.txt").write_text("\n".join(CIFAR_NAMES) + "\n\n")
    return tmp_path


def _write_cifar_py(tmp_path, protocol):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name, n in [(f"data_batch_{i}", 3) for i in range(1, 6)] + [("test_batch", 4)]:
        data, labels = _cifar_images(n, 0)
        batch = {b"batch_label": b"x", b"labels": labels.tolist(), b"data": data, b"filenames": [b"a.png"] * n}
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_cases_per_batch": 3}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return tmp_path


def _py2_batch_pickle(data: np.ndarray, labels) -> bytes:
    """A batch pickled the way Python 2's cPickle wrote the official files (protocol 2, 8-bit strings,
    numpy.core.multiarray._reconstruct), assembled opcode by opcode."""
    def s(b):  # SHORT_BINSTRING: a Python 2 str
        return b"U" + bytes([len(b)]) + b

    dtype = (b"cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R(K\x03" + s(b"|")
             + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + s(b"b") + b"\x87R"
             + b"(K\x01K" + bytes([len(data)]) + b"M\x00\x0c\x86" + dtype + b"\x89T"
             + len(data.tobytes()).to_bytes(4, "little") + data.tobytes() + b"tb")
    labs = b"](" + b"".join(b"K" + bytes([int(v)]) for v in labels) + b"e"
    return b"\x80\x02}(" + s(b"data") + array + s(b"labels") + labs + b"u."


def test_cifar10_python2_pickles(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name, n in [(f"data_batch_{i}", 3) for i in range(1, 6)] + [("test_batch", 4)]:
        (d / name).write_bytes(_py2_batch_pickle(*_cifar_images(n, 0)))
    ds = load_dataset(cfg("cifar10", tmp_path), "train")
    assert ds.class_names == tuple(CIFAR_NAMES)  # no batches.meta: the known names
    _check_cifar(ds, 15)


def _check_cifar(ds, n):
    assert len(ds) == n and ds.class_names == tuple(CIFAR_NAMES)
    x = ds.get_batch(list(range(3)))
    assert x.shape == (3, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    for k in range(3):  # planar decoding: record k is pure channel k % 3
        assert x[k, k % 3].mean() > 0.99 and x[k, [c for c in range(3) if c != k % 3]].mean() < -0.99
    assert list(ds.labels[:3]) == [0, 1, 2] and ds[1][1] == 1


def test_cifar10_binary(cifar_bin):
    _check_cifar(load_dataset(cfg("cifar10", cifar_bin), "train"), 15)
    test = load_dataset(cfg("cifar10", cifar_bin / "cifar-10-batches-bin"), "test")  # the folder itself works
    assert len(test) == 4 and test.sources[0] == "test_batch.bin:0"
    limited = load_dataset(cfg("cifar10", cifar_bin, limit=7), "train")
    assert len(limited) == 7 and limited.sources[-1] == "data_batch_3.bin:0"
    grey = load_dataset(cfg("cifar10", cifar_bin, channels=1), "test")
    assert grey[0][0].shape == (1, 16, 16)
    _, x, y = next(iterate_batches(load_dataset(cfg("cifar10", cifar_bin), "train"), 4, seed=0, epoch=0))
    assert x.shape == (4, 3, 16, 16) and y.shape == (4,)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_python_version(tmp_path, protocol):
    root = _write_cifar_py(tmp_path, protocol)
    _check_cifar(load_dataset(cfg("cifar10", root), "train"), 15)
    assert len(load_dataset(cfg("cifar10", root), "test")) == 4


def test_cifar10_errors(tmp_path, cifar_bin):
    with pytest.raises(DataError, match="cifar-10-batches-bin.*toronto"):
        load_dataset(cfg("cifar10", tmp_path / "empty_does_not_exist"), "train")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "cifar-10-binary.tar.gz").write_bytes(b"x")
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz.*extract"):
        load_dataset(cfg("cifar10", tmp_path / "other"), "train")
    with pytest.raises(DataError, match="needs --data-root"):
        load_dataset(DataConfig(dataset="cifar10", channels=3), "train")
    d = cifar_bin / "cifar-10-batches-bin"
    with pytest.raises(DataError, match="splits 'train', 'test'"):
        load_dataset(cfg("cifar10", cifar_bin), "val")
    (d / "data_batch_2.bin").write_bytes((d / "data_batch_2.bin").read_bytes()[:-10])
    with pytest.raises(DataError, match="data_batch_2.bin is corrupt or truncated"):
        load_dataset(cfg("cifar10", cifar_bin), "train")
    (d / "data_batch_2.bin").unlink()
    with pytest.raises(DataError, match="missing \\['data_batch_2.bin'\\]"):
        load_dataset(cfg("cifar10", cifar_bin), "train")


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    root = _write_cifar_py(tmp_path, 2)
    evil = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Evil(marker)}
    path = root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load global (posix|os|nt)\.system"):
        load_dataset(cfg("cifar10", root), "test")
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"
    for payload in (b"cbuiltins\neval\n(S'1+1'\ntR.", b"c__builtin__\ngetattr\n(S'x'\nS'y'\ntR.",
                    b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR."):
        raw.write_bytes(payload)
        with pytest.raises(DataError, match="refusing"):
            restricted_load(raw)
    with pytest.raises(pickle.UnpicklingError):
        RestrictedUnpickler(open(raw, "rb")).find_class("subprocess", "Popen")
    raw.write_bytes(pickle.dumps({"a": [1, 2.0, (3,)], "b": np.arange(3)}, protocol=2))
    assert restricted_load(raw)["b"].tolist() == [0, 1, 2]


# ----------------------------------------------------------------------------- STL-10
def _stl_images(n):
    """N images whose top 32 rows are bright; stored as the official file: planes column-major."""
    img = np.zeros((n, 96, 96, 3), np.uint8)
    img[:, :32] = 255
    img[:, 50:, :10, 1] = 128  # a bottom-left stripe in green: checks x vs y
    return img.transpose(0, 3, 2, 1).tobytes()  # (N, C, x, y) order == column-major planes


def test_stl10(tmp_path):
    d = tmp_path / "stl10_binary"
    d.mkdir()
    (d / "train_X.bin").write_bytes(_stl_images(3))
    (d / "train_y.bin").write_bytes(bytes([1, 10, 4]))
    (d / "test_X.bin").write_bytes(_stl_images(2))
    (d / "test_y.bin").write_bytes(bytes([2, 3]))
    (d / "unlabeled_X.bin").write_bytes(_stl_images(4))
    (d / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse",
                                                  "monkey", "ship", "truck"]) + "\n")
    ds = load_dataset(cfg("stl10", tmp_path, image_size=96), "train")
    assert len(ds) == 3 and list(ds.labels) == [0, 9, 3] and ds.class_names[7] == "monkey"
    x = ds.get_batch([2, 0])
    assert x.shape == (2, 3, 96, 96) and x.min() >= -1 and x.max() <= 1
    assert x[:, :, :32].mean() > 0.99 and x[:, 0, 40:].mean() < -0.99  # top rows bright, bottom dark
    assert x[0, 1, 50:, :10].mean() > -0.1 and x[0, 1, 50:, 20:].mean() < -0.99  # left stripe, not top
    assert list(load_dataset(cfg("stl10", d), "test").labels) == [1, 2]
    un = load_dataset(cfg("stl10", tmp_path, limit=3, channels=1), "unlabeled")
    assert len(un) == 3 and set(un.labels) == {-1} and un[0][0].shape == (1, 16, 16)
    (d / "test_X.bin").write_bytes(_stl_images(2)[:-5])
    with pytest.raises(DataError, match="test_X.bin is corrupt or truncated"):
        load_dataset(cfg("stl10", tmp_path), "test")
    (d / "train_y.bin").unlink()
    with pytest.raises(DataError, match="train_y.bin"):
        load_dataset(cfg("stl10", tmp_path), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="stl10_binary.*stanford"):
        load_dataset(cfg("stl10", tmp_path / "empty"), "train")


# ----------------------------------------------------------------------------- CelebA
CELEBA_ATTRS = ["Black_Hair", "Blond_Hair", "Smiling"]


def _write_celeba(base, official=False, n=6):
    img = base / ("Img/img_align_celeba" if official else "img_align_celeba")
    img.mkdir(parents=True)
    anno = base / "Anno" if official else base
    evald = base / "Eval" if official else base
    anno.mkdir(exist_ok=True)
    evald.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    lines = [str(n), " ".join(CELEBA_ATTRS)]
    parts = []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        Image.fromarray(rng.integers(0, 255, (218, 178, 3), dtype=np.uint8)).save(img / name, quality=50)
        vals = [1 if (i + k) % 2 else -1 for k in range(len(CELEBA_ATTRS))]
        lines.append(f"{name} " + " ".join(f"{v:2d}" for v in vals))
        parts.append(f"{name} {[0, 0, 0, 1, 2, 2][i]}")
    (anno / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (evald / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    return img


@pytest.mark.parametrize("official", [False, True])
def test_celeba_layouts_splits_attributes(tmp_path, official):
    _write_celeba(tmp_path, official)
    ds = load_dataset(cfg("celeba", tmp_path, resize="squash"), "train")
    assert len(ds) == 3 and ds.attribute_names == tuple(CELEBA_ATTRS) and set(ds.labels) == {-1}
    assert ds.attributes.tolist() == [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    assert ds.sources[0].endswith("img_align_celeba/000001.jpg")
    x = ds.get_batch([0, 1])
    assert x.shape == (2, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert len(load_dataset(cfg("celeba", tmp_path), "val")) == 1
    assert len(load_dataset(cfg("celeba", tmp_path), "valid")) == 1
    assert len(load_dataset(cfg("celeba", tmp_path, limit=1), "test")) == 1


def test_celeba_missing_and_corrupt_files(tmp_path):
    img = _write_celeba(tmp_path)
    (img / "000002.jpg").write_bytes(b"not a jpeg")
    ds = load_dataset(cfg("celeba", tmp_path), "train")  # lazy: item 0 is fine
    with pytest.raises(DataError, match="000002.jpg"):
        ds.get_batch([1])
    skipped = load_dataset(cfg("celeba", tmp_path, skip_bad_images=True), "train")
    assert len(skipped) == 2 and "000002.jpg" in skipped.info.skipped[0]
    (img / "000003.jpg").unlink()
    with pytest.raises(DataError, match="missing.*000003.jpg.*--skip-bad-images"):
        load_dataset(cfg("celeba", tmp_path), "train")
    assert len(load_dataset(cfg("celeba", tmp_path, skip_bad_images=True), "train")) == 1
    (tmp_path / "list_eval_partition.txt").unlink()
    with pytest.raises(DataError, match="list_eval_partition.txt"):
        load_dataset(cfg("celeba", tmp_path), "train")
    with pytest.raises(DataError, match="img_align_celeba.*CelebA.html"):
        load_dataset(cfg("celeba", tmp_path / "img_align_celeba"), "train")


def test_celeba_kaggle_csv_layout_and_bad_lines(tmp_path):
    img = _write_celeba(tmp_path / "tmp")
    nested = tmp_path / "img_align_celeba" / "img_align_celeba"
    nested.parent.mkdir()
    img.rename(nested)
    lines = (tmp_path / "tmp" / "list_attr_celeba.txt").read_text().splitlines()
    rows = [["image_id", *CELEBA_ATTRS]] + [ln.split() for ln in lines[2:]]
    (tmp_path / "list_attr_celeba.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    parts = (tmp_path / "tmp" / "list_eval_partition.txt").read_text().splitlines()
    (tmp_path / "list_eval_partition.csv").write_text("image_id,partition\n" + "\n".join(
        p.replace(" ", ",") for p in parts) + "\n")
    ds = load_dataset(cfg("celeba", tmp_path), "train")
    assert len(ds) == 3 and ds.attributes[1].tolist() == [1, 0, 1]
    assert ds.sources[0] == "img_align_celeba/img_align_celeba/000001.jpg"
    bad = tmp_path / "tmp" / "list_attr_celeba.txt"
    bad.write_text("\n".join(lines[:3] + ["000002.jpg 1 x 1"] + lines[4:]) + "\n")
    with pytest.raises(DataError, match="list_attr_celeba.txt is not a CelebA attribute list \\(data line 2"):
        read_celeba_annotations(bad, tmp_path / "tmp" / "list_eval_partition.txt")


def test_paper_celeba_preset_squashes():
    assert get_preset("paper-celeba64").data.resize == "squash"
    assert get_preset("paper-celeba64").data.dataset == "celeba"


# ----------------------------------------------------------------------------- Tiny ImageNet
def test_tiny_imagenet(tmp_path):
    d = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01"]  # labels follow the sorted order
    rng = np.random.default_rng(0)
    for w in wnids:
        (d / "train" / w / "images").mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
                d / "train" / w / "images" / f"{w}_{k}.JPEG")
    (d / "val" / "images").mkdir(parents=True)
    ann = []
    for k, w in enumerate(["n01", "n02", "n02"]):
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(d / "val" / "images" / f"val_{k}.JPEG")
        ann.append(f"val_{k}.JPEG\t{w}\t0\t0\t10\t10")
    (d / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    (d / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (d / "words.txt").write_text("n00\tentity\nn01\tgoldfish, Carassius auratus\nn02\ttabby, tabby cat\n")
    ds = load_dataset(cfg("tiny-imagenet", tmp_path), "train")
    assert ds.class_names == ("goldfish", "tabby") and len(ds) == 6
    assert list(ds.labels) == [0, 1, 0, 1, 0, 1]  # interleaved: --limit stays class-balanced
    assert ds.get_batch([0, 5]).shape == (2, 3, 16, 16)
    test = load_dataset(cfg("tiny-imagenet", d), "test")
    assert list(test.labels) == [0, 1, 1] and test.info.split == "test"
    assert test[0][0].shape == (3, 16, 16)  # grey JPEG -> 3 channels
    assert list(load_dataset(cfg("tiny-imagenet", tmp_path, limit=2), "train").labels) == [0, 1]
    (d / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\n")
    with pytest.raises(DataError, match="val_annotations.txt line 1"):
        load_dataset(cfg("tiny-imagenet", tmp_path), "test")
    (d / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DataError, match="val_annotations.txt"):
        load_dataset(cfg("tiny-imagenet", tmp_path), "test")
    with pytest.raises(DataError, match="wnids.txt.*tiny-imagenet-200.zip"):
        load_dataset(cfg("tiny-imagenet", d / "train"), "train")


# ----------------------------------------------------------------------------- CheXpert
def _write_chexpert(root, name="CheXpert-v1.0-small"):
    d = root / name
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS]
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("valid", 2)):
        rows = []
        for i in range(n):
            rel = f"{split}/patient{i:05d}/study1/view1_{'frontal' if i % 2 == 0 else 'lateral'}.jpg"
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (50, 40), dtype=np.uint8)).save(d / rel)
            findings = ["1.0", "0.0", "-1.0", ""] * 3 + ["1.0", ""]
            rows.append([f"CheXpert-v1.0-small/{rel}", ["Female", "Male", "Unknown"][i % 3], str(40 + i),
                         "Frontal" if i % 2 == 0 else "Lateral", "AP", *findings])
        with open(d / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
    return d


def test_chexpert(tmp_path):
    d = _write_chexpert(tmp_path)
    ds = load_dataset(cfg("chexpert", tmp_path, channels=1), "train")
    assert len(ds) == 3 and set(ds.labels) == {-1}
    assert ds.attribute_names == (*CHEXPERT_FINDINGS, "Sex_Male", "Age", "Frontal")
    a = ds.attributes
    assert a[0, :4].tolist()[:3] == [1.0, 0.0, 0.0] and math.isnan(a[0, 3])  # uncertain -> 0, blank -> NaN
    assert a[:, 14].tolist()[:2] == [0.0, 1.0] and math.isnan(a[2, 14]) and a[1, 15] == 41 and a[1, 16] == 0
    x = ds.get_batch([0, 1, 2])
    assert x.shape == (3, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert ds.sources[0] == "CheXpert-v1.0-small/train/patient00000/study1/view1_frontal.jpg"
    one = load_dataset(cfg("chexpert-uncertain-one", d, channels=1), "train")  # the dataset folder itself
    assert one.attributes[0, 2] == 1.0
    assert math.isnan(load_dataset(cfg("chexpert-uncertain-nan", tmp_path, channels=1), "train").attributes[0, 2])
    test = load_dataset(cfg("chexpert", tmp_path, channels=1, limit=1), "test")
    assert len(test) == 1 and test.info.split == "test"
    (d / "train" / "patient00001" / "study1" / "view1_lateral.jpg").unlink()
    with pytest.raises(DataError, match="view1_lateral.jpg"):
        load_dataset(cfg("chexpert", tmp_path, channels=1), "train")
    assert len(load_dataset(cfg("chexpert", tmp_path, channels=1, skip_bad_images=True), "train")) == 2
    (d / "valid.csv").unlink()
    with pytest.raises(DataError, match="valid.csv"):
        load_dataset(cfg("chexpert", tmp_path, channels=1), "test")
    with pytest.raises(DataError, match="CheXpert-v1.0-small.*chexpert"):
        load_dataset(cfg("chexpert", d / "train", channels=1), "train")


# ----------------------------------------------------------------------------- FFHQ
def test_ffhq(tmp_path):
    root = tmp_path / "ffhq-256"
    rng = np.random.default_rng(0)
    for k in range(12):
        sub = root / f"{(k // 6) * 1000:05d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(sub / f"{k:05d}.png")
    train, test = (load_dataset(cfg("ffhq", root), s) for s in ("train", "test"))
    assert len(train) + len(test) == 12 and len(test) >= 1
    assert train.class_names == () and set(train.labels) == {-1} and train.info.name == "ffhq"
    assert train.get_batch([0]).shape == (1, 3, 16, 16)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "ffhq.zip").write_bytes(b"x")
    with pytest.raises(DataError, match="ffhq.zip.*extract.*NVlabs"):
        load_dataset(cfg("ffhq", empty), "train")
    with pytest.raises(DataError, match="ffhq needs --data-root"):
        load_dataset(DataConfig(dataset="ffhq", channels=3), "train")


# ----------------------------------------------------------------------------- the CLI sees them
def test_paper_cifar10_cli_config_loads_official_files(cifar_bin):
    """`patronus train --preset paper-cifar10 --data-root DIR` resolves to this loader (the one-step
    training run is checked by hand; it is too slow for the unit tests on a busy CPU)."""
    from patronus_diffusion.cli.core import config_from_args
    from patronus_diffusion.cli.main import build_parser

    args = build_parser().parse_args(["train", "--preset", "paper-cifar10", "--data-root", str(cifar_bin),
                                      "--out", "unused", "--steps", "1", "--set", "unet.base_channels=8",
                                      "unet.groups=4"])
    run = config_from_args(args)
    ds = load_dataset(run.data, "train")
    assert run.data.dataset == "cifar10" and len(ds) == 15 and ds[0][0].shape == (3, 32, 32)
