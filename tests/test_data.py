"""Data loading: IDX, image folders (grey/RGB/alpha, resize policies), attribute CSV, bad files."""

import numpy as np
import pytest
import torch
from PIL import Image

from patronus_diffusion.config import DataConfig
from patronus_diffusion.data import DataError, iterate_batches, load_dataset
from patronus_diffusion.data.idx import read_idx


def test_idx_dataset_is_in_range_and_resized(idx_root):
    ds = load_dataset(DataConfig(dataset="fashion-mnist", root=str(idx_root), image_size=32), "train")
    x, y, i = ds[3]
    assert x.shape == (1, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert len(ds) == 128 and set(np.unique(ds.labels)) <= {0, 1}
    assert ds.class_names[0] == "T-shirt/top"


def test_truncated_idx_file_is_reported(tmp_path, idx_root):
    import gzip

    raw = gzip.open(idx_root / "t10k-images-idx3-ubyte.gz").read()
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(raw[:1000])
    with pytest.raises(DataError, match="truncated"):
        read_idx(bad)


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset(DataConfig(dataset="fashion-mnist", root=str(tmp_path / "nope")), "train")


def _make_folder(root, n=6):
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "deep").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(root / "cats" / f"c{i}.png")
        Image.fromarray(rng.integers(0, 255, (20, 50), dtype=np.uint8)).save(root / "dogs" / "deep" / f"d{i}.jpg")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent: must become white, not black
    Image.fromarray(rgba, "RGBA").save(root / "cats" / "clear.webp")


@pytest.mark.parametrize("resize", ["center-crop", "squash", "pad"])
@pytest.mark.parametrize("channels", [1, 3])
def test_folder_dataset_any_image_kind(tmp_path, resize, channels):
    _make_folder(tmp_path)
    cfg = DataConfig(dataset="folder", root=str(tmp_path), image_size=16, channels=channels, resize=resize)
    items = [load_dataset(cfg, s) for s in ("train", "test")]
    assert sum(len(d) for d in items) == 13  # recursive, png+jpg+webp, deterministic 90/10 split by name
    ds = items[0]
    assert ds.class_names == ("cats", "dogs")
    x = ds.get_batch(list(range(len(ds))))
    assert x.shape[1:] == (channels, 16, 16) and x.min() >= -1 and x.max() <= 1
    full = load_dataset(cfg, "train").sources + load_dataset(cfg, "test").sources
    i = full.index("cats/clear.webp") if "cats/clear.webp" in ds.sources else None
    if i is not None:
        assert torch.allclose(ds[i][0], torch.ones_like(ds[i][0]))


def test_corrupt_image_names_the_file_or_is_skipped(tmp_path):
    _make_folder(tmp_path)
    (tmp_path / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "cats" / "empty.jpg").write_bytes(b"")
    cfg = DataConfig(dataset="folder", root=str(tmp_path), image_size=16, channels=3)
    splits = {}
    with pytest.raises(DataError, match=r"(broken\.png|empty\.jpg).*--skip-bad-images"):
        for s in ("train", "test"):
            splits[s] = load_dataset(cfg, s)
    cfg.skip_bad_images = True
    skipped = sum(len(load_dataset(cfg, s).info.skipped) for s in ("train", "test"))
    assert skipped == 2


def test_attribute_csv_is_joined_and_restricts_files(tmp_path):
    _make_folder(tmp_path)
    csv = tmp_path / "attrs.csv"
    csv.write_text("file,smiling,split\nc0.png,1,train\nc1.png,0,train\nd2.jpg,1,test\ndeep/d3.jpg,0,train\n")
    cfg = DataConfig(dataset="folder", root=str(tmp_path), image_size=16, channels=1, attributes_csv=str(csv))
    train = load_dataset(cfg, "train")
    assert len(train) == 3 and train.attribute_names == ("smiling",)
    got = dict(zip([s.split("/")[-1] for s in train.sources], train.attributes[:, 0].tolist()))
    assert got == {"c0.png": 1.0, "c1.png": 0.0, "d3.jpg": 0.0}
    assert len(load_dataset(cfg, "test")) == 1
    csv.write_text("file,smiling\nmissing.png,1\nc0.png,0\n")
    with pytest.raises(DataError, match="missing.png"):
        load_dataset(cfg, "train")


def test_channel_mismatch_is_reported(idx_root):
    from patronus_diffusion.data.registry import LOADERS as _LOADERS

    cfg = DataConfig(dataset="fashion-mnist", root=str(idx_root), channels=3)
    ds = load_dataset(cfg, "train")  # grey IDX replicated to 3 channels on request
    assert ds[0][0].shape[0] == 3
    assert "fashion-mnist" in _LOADERS


def test_batches_are_a_permutation_fixed_by_seed_and_epoch(idx_root):
    ds = load_dataset(DataConfig(dataset="fashion-mnist", root=str(idx_root), image_size=16), "train")
    a = [y for _, _, y in iterate_batches(ds, 16, seed=0, epoch=0)]
    b = [y for _, _, y in iterate_batches(ds, 16, seed=0, epoch=0, start_batch=3)]
    c = [y for _, _, y in iterate_batches(ds, 16, seed=0, epoch=1)]
    assert len(a) == 8 and all(torch.equal(x, y) for x, y in zip(a[3:], b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_training_on_a_folder_says_what_it_found(tmp_path, capsys):
    """Counts, split rule, conversion, transparency and images far below the model's resolution are reported."""
    from PIL import Image

    from patronus_diffusion.cli.main import main

    for sub, make in (("cats", lambda: Image.new("RGBA", (40, 40), (255, 0, 0, 128))),
                      ("dogs", lambda: Image.new("L", (5, 5), 100))):
        (tmp_path / "pics" / sub).mkdir(parents=True)
        for i in range(12):
            make().save(tmp_path / "pics" / sub / f"{i}.png")
    assert main(["train", "--preset", "tiny", "--dataset", "folder", "--data-root", str(tmp_path / "pics"),
                 "--out", str(tmp_path / "run"), "--steps", "1", "--batch-size", "4", "--no-progress",
                 "--set", "data.limit=none", "train.sample_every=0"]) == 0
    out = capsys.readouterr().out
    assert "train /" in out and "hash of their names" in out
    assert "12 with transparency" in out or "with transparency, composited onto white" in out
    assert "smaller than half the model's 16 px (smallest 5x5)" in out
    assert "2 classes (sub-folder names): cats, dogs" in out


@pytest.mark.parametrize("value,truth", [(0.0, "never present"), (-1.0, "never present"), (1.0, "always present")])
def test_a_constant_attribute_is_named_for_what_it_is(value, truth):
    """A constant-0 (or -1) column is an attribute no image has: the message must not call it always present."""
    from types import SimpleNamespace

    from patronus_diffusion.data.biased import resolve_attribute

    ds = SimpleNamespace(attribute_names=("Smiling",), attributes=np.full((5, 1), value, np.float32),
                         class_names=(), labels=np.full(5, -1))
    with pytest.raises(DataError, match=f"Smiling.*{truth}") as e:
        resolve_attribute(ds, "Smiling")
    assert ("always" in str(e.value)) == (truth == "always present")
    with pytest.raises(DataError, match=truth):
        resolve_attribute(ds, "not:Smiling")


def test_make_biased_on_a_never_present_attribute_says_so(tmp_path, capsys):
    from patronus_diffusion.cli.main import main

    _make_folder(tmp_path / "pics")
    names = sorted(p.relative_to(tmp_path / "pics") for p in (tmp_path / "pics").rglob("*.*"))
    csv = tmp_path / "attrs.csv"
    csv.write_text("file,Smiling,Blond\n" + "".join(f"{n},0,{i % 2}\n" for i, n in enumerate(names)))
    assert main(["make-biased", "--dataset", "folder", "--data-root", str(tmp_path / "pics"), "--attributes-csv",
                 str(csv), "--a", "Smiling", "--b", "Blond", "--correlation", "0.5",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "never present" in err and "always" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _pics(folder, names):
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), i % 256).save(folder / name)


_FLAT = [f"{c}/{i:02d}.png" for c in ("cats", "dogs") for i in range(20)]  # 40 images, no train/ or test/


@pytest.mark.parametrize("layout", ["subfolders", "hash", "csv-split", "csv-no-split", "subfolders-csv"])
def test_train_and_test_are_disjoint_for_every_way_a_folder_is_split(tmp_path, layout):
    """Whatever decides the split, no image is in both, every image of the folder (or CSV) is in one, and the
    line training prints counts exactly those."""
    from patronus_diffusion.data.datasets import describe_training_data

    root = tmp_path / "pics"
    csv_lines = None
    if layout.startswith("subfolders"):
        _pics(root, [f"train/{n}" for n in _FLAT[:30]] + [f"test/{n}" for n in _FLAT[30:]])
        expected = {"train": 30, "test": 10}
        if layout == "subfolders-csv":  # one CSV for both sub-folders, named relative to the split folder
            csv_lines = [f"{n},{i % 2}" for i, n in enumerate(_FLAT)]
    else:
        _pics(root, _FLAT)
        expected = {"train": 36, "test": 4}  # a fixed 10 %
        if layout == "csv-split":
            csv_lines = [f"{n},{i % 2},{'test' if i % 5 == 0 else 'train'}" for i, n in enumerate(_FLAT)]
            expected = {"train": 32, "test": 8}
        elif layout == "csv-no-split":
            csv_lines = [f"{n},{i % 2}" for i, n in enumerate(_FLAT)]
    cfg = DataConfig(dataset="folder", root=str(root), image_size=8, channels=1)
    if csv_lines is not None:
        header = "file,smiling,split" if layout == "csv-split" else "file,smiling"
        (tmp_path / "attrs.csv").write_text("\n".join([header, *csv_lines]) + "\n")
        cfg.attributes_csv = str(tmp_path / "attrs.csv")
    train, test = load_dataset(cfg, "train"), load_dataset(cfg, "test")
    a, b = {p.resolve() for p in train.files}, {p.resolve() for p in test.files}
    assert not a & b, f"{len(a & b)} image(s) in both splits"
    assert {"train": len(a), "test": len(b)} == expected
    assert len(train) == len(a) and len(test) == len(b)
    assert a | b == {p.resolve() for p in root.rglob("*.png")}
    if csv_lines is not None:  # attributes follow their files into both splits
        want = {(root / n).name: float(i % 2) for i, n in enumerate(_FLAT)}
        for ds in (train, test):
            assert {p.name: v for p, v in zip(ds.files, ds.attributes[:, 0])} == {p.name: want[p.name]
                                                                                for p in ds.files}
    line = describe_training_data(train, test, cfg)[0]
    assert f": {expected['train']} train / {expected['test']} test images" in line, line
    rule = {"subfolders": "sub-folders", "subfolders-csv": "sub-folders", "hash": "hash of their names",
            "csv-no-split": "hash of their names", "csv-split": "split column"}[layout]
    assert rule in line, line


def test_a_train_folder_without_a_test_folder_has_no_test_split(tmp_path):
    """train/ alone: the test split is not the whole folder (which would hold every training image)."""
    _pics(tmp_path / "pics", [f"train/{n}" for n in _FLAT[:10]])
    cfg = DataConfig(dataset="folder", root=str(tmp_path / "pics"), image_size=8, channels=1)
    assert len(load_dataset(cfg, "train")) == 10
    with pytest.raises(DataError, match="test/"):
        load_dataset(cfg, "test")


def test_training_on_a_folder_with_a_csv_without_split_column_holds_out_a_test_split(tmp_path, capsys):
    """The new user's case: a folder and an attribute CSV without a split column printed 'N train / N test'."""
    from patronus_diffusion.cli.main import main

    _pics(tmp_path / "pics", _FLAT)
    (tmp_path / "attrs.csv").write_text("file,smiling\n" + "".join(f"{n},{i % 2}\n" for i, n in enumerate(_FLAT)))
    assert main(["train", "--preset", "tiny", "--dataset", "folder", "--data-root", str(tmp_path / "pics"),
                 "--attributes-csv", str(tmp_path / "attrs.csv"), "--out", str(tmp_path / "run"), "--steps", "1",
                 "--batch-size", "4", "--no-progress", "--set", "data.limit=none", "train.sample_every=0"]) == 0
    out = capsys.readouterr().out
    assert "36 train / 4 test images (split: a fixed 10 %" in out, out
