"""The explorer without a browser: uploads, slider ranges, stale requests, what the server serves."""

import http.client
import io
import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from patronus_diffusion.api import Patronus
from patronus_diffusion.cli.explore import is_loopback
from patronus_diffusion.explore.server import make_server
from patronus_diffusion.explore.session import MAX_UPLOAD_BYTES, ExplorerSession, UploadError, read_upload
from patronus_diffusion.utils.errors import UserError


def _png(mode, size=(20, 20), value=0, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"%PDF-1.4 not an image", "not an image"),
    (_png("L", (64, 64), 7)[:70], "cannot read"),  # a truncated PNG: the header reads, the pixels do not
    (b"x" * (MAX_UPLOAD_BYTES + 1), "limit is 4 MiB"),
])
def test_bad_uploads_get_a_message(data, message):
    with pytest.raises(UploadError, match=message):
        read_upload(data, 1, 16, "center-crop")


def test_an_odd_image_mode_gets_a_message_that_says_what_to_do():
    buf = io.BytesIO()
    Image.new("YCbCr", (20, 20)).save(buf, "TIFF")
    with pytest.raises(UploadError, match="mode YCbCr.*RGB or greyscale"):
        read_upload(buf.getvalue(), 1, 16, "center-crop")


def test_uploads_of_usual_modes_convert_to_the_model_resolution():
    for data in (_png("L", value=255), _png("RGB", value=(255, 255, 255)), _png("RGBA", value=(0, 0, 0, 0)),
                 _png("I;16", value=65535), _png("RGB", value=(255, 255, 255), fmt="JPEG")):
        x = read_upload(data, 1, 16, "center-crop")
        assert x.shape == (1, 1, 16, 16)
        assert torch.allclose(x, torch.ones_like(x), atol=0.02)  # white (transparent on white, 16-bit full scale)


@pytest.fixture(scope="module")
def session(tiny_run):
    return ExplorerSession(Patronus.load(tiny_run, device="cpu"), steps=3, ref_n=32)


def test_slider_ranges_are_quantiles_of_the_reference_set(session):
    s = session.reference.s
    for r in session.slider_ranges():
        j = r["id"]
        assert r["max"] == pytest.approx(float(s[:, j].max()), abs=1e-5)
        assert r["min"] == pytest.approx(float(torch.quantile(s[:, j], 0.01)), abs=1e-5)
        assert r["min"] <= r["median"] <= r["max"]


def test_unedited_render_reproduces_the_picked_image_and_its_s(session):
    picked = session.pick_test(1)
    out = session.render(picked["key"], picked["s"], seq=1, client="t")
    # EDICT inversion is exact: decoding the unedited s gives the picked image back, so s is reached
    assert np.allclose(out["s_reached"], picked["s"], atol=2e-3)
    assert out["image"].startswith("data:image/png;base64,")


def test_a_request_overtaken_by_a_newer_one_is_dropped(session):
    picked = session.pick_test(2)
    session._latest[f"c:{picked['key']}"] = 5  # a newer request of this client has arrived
    assert session.render(picked["key"], picked["s"], seq=4, client="c") == {"stale": True, "seq": 4}
    assert "image" in session.render(picked["key"], picked["s"], seq=6, client="c")


def test_render_rejects_bad_s_before_any_decoding(session):
    picked = session.pick_test(0)
    with pytest.raises(Exception, match="finite numbers"):
        session.render(picked["key"], [0.1, 0.2], seq=1)
    with pytest.raises(Exception, match="pick it again"):
        session.render("forgotten", picked["s"], seq=1)


def test_server_serves_only_its_own_files(session):
    server = make_server(session, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        def get(path):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read(), r.getheader("Content-Security-Policy")

        status, body, csp = get("/")
        assert status == 200 and b"explorer.js" in body and "default-src 'self'" in csp
        for path in ("/../../etc/passwd", "/static/index.html", "/%2e%2e/server.py", "/session.py",
                     "//etc/passwd", "/explorer.js/../server.py"):
            assert get(path)[0] == 404, path
        status, body, _ = get("/api/info")
        assert status == 200 and json.loads(body)["num_prototypes"] == session.pat.num_prototypes

        def post(path, body=b"{}", **headers):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
            r = c.getresponse()
            return r.status, json.loads(r.read() or b"{}")

        # another Host (DNS rebinding) or a cross-site page is refused; a plain-text POST is not taken as JSON
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/api/info", headers={"Host": "evil.example:80"})
        assert c.getresponse().status == 403
        assert post("/api/pick", b'{"index": 0}', Origin="http://evil.example")[0] == 403
        assert post("/api/pick", b'{"index": 0}', **{"Content-Type": "text/plain"})[0] == 400
        assert post("/api/pick", b'{"index": 1e999}')[0] == 400  # an overflowing number is a user error
        assert post("/api/pick", b"\xff\xfe")[0] == 400
        assert post("/api/pick", b'{"index": 0}', Origin=f"http://127.0.0.1:{port}")[0] == 200  # its own page
        # a second explorer on the same port: a one-line user error, not a traceback
        with pytest.raises(UserError, match="--port 0"):
            make_server(session, "127.0.0.1", port)
    finally:
        server.shutdown()
        server.server_close()


def test_the_mixing_weight_follows_the_step_count(tiny_run):
    pat = Patronus.load(tiny_run, device="cpu")
    assert ExplorerSession(pat, steps=10, ref_n=8).pat.config.sample.edict_mix == 0.6
    assert ExplorerSession(pat, steps=20, ref_n=8).pat.config.sample.edict_mix == 0.8
    with pytest.raises(UserError, match="--mix"):
        ExplorerSession(pat, steps=10, mix=1.0, ref_n=8)


def test_loopback_detection_for_the_host_warning():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
