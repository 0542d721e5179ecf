"""The explorer without a browser: uploads, slider ranges, stale requests, what the server serves, bad requests,
hang-ups, stalled connections and a short load."""

import http.client
import importlib.util
import io
import json
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import serving
from patronus_diffusion.api import Patronus
from patronus_diffusion.cli.explore import is_loopback
from patronus_diffusion.explore import session as session_module
from patronus_diffusion.explore.server import make_server
from patronus_diffusion.explore.session import MAX_UPLOAD_BYTES, ExplorerSession, UploadError, read_upload
from patronus_diffusion.utils.errors import UsageError, UserError


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
    with serving(session) as port:
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


def test_the_mixing_weight_follows_the_step_count(tiny_run):
    pat = Patronus.load(tiny_run, device="cpu")
    assert ExplorerSession(pat, steps=10, ref_n=8).pat.config.sample.edict_mix == 0.6
    assert ExplorerSession(pat, steps=20, ref_n=8).pat.config.sample.edict_mix == 0.8
    with pytest.raises(UserError, match="--mix"):
        ExplorerSession(pat, steps=10, mix=1.0, ref_n=8)


def test_loopback_detection_for_the_host_warning():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


# ---------------------------------------------------------------- the server under bad requests, hang-ups and load


def _post(port, path, body, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"{}")


def _threads_back_to(baseline, within):
    """Wait until the process has no more Python threads than ``baseline``; True when it got there in time."""
    end = time.monotonic() + within
    while threading.active_count() > baseline:
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _closed_after(sock, limit):
    """Seconds until the server closed ``sock`` (None: still open after ``limit``), and what it sent first."""
    sock.settimeout(limit)
    t0, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (socket.timeout, TimeoutError):
        return None, data
    except ConnectionResetError:
        pass
    return time.monotonic() - t0, data


def test_non_integer_indices_and_bool_numbers_are_refused(session, capsys):
    with serving(session) as port:
        for body in (b'{"index": true}', b'{"index": 2.9}', b'{"index": "3"}', b'{"index": [1]}'):
            status, out = _post(port, "/api/pick", body)
            assert status == 400 and "integer" in out["error"], body
        status, out = _post(port, "/api/interpolate", b'{"a": "x", "b": "y", "alpha": true}')
        assert status == 400 and "number" in out["error"]
        status, out = _post(port, "/api/render", b'{"key": "x", "s": [], "seq": false}')
        assert status == 400 and "integer" in out["error"]
        status, out = _post(port, "/api/render", b'{"key": "x", "s": [true, false], "seq": 1}')
        assert status == 400 and "numbers" in out["error"]
    assert "Traceback" not in capsys.readouterr().err


def test_deep_huge_or_oversized_json_is_a_400_not_a_traceback(session, capsys):
    with serving(session) as port:
        status, out = _post(port, "/api/pick", b"[" * 200_000 + b"]" * 200_000)
        assert status in (400, 413) and "error" in out
        status, out = _post(port, "/api/pick", b"[" * 50_000 + b"]" * 50_000)  # under the size limit
        assert status == 400 and "nested too deeply" in out["error"]
        status, out = _post(port, "/api/pick", b'{"index": ' + b"9" * 5000 + b"}")  # beyond int's digit limit
        assert status == 400 and "not JSON" in out["error"]
        status, out = _post(port, "/api/render", json.dumps({"key": "k", "s": [0.5] * 300_000}).encode())
        assert status == 413 and "KiB" in out["error"]
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RecursionError" not in err


def test_render_validates_before_it_remembers_and_the_memory_is_bounded(session, monkeypatch):
    before = len(session._latest)
    for k in range(200):
        with pytest.raises(UsageError):
            session.render(f"bogus{k:04d}", [0.0] * session.pat.num_prototypes, seq=k, client="c")
    picked = session.pick_test(3)
    with pytest.raises(UsageError, match="numbers"):
        session.render(picked["key"], [0.0], seq=1, client="d")
    with pytest.raises(UsageError, match="client"):
        session.render(picked["key"], picked["s"], seq=1, client="x" * 10_000)
    assert len(session._latest) == before  # nothing remembered for a request that was refused
    monkeypatch.setattr(session_module, "MAX_CHANNELS", 2)
    for c in ("a", "b", "c"):
        session.render(picked["key"], picked["s"], seq=1, client=c)
    assert list(session._latest)[-2:] == [f"b:{picked['key']}", f"c:{picked['key']}"]
    assert len(session._latest) <= 2


def test_stalled_connections_are_dropped_within_the_timeout(session):
    with serving(session, timeout=1.0) as port:
        host = f"Host: 127.0.0.1:{port}\r\n".encode()
        stalls = {"silent": b"",
                  "half a header": b"GET /api/info HTTP/1.1\r\n" + host,
                  "half an upload": b"POST /api/upload?name=a.png HTTP/1.1\r\n" + host +
                                    b"Content-Length: 100000\r\n\r\n" + b"x" * 1000}
        socks = {}
        for kind, data in stalls.items():
            socks[kind] = socket.create_connection(("127.0.0.1", port))
            socks[kind].sendall(data)
        for kind, s in socks.items():
            with s:
                seconds, answer = _closed_after(s, 6.0)
            assert seconds is not None and seconds < 3.0, f"{kind}: still open after 6 s"
            if kind == "half an upload":
                assert answer.startswith(b"HTTP/1.0 408"), answer[:60]
        status, _ = _post(port, "/api/info", b"{}")  # the server still answers (404: info is a GET)
        assert status == 404


def test_connections_beyond_the_cap_get_a_503_and_the_slots_come_back(session):
    with serving(session, timeout=5.0, max_connections=2) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.3)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/api/info")
        r = c.getresponse()
        assert r.status == 503 and "busy" in json.loads(r.read())["error"]
        for s in idle:
            s.close()
        for _ in range(50):  # the two handlers see the hang-up and give their slots back
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/api/info")
            if c.getresponse().status == 200:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the slots never came back")


class _SlowRefusal:
    """A stand-in session whose pick waits until the test lets it go, then refuses (a user error)."""

    def __init__(self):
        self.go = threading.Event()

    def pick_test(self, index):
        self.go.wait(20)
        raise UsageError("test image does not exist")


def test_a_client_hanging_up_before_the_error_reply_prints_nothing(capsys):
    stub = _SlowRefusal()
    with serving(stub) as port:
        baseline = threading.active_count()
        body = b'{"index": 5}'
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /api/pick HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body))
        time.sleep(0.3)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # a reset: the reply has nowhere to go
        time.sleep(0.2)
        stub.go.set()
        assert _threads_back_to(baseline, 10)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err


def _load_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "explorer_load.py"
    spec = importlib.util.spec_from_file_location("explorer_load", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_load_of_concurrent_sliders_with_stalled_sockets(session):
    """The load benchmark in small: 4 clients for 3 s, every answer as a lone client gets it; threads come back."""
    bench = _load_benchmark()
    with serving(session, timeout=1.5) as port:
        base = f"http://127.0.0.1:{port}"
        pool = bench.build_pool(base, images=2, moves=3, seed=0)
        baseline = threading.active_count()
        stalls = bench.start_stalls("127.0.0.1", port, ["silent", "half an upload"], limit=8.0)
        result = bench.run_load(base, pool, clients=4, duration=3.0, seed=1)
        for t in stalls:
            t.join(15)
        assert result["errors"] == [], result["errors"][:3]
        assert result["counts"]["render"] >= 4 and sum(result["counts"].values()) == result["requests"]
        for t in stalls:
            assert t.result["closed_after_s"] is not None and t.result["closed_after_s"] < 1.5 + 2.0, t.result
        assert _threads_back_to(baseline, 5), (threading.active_count(), baseline)
        # the checker is not vacuous: an answer that differs from the lone client's is an error
        move = pool["moves"][0]
        status, out, _ = bench.request(base, "POST", "/api/render",
                                       {"key": move["key"], "s": move["s"], "seq": 1, "client": "check"})
        assert bench.check_render(status, out, move["answer"], 1) is None
        wrong = {**move["answer"], "s_reached": [v + 0.01 for v in move["answer"]["s_reached"]]}
        assert "s_reached differs" in bench.check_render(status, out, wrong, 1)


# ---------------------------------------------------------------- what the page shows: patches, the window, guidance
def _get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", path)
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"{}")


def test_nearest_training_patches_are_found_once_and_served_per_prototype(session, monkeypatch):
    from patronus_diffusion.analysis import explain

    calls = []
    original = explain.nearest_patches
    monkeypatch.setattr(explain, "nearest_patches", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    session._patches = None
    with serving(session) as port:
        status, out = _get(port, "/api/patches")
        assert status == 200 and out["available"] and out["source"] == "dataset" and out["split"] == "train"
        assert [p["id"] for p in out["prototypes"]] == list(range(session.pat.num_prototypes))
        assert out["k"] == 5 and all(len(p["nearest"]) == 5 for p in out["prototypes"])
        strip = out["prototypes"][0]["src"]
        assert strip.startswith("data:image/png;base64,")
        assert _get(port, "/api/patches")[1] == out  # kept on the session: found once
    assert calls == [1]
    # the same patches as the report's cards: nearest_patches, cropped at the receptive-field boxes (padded with
    # black to the largest crop of any prototype, where the report pads each prototype's own)
    P = session.pat.num_prototypes
    near = original(session.pat, range(P), 5, 10000, 0, "train")
    ds = session.pat.dataset("train")
    crops = explain.crop_patches(ds.get_batch(near.index.flatten().tolist()), near.boxes.reshape(-1, 4))
    assert strip == session_module.png_uri(crops[:5], upscale=1)


def test_without_stored_patches_or_dataset_the_page_is_told_why_in_one_line(tiny_run, monkeypatch):
    from patronus_diffusion.data import DataError

    sess = ExplorerSession(Patronus.load(tiny_run, device="cpu"), steps=2, ref_n=8)
    real = sess.pat.dataset

    def dataset(split="test"):
        if split == "train":
            raise DataError("Fashion-MNIST not found at /nowhere. Install it offline with apt.")
        return real(split)

    monkeypatch.setattr(sess.pat, "dataset", dataset)
    out = sess.patches()
    assert out["available"] is False and "\n" not in out["reason"]
    assert out["reason"] == ("no nearest training patches: this model stores none and its train split cannot be "
                             "read (Fashion-MNIST not found at /nowhere)")
    assert "image" in sess.render(sess.pick_test(0)["key"], sess.pick_test(0)["s"])  # the sliders still work


def test_stored_patches_need_no_dataset_and_only_serve_their_own_weights(tiny_run, tmp_path, monkeypatch):
    import shutil

    from patronus_diffusion.analysis.explain import PATCHES_FILE, prototype_patches, save_patches, stored_patches
    from patronus_diffusion.data import DataError

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    pat = Patronus.load(run, device="cpu")
    found = prototype_patches(pat, stored=False)
    save_patches(pat, run, found, 10000)
    again = Patronus.load(run, device="cpu")
    monkeypatch.setattr(again, "dataset", lambda split="test": (_ for _ in ()).throw(DataError("no data")))
    stored = prototype_patches(again)
    assert stored.source == PATCHES_FILE and torch.equal(stored.crops, found.crops)
    assert stored.labels == found.labels and torch.equal(stored.index, found.index)
    assert stored_patches(again, k=3) is None  # other settings: not these patches
    raw = Patronus.load(run, weights="raw", device="cpu")  # other weights: not theirs
    assert stored_patches(raw) is None


def test_the_shipped_model_stores_its_patches():
    from patronus_diffusion.analysis.explain import stored_patches

    pat = Patronus.from_pretrained("fashion-mnist", device="cpu")
    p = stored_patches(pat)
    assert p is not None and p.crops.shape[:2] == (pat.num_prototypes, 5) and p.searched == 10000
    assert p.crops.min() >= -1 and p.crops.max() <= 1 and len(p.labels) == pat.num_prototypes


def test_render_windows_are_checked_and_the_full_and_empty_windows_are_exact(session):
    picked = session.pick_test(4)
    key, s = picked["key"], list(picked["s"])
    j = int(np.argmin(s))
    s[j] = session.slider_ranges()[j]["max"]
    with serving(session) as port:
        def render(window, seq, raw=None):
            body = raw or json.dumps({"key": key, "s": s, "seq": seq, "client": "w", "window": window}).encode()
            return _post(port, "/api/render", body)

        for window, message in (([0.6, 0.2], "LO is after HI"), ([0.5], "two numbers"), ([0, 2], "outside 0 ... 1"),
                                ([0.1, 0.2, 0.3], "two numbers"), ([True, 1], "list of numbers"),
                                ("0,1", "list of numbers"), ({"lo": 0}, "list of numbers")):
            status, out = render(window, 1)
            assert status == 400 and message in out["error"], (window, out)
        raw = b'{"key": "%s", "s": %s, "seq": 1, "window": [NaN, 1]}' % (key.encode(), json.dumps(s).encode())
        status, out = render(None, 1, raw)
        assert status == 400 and "not finite" in out["error"]
        assert f"w:{key}" not in session._latest  # a refused request is not remembered
        status, plain = render(None, 2)
        assert status == 200 and plain["window"] == [0.0, 1.0] and len(plain["window_steps"]) == session.steps
        assert render([0, 1], 3)[1]["image"] == plain["image"]  # every step: the plain edit, exactly
        # the picked image's own s, unrounded (the page's copy is rounded to 5 digits)
        unedited = session.render(key, session.entry(key).s.tolist(), seq=1, client="exact")
        status, empty = render([0.5, 0.5], 5)
        assert status == 200 and empty["window_steps"] == [] and empty["image"] == unedited["image"]
        status, late = render([0, 0.5], 6)
        assert late["window_steps"] == session.pat.schedule.window_steps(session.steps, (0, 0.5))
        assert 0 < len(late["window_steps"]) < session.steps


def test_the_page_is_told_which_guidance_decodes_the_edits(tiny_run, monkeypatch):
    pat = Patronus.load(tiny_run, device="cpu")
    plain = ExplorerSession(pat, steps=2, ref_n=8)
    assert plain.info()["guidance"] == {"guidance": 0.0, "edit_guidance": 0.0,
                                        "text": "decoded with edit guidance w = 0 (the decoder's own response)"}
    amplified = ExplorerSession(pat.with_options(edit_guidance=0.7), steps=2, ref_n=8)
    g = amplified.info()["guidance"]
    assert g["edit_guidance"] == 0.7 and g["text"].startswith("decoded with edit guidance w = 0.7 (the run's")
    seen = []
    decode = amplified.pat.decode
    monkeypatch.setattr(amplified.pat, "decode", lambda *a, **k: (seen.append(k), decode(*a, **k))[1])
    picked = amplified.pick_test(0)
    amplified.render(picked["key"], [v + 0.3 for v in picked["s"]], window=[0.5, 1])
    assert seen[-1]["guidance"] == 0.7 and seen[-1]["against"] is not None  # what the page says is what decodes
    assert seen[-1]["window"] is not None
    cfg = ExplorerSession(pat, steps=2, ref_n=8, guidance=2.0).info()["guidance"]
    assert cfg["guidance"] == 2.0 and cfg["edit_guidance"] == 0.0 and "classifier-free" in cfg["text"]
    info = plain.info()["window"]
    assert info["T"] == pat.schedule.num_timesteps and info["timesteps"] == pat.schedule.timesteps(2)


def test_the_shipped_model_explores_without_the_dataset_patches_included(tmp_path, monkeypatch):
    import patronus_diffusion.data.datasets as datasets

    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", str(tmp_path / "no-fashion-mnist"))
    sess = ExplorerSession(Patronus.from_pretrained("fashion-mnist", device="cpu"), steps=2)
    info = sess.info()
    assert info["test_images"] == 0 and info["no_test_images"].startswith("no test images (Fashion-MNIST not found")
    assert "\n" not in info["no_test_images"]
    assert sess.thumbnails()["images"] == []
    with pytest.raises(UsageError, match="upload an image"):
        sess.pick_test(0)
    patches = sess.patches()  # from the file stored with the model
    assert patches["available"] and patches["source"] == "prototype_patches.safetensors"
    assert len(patches["prototypes"]) == 30 and patches["images_searched"] == 10000
    assert info["guidance"]["edit_guidance"] == 0.6 and "w = 0.6 (the run's sample.edit_guidance)" in \
        info["guidance"]["text"]
    picked = sess.pick_upload(_png("L", (28, 28), 200), "grey.png")
    out = sess.render(picked["key"], [v + 0.2 for v in picked["s"]], window=[0.5, 1])
    assert out["window_steps"] == [999]  # 2 steps: t = 999, 0
