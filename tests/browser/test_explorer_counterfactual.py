"""The explorer started with a classifier, in a real browser: the picked image's counterfactual for the classifier's
attribute is shown with the classifier's probability before and after."""

import re

import pytest
import torch
from playwright.sync_api import expect

from helpers import Brightness, serving
from patronus_diffusion.analysis.audit_flip import load_view
from patronus_diffusion.api import Patronus
from patronus_diffusion.explore.session import ExplorerSession


@pytest.fixture(scope="module")
def url(tiny_run, tmp_path_factory):
    pat = Patronus.load(tiny_run, device="cpu")
    path = tmp_path_factory.mktemp("clf") / "bright.pt"
    torch.jit.script(Brightness()).save(str(path))
    view = load_view(pat, path, "class:1", top_k=1, rank_limit=200)
    with serving(ExplorerSession(pat, steps=3, ref_n=32, classifier=view)) as port:
        yield "http://127.0.0.1:%d/" % port


def test_the_counterfactual_and_the_classifiers_p_before_and_after_are_shown(browser, url):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    expect(page.locator("#orig-name")).to_have_text("test:0", timeout=20_000)
    expect(page.locator("#cf-box")).to_be_visible()
    expect(page.locator("#cf-show")).to_have_text("Flip class:1")
    expect(page.locator("#cf-figure")).to_be_hidden()
    page.click("#cf-show")
    expect(page.locator("#cf-image")).to_have_attribute("src", re.compile("^data:image/png;base64,"), timeout=20_000)
    expect(page.locator("#cf-text")).to_contain_text(re.compile(
        r"(raised|lowered) class:1 \(it (has|lacks) class:1 by the test split's label\): the classifier's "
        r"p\(class 1\) \d\.\d{3} before → \d\.\d{3} after"))
    page.fill("#index", "2")  # another image: the old counterfactual is cleared
    page.click("#open")
    expect(page.locator("#orig-name")).to_have_text("test:2", timeout=20_000)
    expect(page.locator("#cf-figure")).to_be_hidden()
    assert errors == []
    page.close()
