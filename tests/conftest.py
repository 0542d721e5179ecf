import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from patronus_diffusion.config import apply_overrides
from patronus_diffusion.presets import get_preset

torch.set_num_threads(2)


def write_idx(path: Path, arr: np.ndarray) -> None:
    code = {np.uint8: 0x08}[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def synthetic_images(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of 28x28 'garments': a bright horizontal bar (0) or a vertical bar (1), with jitter."""
    rng = np.random.default_rng(seed)
    imgs = np.zeros((n, size, size), np.uint8)
    labels = rng.integers(0, 2, n).astype(np.uint8)
    for i in range(n):
        c = rng.integers(8, 20)
        w = rng.integers(3, 7)
        if labels[i] == 0:
            imgs[i, c - w // 2: c + w // 2 + 1, 4:24] = 220
        else:
            imgs[i, 4:24, c - w // 2: c + w // 2 + 1] = 220
        imgs[i] = np.clip(imgs[i].astype(int) + rng.integers(0, 20, (size, size)), 0, 255)
    return imgs, labels


@pytest.fixture(scope="session")
def idx_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("idx")
    for prefix, n, seed in (("train", 128, 0), ("t10k", 48, 1)):
        imgs, labels = synthetic_images(n, seed)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", imgs)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="session")
def _tiny_cfg_master(idx_root):
    return apply_overrides(get_preset("tiny"), [f"data.root={idx_root}", "data.limit=none"])


@pytest.fixture
def tiny_cfg(_tiny_cfg_master):
    """A fresh copy per test: a test may change it without changing what later tests see."""
    return _tiny_cfg_master.copy()


@pytest.fixture(scope="session")
def tiny_run(_tiny_cfg_master, tmp_path_factory) -> Path:
    """A tiny Patronus model trained for 40 steps (shared by the API/CLI/analysis tests)."""
    from patronus_diffusion.training import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = _tiny_cfg_master.copy()
    cfg.train.sample_every = 20
    train(cfg, run, max_steps=40, progress=False)
    return run


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (restored after it): tiny networks gain nothing from a second thread, and on
    a machine whose cores are busy a second one makes them several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
