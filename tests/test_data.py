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
