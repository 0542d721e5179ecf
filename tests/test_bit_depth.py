"""Images deeper than 8 bits keep their range: a dark 16-bit PNG must not saturate to white."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from patronus_diffusion.data import pil_to_tensor


def _png16(arr: np.ndarray) -> bytes:
    """A minimal 16-bit PNG (grey or RGB) written by hand: Pillow cannot write 48-bit RGB."""
    h, w, c = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2}[c], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("channels", [1, 3])
def test_dark_16bit_grey_png_is_scaled_by_its_bit_depth(channels):
    arr = np.full((8, 8, 1), 1000, np.uint16)
    x = pil_to_tensor(Image.open(io.BytesIO(_png16(arr))), channels, 8, "squash")
    assert x.shape == (channels, 8, 8)
    assert torch.allclose(x, torch.full_like(x, 1000 / 65535 * 2 - 1), atol=1e-3)  # -0.969, not +1.0


def test_16bit_rgb_png_keeps_its_level():
    arr = np.full((8, 8, 3), 1000, np.uint16)
    x = pil_to_tensor(Image.open(io.BytesIO(_png16(arr))), 3, 8, "squash")
    assert torch.allclose(x, torch.full_like(x, 1000 / 65535 * 2 - 1), atol=0.01)  # 8-bit rounding by Pillow


def test_float_tiff_in_unit_range(tmp_path):
    arr = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(arr, mode="F").save(tmp_path / "f.tif")
    x = pil_to_tensor(Image.open(tmp_path / "f.tif"), 1, 8, "squash")
    assert torch.allclose(x[0], torch.from_numpy(arr) * 2 - 1, atol=1e-3)


def test_dark_16bit_png_through_the_api(tiny_run, tmp_path):
    from patronus_diffusion import Patronus

    (tmp_path / "dark.png").write_bytes(_png16(np.full((16, 16, 1), 1000, np.uint16)))
    x = Patronus.load(tiny_run, device="cpu").load_images(paths=[tmp_path / "dark.png"])
    assert float(x.max()) < -0.9


def test_images_far_below_the_resolution_are_counted_and_warned_about(tiny_run, tmp_path):
    import warnings

    from PIL import Image

    from patronus_diffusion import Patronus

    Image.new("L", (1, 1), 200).save(tmp_path / "dot.png")
    Image.new("L", (16, 16), 200).save(tmp_path / "full.png")
    pat = Patronus.load(tiny_run, device="cpu")
    with pytest.warns(UserWarning, match=r"1 of 2 image\(s\) are smaller than half the model's 16 px.*dot.png \(1x1\)"):
        x = pat.load_images(paths=[tmp_path / "dot.png", tmp_path / "full.png"])
    assert x.shape == (2, 1, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a full-size image alone says nothing
        pat.load_images(paths=[tmp_path / "full.png"])


def test_float_tiff_outside_the_unit_range_is_clipped_with_a_warning(tmp_path):
    arr = np.full((8, 8), 200.0, np.float32)  # e.g. 0..255 values stored as float
    Image.fromarray(arr, mode="F").save(tmp_path / "f.tif")
    with pytest.warns(UserWarning, match=r"outside the \[0, 1\]"):
        x = pil_to_tensor(Image.open(tmp_path / "f.tif"), 1, 8, "squash")
    assert float(x.min()) == 1.0
