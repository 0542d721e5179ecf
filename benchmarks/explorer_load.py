"""Load test of `patronus explore`: N clients moving sliders at once for a bounded time, plus stalled connections.

    python benchmarks/explorer_load.py [--run pretrained:fashion-mnist | --tiny] [--clients 8] [--duration 60]
                                       [--timeout 10] [--stalls 3] [--steps 10] [--torch-threads N] [--out FILE]

The server is `explore.server.make_server` on 127.0.0.1 in a child process (this script with --serve), so the
threads and the memory measured are the server's own. First one client builds a pool of requests and their answers
(--images test images picked, --moves slider moves each, the first page of thumbnails); then --clients clients
send requests as a page does (one in flight, 30 ms between answers) for --duration seconds: mostly slider moves
drawn from the pool, some thumbnails, info and picks, and some bad requests (a forgotten image key, an index that is
not an integer, JSON nested too deeply, s of the wrong length) whose correct answer is a 400. Every answer is checked:
the status, the JSON shape, and for a slider move the same s reached and the same image (within 2 grey levels) as
the lone client got. Meanwhile waves of --stalls stalled connections (silent, half a header, half an upload) are
opened at the start and half-way: each must be closed by the server within --timeout (+2 s of slack).

Reports requests/s, latency percentiles per kind, the server's threads and RSS (from /proc) before the load, its
peak, and after (threads must come back to the count before; RSS must stay flat), every error, and whether the
server printed a traceback. Writes the JSON to --out (default results/explorer_load.json); exits 1 when anything
failed. Quote the figures with the machine's load: all clients share one model behind one lock, so requests/s is
the model's speed, and latency grows with the number of clients.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

STALL_KINDS = ("silent", "half a header", "half an upload")
SLACK_S = 2.0  # a stalled connection must be closed within the timeout plus this (a busy machine)
WEIGHTS = {"render": 0.80, "thumbs": 0.06, "info": 0.03, "pick": 0.03, "bad": 0.08}


# ---------------------------------------------------------------- one request
def request(base: str, method: str, path: str, body=None, timeout: float = 300.0):
    """(status, parsed JSON or None, seconds) of one request on its own connection, as the page's fetch makes it."""
    import http.client

    url = urllib.parse.urlparse(base)
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    raw = body if isinstance(body, bytes) else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if raw is not None else {}
    t0 = time.perf_counter()
    try:
        c.request(method, path, body=raw, headers=headers)
        r = c.getresponse()
        data = r.read()
    finally:
        c.close()
    seconds = time.perf_counter() - t0
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = None
    return r.status, parsed, seconds


def _pixels(uri: str):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))), dtype=np.int16)


def _expect(status, out, want_status, keys=()):
    if status != want_status:
        return f"status {status} (expected {want_status}): {str(out)[:160]}"
    if not isinstance(out, dict):
        return f"the answer is not a JSON object: {str(out)[:160]}"
    missing = [k for k in keys if k not in out]
    return f"the answer lacks {missing}" if missing else None


def check_render(status, out, ref: dict, seq: int) -> str | None:
    """None when a slider answer is the one the lone client got for the same request, else what differs."""
    if status == 200 and isinstance(out, dict) and out.get("stale"):
        return "answered stale, though no newer request of this client overtook it"
    bad = _expect(status, out, 200, ("seq", "image", "s_requested", "s_reached", "boxes", "seconds"))
    if bad:
        return bad
    if out["seq"] != seq:
        return f"seq {out['seq']} answered for {seq}"
    if out["s_requested"] != ref["s_requested"]:
        return "s_requested differs from the lone client's"
    if len(out["s_reached"]) != len(ref["s_reached"]) or any(
            a is None or b is None or abs(a - b) > 1e-3 for a, b in zip(out["s_reached"], ref["s_reached"])):
        return "s_reached differs from the lone client's by more than 1e-3"
    if out["boxes"] != ref["boxes"] and len(out["boxes"]) != len(ref["boxes"]):
        return "boxes of another shape"
    if out["image"] != ref["image"]:
        a, b = _pixels(out["image"]), _pixels(ref["image"])
        if a.shape != b.shape or int(abs(a - b).max()) > 2:
            return "the image differs from the lone client's by more than 2 grey levels"
    return None


# ---------------------------------------------------------------- the pool a lone client builds
def build_pool(base: str, images: int = 4, moves: int = 6, seed: int = 0) -> dict:
    """Pick ``images`` test images, ask for ``moves`` slider moves of each, one request at a time: the answers
    every concurrent client must get again."""
    rng = random.Random(seed)
    status, info, _ = request(base, "GET", "/api/info")
    assert status == 200, (status, info)
    sliders = info["sliders"]
    pool = {"info": info, "images": [], "moves": []}
    for index in range(min(images, info["test_images"])):
        status, picked, _ = request(base, "POST", "/api/pick", {"index": index})
        assert status == 200, (status, picked)
        pool["images"].append({"index": index, "key": picked["key"], "s": picked["s"]})
        for m in range(moves):
            j = rng.randrange(len(sliders))
            s = list(picked["s"])
            lo, hi = sliders[j]["min"], sliders[j]["max"]
            s[j] = round(lo + (hi - lo) * rng.random(), 4)
            status, out, _ = request(base, "POST", "/api/render",
                                     {"key": picked["key"], "s": s, "seq": m, "client": "lone"})
            assert status == 200 and "image" in out, (status, out)
            pool["moves"].append({"key": picked["key"], "s": s, "answer": out})
    count = min(8, info["test_images"])
    status, thumbs, _ = request(base, "GET", f"/api/thumbs?offset=0&count={count}")
    assert status == 200, (status, thumbs)
    pool["thumbs"] = thumbs
    return pool


# ---------------------------------------------------------------- the concurrent clients
def _one(base: str, pool: dict, kind: str, rng: random.Random, client: str, seqs: dict):
    """Send one request of ``kind``; (what was sent, seconds, error or None)."""
    info = pool["info"]
    if kind == "render":
        move = rng.choice(pool["moves"])
        seq = seqs[move["key"]] = seqs.get(move["key"], 0) + 1
        status, out, sec = request(base, "POST", "/api/render",
                                   {"key": move["key"], "s": move["s"], "seq": seq, "client": client})
        return kind, sec, check_render(status, out, move["answer"], seq)
    if kind == "thumbs":
        total = info["test_images"]
        offset, count = rng.randrange(max(1, total - 8)), rng.randint(1, 8)
        status, out, sec = request(base, "GET", f"/api/thumbs?offset={offset}&count={count}")
        bad = _expect(status, out, 200, ("offset", "total", "images"))
        if not bad:
            got = [im["index"] for im in out["images"]]
            if got != list(range(offset, min(offset + count, total))) or out["total"] != total:
                bad = f"thumbnails {got[:3]}... for offset {offset}, count {count}"
            elif not all(im["src"].startswith("data:image/png;base64,") for im in out["images"]):
                bad = "a thumbnail is not a PNG data URI"
            elif offset == 0 and out["images"] != pool["thumbs"]["images"][:count]:
                bad = "thumbnails differ from the lone client's"
        return kind, sec, bad
    if kind == "info":
        status, out, sec = request(base, "GET", "/api/info")
        bad = _expect(status, out, 200, ("num_prototypes", "sliders"))
        if not bad and (out["sliders"] != info["sliders"] or out["num_prototypes"] != info["num_prototypes"]):
            bad = "info differs from the lone client's"
        return kind, sec, bad
    if kind == "pick":
        image = rng.choice(pool["images"])
        status, out, sec = request(base, "POST", "/api/pick", {"index": image["index"]})
        bad = _expect(status, out, 200, ("key", "s", "image", "boxes"))
        if not bad and any(abs(a - b) > 1e-4 for a, b in zip(out["s"], image["s"])):
            bad = "the picked image's s differs from the lone client's"
        return kind, sec, bad
    # bad requests: the correct answer is a 400 with a message, and the server goes on
    p = info["num_prototypes"]
    which = rng.choice(["forgotten key", "bool index", "float index", "nested", "short s"])
    body, path, says = {
        "forgotten key": ({"key": "%012x" % rng.getrandbits(48), "s": [0.0] * p, "seq": 1, "client": client},
                          "/api/render", "pick it again"),
        "bool index": ({"index": True}, "/api/pick", "integer"),
        "float index": ({"index": 2.9}, "/api/pick", "integer"),
        "nested": (b"[" * 20_000 + b"]" * 20_000, "/api/pick", "nested"),
        "short s": ({"key": pool["moves"][0]["key"], "s": [0.0], "seq": 1, "client": client},
                    "/api/render", "finite numbers"),
    }[which]
    status, out, sec = request(base, "POST", path, body)
    bad = _expect(status, out, 400, ("error",))
    if not bad and says not in out["error"]:
        bad = f"{which}: the message {out['error']!r} does not say {says!r}"
    return kind, sec, (f"{which}: {bad}" if bad else None)


def run_load(base: str, pool: dict, clients: int = 8, duration: float = 60.0, seed: int = 0,
             pause: float = 0.03, weights: dict | None = None) -> dict:
    """``clients`` threads, each sending one request at a time (``pause`` s apart) for ``duration`` seconds."""
    weights = weights or WEIGHTS
    kinds, cum = list(weights), list(weights.values())
    lat: dict[str, list[float]] = {k: [] for k in kinds}
    errors: list[str] = []
    lock = threading.Lock()
    end = time.monotonic() + duration
    run_id = "%06x" % random.getrandbits(24)

    def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        name, seqs = f"load{i}-{run_id}", {}  # a fresh page: its sequence numbers start again
        while time.monotonic() < end:
            kind = rng.choices(kinds, cum)[0]
            try:
                kind, sec, bad = _one(base, pool, kind, rng, name, seqs)
            except Exception as e:  # a refused or reset connection, a timeout: an error of the server's
                sec, bad = float("nan"), f"{type(e).__name__}: {e}"
            with lock:
                if sec == sec:
                    lat[kind].append(sec)
                if bad:
                    errors.append(f"{kind}: {bad}")
            time.sleep(pause)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), name=f"load-client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    counts = {k: len(v) for k, v in lat.items()}
    done = sum(counts.values())
    return {"clients": clients, "duration_s": round(elapsed, 2), "requests": done, "errors": errors,
            "requests_per_s": round(done / elapsed, 3), "counts": counts,
            "latency_s": {k: _percentiles(v) for k, v in lat.items() if v}}


def _percentiles(values: list[float]) -> dict:
    v = sorted(values)

    def at(q):
        return round(v[min(len(v) - 1, max(0, int(round(q * len(v) + 0.5)) - 1))], 3)  # nearest rank
    return {"n": len(v), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(v[-1], 3)}


# ---------------------------------------------------------------- stalled connections
class Stall(threading.Thread):
    """A connection that sends part of a request and then nothing; ``result`` says when the server closed it."""

    def __init__(self, host: str, port: int, kind: str, limit: float):
        super().__init__(name=f"stall-{kind}", daemon=True)
        self.host, self.port, self.kind, self.limit = host, port, kind, limit
        self.result = {"kind": kind, "closed_after_s": None, "answer": ""}

    def run(self) -> None:
        host = f"Host: {self.host}:{self.port}\r\n".encode()
        data = {"silent": b"",
                "half a header": b"GET /api/info HTTP/1.1\r\n" + host,
                "half an upload": b"POST /api/upload?name=stalled.png HTTP/1.1\r\n" + host +
                                  b"Content-Length: 100000\r\n\r\n" + b"\x89PNG" + b"x" * 996}[self.kind]
        try:
            with socket.create_connection((self.host, self.port), timeout=30) as s:
                s.sendall(data)
                t0 = time.monotonic()
                s.settimeout(self.limit)
                got = b""
                try:
                    while chunk := s.recv(4096):
                        got += chunk
                except (socket.timeout, TimeoutError):
                    self.result["answer"] = "still open"
                    return
                except ConnectionResetError:
                    pass
                self.result["closed_after_s"] = round(time.monotonic() - t0, 2)
                self.result["answer"] = got.split(b"\r\n", 1)[0].decode("latin-1") or "(closed, no answer)"
        except OSError as e:
            self.result["answer"] = f"{type(e).__name__}: {e}"


def start_stalls(host: str, port: int, kinds, limit: float) -> list[Stall]:
    stalls = [Stall(host, port, k, limit) for k in kinds]
    for s in stalls:
        s.start()
    return stalls


# ---------------------------------------------------------------- the server process
def serve(args) -> None:
    import torch

    from patronus_diffusion.api import Patronus
    from patronus_diffusion.explore.server import make_server
    from patronus_diffusion.explore.session import ExplorerSession

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    pat = Patronus.load(args.run, device="cpu")
    session = ExplorerSession(pat, steps=args.steps, ref_n=args.ref_n)
    server = make_server(session, "127.0.0.1", 0, timeout=args.timeout)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


def proc_stats(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return {"threads": int(fields["Threads"]), "rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024, 1)}


def settled(pid: int, seconds: float = 1.0) -> dict:
    """The server's stats once the last answer's thread has ended: the fewest threads seen over ``seconds``."""
    seen = []
    for _ in range(5):
        seen.append(proc_stats(pid))
        time.sleep(seconds / 5)
    return min(seen, key=lambda s: s["threads"])


def tiny_run(where: Path) -> Path:
    """A tiny model trained for 40 steps on Fashion-MNIST (as the explorer tests use, on the real data)."""
    from patronus_diffusion.config import apply_overrides
    from patronus_diffusion.presets import get_preset
    from patronus_diffusion.training import train

    cfg = apply_overrides(get_preset("tiny"), ["train.sample_every=1000"])
    run = where / "tiny"
    train(cfg, run, max_steps=40, progress=False)
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="pretrained:fashion-mnist")
    ap.add_argument("--tiny", action="store_true", help="train a tiny model for 40 steps and serve it instead")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--timeout", type=float, default=10.0, help="the server's per-connection timeout (s)")
    ap.add_argument("--stalls", type=int, default=3, help="stalled connections per wave (a wave at 0 and half-way)")
    ap.add_argument("--images", type=int, default=4, help="test images in the request pool")
    ap.add_argument("--moves", type=int, default=6, help="slider moves per image in the request pool")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--ref-n", type=int, default=256)
    ap.add_argument("--torch-threads", type=int, default=None, help="torch threads of the server (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "results" / "explorer_load.json"))
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.serve:
        serve(args)
        return 0

    tmp = tempfile.TemporaryDirectory(prefix="explorer_load_")
    if args.tiny:
        print("[load] training a tiny model for 40 steps ...", flush=True)
        args.run = str(tiny_run(Path(tmp.name)))
    err_path = Path(tmp.name) / "server.stderr"
    cmd = [sys.executable, __file__, "--serve", "--run", args.run, "--steps", str(args.steps), "--ref-n",
           str(args.ref_n), "--timeout", str(args.timeout)]
    if args.torch_threads:
        cmd += ["--torch-threads", str(args.torch_threads)]
    with open(err_path, "w") as err:
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    try:
        line = child.stdout.readline()
        if not line.startswith("PORT "):
            print(err_path.read_text()[-3000:], file=sys.stderr)
            raise SystemExit("the server did not start")
        port = int(line.split()[1])
        base = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        pool = build_pool(base, args.images, args.moves, args.seed)
        print(f"[load] {args.run}: {pool['info']['num_prototypes']} prototypes, {args.steps} steps; pool of "
              f"{len(pool['moves'])} slider moves built by one client in {time.monotonic() - t0:.1f} s", flush=True)
        before = settled(child.pid)

        samples, stop = [], threading.Event()

        def monitor():
            while not stop.is_set():
                samples.append({"t": round(time.monotonic() - t_load, 1), **proc_stats(child.pid)})
                stop.wait(0.5)

        kinds = [STALL_KINDS[k % len(STALL_KINDS)] for k in range(args.stalls)]
        limit = args.timeout + 10
        t_load = time.monotonic()
        threading.Thread(target=monitor, daemon=True).start()
        stalls = start_stalls("127.0.0.1", port, kinds, limit)
        second_wave = threading.Timer(args.duration / 2, lambda: stalls.extend(
            start_stalls("127.0.0.1", port, kinds, limit)))
        if args.duration >= 2 * args.timeout:
            second_wave.start()
        print(f"[load] {args.clients} clients for {args.duration:g} s, {len(kinds)} stalled connections per wave "
              f"(server timeout {args.timeout:g} s) ...", flush=True)
        result = run_load(base, pool, args.clients, args.duration, args.seed + 1)
        if second_wave.is_alive() or second_wave.finished.is_set():
            second_wave.join()
        for s in stalls:
            s.join(limit + 5)
        settle_end = time.monotonic() + args.timeout + 5  # handler threads finish their last answers
        while proc_stats(child.pid)["threads"] > before["threads"] and time.monotonic() < settle_end:
            time.sleep(0.2)
        after = proc_stats(child.pid)
        stop.set()
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
    server_err = err_path.read_text()
    tmp.cleanup()

    half = [s["rss_mib"] for s in samples if s["t"] >= args.duration / 2]
    stall_results = [s.result for s in stalls]
    result.update({
        "run": args.run, "steps": args.steps, "timeout_s": args.timeout, "load_1min": os.getloadavg()[0],
        "threads": {"before": before["threads"], "peak": max(s["threads"] for s in samples),
                    "after": after["threads"]},
        "rss_mib": {"before": before["rss_mib"], "peak": max(s["rss_mib"] for s in samples),
                    "half_way": half[0] if half else None, "after": after["rss_mib"]},
        "rss_series_mib": [[s["t"], s["rss_mib"]] for s in samples[::10]],  # every 5 s
        "stalls": stall_results, "server_tracebacks": server_err.count("Traceback"),
    })
    failures = []
    if result["errors"]:
        failures.append(f"{len(result['errors'])} wrong answers")
    if after["threads"] > before["threads"]:
        failures.append(f"threads grew from {before['threads']} to {after['threads']}")
    late = [s for s in stall_results if s["closed_after_s"] is None or s["closed_after_s"] > args.timeout + SLACK_S]
    if late:
        failures.append(f"{len(late)} stalled connections not dropped within {args.timeout:g} + {SLACK_S:g} s")
    if result["server_tracebacks"]:
        failures.append(f"the server printed {result['server_tracebacks']} tracebacks")
    growth = after["rss_mib"] - (result["rss_mib"]["half_way"] or before["rss_mib"])
    if growth > max(16.0, 0.05 * before["rss_mib"]):
        failures.append(f"RSS grew by {growth:.1f} MiB over the second half of the load")
    result["failures"] = failures
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))

    print(f"\n{result['requests']} requests in {result['duration_s']} s: {result['requests_per_s']} requests/s "
          f"({args.clients} clients; 1-min load average {result['load_1min']:.2f})")
    print("| kind | n | p50 s | p90 s | p99 s | max s |\n| --- | --- | --- | --- | --- | --- |")
    for k, p in result["latency_s"].items():
        print(f"| {k} | {p['n']} | {p['p50']} | {p['p90']} | {p['p99']} | {p['max']} |")
    t, r = result["threads"], result["rss_mib"]
    print(f"server threads: {t['before']} before, {t['peak']} peak, {t['after']} after")
    print(f"server RSS: {r['before']} MiB before, {r['half_way']} half-way, {r['peak']} peak, {r['after']} after")
    print("server RSS every 5 s (s: MiB): " + ", ".join(f"{t:g}: {m}" for t, m in result["rss_series_mib"]))
    for s in stall_results:
        print(f"stalled ({s['kind']}): closed after {s['closed_after_s']} s, answer: {s['answer']}")
    for e in result["errors"][:10]:
        print(f"error: {e}")
    if server_err.strip():
        print("server stderr (tail):\n" + server_err[-2000:])
    print(f"wrote {args.out}")
    print("FAILED: " + "; ".join(failures) if failures else "OK: every answer correct, no thread growth, RSS flat, "
                                                            "stalled connections dropped within the timeout")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
