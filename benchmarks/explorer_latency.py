"""How fast is one slider update of `patronus explore`, and what does the inversion scheme cost in fidelity?

    python benchmarks/explorer_latency.py [--run pretrained:fashion-mnist] [--threads 2] [--updates 10]
                                          [--browser] [--screenshot docs/images/explorer.png]

Part 1 (model side): for each (inversion, steps), pick 4 test images (each inverted once) and time
``ExplorerSession.render`` (decode the cached x_T under an edited s, re-encode, PNG) for --updates random
single-prototype slider moves per image; also the PSNR of the unedited render against the picked image (how much
of the picture survives the round trip before any edit).
Part 2 (--browser): the same through Chromium and the HTTP server: time from a slider move to the new image
on the page, median over --updates moves; then a screenshot.
Writes results/explorer_latency.json and prints a markdown table. Quote the figures with the machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from patronus_diffusion.api import Patronus  # noqa: E402
from patronus_diffusion.explore.session import ExplorerSession  # noqa: E402
from patronus_diffusion.utils.images import psnr  # noqa: E402

SETTINGS = [("edict", 10), ("edict", 20), ("ddim", 10), ("ddim", 20), ("ddim", 50)]


def uri_to_tensor(uri: str) -> torch.Tensor:
    import base64
    import io

    import numpy as np
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    return torch.from_numpy(np.asarray(img, dtype=np.float32))[None, None] / 127.5 - 1


def model_side(pat, updates: int) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for inversion, steps in SETTINGS:
        sess = ExplorerSession(pat, steps=steps, inversion=inversion, ref_n=256)
        ranges = sess.slider_ranges()
        times, quality = [], []
        for index in (0, 1, 2, 3):
            picked = sess.pick_test(index)
            x = pat.load_images(indices=[index])
            same = sess.render(picked["key"], picked["s"], seq=0)
            quality.append(float(psnr(uri_to_tensor(same["image"]), x)))
            for k in range(updates):
                j = int(torch.randint(0, pat.num_prototypes, (1,), generator=g))
                s = list(picked["s"])
                s[j] = ranges[j]["max"]
                t0 = time.perf_counter()
                sess.render(picked["key"], s, seq=k + 1)
                times.append(time.perf_counter() - t0)
        w = float(getattr(pat.config.sample, "edit_guidance", 0.0) or 0.0)  # an edited row: eps(s') and eps(s)
        rows.append({"inversion": inversion, "steps": steps,
                     "network_calls": steps * (2 if inversion == "edict" else 1) * (2 if w else 1), "edit_guidance": w,
                     "median_s": round(statistics.median(times), 3),
                     "p90_s": round(sorted(times)[int(0.9 * (len(times) - 1))], 3),
                     "unedited_psnr_db": round(statistics.mean(quality), 2), "updates": len(times)})
        print(rows[-1], flush=True)
    return rows


def browser_side(pat, updates: int, screenshot: str | None) -> dict:
    from playwright.sync_api import expect, sync_playwright

    from patronus_diffusion.explore.server import make_server

    sess = ExplorerSession(pat)  # the command's defaults
    server = make_server(sess, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    times = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
        page = b.new_page(viewport={"width": 1400, "height": 860})
        page.goto(url)
        page.wait_for_selector(".proto input[type=range]")
        page.locator(".thumbs img").nth(7).click()
        expect(page.locator("#orig-name")).to_have_text("test:7", timeout=30_000)
        rows = page.locator(".proto")
        for k in range(updates):
            row = rows.nth(rows.count() - 1 - (k % 6))
            seq = page.get_attribute("#edited", "data-seq")
            slider = row.locator("input")
            lo, hi = float(slider.get_attribute("min")), float(slider.get_attribute("max"))
            t0 = time.perf_counter()
            slider.fill(str(hi if k % 2 == 0 else lo + 0.5 * (hi - lo)))
            expect(page.locator("#edited")).not_to_have_attribute("data-seq", seq, timeout=30_000)
            times.append(time.perf_counter() - t0)
        if screenshot:
            page.click("#reset")
            page.wait_for_timeout(800)
            top = rows.first.locator("input")
            top.fill(top.get_attribute("min"))
            page.wait_for_timeout(1500)
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=screenshot, full_page=False)
        b.close()
    server.shutdown()
    return {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3), "updates": len(times),
            "includes": "slider input -> debounce (30 ms) -> HTTP -> decode + re-encode + PNG -> image shown"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="pretrained:fashion-mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--updates", type=int, default=10)
    ap.add_argument("--browser", action="store_true")
    ap.add_argument("--screenshot", default=None)
    ap.add_argument("--browser-only", action="store_true", help="skip part 1")
    ap.add_argument("--out", default="results/explorer_latency.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pat = Patronus.load(args.run, device="cpu")
    res = {"run": args.run, "threads": args.threads, "load_average": os.getloadavg(),
           "command": " ".join(sys.argv), "model_side": [] if args.browser_only else model_side(pat, args.updates)}
    if args.browser or args.browser_only:
        res["browser"] = browser_side(pat, args.updates, args.screenshot)
        print(res["browser"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out = Path(args.out if not args.browser_only else Path(args.out).with_name("explorer_latency_browser.json"))
    out.write_text(json.dumps(res, indent=1))
    print("| inversion | steps | network calls | median update (s) | p90 (s) | unedited PSNR (dB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in res["model_side"]:
        print(f"| {r['inversion']} | {r['steps']} | {r['network_calls']} | {r['median_s']} | {r['p90_s']} | "
              f"{r['unedited_psnr_db']} |")


if __name__ == "__main__":
    main()
