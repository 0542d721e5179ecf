"""The explorer in a real browser: a slider move changes the image and shows the re-encoded s; a bad upload
gets a message in the page and the server keeps serving."""

import re

import pytest
from playwright.sync_api import expect

from helpers import serving
from patronus_diffusion.api import Patronus
from patronus_diffusion.explore.session import ExplorerSession


@pytest.fixture(scope="module")
def explorer_url(tiny_run):
    pat = Patronus.load(tiny_run, device="cpu")
    with serving(ExplorerSession(pat, steps=3, ref_n=32)) as port:
        yield "http://127.0.0.1:%d/" % port


def _open(browser, url):
    """The page under its own Content-Security-Policy (so no page.evaluate: only locators and expect)."""
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # console errors too (a CSP violation lands there), except the 400 answers the bad-upload test asks for
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "status of 400" not in m.text
            else None)
    page.goto(url)
    page.wait_for_selector(".proto input[type=range]")  # test image 0 was picked and its sliders built
    expect(page.locator("#orig")).to_have_attribute("src", re.compile("^data:image/png;base64,"))
    expect(page.locator("#orig-name")).to_have_text("test:0")
    return page, errors


def test_slider_move_changes_the_image_and_shows_the_reencoded_s(browser, explorer_url):
    page, errors = _open(browser, explorer_url)
    assert page.locator(".proto").count() == 6
    expect(page.locator("#orig-box .box")).to_have_count(3)  # the top prototypes' boxes
    before = page.get_attribute("#edited", "src")
    seq = int(page.get_attribute("#edited", "data-seq"))
    row = page.locator(".proto").last  # the least active prototype: raise it to the top of its range
    slider = row.locator("input")
    top = slider.get_attribute("max")
    slider.fill(top)  # sets the value and fires input, as a drag would
    expect(page.locator("#edited")).not_to_have_attribute("data-seq", str(seq), timeout=20_000)
    assert page.get_attribute("#edited", "src") != before
    reached = row.locator(".reached")
    expect(reached).to_have_text(re.compile(r"^-?\d+\.\d{3}$"))  # the re-encoded value is shown
    expect(reached).to_have_class(re.compile("took|missed"))  # and judged against the request
    expect(row).to_have_class(re.compile("edited"))
    assert float(row.locator(".req").text_content()) == pytest.approx(float(top), abs=2e-3)
    page.click("#reset")
    expect(page.locator(".proto.edited")).to_have_count(0)
    assert errors == []
    page.close()


def test_bad_upload_shows_a_message_and_the_server_keeps_serving(browser, explorer_url, tmp_path):
    page, errors = _open(browser, explorer_url)
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    page.set_input_files("#upload", str(bad))
    expect(page.locator("#message")).to_contain_text("not an image")
    # still serving: pick another test image
    page.fill("#index", "2")
    page.click("#open")
    expect(page.locator("#orig-name")).to_have_text("test:2", timeout=20_000)
    assert errors == []
    page.close()


def test_patches_beside_the_sliders_the_window_and_the_guidance_are_shown(browser, explorer_url):
    page, errors = _open(browser, explorer_url)
    strips = page.locator(".proto img.patches")
    expect(strips).to_have_count(6, timeout=20_000)  # every prototype has its nearest training patches
    expect(strips.first).to_have_attribute("src", re.compile("^data:image/png;base64,"))
    expect(strips.first).to_have_attribute("title", re.compile(r"nearest to it: .* d=\d"))
    expect(page.locator("#patches-note")).to_contain_text("nearest training patches (train split")
    expect(page.locator("#guidance")).to_have_text(
        "Every edit is decoded with edit guidance w = 0 (the decoder's own response).")
    expect(page.locator("#win-text")).to_contain_text("every step: the plain edit (3 steps)")
    row = page.locator(".proto").last
    row.locator("input").fill(row.locator("input").get_attribute("max"))
    seq = page.get_attribute("#edited", "data-seq")
    expect(page.locator("#edited")).not_to_have_attribute("data-seq", seq, timeout=20_000)
    # t = 999, 500, 0 at 3 steps: the window 0.5 <= t/T < 1 holds the first two
    page.fill("#win-lo", "0.5")
    expect(page.locator("#win-text")).to_contain_text("the edited s on 2 of 3 steps (t = 999 … 500")
    expect(page.locator("#edited")).to_have_attribute("data-window", "0.5,1", timeout=20_000)
    expect(page.locator("#timing")).to_contain_text("edited s on 2 of 3 steps")
    expect(page.locator("#window-box")).to_have_class(re.compile("timed"))
    page.fill("#win-hi", "0.5")
    expect(page.locator("#win-text")).to_contain_text("no step")
    expect(page.locator("#edited")).to_have_attribute("data-window", "0.5,0.5", timeout=20_000)
    page.fill("#win-lo", "0.9")  # after its end: the server's message is shown
    expect(page.locator("#message")).to_contain_text("LO is after HI", timeout=20_000)
    page.click("#win-full")
    expect(page.locator("#edited")).to_have_attribute("data-window", "0,1", timeout=20_000)
    expect(page.locator("#message")).to_have_text("")
    assert errors == []
    page.close()
